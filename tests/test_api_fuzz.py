"""The API against its own schema: schemathesis generates requests for every operation of
/api/schema/ (/api and /v1) and sends each to the live test server as a project admin, a
labeler and an outsider (a user in no project). It fails on any 5xx, any answer whose
status, media type or body the schema does not describe, and any 2xx to the outsider but
on the routes open to every signed-in user by design (OUTSIDER_MAY).

Hypothesis is bounded (EXAMPLES per operation, seeded, no deadline) so the whole run takes
a few minutes; three examples in four use the world's ids in the path and body (the
project's slug, its model versions, battle, chat, job, assignment) so the fuzz reaches the
views, not only their 404s. It prints one line, SCHEMATHESIS operations=N requests=M
server_errors=0 ..., and writes it with the failures and each operation's answers under its
tmp folder (and to $API_FUZZ_REPORT if set). The PostgreSQL run holds it (NUL characters
only break there); on SQLite: pytest -m postgres tests/test_api_fuzz.py.
"""

import json
import logging
import os
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from annotation.arena import services as arena_services
from annotation.candidates import services as candidate_services
from annotation.chat import services as chat_services
from annotation.labeling import services as labeling_services
from annotation.models import Role
from models_registry.models import ModelVersion
from models_registry.services import ensure_base_model_from_folder
from tests.factories import (
    make_api_key,
    make_member,
    make_outsider_key,
    make_project,
    make_prompt,
    make_task,
    make_version,
)

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(900)]

