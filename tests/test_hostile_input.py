"""Hostile input gets a 4xx with a clear message and stores nothing, never a 500 (issue 14).

Each case was a reproduced 500: NUL characters (PostgreSQL refuses them; SQLite stores
them, so on SQLite these tests prove the refusal is ours, not the database's), lone
surrogates, JSON nested 50,000 deep (RecursionError), a top-level JSON array where an
object is read, a body over the upload limit (Django's HTML 400 on JSON routes), and a
valid JSONL line holding U+2028 that ``str.splitlines`` cut in two. The guards:
config/parsers.py (the API's JSON parser), config/middleware.py (path, query, forms, body
size) and the prompt import's readers.
"""

import io
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart
from rest_framework.exceptions import ParseError

from annotation.labeling.services import assignment_next
from annotation.models import (
    ChatSession,
    Constitution,
    Judge,
    JudgeJob,
    Judgment,
    Prompt,
    PromptImport,
)
from config.parsers import AnyJSONParser, BodyTooLarge, SafeJSONParser
from tests.annotation.judges.factories import make_judge
from tests.factories import make_task, make_version

DEEP = 50_000
TOO_BIG = 60 * 1024 * 1024


def counts() -> dict:
    return {
        model.__name__: model.objects.count()
        for model in (Prompt, PromptImport, Constitution, Judge, JudgeJob, Judgment, ChatSession)
    }


@pytest.fixture
def admin(login, admin_member):
    return login(admin_member)


def _import(client, slug, name: str, content: bytes):
    upload = SimpleUploadedFile(name, content)
    return client.post(f"/api/projects/{slug}/prompts/import/", {"file": upload})


def _post_json(client, path: str, body):
    raw = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(path, raw, content_type="application/json")


# --- prompt import files ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "line", "says"),
    [
        ("nul.jsonl", b'{"prompt": "ok"}\n{"prompt": "a\\u0000b"}\n', 2, "NUL character"),
        (
            "nul-metadata.jsonl",
            b'{"prompt": "ok", "source": "x\\u0000"}\n',
            1,
            "'source' holds a NUL character",
        ),
        ("nul-key.jsonl", b'{"prompt": "ok", "a\\u0000": 1}\n', 1, "NUL character"),
        ("nul.csv", b"prompt,topic\nfine,ml\nbad\x00cell,ml\n", 3, "'prompt' holds a NUL"),
        ("nul-metadata.csv", b"prompt,topic\nfine,m\x00l\n", 2, "'topic' holds a NUL"),
        ("surrogate.jsonl", b'{"prompt": "ok"}\n{"prompt": "\\ud800"}\n', 2, "lone surrogate"),
        ("surrogate-bytes.jsonl", b'{"prompt": "\xed\xa0\x80"}\n', 1, "not UTF-8"),
        (
            "deep.jsonl",
            b'{"prompt": "ok"}\n{"prompt": "x", "meta": ' + b"[" * DEEP + b"]" * DEEP + b"}\n",
            2,
            "JSON nested too deeply",
        ),
        ("deep-unclosed.jsonl", b'{"prompt": "x", "meta": ' + b"[" * DEEP + b"\n", 1, "deeply"),
    ],
)
def test_a_bad_import_file_is_refused_with_its_line_and_stores_nothing(
    admin, project, name, content, line, says
):
    before = counts()

    response = _import(admin, project.slug, name, content)

    assert response.status_code == 400
    detail = response.json()["detail"]
    assert detail.startswith(f"Line {line}:")
    assert says in detail
    assert counts() == before


def test_the_import_page_shows_the_same_refusal(admin, project):
    before = counts()
    upload = SimpleUploadedFile("nul.jsonl", b'{"prompt": "a\\u0000b"}\n')

    response = admin.post(f"/p/{project.slug}/prompts/", {"file": upload})

    assert response.status_code == 400
    assert "Line 1: &#x27;prompt&#x27; holds a NUL character" in response.content.decode()
    assert counts() == before


def test_a_jsonl_line_with_unicode_line_separators_inside_a_string_imports_whole(admin, project):
    # U+2028, U+2029 and U+0085 are legal unescaped inside a JSON string; splitlines cut
    # the line at each of them.
    text = "first\u2028second\u2029third\x85fourth"
    content = (json.dumps({"prompt": text, "id": "q1"}, ensure_ascii=False) + "\n").encode()

    response = _import(admin, project.slug, "separators.jsonl", content)

    assert response.status_code == 201
    assert response.json()["prompt_count"] == 1
    assert list(Prompt.objects.filter(project=project).values_list("text", flat=True)) == [text]


def test_line_numbers_count_newlines_only(admin, project):
    content = (
        json.dumps({"prompt": "a\u2028b"}, ensure_ascii=False) + "\n" + '{"prompt": ""}\n'
    ).encode()

    response = _import(admin, project.slug, "p.jsonl", content)

    assert response.status_code == 400
    assert response.json()["detail"].startswith("Line 2:")


