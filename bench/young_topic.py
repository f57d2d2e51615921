#!/usr/bin/env python3
"""What a young topic's partitions cost `MyProducer` on PostgreSQL.

    python3 bench/young_topic.py                       # 5 rounds, ~2 minutes
    python3 bench/young_topic.py --before OLD_BROKER   # and a build from before a change

Each round runs, on a fresh broker and database each, bench/workers/produce.py: 200,000
messages of 100 bytes to a topic registered just before, timed until `stop()` returns (the
loop of bench/run.py's scenario 2). Modes, alternating so that load from elsewhere falls on
all: `grown` (this build: partitions made as the topic grows), `made` (this build, with the
topic's partitions made to offset 1,000,000 before the producer starts: the ceiling) and,
with --before, `before` (that build, partitions made as the topic grows). Prints every run
with the spans of the topic's partitions at the end, then the medians; asserts nothing.
PostgreSQL: a throwaway server, or BENCH_DATABASE_URL / --database-url.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from harness import BROKER, Broker, Postgres, median, run_worker

TOPIC = "young"


def one_run(postgres: Postgres, binary: Path, made: bool, count: int) -> tuple[float, str]:
    with Broker("postgres", postgres, binary=binary) as broker:
        if made:
            broker.post("/producer/register", {"topic": TOPIC})
            postgres.psql(
                "SELECT myqueue_cover_partitions(id, 1000000, 1000000) FROM topics",
                broker.database_url,
            )
        rate = run_worker("produce", broker.address, TOPIC, str(count), "100")["rate"]
        spans = postgres.psql(
            "SELECT string_agg((end_offset - first_offset)::text, ' ' ORDER BY first_offset) "
            "FROM message_partitions",
            broker.database_url,
        )
    return rate, spans.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="a broker binary from before a change")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    args = parser.parse_args()
    modes = {"grown": (BROKER, False), "made": (BROKER, True)}
    if args.before is not None:
        if not args.before.is_file():
            parser.error(f"{args.before} is not a file")
        modes["before"] = (args.before.resolve(), False)
    postgres = Postgres(args.database_url)
    rates: dict[str, list[float]] = {mode: [] for mode in modes}
    try:
        for run in range(1, args.runs + 1):
            for mode, (binary, made) in modes.items():
                rate, spans = one_run(postgres, binary, made, args.count)
                rates[mode].append(rate)
                print(f"run {run} {mode:6} {rate:9,.0f} msg/s  partitions: {spans}", flush=True)
    finally:
        postgres.close()
    print(f"\nmedians of {args.runs} runs, {args.count:,} messages:")
    ceiling = median(rates["made"])
    for mode, runs in rates.items():
        rate = median(runs)
        print(f"{mode:6} {rate:9,.0f} msg/s  ({rate / ceiling:.2f} of made)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
