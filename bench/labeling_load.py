"""Labeling under load: simulated labelers work one project's queue through the REST API.

Runs with no arguments. It creates a fresh PostgreSQL database, migrates it, seeds one
comparison project (overlap target 3) with 64 token-holding labelers, starts gunicorn on
a free loopback port, and then, at 1, 8, 32 and 64 concurrent clients, lets every client
loop  GET /api/projects/<slug>/tasks/next/  ->  POST /api/projects/<slug>/judgments/  for
a fixed time. It prints a table and ends with

    RESULT judgments_per_s=N p99_ms=N clients=32

(the 32-client row; p99 is of the whole judgment, next + submit). gunicorn is stopped and
the database dropped at the end, also on Ctrl-C or an error.

The load generator shares the machine's cores with gunicorn and PostgreSQL, so it is kept
cheap: one asyncio event loop, a minimal HTTP/1.1 keep-alive client on raw streams (no
third-party client, no thread per connection), and the assignment id is picked out of the
reply with a regular expression instead of decoding the whole task. Its own CPU use is
printed next to each row.
"""

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parents[1]
POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/bench_labeling"
BROKER_URL = "redis://127.0.0.1:6379/9"
PROJECT_SLUG = "bench"
LABELERS = 64
OVERLAP = 3
LEVELS = (1, 8, 32, 64)
HEADLINE_CLIENTS = 32
CHOICES = ("left", "right", "tie", "both_bad")
ASSIGNMENT_ID = re.compile(rb'"assignment_id"\s*:\s*(\d+)')
REQUEST_TIMEOUT_S = 15


# --- database and server ----------------------------------------------------------------


def _admin_dsn(database_url: str) -> tuple[str, str]:
    """(DSN of the server's maintenance database, name of the bench database)."""
    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise SystemExit(f"Refusing odd database name {name!r}.")
    return urlunsplit(parts._replace(path="/postgres")), name


def recreate_database(database_url: str, *, async_commit: bool) -> None:
    import psycopg2

    dsn, name = _admin_dsn(database_url)
    connection = psycopg2.connect(dsn)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        cursor.execute(f"CREATE DATABASE {name}")
        if async_commit:
            # Diagnosis only: shows what the commit's disk flush costs. Never in production.
            cursor.execute(f"ALTER DATABASE {name} SET synchronous_commit = off")
    connection.close()


def drop_database(database_url: str) -> None:
    import psycopg2

    dsn, name = _admin_dsn(database_url)
    connection = psycopg2.connect(dsn)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    connection.close()


def server_env(database_url: str, data_dir: Path) -> dict:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": database_url,
        "DATA_DIR": str(data_dir),
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "CELERY_BROKER_URL": BROKER_URL,
        "PYTHONUNBUFFERED": "1",
    }


def run_checked(command: list[str], *, env: dict, what: str) -> str:
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{what} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def seed(*, tasks: int, labelers: int) -> dict:
    """In the --seed child process: one comparison project, its tasks, token labelers."""
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction

    from annotation.models import Project, Prompt, Response, Role, Task, TaskKind, TaskResponse
    from annotation.projects.services import ensure_membership, ensure_project
    from models_registry.services import api_key_create

    with transaction.atomic():
        project = ensure_project(slug=PROJECT_SLUG, name="Bench", overlap_target=OVERLAP)
        Project.objects.filter(pk=project.pk).update(gold_rate=0)
        # The rows ensure_comparison_task writes, made in bulk so seeding takes seconds.
        prompts = Prompt.objects.bulk_create(
            Prompt(project=project, text=f"Bench question {i}: which answer is clearer?")
            for i in range(tasks)
        )
        responses = Response.objects.bulk_create(
            Response(prompt=prompt, author=f"bench {side}", text=f"Answer {side} to {i}. " * 8)
            for i, prompt in enumerate(prompts)
            for side in ("one", "two")
        )
        pairs = [responses[i : i + 2] for i in range(0, len(responses), 2)]
        created = Task.objects.bulk_create(
            Task(
                project=project,
                kind=TaskKind.COMPARISON,
                prompt=prompt,
                dedupe_key=f"comparison:p{prompt.pk}:{a.pk}:{b.pk}",
                overlap_target=OVERLAP,
            )
            for prompt, (a, b) in zip(prompts, pairs, strict=True)
        )
        TaskResponse.objects.bulk_create(
            TaskResponse(task=task, response=response, position=position)
            for task, pair in zip(created, pairs, strict=True)
            for position, response in enumerate(pair)
        )
        tokens = []
        for number in range(labelers):
            # No password: the simulated labelers use API tokens only.
            user = get_user_model().objects.create_user(username=f"bench-labeler-{number:02d}")
            ensure_membership(project=project, user=user, role=Role.LABELER)
            tokens.append(api_key_create(user=user, workspace=project.workspace, name="bench")[1])
    # Fresh planner statistics, as autovacuum would gather soon after a real import; with
    # none the planner sorts every open task for each assignment instead of using the index.
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return {"slug": project.slug, "tokens": tokens, "tasks": len(created)}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_gunicorn(*, env: dict, port: int, workers: int, threads: int, log: Path):
    command = [
        sys.executable, "-m", "gunicorn", "config.wsgi",
        "--bind", f"127.0.0.1:{port}",
        "--worker-class", "gthread", "--workers", str(workers), "--threads", str(threads),
        "--keep-alive", "75", "--backlog", "512", "--error-logfile", str(log),
    ]  # fmt: skip
    # Its own session, so stopping it stops its workers and nothing else.
    return subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def wait_until_serving(server: subprocess.Popen, port: int, log: Path, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"gunicorn exited early:\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(
                    b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                )
                if sock.recv(12).startswith(b"HTTP/1.1"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"gunicorn did not answer within {timeout:.0f} s")