# --- JSON bodies of the API -------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "body", "says"),
    [
        ("constitutions/", {"name": "evil\u0000", "principles": ["Be kind."]}, "'name' holds"),
        (
            "judges/",
            {"name": "j\u0000", "backend": "remote", "endpoint_url": "https://x.example/v1"},
            "'name' holds",
        ),
        ("constitutions/", {"name": "c", "principles": ["\ud800"]}, "lone surrogate"),
        ("judge-jobs/", {"judge": 1, "kind": "pairwise", "options": {"\u0000": 1}}, "a key of"),
    ],
)
def test_nul_or_a_lone_surrogate_in_a_json_body_is_refused(admin, project, route, body, says):
    before = counts()

    response = _post_json(admin, f"/api/projects/{project.slug}/{route}", body)

    assert response.status_code == 400
    detail = response.json()["detail"]
    assert detail.startswith("JSON parse error")
    assert says in detail
    assert counts() == before


def test_nul_in_a_comparison_rationale_is_refused(login, project, labeler):
    make_task(project)
    assignment = assignment_next(project=project, labeler=labeler)
    body = {
        "assignment_id": assignment.pk,
        "client_id": "6f1c1b52-3c1e-4c39-9d1e-0d6f0f9c1a11",
        "choice": "left",
        "rationale": "because\u0000",
    }
    before = counts()

    response = _post_json(login(labeler), f"/api/projects/{project.slug}/judgments/", body)

    assert response.status_code == 400
    assert "'rationale' holds a NUL character" in response.json()["detail"]
    assert counts() == before


def test_nul_in_a_form_field_sent_to_the_api_is_refused(admin, project):
    before = counts()

    response = admin.post(
        f"/api/projects/{project.slug}/constitutions/",
        {"name": "evil\x00", "principles": '["Be kind."]'},
    )

    assert response.status_code == 400
    assert response.json() == {
        "detail": "The form field 'name' holds a NUL character (\\u0000), which cannot be stored."
    }
    assert counts() == before


@pytest.mark.parametrize("route", ["constitutions/", "judge-jobs/", "chats/"])
def test_json_nested_50000_deep_is_refused(admin, project, route):
    before = counts()
    body = '{"name": "deep", "principles": ' + "[" * DEEP + "]" * DEEP + "}"

    response = _post_json(admin, f"/api/projects/{project.slug}/{route}", body)

    assert response.status_code == 400
    assert response.json() == {
        "detail": "JSON parse error - JSON nested too deeply (the limit is 64 levels)."
    }
    assert counts() == before


@pytest.mark.parametrize("route", ["chats/", "constitutions/", "judges/", "judge-jobs/"])
@pytest.mark.parametrize("body", [[{"name": "x"}], "a string", 3, None])
def test_a_json_body_that_is_not_an_object_is_refused(admin, project, route, body):
    before = counts()

    response = _post_json(admin, f"/api/projects/{project.slug}/{route}", json.dumps(body))

    assert response.status_code == 400
    assert "Send a JSON object ({...})" in response.json()["detail"]
    assert counts() == before


def test_a_body_over_the_upload_limit_gets_a_json_413(admin, project):
    before = counts()
    body = b'{"name": "' + b"x" * TOO_BIG + b'"}'

    response = _post_json(admin, f"/api/projects/{project.slug}/constitutions/", body)

    assert response.status_code == 413
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "The request body is larger than 50 MB."}
    assert counts() == before


def test_a_multipart_put_over_the_upload_limit_gets_a_json_413(admin, project):
    # Only a multipart POST may carry files past the limit; a PUT's body is read whole.
    version = make_version("served")
    body = encode_multipart(BOUNDARY, {"url": "x" * TOO_BIG})

    response = admin.put(
        f"/api/projects/{project.slug}/model-versions/{version.pk}/endpoint/",
        body,
        content_type=MULTIPART_CONTENT,
    )

    assert response.status_code == 413
    assert response.json() == {"detail": "The request body is larger than 50 MB."}


def test_an_upload_past_the_body_limit_reaches_the_import_and_its_own_limit(admin, project):
    # Files are not held to the body limit: the import view answers with its own 20 MB.
    before = counts()
    content = b'{"prompt": "x"}\n' * (TOO_BIG // 16)

    response = _import(admin, project.slug, "big.jsonl", content)

    assert response.status_code == 400
    assert response.json() == {"detail": "The file is larger than 20 MB; split it."}
    assert counts() == before


def test_a_form_over_the_upload_limit_gets_a_page_413(admin, project):
    before = counts()

    response = admin.post(
        f"/p/{project.slug}/judges/constitutions/",
        "name=" + "x" * TOO_BIG,
        content_type="application/x-www-form-urlencoded",
    )

    assert response.status_code == 413
    assert "larger than 50 MB" in response.content.decode()
    assert counts() == before


# --- /v1: the same refusals in OpenAI's error shape -------------------------------------


def _openai_error(response) -> dict:
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    return error


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ([{"role": "user", "content": "hi"}], "Send a JSON object ({...})"),
        ('{"model": "m", "messages": ' + "[" * DEEP + "]" * DEEP + "}", "nested too deeply"),
        ({"model": "m", "messages": [{"role": "user", "content": "\u0000"}]}, "NUL character"),
    ],
)
def test_v1_refuses_hostile_json_in_openais_shape(admin, body, says):
    response = _post_json(admin, "/v1/chat/completions", body)

    assert response.status_code == 400
    assert says in _openai_error(response)["message"]


