#!/usr/bin/env python3
"""PostgreSQL group commits: binary COPY against the multi-row INSERT the broker uses, A/B.

    python3 bench/copy_vs_insert.py            # 3 rounds of 200,000 rows per form and size
    python3 bench/copy_vs_insert.py --quick    # 1 round of 20,000 rows

The broker writes a group of appends as one INSERT over arrays (`INSERT INTO messages ...
SELECT ... FROM UNNEST($n::bytea[]) WITH ORDINALITY`, a bound parameter per column, prepared
once); COPY is PostgreSQL's bulk path. Both write the same rows (100-byte payloads) into the
broker's own schema: a database migrated by a real broker, whose topic has partitions made
ahead for every offset written (`myqueue_cover_partitions`), so rows are routed through the
same two levels of partitions as in production. Each group is a transaction that commits with
`synchronous_commit` on (an fsync), as a group commit does; group sizes 100 rows (a busy
broker's single-message appends) and 2,000 rows (a producer's batches). Forms and sizes
alternate within each round, each on a fresh topic.

Reported per form: rows a second (wall time, client included: psycopg encodes both in C) and
the PostgreSQL backend's CPU per row (from /proc, so only with a throwaway server started here,
not with --database-url), medians of the rounds. Figures go to bench/results/copy_vs_insert.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import ROOT, Broker, Postgres, cpu_seconds, median
from run import machine

try:
    import psycopg
except ImportError:  # pragma: no cover - the command says what to do
    sys.exit("bench/copy_vs_insert.py needs psycopg 3: python3 -m pip install 'psycopg[binary]'")

PAYLOAD = b"x" * 100
PRODUCER = 1
INSERT = (
    "INSERT INTO messages (topic_id, log_offset, producer_id, stored_ms, payload) "
    "SELECT %s, %s + m.n - 1, %s, %s, m.payload "
    "FROM UNNEST(%s::bytea[]) WITH ORDINALITY AS m(payload, n)"
)
COPY = (
    "COPY messages (topic_id, log_offset, producer_id, stored_ms, payload) "
    "FROM STDIN (FORMAT BINARY)"
)


def new_topic(conn: psycopg.Connection, name: str, rows: int) -> int:
    """A topic with partitions made for `rows` offsets (as the retention pass makes them)."""
    with conn.transaction():
        topic_id = conn.execute(
            "INSERT INTO topics (name, created_ms) VALUES (%s, 0) RETURNING id", (name,)
        ).fetchone()[0]
    with conn.transaction():
        conn.execute("SELECT myqueue_cover_partitions(%s, %s, %s)", (topic_id, rows, 50_000))
    return topic_id


def write_insert(conn: psycopg.Connection, topic_id: int, base: int, size: int) -> None:
    with conn.transaction():
        conn.execute(INSERT, (topic_id, base, PRODUCER, 0, [PAYLOAD] * size), prepare=True)


def write_copy(conn: psycopg.Connection, topic_id: int, base: int, size: int) -> None:
    with conn.transaction(), conn.cursor().copy(COPY) as copy:
        copy.set_types(["int8", "int8", "int8", "int8", "bytea"])
        for offset in range(base, base + size):
            copy.write_row((topic_id, offset, PRODUCER, 0, PAYLOAD))


FORMS = {"insert": write_insert, "copy": write_copy}


def one_run(conn, backend_pid: int | None, form: str, size: int, rows: int, tag: str) -> dict:
    topic_id = new_topic(conn, f"ab-{tag}-{form}-{size}", rows)
    write = FORMS[form]
    cpu_before = cpu_seconds(backend_pid) if backend_pid else 0.0
    started = time.perf_counter()
    for base in range(0, rows, size):
        write(conn, topic_id, base, min(size, rows - base))
    seconds = time.perf_counter() - started
    cpu = (cpu_seconds(backend_pid) - cpu_before) if backend_pid else None
    stored = conn.execute("SELECT count(*) FROM messages WHERE topic_id = %s", (topic_id,))
    assert stored.fetchone()[0] == rows, "every row stored"
    return {
        "rows_per_second": rows / seconds,
        "backend_cpu_us_per_row": cpu * 1e6 / rows if cpu is not None else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round of 20,000 rows")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--database-url", help="a PostgreSQL server instead of a throwaway")
    args = parser.parse_args()
    rounds, rows = (1, 20_000) if args.quick else (args.rounds, args.rows)
    sizes = [100, 2000]
    postgres = Postgres(args.database_url)
    runs: dict[str, list[dict]] = {f"{form} {size}": [] for size in sizes for form in FORMS}
    url = ""
    try:
        # A real broker migrates the database (schema, partition functions), then stops.
        with Broker("postgres", postgres, keep_database=True) as broker:
            url = broker.database_url
        with psycopg.connect(url, autocommit=True) as conn:
            local = postgres.directory is not None
            backend_pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0] if local else None
            conn.execute("SET plan_cache_mode = force_custom_plan")  # as the broker's sessions
            for round_no in range(rounds):
                order = list(FORMS) if round_no % 2 == 0 else list(reversed(FORMS))
                for size in sizes:
                    for form in order:
                        result = one_run(conn, backend_pid, form, size, rows, f"r{round_no}")
                        runs[f"{form} {size}"].append(result)
                        cpu = result["backend_cpu_us_per_row"]
                        print(
                            f"round {round_no + 1} {form:6} groups of {size:5}: "
                            f"{result['rows_per_second']:,.0f} rows/s"
                            + (f", backend CPU {cpu:.2f} µs/row" if cpu is not None else ""),
                            flush=True,
                        )
    finally:
        if url:
            postgres.drop_database(url)
        postgres.close()
    summary = {
        name: {
            "rows_per_second": median([r["rows_per_second"] for r in results]),
            "backend_cpu_us_per_row": (
                median([r["backend_cpu_us_per_row"] for r in results])
                if results and results[0]["backend_cpu_us_per_row"] is not None
                else None
            ),
        }
        for name, results in runs.items()
    }
    results = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "rounds": rounds,
        "rows": rows,
        "payload_bytes": len(PAYLOAD),
        "runs": runs,
        "median": summary,
    }
    name = "copy_vs_insert-quick.json" if args.quick else "copy_vs_insert.json"
    out = ROOT / "bench" / "results" / name
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(
        "\n| group | INSERT rows/s | COPY rows/s | COPY/INSERT | backend CPU µs/row, INSERT / COPY |"
    )
    print("| --- | --- | --- | --- | --- |")
    for size in sizes:
        ins, cop = summary[f"insert {size}"], summary[f"copy {size}"]
        cpu = (
            f"{ins['backend_cpu_us_per_row']:.2f} / {cop['backend_cpu_us_per_row']:.2f}"
            if ins["backend_cpu_us_per_row"] is not None
            else "not measured"
        )
        print(
            f"| {size} rows | {ins['rows_per_second']:,.0f} | {cop['rows_per_second']:,.0f} | "
            f"{cop['rows_per_second'] / ins['rows_per_second']:.2f} | {cpu} |"
        )
    print(f"figures: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
