"""The data browser at scale: time its first page and a deep page of judgments, with no
filter and with each filter, on the configured database.

    python bench/data_browser.py                      # 1,000,000 judgments
    python bench/data_browser.py --judgments 200000   # smaller

The database is DATABASE_URL (as for the app); without one, a fresh SQLite file in a
temporary folder. It is migrated, then one new project is filled with plain multi-row
inserts (annotation/datasets/bulk.py insert_rows): a prompt per four judgments, two
responses and one comparison task per prompt, 20 labelers, 3 model versions, one import;
judgments are 70% human, 10% review, 10% AI, 10% imported, 80% comparisons, 1% with flags,
1% of tasks flagged, 0.5% of prompts deleted, dated over a year in id order. The project
is removed again at the end (``--keep`` keeps it).

For each filter it prints the milliseconds of the page the browser serves (selectors.
browse_judgments: the 51-row keyset query with its joins), best of ``--repeat``, for the
first page and a deep one (``after`` = the 60th-oldest judgment id), and the indexes the
query plan names (PostgreSQL: EXPLAIN; SQLite: EXPLAIN QUERY PLAN). Ends with

    RESULT first_page_ms_max=N deep_page_ms_max=N judgments=N database=VENDOR
"""

from __future__ import annotations

import argparse
import datetime
import os
import random
import re
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LABELERS = 20
MODEL_VERSIONS = 3
CHUNK = 20_000
WORDS = [
    "model",
    "answer",
    "question",
    "data",
    "reward",
    "policy",
    "label",
    "human",
    "judge",
    "prompt",
    "better",
    "clear",
]


