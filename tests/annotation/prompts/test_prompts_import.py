import threading

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.db import connection

from annotation.models import Prompt, PromptImport
from annotation.prompts.services import PromptImportError, prompts_import
from tests.factories import jsonl_bytes, make_caller, make_project


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

    assert "Imported 2 new prompts into alpha; 0 were already there." in capsys.readouterr().out
    assert Prompt.objects.filter(project=project).count() == 2


def test_browser_form_imports_and_shows_the_bad_line(login, admin_member, project):
    client = login(admin_member)
    good = SimpleUploadedFile("p.jsonl", jsonl_bytes([{"prompt": "Hello?"}]))
    bad = SimpleUploadedFile("p.jsonl", b'{"prompt": "x"}\n{"prompt": 5}\n')

    ok = client.post(f"/p/{project.slug}/prompts/", {"file": good}, follow=True)
    refused = client.post(f"/p/{project.slug}/prompts/", {"file": bad})

    assert "Imported 1 new prompts from p.jsonl; 0 were already in the project." in (
        ok.content.decode()
    )
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


# --- importing again --------------------------------------------------------------------

FIFTY = [{"id": f"q{i}", "prompt": f"Question {i}?"} for i in range(50)]


def _stored_prompts(project) -> list[tuple[str, str]]:
    return list(
        Prompt.objects.filter(project=project).order_by("id").values_list("external_id", "text")
    )


def test_importing_the_same_file_twice_adds_nothing_the_second_time(project):
    content = jsonl_bytes(FIFTY)
    prompts_import(project=project, file_name="fifty.jsonl", content=content)

    again = prompts_import(project=project, file_name="fifty.jsonl", content=content)

    assert Prompt.objects.filter(project=project).count() == 50
    assert (again.prompt_count, again.existing_count) == (0, 50)
    # the import is recorded, so the history shows that it happened and added nothing
    assert list(
        PromptImport.objects.order_by("id").values_list("prompt_count", "existing_count")
    ) == [
        (50, 0),
        (0, 50),
    ]


def test_a_grown_file_adds_only_its_new_rows(project):
    prompts_import(project=project, file_name="v1.jsonl", content=jsonl_bytes(FIFTY))
    grown = FIFTY + [{"id": f"q{i}", "prompt": f"Question {i}?"} for i in range(50, 60)]

    batch = prompts_import(project=project, file_name="v2.jsonl", content=jsonl_bytes(grown))

    assert (batch.prompt_count, batch.existing_count) == (10, 50)
    assert _stored_prompts(project) == [(f"q{i}", f"Question {i}?") for i in range(60)]
    assert set(batch.prompts.values_list("external_id", flat=True)) == {
        f"q{i}" for i in range(50, 60)
    }


def test_rows_without_an_id_match_by_their_stripped_text_and_repeats_count_once(project):
    prompts_import(project=project, file_name="a.csv", content=b"text\nSay hi.\nSay bye.\n")
    content = jsonl_bytes(
        [
            {"prompt": "  Say hi.  "},  # stored stripped: the same prompt
            {"prompt": "Say hello."},
            {"prompt": "Say hello."},  # twice in the file: once
            {"id": "x1", "prompt": "Count to three."},
            {"id": "x1", "prompt": "Count to three."},  # the same id and text again: once
            {"prompt": "Count to three."},  # the text of a row above: once
            {"prompt": "say hi."},  # other case: another prompt
        ]
    )

    batch = prompts_import(project=project, file_name="b.jsonl", content=content)

    assert (batch.prompt_count, batch.existing_count) == (3, 1)
    assert _stored_prompts(project) == [
        ("", "Say hi."),
        ("", "Say bye."),
        ("", "Say hello."),
        ("x1", "Count to three."),
        ("", "say hi."),
    ]


def test_chat_and_arena_prompts_are_not_the_labeling_pool(project):
    """A chat turn's prompt with the same text is not a prompt of the pool."""
    Prompt.objects.create(project=project, text="Say hi.", metadata={"chat_session": 1})

    batch = prompts_import(project=project, file_name="a.csv", content=b"text\nSay hi.\n")

    assert (batch.prompt_count, batch.existing_count) == (1, 0)


def test_prompts_of_another_project_do_not_count(project, other_project):
    prompts_import(project=other_project, file_name="f.jsonl", content=jsonl_bytes(FIFTY[:3]))

    batch = prompts_import(project=project, file_name="f.jsonl", content=jsonl_bytes(FIFTY[:3]))

    assert (batch.prompt_count, batch.existing_count) == (3, 0)


@pytest.mark.parametrize(
    ("second_file", "line", "message"),
    [
        (
            [{"id": "q0", "prompt": "Question 0?"}, {"id": "q1", "prompt": "Another question?"}],
            2,
            "Line 2: the project already has a prompt with id 'q1' and other text",
        ),
        (
            [{"id": "n1", "prompt": "New?"}, {"prompt": "fine"}, {"id": "n1", "prompt": "Newer?"}],
            3,
            "Line 3: id 'n1' is also on line 1, with other text",
        ),
        ([{"id": "x" * 201, "prompt": "Long id?"}], 1, "Line 1: the id has 201 characters"),
    ],
)
def test_an_id_with_other_text_refuses_the_whole_file(project, second_file, line, message):
    prompts_import(project=project, file_name="first.jsonl", content=jsonl_bytes(FIFTY[:3]))
    before = (_stored_prompts(project), PromptImport.objects.count())

    with pytest.raises(PromptImportError) as refused:
        prompts_import(project=project, file_name="second.jsonl", content=jsonl_bytes(second_file))

    assert refused.value.line == line
    assert refused.value.message.startswith(message)
    assert (_stored_prompts(project), PromptImport.objects.count()) == before


