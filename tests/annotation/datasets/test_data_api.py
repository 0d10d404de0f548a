"""The data engine API: import dataset files, curate versions, read and export them; who
may call each endpoint, and the 4xx answers to bad input (nothing stored)."""

import json
from pathlib import Path

import pytest
from datasets import load_dataset

from annotation.models import DatasetVersion, PromptImport
from tests.annotation.datasets.test_data_pages import (
    CALLERS,
    MAY,
    hh_bytes,
    hh_row,
    hh_upload,
    import_hh,
    make_dataset_version,
    signed_in,
    stored_counts,
    uploads_left,
)

RECIPE = {"kind": "preference", "sources": ["hh"], "pii": "scrub", "dedupe": "exact"}
BASE = "/api/projects/alpha/data"

# (route name, method, path, capability, allowed status, body an allowed caller sends,
# body a refused caller sends): allowed posts are refused as bad input (nothing stored);
# refused posts are well-formed, so a missing check would store something.
API_ROWS = [
    ("api_data_imports", "get", f"{BASE}/imports/", "view_data", 200, None, None),
    (
        "api_data_imports",
        "post",
        f"{BASE}/imports/",
        "manage",
        400,
        lambda: {"format": "auto"},
        lambda: {"file": hh_upload(hh_bytes(2)), "format": "auto", "source": "sneaky"},
    ),
    ("api_data_versions", "get", f"{BASE}/versions/", "view_data", 200, None, None),
    (
        "api_data_versions",
        "post",
        f"{BASE}/versions/",
        "view_data",
        400,
        lambda: {"name": "bad", "kind": "nothing"},
        lambda: {"name": "sneaky", **RECIPE},
    ),
    ("api_data_version", "get", f"{BASE}/versions/hh-pref/1/", "view_data", 200, None, None),
    (
        "api_data_version_export",
        "get",
        f"{BASE}/versions/hh-pref/1/export/?format=dpo",
        "view_data",
        200,
        None,
        None,
    ),
]
DATA_API_ROUTES_FOR_EVERY_CALLER = {row[0] for row in API_ROWS}


@pytest.mark.parametrize("caller_name", CALLERS)
@pytest.mark.parametrize("row", API_ROWS, ids=[f"{row[1].upper()} {row[0]}" for row in API_ROWS])
def test_each_caller_reaches_exactly_the_data_endpoints_its_role_allows(
    login, project, tmp_path, settings, caller_name, row
):
    name, method, path, needs, ok_status, allowed_body, denied_body = row
    if "/hh-pref/" in path or method == "post":
        make_dataset_version(project, tmp_path)
    client = signed_in(login, project, caller_name)
    allowed = caller_name in MAY[needs]
    before = stored_counts()

    if method == "get":
        answer = client.get(path)
    elif name == "api_data_versions":
        body = (allowed_body if allowed else denied_body)()
        answer = client.post(path, json.dumps(body), content_type="application/json")
    else:
        answer = client.post(path, (allowed_body if allowed else denied_body)())

    expected = {
        "anonymous": (401, {"detail": "Authentication credentials were not provided."}),
        "outsider": (403, {"detail": "You are not a member of this project."}),
        "other_admin": (403, {"detail": "You are not a member of this project."}),
        "labeler": (403, {"detail": "Your role in this project (labeler) does not allow this."}),
        "researcher": (
            403,
            {"detail": "Your role in this project (researcher) does not allow this."},
        ),
    }
    if allowed:
        assert answer.status_code == ok_status
    else:
        assert (answer.status_code, answer.json()) == expected[caller_name]
    assert stored_counts() == before
    assert uploads_left(settings) == []


# --- imports ---------------------------------------------------------------------------


def test_a_preview_shows_the_first_records_and_imports_nothing(
    login, project, admin_member, settings
):
    answer = login(admin_member).post(
        f"{BASE}/imports/", {"file": hh_upload(hh_bytes(8)), "preview": "true"}
    )

    assert answer.status_code == 200
    body = answer.json()
    assert body["format"] == "hh-rlhf"
    assert [row["line"] for row in body["rows"]] == [1, 2, 3, 4, 5]
    assert body["rows"][1] == {
        "raw": hh_row(1),
        "line": 2,
        "prompt": "What is fact number 1?",
        "context": [],
        "responses": ["Fact 1 is well documented.", "I will not say anything at all about 1."],
        "judgments": ["comparison of responses 1 and 2: a"],
    }
    assert PromptImport.objects.count() == 0
    assert uploads_left(settings) == []


