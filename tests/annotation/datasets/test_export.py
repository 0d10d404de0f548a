import json
import uuid

import pytest
from django.core.management import call_command

from annotation.datasets.selectors import dpo_rows
from annotation.labeling.services import assignment_next, comparison_submit
from annotation.models import Judgment
from tests.factories import make_task


@pytest.fixture
def judged(project, labeler):
    """Three tasks judged: the first prefers the short answer, then a tie, then both bad."""
    for number in range(3):
        make_task(project, texts=(f"Short {number}", f"Long answer {number}"))
    chosen = []
    for side in ("left", "tie", "both_bad"):
        assignment = assignment_next(project=project, labeler=labeler)
        comparison_submit(
            project=project,
            labeler=labeler,
            assignment_id=assignment.pk,
            side=side,
            client_id=uuid.uuid4(),
        )
        chosen.append(assignment.shown_responses()[0].text)
    return chosen[0]


def test_dpo_rows_are_trl_conversational_pairs_without_ties(project, judged):
    rows = list(dpo_rows(project))

    assert len(rows) == 1
    row = rows[0]
    assert set(row) == {"prompt", "chosen", "rejected", "source", "judge", "constitution",
                        "principle", "soft_label", "prompt_id", "external_id", "labeler",
                        "judged_at"}  # fmt: skip
    assert (row["source"], row["judge"], row["soft_label"]) == ("human", "", 1.0)
    assert row["prompt"] == [{"role": "user", "content": row["prompt"][0]["content"]}]
    assert row["chosen"] == [{"role": "assistant", "content": judged}]
    assert row["rejected"][0]["role"] == "assistant"
    assert row["rejected"][0]["content"] != judged


def test_a_superseded_judgment_is_exported_in_its_newest_form(project, judged):
    original = Judgment.objects.get(choice__in=["a", "b"])
    flipped = "b" if original.choice == "a" else "a"
    Judgment.objects.create(
        kind="comparison", project=project, task=original.task, prompt=original.prompt,
        response_a=original.response_a, response_b=original.response_b, choice=flipped,
        shown_order=original.shown_order, labeler=original.labeler, supersedes=original,
    )  # fmt: skip

    rows = list(dpo_rows(project))

    assert len(rows) == 1
    assert rows[0]["rejected"][0]["content"] == judged


def test_command_api_and_page_give_the_same_file(login, project, researcher, judged, tmp_path):
    output = tmp_path / "out.jsonl"
    call_command("export_preferences", "--project", project.slug, "--format", "dpo",
                 "--output", str(output))  # fmt: skip
    client = login(researcher)

    api = client.get(f"/api/projects/{project.slug}/export/?format=dpo")
    page = client.get(f"/p/{project.slug}/export.jsonl?format=dpo")
    bad = client.get(f"/api/projects/{project.slug}/export/?format=csv")

    from_api = b"".join(api.streaming_content).decode()
    assert from_api == b"".join(page.streaming_content).decode() == output.read_text()
    # the project's default leaves AI labels out, and the name says so
    assert api["Content-Disposition"] == f'attachment; filename="{project.slug}-dpo-no-ai.jsonl"'
    assert bad.status_code == 400
    assert "Unknown format" in bad.json()["detail"]


def test_trl_dpo_trainer_trains_on_the_export_as_it_is(project, judged, tmp_path, tiny_model_dir):
    """The file goes straight into TRL: datasets reads it and DPOTrainer takes a step."""
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    path = tmp_path / "prefs.jsonl"
    call_command("export_preferences", "--project", project.slug, "--output", str(path))
    dataset = load_dataset("json", data_files=str(path), split="train")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    args = DPOConfig(
        output_dir=str(tmp_path / "trl"), max_steps=1, per_device_train_batch_size=1,
        report_to=[], save_strategy="no", use_cpu=True, logging_steps=1,
    )  # fmt: skip

    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    result = trainer.train()

    assert result.global_step == 1
    assert json.loads(path.read_text().splitlines()[0])["chosen"][0]["role"] == "assistant"
