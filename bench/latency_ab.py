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
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from harness import Broker, Postgres, median, run_worker


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
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
                        figures = run_worker(
                            "latency",
                            broker.address,
                            "latency",
                            str(args.rate),
                            str(args.seconds),
                            timeout=args.seconds + 120,
                        )
                    results.setdefault((store, name), []).append(figures)
                    print(
                        f"run {run} {store:8} {name:6} p50 {figures['p50_ms']:.2f} ms"
                        f"  p99 {figures['p99_ms']:.2f} ms",
                        flush=True,
                    )
    finally:
        if postgres is not None:
            postgres.close()
    print(f"\nmedians of {args.runs} runs, {args.rate:.0f} msg/s for {args.seconds:.0f} s:")
    for (store, name), runs in results.items():
        p50 = median([r["p50_ms"] for r in runs])
        p99 = median([r["p99_ms"] for r in runs])
        print(f"{store:8} {name:6} p50 {p50:.2f} ms  p99 {p99:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
