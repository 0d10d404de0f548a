"""The data pages: import a dataset file (upload, preview, confirm), curate versions
(preview, create), a version's page and its downloads; who may reach each."""

import io
import json
from pathlib import Path
from urllib.parse import quote

import pyarrow.parquet as pq
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from annotation.datasets.imports import dataset_import
from annotation.datasets.uploads import upload_save
from annotation.datasets.versions import dataset_version_create, parse_recipe
from annotation.models import DatasetVersion, Judgment, Prompt, PromptImport, Response, Role
from tests.factories import make_member, make_project, make_user

CALLERS = ["anonymous", "outsider", "labeler", "researcher", "admin", "other_admin"]
ROLE_OF = {"labeler": Role.LABELER, "researcher": Role.RESEARCHER, "admin": Role.ADMIN}
MAY = {
    "manage": {"admin"},
    "view_data": {"researcher", "admin"},
}


def hh_row(index: int, *, answer: str = "") -> dict:
    question = f"\n\nHuman: What is fact number {index}?"
    return {
        "chosen": f"{question}\n\nAssistant: {answer or f'Fact {index} is well documented.'}",
        "rejected": f"{question}\n\nAssistant: I will not say anything at all about {index}.",
    }


def hh_bytes(count: int = 6, *, bad_line: int | None = None) -> bytes:
    lines = [json.dumps(hh_row(index)) for index in range(count)]
    if bad_line is not None:
        lines[bad_line - 1] = '{"chosen": "no closing brace"'
    return ("\n".join(lines) + "\n").encode()


def hh_upload(content: bytes | None = None, name: str = "hh.jsonl") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content if content is not None else hh_bytes())


def import_hh(project, tmp_path: Path, source: str = "hh", count: int = 6) -> PromptImport:
    path = tmp_path / f"{source}.jsonl"
    path.write_bytes(hh_bytes(count))
    return dataset_import(project=project, path=path, source=source)


def make_dataset_version(project, tmp_path: Path, *, name="hh-pref", kind="preference"):
    import_hh(project, tmp_path)
    recipe = parse_recipe(project, kind=kind, sources=["hh"])
    version, _ = dataset_version_create(project=project, name=name, recipe=recipe)
    return version


def uploads_left(settings) -> list[Path]:
    root = Path(settings.DATA_DIR) / "uploads"
    return sorted(path for path in root.rglob("*") if path.is_file()) if root.exists() else []


def stored_counts() -> dict:
    return {
        "imports": PromptImport.objects.count(),
        "prompts": Prompt.objects.count(),
        "responses": Response.objects.count(),
        "judgments": Judgment.objects.count(),
        "versions": DatasetVersion.objects.count(),
    }


def signed_in(login, project, name: str):
    if name == "anonymous":
        return login(None)
    if name == "outsider":
        return login(make_user("outsider"))
    if name == "other_admin":
        return login(make_member(make_project("beta"), Role.ADMIN, "beta-admin"))
    return login(make_member(project, ROLE_OF[name], name))


# --- who may reach each page ---------------------------------------------------------
# (route name, method, path, capability, allowed status, body an allowed caller sends,
# body a refused caller sends). Allowed posts are safe (refused as bad input) or the one
# confirmation of a stored upload; refused posts are well-formed, so a missing check acts.

PAGE_ROWS = [
    ("data_import", "get", "/p/alpha/data/import/", "manage", 200, None, None),
    (
        "data_import_preview",
        "post",
        "/p/alpha/data/import/preview/",
        "manage",
        400,
        lambda world: {},
        lambda world: {"file": hh_upload(), "format": "auto", "source": "hh2"},
    ),
    (
        "data_import_confirm",
        "post",
        "/p/alpha/data/import/confirm/",
        "manage",
        302,
        lambda world: {"token": world["token"], "format": "auto", "source": "hh2"},
        lambda world: {"token": world["token"], "format": "auto", "source": "hh2"},
    ),
    ("data_versions", "get", "/p/alpha/data/versions/", "view_data", 200, None, None),
    (
        "data_versions",
        "post",
        "/p/alpha/data/versions/",
        "view_data",
        400,
        lambda world: {},
        lambda world: {
            "name": "sneaky",
            "kind": "preference",
            "pii": "keep",
            "dedupe": "none",
            "action": "create",
        },
    ),
    ("data_version", "get", "/p/alpha/data/versions/hh-pref/1/", "view_data", 200, None, None),
    (
        "data_version_export",
        "get",
        "/p/alpha/data/versions/hh-pref/1/export/?format=dpo&container=jsonl",
        "view_data",
        200,
        None,
        None,
    ),
]
DATA_PAGE_ROUTES_FOR_EVERY_CALLER = {row[0] for row in PAGE_ROWS}