def test_a_file_is_imported_and_listed(login, project, admin_member, researcher, settings):
    answer = login(admin_member).post(
        f"{BASE}/imports/", {"file": hh_upload(hh_bytes(4)), "source": "hh-helpful"}
    )

    assert answer.status_code == 201
    created = answer.json()
    assert {key: created[key] for key in ("source", "format", "file_name", "created_by")} == {
        "source": "hh-helpful",
        "format": "hh-rlhf",
        "file_name": "hh.jsonl",
        "created_by": "adm",
    }
    counts = ("record_count", "prompt_count", "response_count", "judgment_count")
    assert [created[key] for key in counts] == [4, 4, 8, 4]
    assert uploads_left(settings) == []
    listed = login(researcher).get(f"{BASE}/imports/").json()
    assert [(item["id"], item["source"]) for item in listed] == [(created["id"], "hh-helpful")]


def test_a_bad_line_refuses_the_file_whole(login, project, admin_member, settings):
    answer = login(admin_member).post(
        f"{BASE}/imports/", {"file": hh_upload(hh_bytes(9, bad_line=7)), "source": "hh"}
    )

    assert answer.status_code == 400
    assert answer.json()["detail"].startswith("Line 7: ")
    assert answer.json()["detail"].endswith("Nothing was imported.")
    assert stored_counts() == dict.fromkeys(stored_counts(), 0)
    assert uploads_left(settings) == []


def test_an_unknown_format_is_refused_naming_the_formats(login, project, admin_member, settings):
    answer = login(admin_member).post(
        f"{BASE}/imports/", {"file": hh_upload(), "format": "alpaca", "source": "hh"}
    )

    assert answer.status_code == 400
    assert answer.json() == {
        "detail": "Unknown format 'alpaca'; choose one of auto, trl, hh-rlhf, ultrafeedback, "
        "oasst, stackexchange, sft, prompts."
    }
    assert stored_counts()["imports"] == 0
    assert uploads_left(settings) == []


def test_a_file_over_the_cap_is_refused_before_it_is_stored(login, project, admin_member, settings):
    settings.DATASET_UPLOAD_MAX_BYTES = 50

    answer = login(admin_member).post(f"{BASE}/imports/", {"file": hh_upload(), "source": "hh"})

    assert answer.status_code == 413
    assert answer.json()["detail"].startswith("The file is larger than 50 bytes")
    assert uploads_left(settings) == []


# --- versions --------------------------------------------------------------------------


def _post(client, body):
    return client.post(f"{BASE}/versions/", json.dumps(body), content_type="application/json")


def test_a_dry_run_reports_and_stores_nothing(login, project, researcher, tmp_path):
    import_hh(project, tmp_path)

    answer = _post(login(researcher), {"name": "hh-pref", **RECIPE, "dry_run": True})

    assert answer.status_code == 200
    body = answer.json()
    assert body["row_count"] == 6
    assert [(step["step"], step["seen"], step["removed"]) for step in body["report"]] == [
        ("pii", 6, 0),
        ("dedupe", 6, 0),
    ]
    assert DatasetVersion.objects.count() == 0