def setup_django(temp_dir: str) -> None:
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{temp_dir}/bench.sqlite3")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def make_world(n_judgments: int, seed: int = 0) -> dict:
    from django.contrib.auth import get_user_model

    from annotation.datasets.bulk import insert_rows
    from annotation.models import (
        Judgment,
        Project,
        Prompt,
        PromptImport,
        Response,
        Task,
        TaskResponse,
    )
    from models_registry.models import ModelVersion

    rng = random.Random(seed)
    tag = uuid.uuid4().hex[:8]
    project = Project.objects.create(slug=f"bench-browser-{tag}", name="Bench browser")
    unusable = "!"  # no password can match it
    users = get_user_model().objects.bulk_create(
        get_user_model()(username=f"bench-{tag}-{i}", password=unusable) for i in range(LABELERS)
    )
    versions = [
        ModelVersion.objects.create(
            name=f"bench-{tag}-v{i}",
            model_id=f"bench-{tag}-v{i}",
            method=ModelVersion.Method.BASE,
            base_path="/nonexistent",
            state=ModelVersion.State.CANDIDATE,
            workspace=project.workspace,
        )
        for i in range(MODEL_VERSIONS)
    ]
    batch = PromptImport.objects.create(
        project=project, file_name="bench.jsonl", source="bench-import", prompt_count=0
    )
    start = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    step = datetime.timedelta(days=365) / max(n_judgments, 1)
    n_prompts = max(1, n_judgments // 4)
    made = 0
    for first in range(0, n_prompts, CHUNK // 4):
        count = min(CHUNK // 4, n_prompts - first)
        when = [start + step * 4 * (first + i) for i in range(count)]
        prompt_ids = insert_rows(
            Prompt,
            [
                {
                    "project_id": project.pk,
                    "text": " ".join(rng.choices(WORDS, k=10)) + f" #{first + i}?",
                    "external_id": f"ext-{first + i}",
                    "metadata": {"row": first + i},
                    "source_import_id": batch.pk if i % 10 == 0 else None,
                    "deleted_at": when[i] if rng.random() < 0.005 else None,
                    "created_at": when[i],
                }
                for i in range(count)
            ],
        )
        response_ids = insert_rows(
            Response,
            [
                {
                    "prompt_id": prompt_id,
                    "model_version_id": versions[(i + side) % MODEL_VERSIONS].pk,
                    "text": f"Answer {side} to {prompt_id}",
                    "created_at": when[i],
                }
                for i, prompt_id in enumerate(prompt_ids)
                for side in (0, 1)
            ],
        )
        task_ids = insert_rows(
            Task,
            [
                {
                    "project_id": project.pk,
                    "kind": "comparison",
                    "prompt_id": prompt_id,
                    "dedupe_key": f"comparison:{prompt_id}",
                    "overlap_target": 4,
                    "flagged": rng.random() < 0.01,
                    "created_at": when[i],
                }
                for i, prompt_id in enumerate(prompt_ids)
            ],
        )
        insert_rows(
            TaskResponse,
            [
                {"task_id": task_id, "response_id": response_ids[2 * i + side], "position": side}
                for i, task_id in enumerate(task_ids)
                for side in (0, 1)
            ],
        )
        rows = []
        for i, prompt_id in enumerate(prompt_ids):
            a, b = response_ids[2 * i], response_ids[2 * i + 1]
            for repeat in range(4):
                if made >= n_judgments:
                    break
                made += 1
                rows.append(judgment_row(rng, project, users, batch, prompt_id, task_ids[i], a, b))
                rows[-1]["created_at"] = start + step * (4 * (first + i) + repeat)
        insert_rows(Judgment, rows)
        print(f"  {made:>9} judgments stored", end="\r", flush=True)
    print()
    return {"project": project, "labeler": users[3].username, "version": versions[1].name}


def judgment_row(rng, project, users, batch, prompt_id, task_id, a, b) -> dict:
    roll = rng.random()
    source = "human" if roll < 0.7 else "review" if roll < 0.8 else "ai" if roll < 0.9 else "import"
    kind = "comparison" if rng.random() < 0.8 else rng.choice(["rating", "ranking"])
    return {
        "client_id": uuid.UUID(int=rng.getrandbits(128), version=4),
        "kind": kind,
        "project_id": project.pk,
        "task_id": task_id,
        "prompt_id": prompt_id,
        "shown_order": [a, b] if rng.random() < 0.5 else [b, a],
        "response_a_id": a,
        "response_b_id": b,
        "choice": rng.choice("ab"),
        "flags": ["unsafe"] if rng.random() < 0.01 else [],
        "rationale": " ".join(rng.choices(WORDS, k=6)),
        "source": source,
        "source_import_id": batch.pk if source == "import" else None,
        "import_details": {"line": rng.randrange(10**6)} if source == "import" else {},
        "labeler_id": rng.choice(users).pk if source in ("human", "review") else None,
        "time_spent_ms": rng.randrange(1000, 60000),
    }


def filters_to_time(world: dict) -> dict[str, dict]:
    return {
        "none": {},
        "q=reward": {"q": "reward"},
        "source=import": {"source": "import"},
        "import_name": {"import_name": "bench-import"},
        "labeler": {"labeler": world["labeler"]},
        "model_version": {"model_version": world["version"]},
        "date range (1 month)": {
            "date_from": datetime.date(2025, 6, 1),
            "date_to": datetime.date(2025, 6, 30),
        },
        "kind=ranking": {"kind": "ranking"},
        "flagged": {"flagged": True},
        "agreement=disputed": {"agreement": "disputed"},
        "deleted shown": {"deleted": True},
    }


def plan_indexes(queryset) -> str:
    from django.db import connection

    plan = queryset.explain()
    if connection.vendor == "postgresql":
        names = re.findall(
            r"(?:Index Scan|Index Only Scan|Bitmap Index Scan)(?: Backward)?"
            r" (?:using|on) (\w+)",
            plan,
        )
        scans = re.findall(r"Seq Scan on (\w+)", plan)
        names += [f"SEQ {name}" for name in scans]
    else:
        names = re.findall(r"USING (?:COVERING )?INDEX (\w+)", plan)
        names += [f"SCAN {name}" for name in re.findall(r"\bSCAN (\w+)(?! USING)", plan)]
    if "TEMP B-TREE" in plan or re.search(r"\bSort\b", plan):
        names.append("SORT")
    seen = []
    for name in names:
        if name not in seen:
            seen.append(name)
    return ", ".join(seen) or "-"


def time_page(project, filters: dict, repeat: int) -> tuple[float, int, int | None]:
    from annotation.datasets.browser.selectors import browse_judgments

    best, page = float("inf"), None
    for _ in range(repeat):
        began = time.perf_counter()
        page = browse_judgments(project=project, filters=filters)
        best = min(best, time.perf_counter() - began)
    return best * 1000, len(page.rows), page.next_after


def run(n_judgments: int, repeat: int, keep: bool) -> None:
    from django.db import connection

    from annotation.datasets.browser.selectors import judgments_query, page_query
    from annotation.models import Judgment

    began = time.perf_counter()
    world = make_world(n_judgments)
    project = world["project"]
    seconds = time.perf_counter() - began
    print(f"stored {n_judgments} judgments in {seconds:.1f} s on {connection.vendor}")
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    ids = Judgment.objects.filter(project=project).order_by("id").values_list("id", flat=True)
    deep_after = ids[59]
    print(
        f"{'filter':<22} {'first ms':>9} {'rows':>5} {'deep ms':>9} {'rows':>5}  plan (first page)"
    )
    firsts, deeps = [], []
    for name, filters in filters_to_time(world).items():
        first_ms, first_rows, _ = time_page(project, filters, repeat)
        deep_ms, deep_rows, _ = time_page(project, {**filters, "after": deep_after}, repeat)
        plan = plan_indexes(page_query(judgments_query(project=project, filters=filters), None))
        firsts.append(first_ms)
        deeps.append(deep_ms)
        print(f"{name:<22} {first_ms:>9.1f} {first_rows:>5} {deep_ms:>9.1f} {deep_rows:>5}  {plan}")
    print(
        f"RESULT first_page_ms_max={max(firsts):.1f} deep_page_ms_max={max(deeps):.1f} "
        f"judgments={n_judgments} database={connection.vendor}"
    )
    if not keep:
        remove(project)


def remove(project) -> None:
    """Delete the bench project's rows child tables first (PROTECT foreign keys)."""
    from annotation.models import Judgment, Prompt, PromptImport, Response, Task, TaskResponse
    from models_registry.models import ModelVersion

    Judgment.objects.filter(project=project)._raw_delete(Judgment.objects.db)
    TaskResponse.objects.filter(task__project=project).delete()
    Task.objects.filter(project=project)._raw_delete(Task.objects.db)
    Response.objects.filter(prompt__project=project).delete()
    Prompt.objects.filter(project=project)._raw_delete(Prompt.objects.db)
    PromptImport.objects.filter(project=project).delete()
    workspace = project.workspace
    project.delete()
    ModelVersion.objects.filter(workspace=workspace).delete()
    workspace.delete()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--judgments", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="best of this many timings")
    parser.add_argument("--keep", action="store_true", help="keep the bench project")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp_dir:
        setup_django(temp_dir)
        run(args.judgments, args.repeat, args.keep)


if __name__ == "__main__":
    main()