def make_world(project, tmp_path: Path, path: str) -> dict:
    """What a row's request acts on: a version for the version routes, a stored upload
    for the confirmation (only what the row needs, to keep the table fast)."""
    if "/hh-pref/" in path:
        make_dataset_version(project, tmp_path)
    stored = upload_save(project=project, upload=hh_upload(hh_bytes(3)))
    return {"token": stored.token}


@pytest.mark.parametrize("caller_name", CALLERS)
@pytest.mark.parametrize("row", PAGE_ROWS, ids=[f"{row[1].upper()} {row[0]}" for row in PAGE_ROWS])
def test_each_caller_reaches_exactly_the_data_pages_its_role_allows(
    login, project, tmp_path, settings, caller_name, row
):
    name, method, path, needs, ok_status, allowed_body, denied_body = row
    world = make_world(project, tmp_path, path)
    client = signed_in(login, project, caller_name)
    allowed = caller_name in MAY[needs]
    uploads_before, before = uploads_left(settings), stored_counts()

    if method == "get":
        answer = client.get(path)
    else:
        answer = client.post(path, (allowed_body if allowed else denied_body)(world))

    if allowed:
        assert answer.status_code == ok_status
    elif caller_name == "anonymous":
        assert (answer.status_code, answer["Location"]) == (
            302,
            f"/login/?next={quote(path, safe='/')}",
        )
    else:
        assert answer.status_code == 403
    if not (allowed and name == "data_import_confirm"):
        assert stored_counts() == before
        assert uploads_left(settings) == uploads_before


# --- import: upload, preview, confirm -------------------------------------------------


def test_an_upload_is_previewed_then_imported_on_confirmation(
    login, project, admin_member, settings
):
    client = login(admin_member)

    preview = client.post(
        "/p/alpha/data/import/preview/",
        {"file": hh_upload(hh_bytes(7)), "format": "auto", "source": "hh-helpful"},
    )

    assert preview.status_code == 200
    shown = preview.context["preview"]
    assert (shown["detected"], shown["source"], shown["file_name"]) == (
        "hh-rlhf",
        "hh-helpful",
        "hh.jsonl",
    )
    assert [row["prompt"] for row in shown["rows"]] == [
        f"What is fact number {i}?" for i in range(5)
    ]
    assert shown["rows"][0]["responses"] == [
        "Fact 0 is well documented.",
        "I will not say anything at all about 0.",
    ]
    assert shown["rows"][0]["judgments"] == ["comparison of responses 1 and 2: a"]
    assert "Confirm import" in preview.content.decode()
    assert PromptImport.objects.count() == 0
    [upload] = uploads_left(settings)
    assert upload.parent.name == shown["token"] and upload.parent.parent.name == "alpha"

    confirmed = client.post(
        "/p/alpha/data/import/confirm/",
        {"token": shown["token"], "format": "auto", "source": "hh-helpful"},
        follow=True,
    )

    batch = PromptImport.objects.get()
    assert (batch.source, batch.format, batch.file_name, batch.created_by) == (
        "hh-helpful",
        "hh-rlhf",
        "hh.jsonl",
        admin_member,
    )
    assert (batch.record_count, batch.prompt_count, batch.response_count, batch.judgment_count) == (
        7,
        7,
        14,
        7,
    )
    page = confirmed.content.decode()
    assert "Imported hh.jsonl (hh-rlhf) as &#x27;hh-helpful&#x27;: 7 records, 7 new prompts" in page
    assert "<td>hh-helpful</td><td>hh-rlhf</td><td>hh.jsonl</td><td>7</td>" in page
    assert uploads_left(settings) == []
    assert (
        client.post(
            "/p/alpha/data/import/confirm/", {"token": shown["token"], "format": "auto"}
        ).status_code
        == 404
    )  # a token is used once
    assert PromptImport.objects.count() == 1


def test_a_bad_line_in_the_preview_is_named_and_nothing_is_kept(
    login, project, admin_member, settings
):
    answer = login(admin_member).post(
        "/p/alpha/data/import/preview/",
        {"file": hh_upload(hh_bytes(6, bad_line=3)), "format": "auto", "source": "hh"},
    )

    assert answer.status_code == 400
    assert "Line 3:" in answer.content.decode()
    assert answer.context["preview"] is None
    assert uploads_left(settings) == []
    assert stored_counts() == dict.fromkeys(stored_counts(), 0)


