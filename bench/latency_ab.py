#!/usr/bin/env python3
"""End-to-end latency of two broker builds in the same run, for a change's before and after.

    python3 bench/latency_ab.py BEFORE AFTER                 # both stores, 3 rounds of 10 s
    python3 bench/latency_ab.py BEFORE AFTER --stores sqlite --runs 5 --seconds 5

BEFORE and AFTER are `myqueue-broker` binaries (build the older commit in a `git worktree`
with its own CARGO_TARGET_DIR and copy its binary out first). Each round runs, for each store,
each build on a fresh store: bench/workers/latency.py, 1,000 messages/s from one process to a
consumer waiting in another (`linger_ms=0`, every message counted). The builds alternate, so
load from elsewhere falls on both. Prints every run and the medians of p50 and p99; asserts
nothing. PostgreSQL: a throwaway server, or BENCH_DATABASE_URL / --database-url.

--cpu adds where the CPU went, per message: the broker, the two client processes and every
`postgres` process on the machine (schedstat of each thread, as bench/cpu_split.py reads it,
over the run but its first and last second), each with the time it waited for a CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

from cpu_split import comm, parent, per_unit, postgres_pids, snapshot
from harness import Broker, Postgres, median, run_worker

PARTIES = ("broker", "clients", "postgres")


def descendants(root: int) -> list[int]:
    """The processes started (directly or not) by `root`."""
    parents = {int(p): parent(int(p)) for p in os.listdir("/proc") if p.isdigit()}
    found, frontier = [], [root]
    while frontier:
        children = [p for p, of in parents.items() if of in frontier]
        found += children
        frontier = children
    return found


def latency_run(broker: Broker, args: argparse.Namespace) -> dict[str, float]:
    """One latency run; with --cpu, also each party's CPU (and wait for one) per message."""
    worker = ("latency", broker.address, "latency", str(args.rate), str(args.seconds))
    if not args.cpu:
        return run_worker(*worker, timeout=args.seconds + 120)
    figures: dict[str, float] = {}
    load = threading.Thread(
        target=lambda: figures.update(run_worker(*worker, timeout=args.seconds + 120))
    )
    load.start()
    time.sleep(1.5)  # the worker's processes have started and are sending
    everyone = descendants(os.getpid())
    groups = {
        "broker": [broker.pid],
        "clients": [p for p in everyone if p != broker.pid and comm(p).startswith("python")],
        "postgres": postgres_pids(),
    }
    before, started = snapshot(groups), time.perf_counter()
    time.sleep(max(args.seconds - 2.5, 1.0))
    after, window = snapshot(groups), time.perf_counter() - started
    load.join()
    return {**figures, **per_unit(before, after, args.rate * window)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    parser.add_argument("--cpu", action="store_true", help="also the CPU per message")
    args = parser.parse_args()
    builds = {"before": args.before.resolve(), "after": args.after.resolve()}
    for build in builds.values():
        if not build.is_file():
            parser.error(f"{build} is not a file")
    stores = args.stores.split(",")
    postgres = Postgres(args.database_url) if "postgres" in stores else None
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    try:
        for run in range(1, args.runs + 1):
            for store in stores:
                for name, binary in builds.items():
                    with Broker(store, postgres, binary=binary) as broker:
                        figures = latency_run(broker, args)
                    results.setdefault((store, name), []).append(figures)
                    print(
                        f"run {run} {store:8} {name:6} p50 {figures['p50_ms']:.2f} ms"
                        f"  p99 {figures['p99_ms']:.2f} ms{cpu_line(figures)}",
                        flush=True,
                    )
    finally:
        if postgres is not None:
            postgres.close()
    print(f"\nmedians of {args.runs} runs, {args.rate:.0f} msg/s for {args.seconds:.0f} s:")
    for (store, name), runs in results.items():
        p50 = median([r["p50_ms"] for r in runs])
        p99 = median([r["p99_ms"] for r in runs])
        cpu = {key: median([r[key] for r in runs]) for key in runs[0] if key.endswith("_us")}
        print(f"{store:8} {name:6} p50 {p50:.2f} ms  p99 {p99:.2f} ms{cpu_line(cpu)}")
    return 0


def cpu_line(figures: dict[str, float]) -> str:
    """`; µs of CPU per message: broker 120 (wait 8), …`, or nothing without --cpu."""
    if "broker_cpu_us" not in figures:
        return ""
    parts = (
        f"{party} {figures[f'{party}_cpu_us']:.0f} (wait {figures[f'{party}_wait_us']:.0f})"
        for party in PARTIES
    )
    return "; µs of CPU a message: " + ", ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