def stop_gunicorn(server: subprocess.Popen) -> None:
    if server.poll() is not None:
        return
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=5)


# --- load generator ---------------------------------------------------------------------


class HttpConnection:
    """One keep-alive HTTP/1.1 connection; just enough of the protocol for this API."""

    def __init__(self, port: int, token: str):
        self.port = port
        self.headers = (
            f"Host: 127.0.0.1:{port}\r\nAuthorization: Token {token}\r\n"
            "Accept: application/json\r\n"
        ).encode()
        self.reader = self.writer = None

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def request(self, method: str, path: str, body: bytes | None = None):
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        head = f"{method} {path} HTTP/1.1\r\n".encode() + self.headers
        if body is not None:
            head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        self.writer.write(head + b"\r\n" + (body or b""))
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection")
        status = int(status_line.split(b" ", 2)[1])
        length, chunked, closing = None, False, False
        while (line := await self.reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                closing = b"close" in value.lower()
        if chunked:
            content = await self._read_chunks()
        elif length is not None:
            content = await self.reader.readexactly(length)
        elif status in (204, 304):
            content = b""
        else:
            content, closing = await self.reader.read(), True
        if closing:
            await self.close()
        return status, content

    async def _read_chunks(self) -> bytes:
        parts = []
        while size := int((await self.reader.readline()).split(b";")[0], 16):
            parts.append(await self.reader.readexactly(size))
            await self.reader.readline()
        await self.reader.readline()
        return b"".join(parts)


@dataclass
class LevelStats:
    clients: int
    seconds: float
    judgment_ms: list = field(default_factory=list)
    next_ms: list = field(default_factory=list)
    submit_ms: list = field(default_factory=list)
    errors: int = 0
    empty: int = 0
    error_examples: list = field(default_factory=list)
    app_cpu: float = 0.0  # CPU seconds in the measured window
    db_cpu: float = 0.0
    client_cpu: float = 0.0
    machine_cpu: float = 0.0  # share of all cores busy
    load_before: float = 0.0

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_examples) < 5:
            self.error_examples.append(what)


async def simulated_labeler(
    connection: HttpConnection,
    *,
    slug: str,
    stats: LevelStats,
    measure_from: float,
    deadline: float,
    rng: random.Random,
) -> None:
    next_path = f"/api/projects/{slug}/tasks/next/"
    submit_path = f"/api/projects/{slug}/judgments/"
    clock = time.perf_counter
    while (started := clock()) < deadline:
        try:
            status, content = await asyncio.wait_for(
                connection.request("GET", next_path), REQUEST_TIMEOUT_S
            )
            if status == 204:
                stats.empty += 1
                await asyncio.sleep(0.05)
                continue
            found = ASSIGNMENT_ID.search(content) if status == 200 else None
            if found is None:
                stats.error(f"next: HTTP {status} {content[:200]!r}")
                continue
            fetched = clock()
            body = json.dumps(
                {
                    "assignment_id": int(found.group(1)),
                    "client_id": str(uuid.uuid4()),
                    "choice": rng.choice(CHOICES),
                    "time_spent_ms": rng.randrange(800, 6000),
                }
            ).encode()
            status, content = await asyncio.wait_for(
                connection.request("POST", submit_path, body), REQUEST_TIMEOUT_S
            )
            if status != 201:
                stats.error(f"submit: HTTP {status} {content[:200]!r}")
                continue
        except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as failure:
            stats.error(f"{type(failure).__name__}: {failure}")
            await connection.close()
            continue
        finished = clock()
        if started >= measure_from and finished <= deadline:
            stats.judgment_ms.append((finished - started) * 1000)
            stats.next_ms.append((fetched - started) * 1000)
            stats.submit_ms.append((finished - fetched) * 1000)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def _process_cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0  # gone since it was listed
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if parent == pid:
                found.append(int(entry))
    return found