def test_a_bad_line_past_the_preview_refuses_the_confirmation_whole(
    login, project, admin_member, settings
):
    client = login(admin_member)
    preview = client.post(
        "/p/alpha/data/import/preview/",
        {"file": hh_upload(hh_bytes(9, bad_line=8)), "format": "hh-rlhf", "source": "hh"},
    )
    assert preview.status_code == 200

    answer = client.post(
        "/p/alpha/data/import/confirm/",
        {"token": preview.context["preview"]["token"], "format": "hh-rlhf", "source": "hh"},
    )

    assert answer.status_code == 400
    assert "hh.jsonl: Line 8:" in answer.content.decode()
    assert "Nothing was imported." in answer.content.decode()
    assert stored_counts() == dict.fromkeys(stored_counts(), 0)
    assert uploads_left(settings) == []


def test_an_unknown_format_is_refused(login, project, admin_member, settings):
    answer = login(admin_member).post(
        "/p/alpha/data/import/preview/",
        {"file": hh_upload(), "format": "alpaca", "source": "hh"},
    )

    assert answer.status_code == 400
    assert "Select a valid choice. alpaca is not one of the available choices." in (
        answer.content.decode()
    )
    assert uploads_left(settings) == []


def test_a_file_over_the_size_cap_is_refused(login, project, admin_member, settings):
    settings.DATASET_UPLOAD_MAX_BYTES = 100

    answer = login(admin_member).post(
        "/p/alpha/data/import/preview/", {"file": hh_upload(), "format": "auto", "source": "hh"}
    )

    assert answer.status_code == 400
    assert "The file is larger than 100 bytes" in answer.content.decode()
    assert uploads_left(settings) == []


def test_a_file_name_cannot_leave_the_upload_folder(login, project, admin_member, settings):
    answer = login(admin_member).post(
        "/p/alpha/data/import/preview/",
        {"file": hh_upload(name="../../evil.jsonl"), "format": "auto", "source": "hh"},
    )

    assert answer.status_code == 200
    [upload] = uploads_left(settings)
    assert upload.name == "evil.jsonl"
    assert upload.parent.parent == Path(settings.DATA_DIR) / "uploads" / "alpha"


def test_another_projects_upload_token_is_not_found(login, project, settings):
    beta = make_project("beta")
    beta_admin = make_member(beta, Role.ADMIN, "beta-admin")
    make_member(project, Role.ADMIN, "beta-admin-too")
    alpha_token = upload_save(project=project, upload=hh_upload()).token
    client = login(beta_admin)

    foreign = client.post(
        "/p/beta/data/import/confirm/", {"token": alpha_token, "format": "auto", "source": "x"}
    )
    unknown = client.post(
        "/p/beta/data/import/confirm/", {"token": "0" * 32, "format": "auto", "source": "x"}
    )
    malformed = client.post(
        "/p/beta/data/import/confirm/", {"token": "../alpha", "format": "auto", "source": "x"}
    )

    assert [foreign.status_code, unknown.status_code, malformed.status_code] == [404, 404, 404]
    assert PromptImport.objects.count() == 0
    assert len(uploads_left(settings)) == 1


# --- versions: preview, create, page, downloads ----------------------------------------


def test_the_preview_reports_each_step_and_creates_nothing(login, project, researcher, tmp_path):
    import_hh(project, tmp_path)
    path = tmp_path / "pii.jsonl"
    path.write_text(json.dumps(hh_row(99, answer="Write to jane.doe@example.com today.")) + "\n")
    dataset_import(project=project, path=path, source="pii")

    answer = login(researcher).post(
        "/p/alpha/data/versions/",
        {
            "name": "mixed",
            "kind": "preference",
            "sources": ["hh", "pii"],
            "pii": "drop",
            "dedupe": "exact",
            "action": "preview",
        },
        headers={"HX-Request": "true"},
    )

    assert answer.status_code == 200
    page = answer.content.decode()
    assert page.lstrip().startswith('<div id="version-preview">')  # the fragment only
    assert "Preview: 6 rows kept" in page
    assert "<tr><td>pii <small>drop</small></td><td>7</td><td>1</td><td>0</td>" in page
    assert "kinds=[&#x27;email&#x27;]" in page
    assert "jane.doe" not in page  # examples never show the personal data
    assert "<tr><td>dedupe <small>exact</small></td><td>6</td><td>0</td><td>0</td>" in page
    assert DatasetVersion.objects.count() == 0


