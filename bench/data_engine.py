"""The data engine at scale: import 1,000,000 preference rows, build a version with exact
deduplication and PII scrubbing, and export it, on SQLite and on PostgreSQL.

Runs with no arguments (``--rows N`` for a smaller run). It writes a synthetic TRL
preference file (standard form; one row in 50 repeats an earlier row, one in 20 holds an
e-mail address or a phone number), then for each database runs the three management
commands a researcher would, each in its own process so that its peak memory is its own:

    manage.py import_dataset rows.jsonl --project bench --format trl --source synthetic
    manage.py dataset_create --project bench --name bench --kind preference \
        --source synthetic --dedupe exact --pii scrub
    manage.py dataset_export --project bench --name bench --format dpo --output out.jsonl

It prints rows/s and peak RSS per step and database, and ends with the PostgreSQL figures
(the lower of the two where SQLite is missing):

    RESULT import_rows_per_s=N curate_rows_per_s=N export_rows_per_s=N
           export_peak_rss_mb=N rows=1000000

Rows per second count the file's rows for import and curation, and the rows exported for
export. PostgreSQL is the server on 127.0.0.1:5432 (user postgres, trust auth, as for
``make test``): the database ``bench_data_engine`` is created and dropped again.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/bench_data_engine"
WORDS = [
    "model",
    "answer",
    "question",
    "data",
    "train",
    "reward",
    "policy",
    "label",
    "human",
    "judge",
    "prompt",
    "response",
    "better",
    "worse",
    "clear",
    "short",
    "long",
    "helpful",
    "honest",
    "harmless",
    "kind",
    "simple",
    "explain",
    "reason",
]


def synthetic_file(path: Path, rows: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    written: list[str] = []
    with path.open("w", encoding="utf-8") as stream:
        for index in range(rows):
            if written and index % 50 == 49:
                line = written[rng.randrange(len(written))]
            else:
                prompt = " ".join(rng.choices(WORDS, k=12)) + f" #{index}?"
                if index % 20 == 7:
                    prompt += (
                        f" Write to user{index}@example.com or call +45 70 12 34 {index % 90 + 10}."
                    )
                chosen = " ".join(rng.choices(WORDS, k=30))
                rejected = " ".join(rng.choices(WORDS, k=25))
                line = json.dumps({"prompt": prompt, "chosen": chosen, "rejected": rejected})
                if len(written) < 10_000:
                    written.append(line)
            stream.write(line + "\n")


# Runs manage.py in a child that prints its own peak RSS as it exits.
CHILD = (
    "import atexit, resource, runpy, sys\n"
    "atexit.register(lambda: sys.stderr.write("
    "f'\\nPEAK_RSS_KB={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}\\n'))\n"
    "sys.argv = ['manage.py', *sys.argv[1:]]\n"
    "runpy.run_path('manage.py', run_name='__main__')\n"
)


def run_step(args: list[str], env: dict) -> tuple[float, float, str]:
    """(seconds, peak RSS MB, stdout) of one manage.py command in its own process."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *args], cwd=REPO, env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    peak_kb = int(done.stderr.rsplit("PEAK_RSS_KB=", 1)[1].split()[0])
    return seconds, peak_kb / 1024, done.stdout


def recreate_postgres() -> bool:
    try:
        import psycopg2
    except ImportError:
        return False
    try:
        connection = psycopg2.connect("dbname=postgres user=postgres host=127.0.0.1")
    except psycopg2.OperationalError as error:
        print(f"PostgreSQL unavailable ({error}); SQLite only.")
        return False
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("DROP DATABASE IF EXISTS bench_data_engine WITH (FORCE)")
        cursor.execute("CREATE DATABASE bench_data_engine")
    connection.close()
    return True


def drop_postgres() -> None:
    import psycopg2

    connection = psycopg2.connect("dbname=postgres user=postgres host=127.0.0.1")
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("DROP DATABASE IF EXISTS bench_data_engine WITH (FORCE)")
    connection.close()


def bench_database(label: str, database_url: str, data: Path, rows_file: Path, rows: int):
    workdir = data / label
    workdir.mkdir()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DATA_DIR": str(workdir),
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": "bench-only",
    }
    run_step(["migrate", "--no-input", "-v0"], env)
    run_step(
        [
            "shell",
            "-c",
            "from annotation.models import Project; "
            "Project.objects.create(slug='bench', name='Bench')",
        ],
        env,
    )
    results = {}
    seconds, peak, _ = run_step(
        [
            "import_dataset",
            str(rows_file),
            "--project",
            "bench",
            "--format",
            "trl",
            "--source",
            "synthetic",
        ],
        env,
    )
    results["import"] = (rows / seconds, peak, rows)
    seconds, peak, out = run_step(
        [
            "dataset_create",
            "--project",
            "bench",
            "--name",
            "bench",
            "--kind",
            "preference",
            "--source",
            "synthetic",
            "--dedupe",
            "exact",
            "--pii",
            "scrub",
        ],
        env,
    )
    results["curate"] = (rows / seconds, peak, rows)
    kept = int(out.split(": ", 1)[1].split(" ", 1)[0])
    output = workdir / "export.jsonl"
    seconds, peak, _ = run_step(
        [
            "dataset_export",
            "--project",
            "bench",
            "--name",
            "bench",
            "--format",
            "dpo",
            "--output",
            str(output),
        ],
        env,
    )
    exported = sum(1 for _ in output.open("rb"))
    results["export"] = (exported / seconds, peak, exported)
    print(f"  {label}: {out.strip().splitlines()[0]}")
    return results, kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--sqlite-only", action="store_true")
    options = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="bench-data-engine-"))
    try:
        rows_file = data / "rows.jsonl"
        started = time.perf_counter()
        synthetic_file(rows_file, options.rows)
        print(f"wrote {options.rows} rows in {time.perf_counter() - started:.1f} s")
        table = {}
        table["sqlite"], _ = bench_database(
            "sqlite", f"sqlite:///{data / 'sqlite' / 'db.sqlite3'}", data, rows_file, options.rows
        )
        if not options.sqlite_only and recreate_postgres():
            try:
                table["postgres"], _ = bench_database(
                    "postgres", POSTGRES_URL, data, rows_file, options.rows
                )
            finally:
                drop_postgres()
        print(f"\n{'database':<10} {'step':<8} {'rows':>9} {'rows/s':>9} {'peak RSS MB':>12}")
        for database, results in table.items():
            for step, (rate, peak, count) in results.items():
                print(f"{database:<10} {step:<8} {count:>9} {rate:>9.0f} {peak:>12.0f}")
        headline = table.get("postgres") or table["sqlite"]
        print(
            f"RESULT import_rows_per_s={headline['import'][0]:.0f} "
            f"curate_rows_per_s={headline['curate'][0]:.0f} "
            f"export_rows_per_s={headline['export'][0]:.0f} "
            f"export_peak_rss_mb={headline['export'][1]:.0f} rows={options.rows}"
        )
    finally:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