EXAMPLES = 15
OK = Counter(range(200, 300))
# Then requests that break the schema (wrong types, missing fields, bad ids): 4xx, never 5xx.
NEGATIVE_EXAMPLES = 6
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Operations any signed-in user may call, whatever their projects (their rows in
# tests/annotation/test_permissions.py and tests/models_registry/test_permissions.py say
# LOGIN): the caller's own projects (none for an outsider), and the model registry.
OUTSIDER_MAY = {
    "projects_list": "lists the caller's own projects: an empty list for an outsider",
    "model_versions_list": "the registry is read by every signed-in user (LOGIN row)",
    "model_version_detail": "the registry is read by every signed-in user (LOGIN row)",
}


@pytest.fixture
def world(live_server, tiny_model_dir, tiny_reward_dir):
    """A project with tasks, two tiny policies (so a battle has contestants), a tiny reward
    model, a battle, a chat, a generation job and an assignment, and the callers' keys."""
    project = make_project("fuzz")
    admin = make_member(project, Role.ADMIN, "fuzz-admin")
    labeler = make_member(project, Role.LABELER, "fuzz-labeler")
    for _ in range(3):
        make_task(project)
    make_prompt(project, "What is a good name for a cat?")
    policy = ensure_base_model_from_folder(name="fuzz-policy", path=tiny_model_dir)
    ensure_base_model_from_folder(name="fuzz-rival", path=tiny_model_dir)
    reward = make_version(
        "fuzz-reward",
        path=str(tiny_reward_dir),
        kind=ModelVersion.Kind.REWARD,
        method=ModelVersion.Method.REWARD,
    )
    battle = arena_services.arena_battle_start(
        project=project, labeler=labeler, prompt_text="Hi", params={"max_new_tokens": 4}
    )
    chat = chat_services.chat_start(project=project, labeler=labeler, model_version_id=policy.pk)
    job = candidate_services.generation_job_start(
        project=project, model_version=policy, user=admin, queue=False
    )
    assignment = labeling_services.assignment_next(project=project, labeler=labeler)
    keys = {
        "admin": make_api_key(admin),
        "labeler": make_api_key(labeler),
        # A key whose user has since left every project (one in none cannot make a key).
        "outsider": make_outsider_key(project, "fuzz-outsider"),
    }
    ids = {
        "slug": project.slug,
        "version_id": policy.pk,
        "model": policy.model_id,
        "battle_id": battle.pk,
        "session_id": chat.pk,
        "job_id": job.pk,
        "assignment_id": assignment.pk,
        "reward_id": reward.pk,
        "reward_model": reward.model_id,
    }
    return {"url": live_server.url, "keys": keys, "ids": ids}


def _headers(key: str, path: str) -> dict:
    scheme = "Bearer" if path.startswith("/v1/") else "Token"
    return {"Authorization": f"{scheme} {key}"}


def _can_be_wrong(operation) -> bool:
    """Whether the operation has a parameter or body a request could get wrong."""
    raw = operation.definition.raw
    return bool(raw.get("parameters") or raw.get("requestBody") or "{" in operation.path)


def _with_real_ids(case, ids: dict):
    """The world's ids in the path, and in the body's fields that name an object."""
    for name in case.path_parameters or {}:
        if name in ids:
            case.path_parameters[name] = ids[name]
    if isinstance(case.body, dict):
        fields = {**ids, **BODY_IDS(ids, case.operation.path)}
        for name in case.body:
            if name in fields:
                case.body[name] = fields[name]
    return case


def BODY_IDS(ids: dict, path: str) -> dict:  # noqa: N802 (a table, computed per route)
    return {
        "model": ids["reward_model"] if path == "/v1/rewards" else ids["model"],
        "model_version": ids["version_id"],
        "base_version": ids["version_id"],
        "reward_version": ids["reward_id"],
    }


def test_every_operation_against_the_schema(world, tmp_path):
    # The 4xx answers the fuzz asks for are logged as warnings, thousands of lines; a 5xx
    # still logs its traceback (ERROR).
    logging.getLogger("django.request").setLevel(logging.ERROR)
    base = world["url"]
    admin_key = world["keys"]["admin"]
    answer = requests.get(
        f"{base}/api/schema.json", headers=_headers(admin_key, "/api/"), timeout=60
    )
    assert answer.status_code == 200, answer.text[:500]
    schema = schemathesis.openapi.from_dict(answer.json())

    counts = Counter()
    statuses = Counter()
    per_operation = defaultdict(Counter)
    first_refusal: dict[str, str] = {}
    failures: list[str] = []
    seen_failures: set[tuple] = set()
    started = time.monotonic()

    def record(kind: str, label: str, who: str, status: int, detail: str):
        key = (kind, label, who, status, detail[:120])
        if key not in seen_failures:
            seen_failures.add(key)
            failures.append(f"[{kind}] {label} as {who} -> {status}: {detail[:1500]}")

    def fuzz_operation(operation, mode: GenerationMode, examples: int):
        label = operation.label
        operation_id = operation.definition.raw.get("operationId", label)

        @settings(
            max_examples=examples,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        # Three examples in four use the world's ids, so the fuzz gets past the 404s.
        @given(case=operation.as_strategy(generation_mode=mode), draw=st.integers(0, 3))
        def fuzz(case, draw):
            if draw:
                _with_real_ids(case, world["ids"])
            for who, key in world["keys"].items():
                counts["requests"] += 1
                try:
                    response = case.call(
                        base_url=base, headers=_headers(key, operation.path), timeout=120
                    )
                except requests.RequestException as error:
                    record("no answer", label, who, 0, repr(error))
                    continue
                status = response.status_code
                statuses[status] += 1
                per_operation[f"{label} as {who}"][status] += 1
                if status >= 400:
                    first_refusal.setdefault(f"{label} as {who}", response.text[:160])
                if status >= 500:
                    counts["server_errors"] += 1
                if who == "outsider" and 200 <= status < 300 and operation_id not in OUTSIDER_MAY:
                    counts["outsider_2xx"] += 1
                    record("outsider 2xx", label, who, status, response.text[:300])
                try:
                    case.validate_response(response, checks=CHECKS)
                except (AssertionError, BaseExceptionGroup) as failed:  # recorded; the fuzz goes on
                    counts["check_failures"] += 1
                    body = response.text[:300].replace("\n", " ")
                    record(type(failed).__name__, label, who, status, f"{failed}\n  body: {body}")

        fuzz()

    # /v1 first and retirement last: a retired version is no longer served, so the
    # operations after it would only see its 404.
    operations = [result.ok() for result in schema.get_all_operations()]
    operations.sort(key=lambda op: (not op.path.startswith("/v1/"), op.path.endswith("/retire/")))
    for operation in operations:
        counts["operations"] += 1
        fuzz_operation(operation, GenerationMode.POSITIVE, EXAMPLES)
        if _can_be_wrong(operation):
            try:
                fuzz_operation(operation, GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES)
            except Unsatisfiable:  # every value fits the schema (a free string in the path)
                counts["no_negative"] += 1

    seconds = time.monotonic() - started
    summary = (
        f"SCHEMATHESIS operations={counts['operations']} requests={counts['requests']} "
        f"server_errors={counts['server_errors']} check_failures={counts['check_failures']} "
        f"outsider_2xx={counts['outsider_2xx']} "
        f"by_status={json.dumps(dict(sorted(statuses.items())))} "
        f"examples_per_operation={EXAMPLES}+{NEGATIVE_EXAMPLES}_negative seconds={seconds:.0f}"
    )
    print("\n" + summary)
    report = tmp_path / "schemathesis-summary.txt"
    answers = [
        f"  {name}: {dict(sorted(c.items()))} first refusal: {first_refusal.get(name, '-')}"
        for name, c in sorted(per_operation.items())
    ]
    text = "\n".join([summary, *failures, "answers:", *answers]) + "\n"
    report.write_text(text)
    if os.environ.get("API_FUZZ_REPORT"):  # a copy that outlives pytest's tmp folders
        Path(os.environ["API_FUZZ_REPORT"]).write_text(text)
    print(f"report: {report}")
    for line in failures:
        print(line)
    assert failures == [], f"{len(failures)} distinct failures; see {report}"
    # A fuzz that reaches no view (keys refused, ids wrong) would pass on 4xx alone.
    for who, least in (("admin", 15), ("labeler", 8)):
        reached = [n for n, c in per_operation.items() if n.endswith(f" as {who}") and c & OK]
        assert len(reached) >= least, f"{who} got a 2xx on only {len(reached)} operations"
