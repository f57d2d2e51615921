#!/usr/bin/env python3
"""`MyConsumer` drain rate of several broker builds in the same run, for a change's A/B.

    python3 bench/drain_ab.py BEFORE AFTER [MORE ...]          # SQLite, 5 rounds
    python3 bench/drain_ab.py BEFORE AFTER --store postgres --rounds 3

Each build gets one broker on a fresh store whose topic `MyProducer` fills once with COUNT
messages of 100 bytes (bench/workers/produce.py); then each round drains every broker in turn,
each time from a fresh process (bench/workers/consume.py: a new consumer, from offset 0, timed
from its first `get_next()`). The builds alternate within a round, so load from elsewhere falls
on all of them. Prints every drain, and each build's median with its ratio to the first
build's; asserts nothing. PostgreSQL: a throwaway server, or BENCH_DATABASE_URL /
--database-url.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from harness import Broker, Postgres, median, run_worker

TOPIC = "drain"
MESSAGE_BYTES = 100


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("builds", type=Path, nargs="+", help="myqueue-broker binaries")
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    args = parser.parse_args()
    builds = [build.resolve() for build in args.builds]
    for build in builds:
        if not build.is_file():
            parser.error(f"{build} is not a file")
    postgres = Postgres(args.database_url) if args.store == "postgres" else None
    rates: dict[int, list[float]] = {index: [] for index in range(len(builds))}
    try:
        with contextlib.ExitStack() as brokers:
            running = []
            for build in builds:
                broker = brokers.enter_context(Broker(args.store, postgres, binary=build))
                run_worker("produce", broker.address, TOPIC, str(args.count), str(MESSAGE_BYTES))
                running.append(broker)
            for round_number in range(1, args.rounds + 1):
                for index, broker in enumerate(running):
                    figures = run_worker("consume", broker.address, TOPIC, str(args.count))
                    rates[index].append(figures["rate"])
                    print(
                        f"round {round_number} build {index + 1} {figures['rate']:>12,.0f} msg/s",
                        flush=True,
                    )
    finally:
        if postgres is not None:
            postgres.close()
    print(f"\nmedians of {args.rounds} drains of {args.count:,} messages ({args.store}):")
    first = median(rates[0])
    for index, build in enumerate(builds):
        rate = median(rates[index])
        low, high = min(rates[index]), max(rates[index])
        print(
            f"build {index + 1} {rate:>12,.0f} msg/s ({low:,.0f}–{high:,.0f})"
            f"  {rate / first:.2f}×  {build}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
