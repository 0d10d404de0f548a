"""Every version has a model id that is safe in URLs and the OpenAI API; the readable name
stays for display and still names the version where names were used before."""

import importlib

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from annotation.leaderboard import plots
from models_registry import selectors
from models_registry.models import ModelVersion
from models_registry.services import ensure_base_model_from_folder
from tests.factories import make_trained_version, make_version
from training.models import TrainingRun

LONG_NAME = "SmolLM2-135M-Instruct / SFT run 1 / DPO run 2 / PPO run 3"


def test_a_trained_version_id_reads_as_its_lineage(project, tiny_model_dir):
    base = ensure_base_model_from_folder(name="SmolLM2-135M-Instruct", path=tiny_model_dir)
    sft = make_trained_version(base, method="sft", project=project)
    dpo = make_trained_version(sft, method="dpo", project=project)

    assert base.model_id == "smollm2-135m-instruct"
    assert sft.model_id == f"smollm2-135m-instruct-sft{sft.training_run_id}"
    assert dpo.model_id == f"{sft.model_id}-dpo{dpo.training_run_id}"
    assert (
        dpo.name
        == f"SmolLM2-135M-Instruct / SFT run {sft.training_run_id} / DPO run {dpo.training_run_id}"
    )


def test_names_that_slug_alike_get_distinct_ids(db, tiny_model_dir):
    first = ensure_base_model_from_folder(name="My Model", path=tiny_model_dir)
    second = ensure_base_model_from_folder(name="my-model", path=tiny_model_dir)

    assert (first.model_id, second.model_id) == ("my-model", "my-model-2")


def test_a_deep_lineage_keeps_its_id_within_the_limit(project, tiny_model_dir):
    version = ensure_base_model_from_folder(name="x" * 90, path=tiny_model_dir)
    for method in ["sft", "dpo", "ppo", "raft", "sft", "dpo"]:
        version = make_trained_version(version, method=method, project=project)

    assert len(version.model_id) <= 100
    assert version.model_id.endswith(f"-dpo{version.training_run_id}")
    assert version.model_id.startswith("x" * 10)


def test_a_version_is_found_by_model_id_or_by_its_old_name(db):
    version = make_version(LONG_NAME, model_id="smollm2-ppo3")

    assert selectors.version_by_reference("smollm2-ppo3") == version
    assert selectors.version_by_reference(LONG_NAME) == version
    assert selectors.version_by_reference("nothing") is None


def test_the_train_command_takes_a_model_id(project, tiny_model_dir, capsys):
    base = ensure_base_model_from_folder(name="SmolLM2-135M-Instruct", path=tiny_model_dir)

    with pytest.raises(CommandError, match="No model version 'smollm2-nope'"):
        call_command("train", project=project.slug, method="sft", base="smollm2-nope")
    # A known id gets past the lookup: the refusal is now about the data, not the version.
    with pytest.raises(CommandError) as refusal:
        call_command("train", project=project.slug, method="sft", base=base.model_id)
    assert "No model version" not in str(refusal.value)
    assert TrainingRun.objects.count() == 0


def test_the_lineage_graph_labels_a_node_with_its_own_step(project):
    base = make_version("SmolLM2-135M-Instruct")
    sft = make_version("SmolLM2-135M-Instruct / SFT run 1", parent=base, method="sft")
    dpo = make_version("SmolLM2-135M-Instruct / SFT run 1 / DPO run 2", parent=sft, method="dpo")
    imported = make_version("Imported / with a slash", parent=base)

    labels = {
        n["version"].pk: n["label"] for n in selectors.lineage_graph(project=project)["nodes"]
    }

    assert labels[base.pk] == "SmolLM2-135M-Instruct"
    assert labels[sft.pk] == "SFT run 1"
    assert labels[dpo.pk] == "DPO run 2"
    assert labels[imported.pk] == "Imported / with a slash"


def test_version_pages_show_the_model_id_and_the_lineage_tooltip_the_full_name(
    login, project, admin_member
):
    base = make_version("SmolLM2-135M-Instruct")
    version = make_version(LONG_NAME, parent=base, model_id="smollm2-ppo3", state="candidate")
    client = login(admin_member)

    page = client.get(f"/p/{project.slug}/models/{version.pk}/").content.decode()
    models = client.get(f"/p/{project.slug}/models/").content.decode()
    lineage = client.get(f"/p/{project.slug}/models/lineage/").content.decode()

    assert '<code id="model-id">smollm2-ppo3</code>' in page
    assert "smollm2-ppo3" in models
    assert f"<title>{LONG_NAME} (id smollm2-ppo3)" in lineage


def test_the_ratings_plot_makes_room_for_the_longest_name():
    board = {
        "models": [
            {"model": LONG_NAME, "rating": 1010.0, "lower": 990.0, "upper": 1030.0},
            {"model": "base", "rating": 990.0, "lower": 970.0, "upper": 1010.0},
        ]
    }

    plot = plots.ratings_plot(board)

    assert plot["label_x"] >= 7 * len(LONG_NAME)
    assert plot["width"] - plot["left"] == 550
    assert {row["model"] for row in plot["rows"]} == {LONG_NAME, "base"}


def test_the_migration_gives_existing_versions_unique_ids_from_their_names(db):
    migration = importlib.import_module("models_registry.migrations.0006_model_id_and_intermediate")
    make_version("A / SFT run 1", model_id="placeholder-1")
    make_version("a-sft-run-1", model_id="placeholder-2")
    make_version("///", model_id="placeholder-3")

    class Apps:
        @staticmethod
        def get_model(app_label, model_name):
            return ModelVersion

    migration.fill_model_ids(Apps, connection.schema_editor())

    ids = list(ModelVersion.objects.order_by("id").values_list("model_id", flat=True))
    assert ids[0] == "a-sft-run-1"
    assert ids[1] == "a-sft-run-1-2"
    assert ids[2].startswith("version-")


def test_the_api_key_page_names_models_by_their_model_id(login, project, labeler):
    make_version(LONG_NAME, model_id="smollm2-ppo3")

    page = login(labeler).get("/account/api-key/").content.decode()

    assert 'model="smollm2-ppo3"' in page
    assert "<td><code>smollm2-ppo3</code></td>" in page
    assert f"<td>{LONG_NAME}</td>" in page
