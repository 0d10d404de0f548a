import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command

from annotation.models import Prompt, PromptImport
from annotation.services import PromptImportError, prompts_import
from tests.factories import jsonl_bytes


def test_jsonl_import_loads_every_prompt_with_metadata(project):
    content = jsonl_bytes(
        [{"prompt": "What is DPO?", "id": "q1", "topic": "ml"}, {"text": "Say hi."}]
    )

    batch = prompts_import(project=project, file_name="p.jsonl", content=content)

    assert batch.prompt_count == 2
    first, second = Prompt.objects.filter(project=project).order_by("id")
    assert (first.text, first.external_id, first.metadata) == (
        "What is DPO?",
        "q1",
        {"topic": "ml"},
    )
    assert (second.text, second.source_import) == ("Say hi.", batch)


def test_csv_import_reads_the_prompt_column(project):
    content = b'prompt,id\n"Explain, briefly, RLHF.",a\nWrite a haiku.,b\n'

    prompts_import(project=project, file_name="p.csv", content=content)

    texts = list(
        Prompt.objects.filter(project=project).order_by("id").values_list("text", flat=True)
    )
    assert texts == ["Explain, briefly, RLHF.", "Write a haiku."]


@pytest.mark.parametrize(
    ("file_name", "content", "line"),
    [
        ("bad.jsonl", b'{"prompt": "ok"}\n{"prompt": "ok too"}\n{"prompt": \n', 3),
        ("bad.jsonl", b'{"prompt": "ok"}\n["not", "an", "object"]\n', 2),
        ("bad.jsonl", b'{"prompt": "ok"}\n\n{"prompt": ""}\n', 3),
        ("bad.jsonl", b'{"prompt": "ok"}\n{"question": "wrong key"}\n', 2),
        ("bad.csv", b"prompt\nfine\n,\nalso fine\n", 3),
        ("bad.csv", b"question\nno prompt column\n", 1),
        ("bad.jsonl", b'{"prompt": "ok"}\n{"prompt": "\xff\xfe"}\n', 2),
    ],
)
def test_a_malformed_file_is_rejected_whole_with_the_first_bad_line(
    project, file_name, content, line
):
    with pytest.raises(PromptImportError) as refused:
        prompts_import(project=project, file_name=file_name, content=content)

    assert refused.value.line == line
    assert refused.value.message.startswith(f"Line {line}:")
    assert Prompt.objects.count() == 0
    assert PromptImport.objects.count() == 0


def test_empty_file_and_unknown_extension_are_refused(project):
    with pytest.raises(PromptImportError, match="no prompts"):
        prompts_import(project=project, file_name="p.jsonl", content=b"\n\n")
    with pytest.raises(PromptImportError, match=r"\.jsonl or \.csv"):
        prompts_import(project=project, file_name="p.txt", content=b"hello")
    assert Prompt.objects.count() == 0


def test_management_command_imports_and_reports_bad_lines(project, tmp_path, capsys):
    good = tmp_path / "good.jsonl"
    good.write_bytes(jsonl_bytes([{"prompt": "One"}, {"prompt": "Two"}]))
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"prompt": "fine"}\nnot json\n')

    call_command("import_prompts", str(good), "--project", project.slug)
    with pytest.raises(CommandError, match="Line 2: not valid JSON"):
        call_command("import_prompts", str(bad), "--project", project.slug)
    with pytest.raises(CommandError, match="No project"):
        call_command("import_prompts", str(good), "--project", "missing")

    assert "Imported 2 prompts" in capsys.readouterr().out
    assert Prompt.objects.filter(project=project).count() == 2


def test_browser_form_imports_and_shows_the_bad_line(login, admin_member, project):
    client = login(admin_member)
    good = SimpleUploadedFile("p.jsonl", jsonl_bytes([{"prompt": "Hello?"}]))
    bad = SimpleUploadedFile("p.jsonl", b'{"prompt": "x"}\n{"prompt": 5}\n')

    ok = client.post(f"/p/{project.slug}/prompts/", {"file": good}, follow=True)
    refused = client.post(f"/p/{project.slug}/prompts/", {"file": bad})

    assert "Imported 1 prompts" in ok.content.decode()
    assert refused.status_code == 400
    assert "Line 2:" in refused.content.decode()
    assert Prompt.objects.filter(project=project).count() == 1


def test_api_import_answers_201_or_400_with_the_line(login, admin_member, project):
    client = login(admin_member)
    url = f"/api/projects/{project.slug}/prompts/import/"

    created = client.post(url, {"file": SimpleUploadedFile("p.csv", b"text\nA\nB\n")})
    refused = client.post(url, {"file": SimpleUploadedFile("p.csv", b"text\nA\n\x00\xff\n")})
    missing = client.post(url, {})

    assert created.status_code == 201
    assert created.json()["prompt_count"] == 2
    assert refused.status_code == 400
    assert refused.json()["detail"].startswith("Line 3:")
    assert missing.status_code == 400
    assert Prompt.objects.filter(project=project).count() == 2
