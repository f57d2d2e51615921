#!/usr/bin/env python3
"""What scraping GET /metrics every second costs scenario 1 (single-message produce over 64
keep-alive connections, wrk), measured on one broker in one run.

    python3 bench/metrics_overhead.py [--runs 5] [--seconds 10] [--stores sqlite,postgres]

For each store: one broker, a warm-up, then `--runs` pairs of wrk runs, alternating which
goes first: one with nobody scraping, one with a thread scraping /metrics every second (as a
Prometheus server with a 1 s interval would). Prints each run and the medians; the overhead is
1 − median(scraped) / median(not scraped). The metrics are always recorded (they cannot be
turned off): this measures what a scraper adds. Speed is reported, never asserted.

Needs the release broker (cargo build --release -p broker) and wrk; PostgreSQL as
bench/run.py finds it (--database-url, BENCH_DATABASE_URL, or a throwaway server).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Broker, Postgres, median, wrk

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self needs 3.11; annotations are not evaluated

MESSAGE = "x" * 100


def post_script(path: str, body: str) -> str:
    return f"""
wrk.method = "POST"
wrk.path = "{path}"
wrk.headers["Content-Type"] = "application/json"
wrk.body = {json.dumps(body)}
"""


class Scraper:
    """GET /metrics every second until stopped; counts scrapes and their sizes."""

    def __init__(self, url: str) -> None:
        self.url = url + "/metrics"
        self.stop = threading.Event()
        self.scrapes = 0
        self.bytes = 0
        self.thread = threading.Thread(target=self.run)

    def run(self) -> None:
        while not self.stop.wait(1.0):
            response = requests.get(self.url, timeout=10)
            response.raise_for_status()
            self.scrapes += 1
            self.bytes = len(response.content)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def measure(store: str, postgres: Postgres, runs: int, seconds: int) -> dict:
    with Broker(store, postgres) as broker:
        producer_id = broker.post("/producer/register", {"topic": "bench"})["producer_id"]
        body = json.dumps({"topic": "bench", "producer_id": producer_id, "message": MESSAGE})
        script = post_script("/producer/produce", body)
        wrk(broker.url, script, 64, min(seconds, 5))  # warm-up
        plain: list[float] = []
        scraped: list[float] = []
        size = 0
        for i in range(runs):
            for with_scraper in [False, True] if i % 2 == 0 else [True, False]:
                if with_scraper:
                    with Scraper(broker.url) as scraper:
                        rps = wrk(broker.url, script, 64, seconds)["rps"]
                    size = scraper.bytes
                    scraped.append(rps)
                else:
                    rps = wrk(broker.url, script, 64, seconds)["rps"]
                    plain.append(rps)
                print(
                    f"[{store}] run {i + 1}: {'scraped' if with_scraper else 'not scraped'}"
                    f" {rps:,.0f} req/s",
                    file=sys.stderr,
                    flush=True,
                )
    return {
        "not_scraped": plain,
        "scraped": scraped,
        "median_not_scraped": median(plain),
        "median_scraped": median(scraped),
        "overhead": 1 - median(scraped) / median(plain),
        "metrics_bytes": size,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    args = parser.parse_args()
    postgres = Postgres(args.database_url)
    started = time.time()
    try:
        results = {
            store: measure(store, postgres, args.runs, args.seconds)
            for store in args.stores.split(",")
        }
    finally:
        postgres.close()
    print("| store | not scraped, median req/s | scraped every 1 s, median req/s | overhead |")
    print("| --- | --- | --- | --- |")
    for store, r in results.items():
        print(
            f"| {store} | {r['median_not_scraped']:,.0f} | {r['median_scraped']:,.0f} "
            f"| {r['overhead'] * 100:.1f} % |"
        )
    print(json.dumps(results), file=sys.stderr)
    print(f"{time.time() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