def test_a_version_is_created_once_for_the_same_rows(login, project, researcher, tmp_path):
    import_hh(project, tmp_path)
    client = login(researcher)

    first = _post(client, {"name": "hh-pref", **RECIPE, "licence": "MIT"})
    again = _post(client, {"name": "hh-pref", **RECIPE, "licence": "MIT"})

    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json() == again.json()
    body = first.json()
    assert (body["name"], body["number"], body["kind"], body["row_count"]) == (
        "hh-pref",
        1,
        "preference",
        6,
    )
    assert body["recipe"]["sources"] == ["hh"] and body["licence"] == "MIT"
    assert body["created_by"] == "res"
    version = DatasetVersion.objects.get()
    assert body["content_hash"] == version.content_hash
    detail = client.get(f"{BASE}/versions/hh-pref/1/").json()
    assert detail["card"] == version.card and detail["report"] == version.report
    assert detail["parents"] == []
    listed = client.get(f"{BASE}/versions/").json()
    assert [(item["name"], item["number"]) for item in listed] == [("hh-pref", 1)]


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"name": "x", "kind": "essays"}, "Unknown kind 'essays'; choose one of "),
        ({"name": "x", "kind": "preference", "sources": ["nope"]}, "Unknown source 'nope';"),
        ({"name": "x", "kind": "preference", "quality": 5}, "The recipe's 'quality' must be"),
        ({"name": "x", "kind": "preference", "quality": "bogus=1"}, "Unknown quality rule 'bogus'"),
        ({"name": "x", "kind": "preference", "languages": ["xx-zz"]}, "Unknown language code(s)"),
        ({"name": "x", "kind": "preference", "mix": ["gone@1:0.5"]}, "No dataset version"),
        ({"name": "Bad Name!", "kind": "preference"}, "A dataset name is 1-100 lower-case"),
        ({"name": "x", "kinds": "preference"}, "Send a JSON object with the recipe"),
        (["not", "a", "recipe"], "JSON parse error - the body is an array."),
    ],
)
def test_a_bad_recipe_is_refused_with_its_reason(
    login, project, researcher, tmp_path, body, detail
):
    import_hh(project, tmp_path)

    answer = _post(login(researcher), body)

    assert answer.status_code == 400
    assert answer.json()["detail"].startswith(detail)
    assert DatasetVersion.objects.count() == 0


def test_an_unknown_version_is_not_found(login, project, researcher):
    client = login(researcher)

    detail = client.get(f"{BASE}/versions/gone/3/")
    export = client.get(f"{BASE}/versions/gone/3/export/?format=dpo")

    assert (detail.status_code, detail.json()) == (
        404,
        {"detail": "No dataset version gone v3 in project alpha."},
    )
    assert export.status_code == 404


# --- exports ---------------------------------------------------------------------------


def _saved(answer, path: Path) -> Path:
    path.write_bytes(b"".join(answer.streaming_content))
    return path


def test_an_export_is_a_file_trl_datasets_read(login, project, researcher, tmp_path):
    make_dataset_version(project, tmp_path)
    client = login(researcher)

    jsonl = client.get(f"{BASE}/versions/hh-pref/1/export/?format=dpo&container=jsonl")
    parquet = client.get(f"{BASE}/versions/hh-pref/1/export/?format=kto&container=parquet")

    assert (jsonl.status_code, parquet.status_code) == (200, 200)
    dpo = load_dataset("json", data_files=str(_saved(jsonl, tmp_path / "d.jsonl")), split="train")
    kto = load_dataset(
        "parquet", data_files=str(_saved(parquet, tmp_path / "k.parquet")), split="train"
    )
    assert dpo.num_rows == 6
    assert {"prompt", "chosen", "rejected"} <= set(dpo.column_names)
    assert dpo[0]["prompt"] == [{"role": "user", "content": "What is fact number 0?"}]
    assert dpo[0]["rejected"][0]["content"] == "I will not say anything at all about 0."
    assert kto.num_rows == 12 and sorted(set(kto["label"])) == [False, True]


def test_a_format_the_kind_cannot_give_is_refused(login, project, researcher, tmp_path):
    make_dataset_version(project, tmp_path, name="qs", kind="prompts")
    client = login(researcher)

    answer = client.get(f"{BASE}/versions/qs/1/export/?format=dpo&container=jsonl")
    unknown = client.get(f"{BASE}/versions/qs/1/export/?format=yaml")

    assert (answer.status_code, answer.json()) == (
        400,
        {"detail": "A 'prompts' version cannot be exported as 'dpo': it gives prompt."},
    )
    assert unknown.status_code == 400
    assert unknown.json()["detail"].startswith("Unknown export format 'yaml'")


def test_only_an_admin_may_keep_personal_data_in_a_version(
    login, project, researcher, admin_member, tmp_path
):
    import_hh(project, tmp_path)
    keep = {"name": "raw", **RECIPE, "pii": "keep"}

    refused = _post(login(researcher), keep)
    allowed = _post(login(admin_member), keep)

    assert refused.status_code == 400
    assert refused.json()["detail"].startswith("Only a project admin may keep personal data")
    assert allowed.status_code == 201
    assert DatasetVersion.objects.get().recipe["pii"] == "keep"