def test_the_page_says_how_many_were_new_and_lists_the_imports(login, admin_member, project):
    client = login(admin_member)
    url = f"/p/{project.slug}/prompts/"

    def upload(records):
        return SimpleUploadedFile("p.jsonl", jsonl_bytes(records))

    first = client.post(url, {"file": upload(FIFTY[:2])}, follow=True).content.decode()
    again = client.post(url, {"file": upload(FIFTY[:3])}, follow=True).content.decode()
    same = client.post(url, {"file": upload(FIFTY[:3])}, follow=True).content.decode()
    clash = client.post(url, {"file": upload([{"id": "q2", "prompt": "Other?"}])})

    assert "Imported 2 new prompts from p.jsonl; 0 were already in the project." in first
    assert "Imported 1 new prompts from p.jsonl; 2 were already in the project." in again
    assert "Nothing new in p.jsonl: all 3 prompts were already in the project." in same
    assert '<table class="prompt-imports">' in same
    assert "<td>p.jsonl</td><td>0</td><td>3</td>" in same
    assert clash.status_code == 400
    assert "Line 1: the project already has a prompt with id &#x27;q2&#x27;" in (
        clash.content.decode()
    )
    assert Prompt.objects.filter(project=project).count() == 3
    assert PromptImport.objects.count() == 3


def test_the_api_answers_new_and_existing_counts(login, admin_member, project):
    client = login(admin_member)
    url = f"/api/projects/{project.slug}/prompts/import/"

    first = client.post(url, {"file": SimpleUploadedFile("p.csv", b"text\nA\nB\n")})
    again = client.post(url, {"file": SimpleUploadedFile("p.csv", b"text\nA\nB\nC\n")})
    clash = client.post(
        url,
        {
            "file": SimpleUploadedFile(
                "p.jsonl", b'{"id": "1", "prompt": "x"}\n{"id": "1", "prompt": "y"}\n'
            )
        },
    )

    assert (first.status_code, again.status_code) == (201, 201)
    assert {k: v for k, v in again.json().items() if k != "import_id"} == {
        "prompt_count": 1,
        "new_count": 1,
        "existing_count": 2,
    }
    assert clash.status_code == 400
    assert clash.json()["detail"].startswith("Line 2: id '1' is also on line 1, with other text")
    assert list(
        Prompt.objects.filter(project=project).order_by("pk").values_list("text", flat=True)
    ) == [
        "A",
        "B",
        "C",
    ]


def test_the_command_says_how_many_were_already_there(project, tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    path.write_bytes(jsonl_bytes(FIFTY[:4]))
    call_command("import_prompts", str(path), "--project", project.slug)
    capsys.readouterr()

    call_command("import_prompts", str(path), "--project", project.slug)
    path.write_bytes(jsonl_bytes([{"id": "q3", "prompt": "Changed?"}]))
    with pytest.raises(
        CommandError, match=r"Line 1: the project already has a prompt with id 'q3'"
    ):
        call_command("import_prompts", str(path), "--project", project.slug)

    assert "Imported 0 new prompts into alpha; 4 were already there." in capsys.readouterr().out
    assert _stored_prompts(project) == [(f"q{i}", f"Question {i}?") for i in range(4)]


@pytest.mark.parametrize(
    ("who", "status"),
    [("outsider", 403), ("labeler", 403), ("researcher", 403), ("admin", 201)],
)
def test_only_admins_import_again(login, project, who, status):
    """Signed-out callers: tests/test_permissions.py."""
    prompts_import(project=project, file_name="p.jsonl", content=jsonl_bytes(FIFTY[:2]))
    client = login(make_caller(who, project))
    upload = SimpleUploadedFile("p.jsonl", jsonl_bytes(FIFTY[:3]))

    answer = client.post(f"/api/projects/{project.slug}/prompts/import/", {"file": upload})

    assert answer.status_code == status
    assert Prompt.objects.count() == (3 if status == 201 else 2)


def test_two_imports_of_one_file_at_once_store_each_prompt_once(transactional_db):
    """Each import runs in its own thread and connection; the project row lock (PostgreSQL)
    or the write lock taken at BEGIN (SQLite) makes the second one see the first's rows."""
    project = make_project("alpha")
    content = jsonl_bytes(FIFTY)
    barrier = threading.Barrier(2)
    batches, errors = [], []

    def work():
        try:
            barrier.wait(timeout=10)
            batches.append(prompts_import(project=project, file_name="f.jsonl", content=content))
        except BaseException as error:  # reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert Prompt.objects.filter(project=project).count() == 50
    assert sorted((b.prompt_count, b.existing_count) for b in batches) == [(0, 50), (50, 0)]
