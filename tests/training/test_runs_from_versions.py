"""Training runs started from a dataset version: the snapshot made from its rows, the run
that records it, and the form, API and command that name it. Runs are only queued (their
Celery task waits for a commit the test transaction never makes): nothing trains."""

import hashlib
import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from annotation.models import DatasetVersion
from config.errors import ServiceError
from tests.factories import make_project, make_version
from training import services
from training.models import DatasetSnapshot, TrainingRun
from training.services import snapshot_from_version, training_run_start

USER = "human"
# The rows below predate the analysis keys: their exports give the keys empty.
PROVENANCE = {"source": USER, "source_name": "labelers", "language": "en", "prompt_id": None,
              "external_id": "", "labeler": "", "judged_at": ""}  # fmt: skip


def _ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _said(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def _row(number: int, kind: str, prompt: str, **by_kind) -> dict:
    return {
        "id": f"t:{number}",
        "kind": kind,
        "prompt": _ask(prompt),
        "source": USER,
        "source_name": "labelers",
        "language": "en",
        "meta": {},
        **by_kind,
    }


def _version(project, name: str, kind: str, rows: list[dict], *, number: int = 1):
    """A version as versions.py stores one: sorted-key JSONL under DATA_DIR, its sha256."""
    from django.conf import settings

    folder = Path(settings.DATA_DIR) / "datasets" / project.slug / name / f"v{number}"
    folder.mkdir(parents=True)
    text = "".join(
        json.dumps(row, ensure_ascii=False, sort_keys=True, separators=(",", ":")) + "\n"
        for row in rows
    )
    (folder / "rows.jsonl").write_text(text, encoding="utf-8")
    return DatasetVersion.objects.create(
        project=project,
        name=name,
        number=number,
        kind=kind,
        content_hash=hashlib.sha256(text.encode()).hexdigest(),
        path=folder / "rows.jsonl",
        row_count=len(rows),
        card="",
    )


def _rows_of(snapshot: DatasetSnapshot) -> list[dict]:
    lines = Path(snapshot.path).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


@pytest.fixture
def preference_version(project):
    return _version(
        project,
        "prefs",
        "preference",
        [
            _row(
                1,
                "preference",
                "Capital of France?",
                responses=["Paris.", "Lyon.", "Rome."],
                scores=[3.0, 2.0, 1.0],
                soft_label=None,
            ),
            _row(
                2, "preference", "Two plus two?", responses=["4", "5"], scores=None, soft_label=0.9
            ),
            _row(
                3, "preference", "A tie?", responses=["a", "b"], scores=[1.0, 1.0], soft_label=None
            ),
        ],
    )


@pytest.fixture
def sft_version(project):
    return _version(
        project,
        "demos",
        "sft",
        [
            _row(1, "sft", "Say hi.", completion="Hi!"),
            _row(2, "sft", "Say hi.", completion="Hello!"),
            _row(3, "sft", "Say bye.", completion="Bye!"),
        ],
    )


@pytest.fixture
def kto_version(project):
    return _version(
        project,
        "feedback",
        "kto",
        [
            _row(1, "kto", "Be kind.", completion="Sure, gladly.", label=True),
            _row(2, "kto", "Be kind.", completion="No.", label=False),
        ],
    )


# --- the snapshot made from a version ------------------------------------------------------


def test_sft_data_from_an_sft_version_is_trl_messages(project, sft_version):
    snapshot = snapshot_from_version(project=project, version=sft_version, dataset="sft")

    assert _rows_of(snapshot) == [
        {"messages": _ask("Say hi.") + _said("Hi!"), **PROVENANCE},
        {"messages": _ask("Say hi.") + _said("Hello!"), **PROVENANCE},
        {"messages": _ask("Say bye.") + _said("Bye!"), **PROVENANCE},
    ]
    assert (snapshot.format, snapshot.row_count) == ("sft", 3)
    assert snapshot.filters == {
        "dataset_version": "demos@1",
        "version_hash": sft_version.content_hash,
    }


def test_preference_data_is_every_decisive_pair_with_empty_margin(project, preference_version):
    snapshot = snapshot_from_version(
        project=project, version=preference_version, dataset="preferences"
    )

    def pair(prompt, chosen, rejected):
        return {
            "prompt": _ask(prompt),
            "chosen": _said(chosen),
            "rejected": _said(rejected),
            **PROVENANCE,
            "margin": None,
            "agreement": None,
        }

    assert _rows_of(snapshot) == [
        pair("Capital of France?", "Paris.", "Lyon."),
        pair("Capital of France?", "Paris.", "Rome."),
        pair("Capital of France?", "Lyon.", "Rome."),
        pair("Two plus two?", "4", "5"),
    ]  # the tie gives no pair


def test_the_snapshot_is_content_hashed_and_made_once(project, preference_version):
    first = snapshot_from_version(project=project, version=preference_version, dataset="sft")
    second = snapshot_from_version(project=project, version=preference_version, dataset="sft")

    assert first.pk == second.pk
    assert DatasetSnapshot.objects.count() == 1
    assert first.content_hash == hashlib.sha256(Path(first.path).read_bytes()).hexdigest()
    assert first.content_hash[:16] in Path(first.path).name
    assert [row["messages"][-1]["content"] for row in _rows_of(first)] == ["Paris.", "4", "a"]


def test_unpaired_data_from_kto_and_preference_versions(project, kto_version, preference_version):
    from_kto = snapshot_from_version(project=project, version=kto_version, dataset="unpaired")
    from_pairs = snapshot_from_version(
        project=project, version=preference_version, dataset="unpaired"
    )

    assert _rows_of(from_kto) == [
        {
            "prompt": _ask("Be kind."),
            "completion": _said("Sure, gladly."),
            "label": True,
            **PROVENANCE,
        },
        {"prompt": _ask("Be kind."), "completion": _said("No."), "label": False, **PROVENANCE},
    ]
    assert [(row["completion"][0]["content"], row["label"]) for row in _rows_of(from_pairs)] == [
        ("Paris.", True),
        ("Rome.", False),
        ("4", True),
        ("5", False),
    ]


def test_prompt_data_gives_each_prompt_once(project, sft_version):
    snapshot = snapshot_from_version(project=project, version=sft_version, dataset="prompts")

    assert _rows_of(snapshot) == [
        {"prompt": _ask("Say hi."), **PROVENANCE},
        {"prompt": _ask("Say bye."), **PROVENANCE},
    ]


def test_ranking_data_keeps_scores_or_ranks_by_order(project, preference_version):
    snapshot = snapshot_from_version(
        project=project, version=preference_version, dataset="rankings"
    )

    rows = _rows_of(snapshot)
    assert [(row["responses"], row["scores"], row["scored_by"]) for row in rows] == [
        (["Paris.", "Lyon.", "Rome."], [3.0, 2.0, 1.0], "scores"),
        (["4", "5"], [2.0, 1.0], "order"),  # no scores: best first, k - position
    ]  # the tie has nothing to rank


def test_ranking_data_for_a_reward_model_is_unscored(project, preference_version):
    snapshot = snapshot_from_version(
        project=project, version=preference_version, dataset="rankings", scores="reward-model"
    )

    assert [row["scores"] for row in _rows_of(snapshot)] == [None, None, None]
    assert snapshot.filters["scores"] == "reward-model"


@pytest.mark.parametrize(
    ("fixture", "dataset", "message"),
    [
        ("kto_version", "preferences", "holds kto rows; .* on a version of kind preference\\."),
        ("sft_version", "unpaired", "on a version of kind preference or kto"),
        ("sft_version", "rankings", "RRHF .* of kind preference"),
    ],
)
def test_a_version_of_the_wrong_kind_is_refused(request, project, fixture, dataset, message):
    version = request.getfixturevalue(fixture)

    with pytest.raises(ServiceError, match=message):
        snapshot_from_version(project=project, version=version, dataset=dataset)
    assert DatasetSnapshot.objects.count() == 0


def test_another_projects_version_is_refused(project, sft_version):
    other = make_project("beta")

    with pytest.raises(ServiceError, match="No dataset version 'demos@1' in project beta"):
        snapshot_from_version(project=other, version=sft_version, dataset="sft")
    assert DatasetSnapshot.objects.count() == 0


# --- starting a run from a version ----------------------------------------------------------


def test_a_run_started_from_a_version_records_it_and_trains_on_its_rows(
    project, preference_version
):
    run = training_run_start(
        project=project,
        base_version=make_version(),
        method="dpo",
        dataset_version="prefs@1",
        config={"max_steps": 1},
        queue=False,
        processes=1,
    )

    run.refresh_from_db()
    assert run.dataset_version == preference_version
    assert run.status == TrainingRun.Status.QUEUED
    assert (run.snapshot.format, run.snapshot.row_count) == ("preferences", 4)
    assert run.snapshot.filters["dataset_version"] == "prefs@1"
    assert run.snapshot.filters["version_hash"] == preference_version.content_hash
    assert "ai" not in run.snapshot.filters  # the version's recipe chose its labels


def test_a_version_given_as_a_row_and_a_kto_run(project, kto_version):
    run = training_run_start(
        project=project,
        base_version=make_version(),
        method="kto",
        dataset_version=kto_version,
        queue=False,
        processes=1,
    )

    assert run.dataset_version == kto_version
    assert [row["label"] for row in _rows_of(run.snapshot)] == [True, False]


def test_an_sft_stage_first_trains_on_the_versions_best_replies_and_hands_it_on(
    project, preference_version
):
    stage = training_run_start(
        project=project,
        base_version=make_version(),
        method="dpo",
        dataset_version="prefs",
        sft_first=True,
        queue=False,
        processes=1,
    )

    assert (stage.method, stage.dataset_version) == ("sft", preference_version)
    assert stage.snapshot.format == "sft"
    assert stage.follow_up["dataset_version"] == "prefs@1"
    services._start_follow_up(stage, make_version(), queue=False)
    follow_up = TrainingRun.objects.get(previous=stage)
    assert (follow_up.method, follow_up.dataset_version) == ("dpo", preference_version)
    assert follow_up.snapshot.format == "preferences"


@pytest.mark.parametrize(
    ("method", "label", "filters", "message"),
    [
        ("dpo", "feedback@1", {}, "holds kto rows; Reward model and DPO train on a version"),
        ("dpo", "prefs@2", {}, "No dataset version 'prefs@2' in project alpha"),
        ("dpo", "prefs@two", {}, "a version number after '@' is a whole number"),
        ("dpo", "prefs@1", {"min_margin": 2}, "Filters \\(min_margin\\) choose among"),
        ("kto", "prefs@1", {"ai": "exclude"}, "Filters \\(ai\\) choose among"),
        ("soup", "prefs@1", {}, "Rewarded soup trains on no data"),
    ],
)
def test_a_run_from_a_version_it_cannot_use_is_refused_and_nothing_is_stored(
    project, preference_version, kto_version, method, label, filters, message
):
    with pytest.raises(ServiceError, match=message):
        training_run_start(
            project=project,
            base_version=make_version(),
            method=method,
            filters=filters,
            dataset_version=label,
            queue=False,
            processes=1,
        )
    assert (TrainingRun.objects.count(), DatasetSnapshot.objects.count()) == (0, 0)


def test_a_run_from_another_projects_version_is_refused(project, kto_version):
    other = make_project("beta")

    with pytest.raises(ServiceError, match="No dataset version 'feedback@1' in project beta"):
        training_run_start(
            project=other,
            base_version=make_version(),
            method="kto",
            dataset_version=kto_version,
            queue=False,
            processes=1,
        )
    assert (TrainingRun.objects.count(), DatasetSnapshot.objects.count()) == (0, 0)


def test_a_version_whose_pairs_are_all_ties_gives_a_clear_refusal(project):
    _version(
        project,
        "ties",
        "preference",
        [_row(1, "preference", "?", responses=["a", "b"], scores=[2, 2])],
    )

    with pytest.raises(ServiceError, match="Dataset version ties@1 gives no preferences rows"):
        training_run_start(
            project=project,
            base_version=make_version(),
            method="dpo",
            dataset_version="ties@1",
            queue=False,
            processes=1,
        )
    assert TrainingRun.objects.count() == 0


# --- the API, the form, the command and the run page -------------------------------------


def _post_run(client, project, **body):
    return client.post(
        f"/api/projects/{project.slug}/training-runs/", body, content_type="application/json"
    )


def test_the_api_starts_a_run_from_a_version_and_shows_it(
    login, admin_member, project, preference_version
):
    client = login(admin_member)
    answer = _post_run(
        client,
        project,
        method="dpo",
        base_version=make_version().pk,
        dataset_version="prefs@1",
        processes=1,
    )

    assert answer.status_code == 201, answer.content
    shown = answer.json()["dataset_version"]
    assert shown == {
        "label": "prefs@1",
        "kind": "preference",
        "hash": preference_version.content_hash,
        "rows": 3,
    }
    assert answer.json()["snapshot"]["filters"]["dataset_version"] == "prefs@1"
    assert answer.json()["snapshot"]["ai"] is None
    listed = client.get(f"/api/projects/{project.slug}/training-runs/").json()
    assert listed[0]["dataset_version"]["label"] == "prefs@1"


@pytest.mark.parametrize(
    ("label", "message"),
    [
        ("nope@1", "No dataset version 'nope@1' in project alpha."),
        ("feedback@1", "Dataset version feedback@1 holds kto rows"),
        ("prefs@x", "a version number after '@' is a whole number"),
    ],
)
def test_the_api_refuses_a_bad_version_with_its_reason(
    login, admin_member, project, preference_version, kto_version, label, message
):
    answer = _post_run(
        login(admin_member),
        project,
        method="dpo",
        base_version=make_version().pk,
        dataset_version=label,
    )

    assert answer.status_code == 400
    assert message in answer.json()["detail"]
    assert (TrainingRun.objects.count(), DatasetSnapshot.objects.count()) == (0, 0)


def test_an_empty_version_means_the_projects_judgments(
    login, admin_member, project, preference_version
):
    answer = _post_run(
        login(admin_member),
        project,
        method="dpo",
        base_version=make_version().pk,
        dataset_version="",
    )

    assert answer.status_code == 400  # no judgments yet: the old path, not the version
    assert "no decisive comparisons" in answer.json()["detail"]


def test_the_form_offers_only_this_projects_versions_that_fit_and_starts_a_run(
    login, admin_member, project, preference_version, kto_version
):
    other = _version(make_project("beta"), "elsewhere", "preference", [])
    client = login(admin_member)

    page = client.get(f"/p/{project.slug}/training/?method=dpo").content.decode()
    kto_page = client.get(f"/p/{project.slug}/training/?method=kto").content.decode()
    answer = client.post(
        f"/p/{project.slug}/training/",
        {
            "method": "dpo",
            "base_version": make_version().pk,
            "dataset_version": preference_version.pk,
            "ai": "include",
            "seed": "0",
            "processes": "1",
        },
    )

    assert "prefs v1 (preference, 3 rows)" in page
    assert "feedback v1" not in page and other.name not in page
    assert "feedback v1 (kto, 2 rows)" in kto_page and "prefs v1" in kto_page
    assert answer.status_code == 302, answer.content.decode()[-2000:]
    run = TrainingRun.objects.get()
    assert run.dataset_version == preference_version
    assert "ai" not in run.snapshot.filters  # the form's data filters do not apply


def test_the_run_page_shows_the_version_and_its_hash(
    login, admin_member, project, preference_version
):
    run = training_run_start(
        project=project,
        base_version=make_version(),
        method="dpo",
        dataset_version=preference_version,
        queue=False,
        processes=1,
    )

    html = login(admin_member).get(f"/p/{project.slug}/training/{run.pk}/").content.decode()

    assert "prefs v1" in html
    assert preference_version.content_hash[:12] in html
    assert "AI labels" not in html  # the version's recipe chose them, not the run


def test_the_train_command_takes_a_dataset_version(project, kto_version):
    base = make_version("base-policy")
    out = StringIO()

    call_command(
        "train",
        "--project",
        project.slug,
        "--method",
        "kto",
        "--base",
        base.name,
        "--dataset-version",
        "feedback@1",
        "--processes",
        "1",
        stdout=out,
        stderr=StringIO(),
    )

    run = TrainingRun.objects.get(pk=json.loads(out.getvalue())["run"])
    assert run.dataset_version == kto_version
    with pytest.raises(CommandError, match="holds kto rows"):
        call_command(
            "train",
            "--project",
            project.slug,
            "--method",
            "sft",
            "--base",
            base.name,
            "--dataset-version",
            "feedback@1",
            stdout=StringIO(),
            stderr=StringIO(),
        )
    assert TrainingRun.objects.count() == 1