@dataclass
class CpuSnapshot:
    app: dict  # gunicorn worker pid -> CPU seconds
    db: dict  # PostgreSQL backend pid (bench database) -> CPU seconds
    client: float
    machine: tuple[int, int]


class CpuMeter:
    """CPU seconds spent by gunicorn's workers, by the bench database's PostgreSQL backends
    and by this load generator: figures that, unlike throughput, barely depend on what else
    the machine is running."""

    def __init__(self, *, server_pid: int, database_url: str):
        import psycopg2

        dsn, self.database = _admin_dsn(database_url)
        self.server_pid = server_pid
        self.connection = psycopg2.connect(dsn)
        self.connection.autocommit = True

    def snapshot(self) -> CpuSnapshot:
        with self.connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                [self.database],
            )
            backends = [row[0] for row in cursor.fetchall()]
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return CpuSnapshot(
            app={pid: _process_cpu_seconds(pid) for pid in _children(self.server_pid)},
            db={pid: _process_cpu_seconds(pid) for pid in backends},
            client=usage.ru_utime + usage.ru_stime,
            machine=_machine_ticks(),
        )

    def close(self) -> None:
        self.connection.close()


def _spent(before: dict, after: dict) -> float:
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


async def run_level(
    *,
    port: int,
    slug: str,
    tokens: list[str],
    clients: int,
    warmup: float,
    seconds: float,
    meter: CpuMeter,
) -> LevelStats:
    stats = LevelStats(clients=clients, seconds=seconds, load_before=os.getloadavg()[0])
    connections = [HttpConnection(port, token) for token in tokens[:clients]]
    start = time.perf_counter()
    measure_from, deadline = start + warmup, start + warmup + seconds
    labelers = [
        asyncio.create_task(
            simulated_labeler(
                connection,
                slug=slug,
                stats=stats,
                measure_from=measure_from,
                deadline=deadline,
                rng=random.Random(number),
            )
        )
        for number, connection in enumerate(connections)
    ]
    await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
    before = meter.snapshot()
    await asyncio.sleep(max(0.0, deadline - time.perf_counter()))
    after = meter.snapshot()
    await asyncio.gather(*labelers)
    for connection in connections:
        await connection.close()
    stats.app_cpu = _spent(before.app, after.app)
    stats.db_cpu = _spent(before.db, after.db)
    stats.client_cpu = after.client - before.client
    busy, total = (a - b for a, b in zip(after.machine, before.machine, strict=True))
    stats.machine_cpu = busy / total if total else 0.0
    return stats