def test_a_version_is_created_from_the_form_and_shown(login, project, researcher, tmp_path):
    import_hh(project, tmp_path)
    client = login(researcher)

    created = client.post(
        "/p/alpha/data/versions/",
        {
            "name": "hh-pref",
            "kind": "preference",
            "sources": ["hh"],
            "pii": "scrub",
            "dedupe": "exact",
            "licence": "MIT",
            "action": "create",
        },
    )

    version = DatasetVersion.objects.get()
    assert created.status_code == 302
    assert created["Location"] == "/p/alpha/data/versions/hh-pref/1/"
    assert (version.row_count, version.kind, version.created_by) == (6, "preference", researcher)
    page = client.get(created["Location"]).content.decode()
    assert "<h1>hh-pref v1 <small>preference, 6 rows</small></h1>" in page
    card = page.split('id="version-card"')[1]
    assert "<h1>" in card  # the card, rendered as markdown
    # Its YAML header is shown as metadata, not run into a paragraph.
    assert "<summary>Metadata" in card and "<p>license:" not in card
    assert "/p/alpha/data/versions/hh-pref/1/export/?format=dpo&amp;container=parquet" in page
    listing = client.get("/p/alpha/data/versions/").content.decode()
    assert f"<code>{version.content_hash[:12]}</code>" in listing


def test_a_bad_recipe_is_refused_with_its_reason(login, project, researcher, tmp_path):
    import_hh(project, tmp_path)

    answer = login(researcher).post(
        "/p/alpha/data/versions/",
        {
            "name": "hh-pref",
            "kind": "preference",
            "pii": "scrub",
            "dedupe": "exact",
            "mix": "nothing@1:0.5",
            "action": "create",
        },
    )

    assert answer.status_code == 400
    assert "No dataset version &#x27;nothing@1&#x27; in project alpha." in answer.content.decode()
    assert DatasetVersion.objects.count() == 0


def test_an_unknown_version_is_not_found(login, project, researcher):
    client = login(researcher)

    assert client.get("/p/alpha/data/versions/nothing/1/").status_code == 404
    assert client.get("/p/alpha/data/versions/nothing/1/export/?format=dpo").status_code == 404


def test_a_version_downloads_as_jsonl_and_parquet(login, project, researcher, tmp_path, settings):
    make_dataset_version(project, tmp_path)
    client = login(researcher)

    jsonl = client.get("/p/alpha/data/versions/hh-pref/1/export/?format=dpo&container=jsonl")
    parquet = client.get("/p/alpha/data/versions/hh-pref/1/export/?format=sft&container=parquet")

    rows = [json.loads(line) for line in b"".join(jsonl.streaming_content).splitlines()]
    assert jsonl["Content-Disposition"] == 'attachment; filename="hh-pref-v1-dpo.jsonl"'
    assert len(rows) == 6
    assert rows[0]["chosen"] == [{"role": "assistant", "content": "Fact 0 is well documented."}]
    table = pq.read_table(io.BytesIO(b"".join(parquet.streaming_content)))
    assert table.num_rows == 6 and "messages" in table.column_names
    assert list((Path(settings.DATA_DIR) / "exports" / "downloads").iterdir()) == []


def test_a_format_the_kind_cannot_give_is_refused(login, project, researcher, tmp_path):
    make_dataset_version(project, tmp_path, name="qs", kind="prompts")
    client = login(researcher)

    answer = client.get("/p/alpha/data/versions/qs/1/export/?format=dpo")
    unknown = client.get("/p/alpha/data/versions/qs/1/export/?format=prompt&container=zip")

    assert answer.status_code == 400
    assert answer.json() == {
        "detail": "A 'prompts' version cannot be exported as 'dpo': it gives prompt."
    }
    assert unknown.status_code == 400
    assert unknown.json() == {
        "detail": "Unknown container 'zip'; choose one of jsonl, parquet, csv."
    }


def test_a_bad_recipe_in_the_htmx_preview_comes_back_in_the_fragment(login, project, researcher):
    answer = login(researcher).post(
        "/p/alpha/data/versions/",
        {"name": "x", "kind": "preference", "pii": "scrub", "dedupe": "fuzzy", "quality": "x=1"},
        headers={"HX-Request": "true"},
    )

    page = answer.content.decode()
    assert answer.status_code == 400
    assert page.lstrip().startswith('<div id="version-preview">')
    assert (
        "<li>Dedupe: Select a valid choice. fuzzy is not one of the available choices.</li>" in page
    )
    assert DatasetVersion.objects.count() == 0
