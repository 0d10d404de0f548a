"""Assignment under real concurrency on PostgreSQL: many labelers, one project, one pool.

Each labeler runs in its own thread with its own database connection, so the row locks,
SKIP LOCKED and the constraints in annotation/labeling/services.py meet real contention.
"""

import random
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from annotation.labeling.services import assignment_next, assignment_skip, comparison_submit
from annotation.models import Assignment, Judgment, Role, Task
from tests.factories import make_member, make_project, make_task

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(300)]

LABELERS = 20
TASKS = 60
UNCLEAR_TASKS = 2  # every labeler skips these, so they end flagged
OVERLAP = 3
SKIP_RATE = 0.08
LAPSE_RATE = 0.06
RESEND_RATE = 0.15
MAX_ROUNDS = 6
MAX_STEPS_PER_ROUND = 400
SIDES = ("left", "right", "tie", "both_bad")
LIVE = (Assignment.Status.PENDING, Assignment.Status.DONE)


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    """Dozens of users: hash their passwords cheaply."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _require_postgres():
    if connection.vendor != "postgresql":
        pytest.fail("This test needs PostgreSQL: run it with DATABASE_URL=postgres://...")


@dataclass
class LabelerLog:
    """What one labeler's thread saw and did, checked against the rows afterwards."""

    tasks_by_assignment: dict = field(default_factory=dict)
    judgment_by_client_id: dict = field(default_factory=dict)
    skipped: set = field(default_factory=set)
    lapsed: set = field(default_factory=set)
    resent: int = 0
    new_assignments: int = 0