def test_v1_answers_an_oversized_body_with_413_in_openais_shape(admin):
    body = b'{"model": "m", "messages": [], "x": "' + b"x" * TOO_BIG + b'"}'

    response = _post_json(admin, "/v1/chat/completions", body)

    assert response.status_code == 413
    assert _openai_error(response)["message"] == "The request body is larger than 50 MB."


# --- pages, query parameters and the path -----------------------------------------------


def test_nul_in_a_page_form_is_refused_with_a_page(admin, project):
    before = counts()

    response = admin.post(
        f"/p/{project.slug}/judges/constitutions/",
        {"name": "evil\x00", "principles": '["Be kind."]', "note": ""},
    )

    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")
    assert "The form field &#x27;name&#x27; holds a NUL character" in response.content.decode()
    assert counts() == before


def test_nul_in_a_query_parameter_is_refused(admin, project):
    response = admin.get(f"/api/projects/{project.slug}/export/?format=dpo%00")

    assert response.status_code == 400
    assert response.json() == {
        "detail": "The query parameter 'format' holds a NUL character (\\u0000), which cannot "
        "be stored."
    }


def test_nul_in_the_path_is_refused(admin):
    response = admin.get("/v1/models/some%00model")

    assert response.status_code == 400
    assert "The address holds a NUL character" in _openai_error(response)["message"]


# --- JSON typed into form fields (principles, judge job options, gold answers) ----------

DEEP_TEXT = "[" * DEEP + "]" * DEEP
NUL_TEXT = '["Be kind.\\u0000"]'  # the escape, as typed: json.loads makes it a NUL


@pytest.mark.parametrize("principles", [DEEP_TEXT, NUL_TEXT])
def test_principles_typed_as_json_are_refused_by_the_row_form(admin, project, principles):
    """The page takes principles as rows (a formset); JSON text is not parsed at all."""
    before = counts()

    response = admin.post(
        f"/p/{project.slug}/judges/constitutions/",
        {"constitution_name": "typed", "principles": principles, "note": ""},
    )

    assert response.status_code == 400
    assert "The principles form is incomplete" in response.content.decode()
    assert counts() == before


@pytest.mark.parametrize(
    ("options", "says"), [(DEEP_TEXT, "too deeply"), ('{"x": "\\u0000"}', "NUL")]
)
def test_judge_job_options_sent_as_json_text_are_checked(admin, project, options, says):
    judge = make_judge(workspace=project.workspace)
    before = counts()

    response = _post_json(
        admin,
        f"/api/projects/{project.slug}/judge-jobs/",
        {"judge": judge.pk, "kind": "pairwise", "options": options},
    )

    assert response.status_code == 400
    assert says in response.json()["detail"]
    assert counts() == before


@pytest.mark.parametrize("answer", [DEEP_TEXT, '"\\u0000"'])
def test_a_gold_answer_typed_as_json_is_refused_by_the_kind_form(admin, project, answer):
    """The gold form takes the fields of the task's kind; JSON text is not parsed at all."""
    task = make_task(project)

    response = admin.post(f"/p/{project.slug}/quality/gold/{task.pk}/", {"gold_answer": answer})

    assert response.status_code == 400
    assert "Choose A, B, tie or both bad." in response.content.decode()
    task.refresh_from_db()
    assert task.gold_answer is None


# --- the parser on its own: what it still lets through, and its own size limit ----------


def test_the_parser_accepts_64_levels_and_astral_characters():
    body = '{"a": ' + "[" * 63 + '"\\ud83d\\ude00 \u2028"' + "]" * 63 + "}"

    data = SafeJSONParser().parse(io.BytesIO(body.encode()), "application/json", {})

    inner = data["a"]
    for _ in range(62):
        inner = inner[0]
    assert inner == ["\U0001f600 \u2028"]


def test_the_parser_refuses_65_levels():
    body = "[" * 65 + "]" * 65

    with pytest.raises(ParseError, match="nested too deeply"):
        AnyJSONParser().parse(io.BytesIO(body.encode()), None, {})


def test_the_parser_holds_the_body_limit_itself(settings):
    # A body without Content-Length never meets the middleware's check.
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024
    body = b'{"a": "' + b"x" * (1024 * 1024) + b'"}'

    with pytest.raises(BodyTooLarge) as refused:
        SafeJSONParser().parse(io.BytesIO(body), "application/json", {})

    assert refused.value.status_code == 413
    assert str(refused.value.detail) == "The request body is larger than 1 MB."
