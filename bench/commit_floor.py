#!/usr/bin/env python3
"""What a store's durable commit of one message costs alone, at the pace of the latency
workload: the floor that each store puts under myqueue's send→receive p50.

    python3 bench/commit_floor.py                    # every form, 5 runs of 3,000 commits
    python3 bench/commit_floor.py --forms sqlite,fsync-append --runs 3

One commit per message, 1,000 a second (bench/peers.py's latency workload), each written as
the broker's append group of one message writes it, and timed around the commit in this
process: no broker, no HTTP, no thread hand-over. Forms:
  sqlite          Python's sqlite3 with the broker's settings (WAL, synchronous=FULL, its
                  autocheckpoint): BEGIN IMMEDIATE, the message's INSERT, its topic's and its
                  producer's UPDATE, COMMIT; on a fresh database, so the WAL file grows as a
                  fresh broker's does
  sqlite-reused   the same once the WAL file exists at its full size (SQLite starts it over
                  after a checkpoint: a broker that has run a while overwrites it)
  postgres        psycopg: the INSERT and both UPDATEs in one statement in autocommit, one
                  round trip as the broker's small groups take; synchronous_commit on (set
                  for the session) and fsync on (the throwaway server's default; a server
                  named by BENCH_DATABASE_URL / --database-url must have it on too)
  fsync-append    os.fsync after 12 KiB written at a file's end (three 4 KiB WAL frames)
  fsync-reused    the same over 12 KiB already written
Prints p50 and p99 of each run and their medians; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from harness import Postgres, median

RATE = 1000.0
PAYLOAD = b"x" * 100
PAGE = b"\0" * 4096
WAL_FRAME = 24 + len(PAGE)  # a WAL frame: its header, then the page
# The broker's wal_autocheckpoint (store/sqlite.rs): the WAL file's size under steady writes.
WAL_PAGES = 10_000
FORMS = ("sqlite", "sqlite-reused", "postgres", "fsync-append", "fsync-reused")

Commit = Callable[[int], None]


def paced(count: int, commit: Commit) -> list[float]:
    """Times `commit(i)` for i in 0..count, each started on its due time at RATE a second."""
    took = []
    start = time.perf_counter()
    for i in range(count):
        pause = start + i / RATE - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        began = time.perf_counter()
        commit(i)
        took.append((time.perf_counter() - began) * 1e3)
    return sorted(took)


def sqlite_commits(directory: Path, reused: bool) -> tuple[Commit, Callable[[], None]]:
    db = sqlite3.connect(directory / "floor.sqlite3", isolation_level=None)
    for pragma in (
        "journal_mode = WAL",
        "synchronous = FULL",
        f"wal_autocheckpoint = {WAL_PAGES}",
        "journal_size_limit = 67108864",
    ):
        db.execute(f"PRAGMA {pragma}")
    db.execute(
        "CREATE TABLE messages (log_offset INTEGER PRIMARY KEY, producer_id INTEGER, "
        "stored_ms INTEGER, payload BLOB)"
    )
    db.execute("CREATE TABLE topics (id INTEGER PRIMARY KEY, next_offset INTEGER, bytes INTEGER)")
    db.execute("CREATE TABLE producers (id INTEGER PRIMARY KEY, next_sequence INTEGER)")
    db.execute("INSERT INTO topics VALUES (1, 0, 0)")
    db.execute("INSERT INTO producers VALUES (1, 0)")
    if reused:
        # Written through once, as SQLite leaves it when it starts the WAL over: the frames
        # past a new header's are not valid, so zeros serve (SQLite reuses its file the same way).
        wal = directory / "floor.sqlite3-wal"
        with wal.open("r+b") as f:
            f.seek(0, os.SEEK_END)
            f.write(b"\0" * max(0, WAL_PAGES * WAL_FRAME - f.tell()))
            f.flush()
            os.fsync(f.fileno())

    def commit(i: int) -> None:
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO messages VALUES (?, 1, ?, ?)", (i, i, PAYLOAD))
        db.execute("UPDATE topics SET next_offset = ?, bytes = bytes + 100 WHERE id = 1", (i + 1,))
        db.execute("UPDATE producers SET next_sequence = ? WHERE id = 1", (i + 1,))
        db.execute("COMMIT")

    return commit, db.close


def postgres_commits(url: str) -> tuple[Commit, Callable[[], None]]:
    import psycopg

    db = psycopg.connect(url, autocommit=True)
    db.execute("SET synchronous_commit = on")
    db.execute(
        "CREATE TABLE messages (log_offset bigint PRIMARY KEY, producer_id bigint, "
        "stored_ms bigint, payload bytea)"
    )
    db.execute("CREATE TABLE topics (id bigint PRIMARY KEY, next_offset bigint, bytes bigint)")
    db.execute("CREATE TABLE producers (id bigint PRIMARY KEY, next_sequence bigint)")
    db.execute("INSERT INTO topics VALUES (1, 0, 0)")
    db.execute("INSERT INTO producers VALUES (1, 0)")
    statement = (
        "WITH m AS (INSERT INTO messages VALUES (%(i)s, 1, %(i)s, %(payload)s)), "
        "t AS (UPDATE topics SET next_offset = %(next)s, bytes = bytes + 100 WHERE id = 1) "
        "UPDATE producers SET next_sequence = %(next)s WHERE id = 1"
    )

    def commit(i: int) -> None:
        db.execute(statement, {"i": i, "next": i + 1, "payload": PAYLOAD}, prepare=True)

    return commit, db.close


def fsync_commits(directory: Path, reused: bool) -> tuple[Commit, Callable[[], None]]:
    fd = os.open(directory / "floor.fsync", os.O_RDWR | os.O_CREAT)
    if reused:
        os.write(fd, PAGE * 3 * WAL_PAGES)
        os.fsync(fd)

    def commit(i: int) -> None:
        for page in range(3):
            os.pwrite(fd, PAGE, (i * 3 + page) * len(PAGE))
        os.fsync(fd)

    return commit, lambda: os.close(fd)


def one_run(form: str, count: int, postgres: Postgres | None) -> list[float]:
    if form == "postgres":
        assert postgres is not None
        url = postgres.fresh_database()
        try:
            return timed(count, *postgres_commits(url))
        finally:
            postgres.drop_database(url)
    with tempfile.TemporaryDirectory(prefix="myqueue-floor-") as name:
        if form.startswith("sqlite"):
            return timed(count, *sqlite_commits(Path(name), reused=form == "sqlite-reused"))
        return timed(count, *fsync_commits(Path(name), reused=form == "fsync-reused"))


def timed(count: int, commit: Commit, close: Callable[[], None]) -> list[float]:
    try:
        return paced(count, commit)
    finally:
        close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forms", default=",".join(FORMS))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    args = parser.parse_args()
    forms = [f for f in args.forms.split(",") if f]
    if unknown := set(forms) - set(FORMS):
        parser.error(f"unknown form(s) {', '.join(sorted(unknown))}; known: {', '.join(FORMS)}")
    postgres = Postgres(args.database_url) if "postgres" in forms else None
    figures: dict[str, list[tuple[float, float]]] = {form: [] for form in forms}
    try:
        # Forms alternate within each run, so a burst of load elsewhere falls on all of them.
        for run in range(1, args.runs + 1):
            for form in forms:
                took = one_run(form, args.count, postgres)
                p50, p99 = took[len(took) // 2], took[int(len(took) * 0.99)]
                figures[form].append((p50, p99))
                print(f"run {run} {form:14} p50 {p50:.3f} ms  p99 {p99:.3f} ms", flush=True)
    finally:
        if postgres is not None:
            postgres.close()
    print(f"\nmedians of {args.runs} runs of {args.count:,} commits at {RATE:,.0f}/s:")
    for form, runs in figures.items():
        p50 = median([r[0] for r in runs])
        p99 = median([r[1] for r in runs])
        print(f"{form:14} p50 {p50:.3f} ms  p99 {p99:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