def _run_in_threads(count: int, work) -> list[BaseException]:
    """Run work(index, barrier) in `count` threads that start together; each closes its
    own connection. Returns the exceptions the threads raised."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def body(index):
        try:
            work(index, barrier)
        except BaseException as error:  # the test reports it
            errors.append(error)
            barrier.abort()
        finally:
            connection.close()

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    assert not any(thread.is_alive() for thread in threads), "a labeler thread hung"
    return errors


def _labeler_round(
    *, project, labeler, log: LabelerLog, rng: random.Random, unclear: set[int]
) -> None:
    """Work the queue until it is empty: judge, sometimes skip (always for `unclear`
    tasks), sometimes resend the same client_id, sometimes walk away and let the
    assignment lapse."""
    for _step in range(MAX_STEPS_PER_ROUND):
        assignment = assignment_next(project=project, labeler=labeler, rng=rng)
        if assignment is None:
            return
        if assignment.pk in log.lapsed:
            # Another labeler's expiry sweep holds this row (SKIP LOCKED passed it by) and
            # is about to mark it expired; ask again.
            time.sleep(0.005)
            continue
        # Every other assignment was answered, skipped or lapsed: this one must be new.
        assert assignment.pk not in log.tasks_by_assignment, assignment.pk
        log.tasks_by_assignment[assignment.pk] = assignment.task_id
        log.new_assignments += 1
        roll = rng.random()
        if roll < SKIP_RATE or assignment.task_id in unclear:
            assignment_skip(
                project=project, labeler=labeler, assignment_id=assignment.pk, reason="unclear"
            )
            log.skipped.add(assignment.pk)
        elif roll < SKIP_RATE + LAPSE_RATE:
            # The labeler walks away; the TTL passing is simulated by moving the deadline.
            Assignment.objects.filter(pk=assignment.pk).update(
                expires_at=timezone.now() - timedelta(seconds=1)
            )
            log.lapsed.add(assignment.pk)
        else:
            client_id = uuid.uuid4()
            side = rng.choice(SIDES)
            judgment = comparison_submit(
                project=project,
                labeler=labeler,
                assignment_id=assignment.pk,
                side=side,
                client_id=client_id,
                time_spent_ms=rng.randrange(500, 5000),
            )
            if rng.random() < RESEND_RATE:
                again = comparison_submit(
                    project=project,
                    labeler=labeler,
                    assignment_id=assignment.pk,
                    side=side,
                    client_id=client_id,
                    time_spent_ms=1,
                )
                assert again.pk == judgment.pk
                log.resent += 1
            log.judgment_by_client_id[client_id] = judgment.pk
    raise AssertionError(f"{labeler} still had work after {MAX_STEPS_PER_ROUND} steps")


def _invariant_breaches(project) -> list[tuple]:
    """Tasks whose live (pending + done) assignments exceed the overlap target or differ
    from the stored counter, read in one statement, so from one snapshot."""
    live = Count("assignments", filter=Q(assignments__status__in=LIVE))
    return list(
        Task.objects.filter(project=project)
        .annotate(live=live)
        .filter(Q(live__gt=F("overlap_target")) | ~Q(live=F("assigned_count")))
        .values_list("pk", "live", "assigned_count", "overlap_target")
    )


class InvariantWatch:
    """Samples the invariant from its own connection while the labelers work."""

    def __init__(self, project):
        self.project = project
        self.breaches: list = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch)

    def _watch(self):
        try:
            while not self._stop.is_set():
                self.breaches.extend(_invariant_breaches(self.project))
                self.samples += 1
                time.sleep(0.01)
        finally:
            connection.close()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=30)


def test_twenty_labelers_hammering_one_project_never_break_assignment(transactional_db):
    _require_postgres()
    project = make_project("hammered", overlap_target=OVERLAP)
    project.gold_rate = 0
    project.save(update_fields=["gold_rate"])
    tasks = [make_task(project, texts=(f"A{i}", f"B{i}")) for i in range(TASKS)]
    unclear = {task.pk for task in tasks[-UNCLEAR_TASKS:]}
    labelers = [make_member(project, Role.LABELER, f"hammer{i:02d}") for i in range(LABELERS)]
    logs = [LabelerLog() for _ in labelers]
    rngs = [random.Random(1000 + i) for i in range(LABELERS)]

    def work(index, barrier):
        barrier.wait(timeout=60)
        _labeler_round(
            project=project,
            labeler=labelers[index],
            log=logs[index],
            rng=rngs[index],
            unclear=unclear,
        )

    # Rounds: a slot freed by a skip or lapse after some labelers found the queue empty is
    # picked up in the next round; the work is done when a round assigns nothing new.
    with InvariantWatch(project) as watch:
        for _round in range(MAX_ROUNDS):
            before = sum(log.new_assignments for log in logs)
            errors = _run_in_threads(LABELERS, work)
            assert not errors, errors
            if sum(log.new_assignments for log in logs) == before:
                break
        else:
            pytest.fail(f"the queue still handed out work after {MAX_ROUNDS} rounds")
    assert watch.samples > 0 and watch.breaches == [], watch.breaches

    assignments = list(Assignment.objects.filter(task__project=project))
    judgments = list(Judgment.objects.filter(project=project))

    # No labeler got the same task twice (the rows, and what each thread was handed).
    pairs = Counter((a.task_id, a.labeler_id) for a in assignments)
    assert max(pairs.values()) == 1
    for log in logs:
        handed = list(log.tasks_by_assignment.values())
        assert len(handed) == len(set(handed))
    assert sum(len(log.tasks_by_assignment) for log in logs) == len(assignments)

    # Nothing is left hanging: every assignment was judged, skipped or expired.
    status_by_pk = {a.pk: a.status for a in assignments}
    assert Assignment.Status.PENDING not in status_by_pk.values()
    for log in logs:
        for pk in log.skipped:
            assert status_by_pk[pk] == Assignment.Status.SKIPPED
        for pk in log.lapsed:
            assert status_by_pk[pk] == Assignment.Status.EXPIRED

    # Every submitted client_id is stored exactly once, as the judgment first returned.
    submitted = {cid: pk for log in logs for cid, pk in log.judgment_by_client_id.items()}
    assert {j.client_id: j.pk for j in judgments} == submitted
    assert sum(log.resent for log in logs) > 0

    # Each judgment belongs to a done assignment of the same labeler, and vice versa.
    done = {(a.task_id, a.labeler_id) for a in assignments if a.status == Assignment.Status.DONE}
    assert Counter((j.task_id, j.labeler_id) for j in judgments) == Counter(done)

    # Per task: the counter equals pending + done (= done now), skips are counted, and a
    # task ends with exactly OVERLAP judgments unless its skips flagged it, in which case
    # it ends short (the flagging skip released a slot, and no new labeler is let in).
    status_counts = defaultdict(Counter)
    for a in assignments:
        status_counts[a.task_id][a.status] += 1
    judged = Counter(j.task_id for j in judgments)
    flagged = 0
    for task in Task.objects.filter(project=project):
        counts = status_counts[task.pk]
        assert task.assigned_count == counts[Assignment.Status.DONE]
        assert task.skip_count == counts[Assignment.Status.SKIPPED]
        assert task.flagged == (task.skip_count >= project.skip_flag_threshold)
        if task.flagged:
            flagged += 1
            assert judged[task.pk] < OVERLAP
        else:
            assert judged[task.pk] == OVERLAP, (task.pk, counts)
    assert unclear <= {t.pk for t in Task.objects.filter(project=project, flagged=True)}
    assert UNCLEAR_TASKS <= flagged < len(tasks)
    assert any(log.skipped for log in logs) and any(log.lapsed for log in logs)


def test_two_labelers_asking_for_the_last_open_slot_at_once_get_one_assignment(
    transactional_db,
):
    _require_postgres()
    attempts = 12
    project = make_project("last-slot", overlap_target=2)
    project.gold_rate = 0
    project.save(update_fields=["gold_rate"])
    first, *racers = [make_member(project, Role.LABELER, f"slot{i}") for i in range(3)]
    for attempt in range(attempts):
        task = make_task(project, texts=(f"left {attempt}", f"right {attempt}"))
        taken = assignment_next(project=project, labeler=first)
        assert taken.task_id == task.pk
        comparison_submit(
            project=project,
            labeler=first,
            assignment_id=taken.pk,
            side="left",
            client_id=uuid.uuid4(),
        )
        given = [None, None]

        def race(index, barrier, given=given):
            barrier.wait(timeout=30)
            given[index] = assignment_next(project=project, labeler=racers[index])

        errors = _run_in_threads(2, race)
        assert not errors, errors
        winners = [a for a in given if a is not None]
        assert len(winners) == 1, given
        assert winners[0].task_id == task.pk
        task.refresh_from_db()
        assert task.assigned_count == 2
        assert Assignment.objects.filter(task=task).count() == 2
        # The winner answers, so both racers are free for the next attempt.
        comparison_submit(
            project=project,
            labeler=winners[0].labeler,
            assignment_id=winners[0].pk,
            side="tie",
            client_id=uuid.uuid4(),
        )


def _wait_for_lock_waiters(count: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            # Inside a transaction the statistics views are a snapshot; refresh it.
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0] >= count:
                return
            time.sleep(0.01)
    raise AssertionError(f"{count} submissions never queued on the assignment's lock")


def test_the_same_client_id_sent_twice_at_once_returns_one_judgment_to_both(transactional_db):
    _require_postgres()
    project = make_project("resend", overlap_target=1)
    project.gold_rate = 0
    project.save(update_fields=["gold_rate"])
    make_task(project)
    labeler = make_member(project, Role.LABELER, "resender")
    assignment = assignment_next(project=project, labeler=labeler)
    client_id = uuid.uuid4()
    returned = [None, None]

    def send(index, barrier):
        barrier.wait(timeout=30)
        returned[index] = comparison_submit(
            project=project,
            labeler=labeler,
            assignment_id=assignment.pk,
            side="right",
            client_id=client_id,
        )

    # Hold the assignment's row lock so both sends are in flight at the same moment, as
    # when a client retries a request whose answer was lost.
    errors = []
    with transaction.atomic():
        Assignment.objects.select_for_update().get(pk=assignment.pk)
        senders = threading.Thread(target=lambda: errors.extend(_run_in_threads(2, send)))
        senders.start()
        _wait_for_lock_waiters(2)
    senders.join(timeout=30)

    assert Judgment.objects.filter(client_id=client_id).count() == 1
    if errors:
        raise errors[0]
    assert returned[0].pk == returned[1].pk