# --- report -----------------------------------------------------------------------------


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def print_table(rows: list[LevelStats]) -> None:
    header = (
        f"{'clients':>7} {'judgments':>9} {'judg/s':>7} {'p50 ms':>7} {'p95 ms':>7} "
        f"{'p99 ms':>7} {'next p99':>8} {'post p99':>8} {'errors':>6} {'204s':>5} "
        f"{'app ms':>6} {'db ms':>6} {'load ms':>7} {'cpu max/s':>9} {'busy':>5} {'loadavg':>7}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        done = len(row.judgment_ms)
        per = 1000 / done if done else float("nan")
        cpu_ms = (row.app_cpu + row.db_cpu + row.client_cpu) * per
        print(
            f"{row.clients:>7} {done:>9} {done / row.seconds:>7.1f} "
            f"{percentile(row.judgment_ms, 0.50):>7.1f} {percentile(row.judgment_ms, 0.95):>7.1f} "
            f"{percentile(row.judgment_ms, 0.99):>7.1f} {percentile(row.next_ms, 0.99):>8.1f} "
            f"{percentile(row.submit_ms, 0.99):>8.1f} {row.errors:>6} {row.empty:>5} "
            f"{row.app_cpu * per:>6.1f} {row.db_cpu * per:>6.1f} {row.client_cpu * per:>7.1f} "
            f"{os.cpu_count() * 1000 / cpu_ms:>9.0f} {row.machine_cpu:>5.0%} "
            f"{row.load_before:>7.1f}"
        )
    print(
        "judgments: completed in the measured window. p50/p95/p99: one judgment, next + "
        "submit.\napp/db/load ms: CPU milliseconds per judgment spent by gunicorn, by "
        "PostgreSQL and by this load\ngenerator; cpu max/s: the judgments/s those would allow "
        f"on {os.cpu_count()} otherwise idle cores. busy: all cores, from\n/proc/stat. loadavg: "
        "1-minute load average as the level began; above the core count, other\nprocesses "
        "were competing for the cores and throughput and latency suffer."
    )
    for row in rows:
        for example in row.error_examples:
            print(f"  error at {row.clients} clients: {example}")


# --- main -------------------------------------------------------------------------------


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=POSTGRES_URL)
    parser.add_argument("--tasks", type=int, default=8000, help="comparison tasks to seed")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured time per level")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured start per level")
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)))
    parser.add_argument("--workers", type=int, default=3, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    parser.add_argument(
        "--async-commit",
        action="store_true",
        help="diagnosis: synchronous_commit=off on the bench database (commits skip the flush)",
    )
    parser.add_argument("--keep", action="store_true", help="leave server and DB up (debug)")
    parser.add_argument("--seed", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.seed:
        print(json.dumps(seed(tasks=args.tasks, labelers=LABELERS)))
        return 0
    levels = [int(level) for level in args.levels.split(",")]
    if max(levels) > LABELERS:
        raise SystemExit(f"At most {LABELERS} clients: one labeler each.")

    signal.signal(signal.SIGTERM, _raise_interrupt)
    data_dir = Path(tempfile.mkdtemp(prefix="bench-labeling-"))
    env = server_env(args.database_url, data_dir)
    server = None
    rows: list[LevelStats] = []
    try:
        began = time.monotonic()
        recreate_database(args.database_url, async_commit=args.async_commit)
        run_checked([sys.executable, "manage.py", "migrate", "--no-input"], env=env, what="migrate")
        seeded = json.loads(
            run_checked(
                [sys.executable, str(Path(__file__).resolve()), "--seed", f"--tasks={args.tasks}"],
                env=env,
                what="seeding",
            ).splitlines()[-1]
        )
        port = free_port()
        log = data_dir / "gunicorn.log"
        server = start_gunicorn(
            env=env, port=port, workers=args.workers, threads=args.threads, log=log
        )
        wait_until_serving(server, port, log)
        meter = CpuMeter(server_pid=server.pid, database_url=args.database_url)
        print(
            f"Labeling load: {seeded['tasks']} comparison tasks (overlap {OVERLAP}), "
            f"{LABELERS} labelers, PostgreSQL database {urlsplit(args.database_url).path[1:]}, "
            f"gunicorn gthread {args.workers} workers x {args.threads} threads on "
            f"127.0.0.1:{port}, DJANGO_DEBUG=0, synchronous_commit="
            f"{'off' if args.async_commit else 'on'}; ready after "
            f"{time.monotonic() - began:.0f} s.\n"
            f"Each client loops GET tasks/next/ then POST judgments/ on one keep-alive "
            f"connection; {args.warmup:.0f} s warm-up, then {args.seconds:.0f} s measured per "
            f"level.\nLatency is per judgment (next + submit); 'next p99' and 'post p99' are "
            f"the two requests alone. The load generator (one asyncio loop, raw HTTP/1.1) runs "
            f"on the same {os.cpu_count()} cores; its CPU use is the 'load ms' column.\n",
            flush=True,
        )
        for clients in levels:
            rows.append(
                asyncio.run(
                    run_level(
                        port=port,
                        slug=seeded["slug"],
                        tokens=seeded["tokens"],
                        clients=clients,
                        warmup=args.warmup,
                        seconds=args.seconds,
                        meter=meter,
                    )
                )
            )
            print(
                f"  {clients} clients: {len(rows[-1].judgment_ms) / args.seconds:.1f} judgments/s",
                flush=True,
            )
            if server.poll() is not None:
                raise SystemExit(f"gunicorn stopped during the run:\n{log.read_text()[-3000:]}")
        meter.close()
        print()
        print_table(rows)
        if args.keep:
            print(f"--keep: gunicorn pid {server.pid} on port {port}; {args.database_url}")
            server = None
            return 0
    except KeyboardInterrupt:
        print("Interrupted; cleaning up.", file=sys.stderr)
        return 130
    finally:
        if server is not None:
            stop_gunicorn(server)
        if not args.keep:
            drop_database(args.database_url)
            shutil.rmtree(data_dir, ignore_errors=True)

    headline = next((row for row in rows if row.clients == HEADLINE_CLIENTS), rows[-1])
    print(
        f"RESULT judgments_per_s={len(headline.judgment_ms) / headline.seconds:.1f} "
        f"p99_ms={percentile(headline.judgment_ms, 0.99):.1f} clients={headline.clients}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
