#!/usr/bin/env python3
"""myqueue benchmarks: every scenario of docs/BENCHMARKS.md, on SQLite and PostgreSQL.

    python3 bench/run.py            # full: medians of 5 runs, ~15 minutes; writes
                                    # bench/results/latest.json and docs/bench-throughput.png
    python3 bench/run.py --quick    # seconds per scenario, one run: CI runs this so it never rots

Needs the release broker (cargo build --release -p broker), the installed package
(pip install .), wrk and PostgreSQL (a throwaway server is started unless --database-url or
BENCH_DATABASE_URL names one). Loopback only; every run is bounded in count and time. Speed
is reported, never asserted: the exit code is 0 whatever the figures are.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import ROOT, Broker, Postgres, cpu_seconds, median, run_worker, wrk

MESSAGE = "x" * 100  # every scenario uses 100-byte messages


class Settings:
    def __init__(self, quick: bool, runs: int) -> None:
        self.quick = quick
        self.runs = 1 if quick else runs
        self.http_seconds = 2 if quick else 10
        self.warmup_seconds = 1 if quick else 5
        # 200,000 messages, as issue 13's targets: a short run, where start-up and stop() count.
        self.producer_count = 50_000 if quick else 200_000
        self.drain_count = 50_000 if quick else 200_000
        # For A/B runs against an older broker (see bench/workers/produce.py).
        self.max_in_flight: list[str] = []
        self.latency_seconds = 2 if quick else 10
        # Longer than the client's long poll (20 s), so that every consumer polls again inside
        # the measured window.
        self.idle_seconds = 3 if quick else 45
        self.idle_consumers = 20 if quick else 100


def post_script(path: str, body: str) -> str:
    return f"""
wrk.method = "POST"
wrk.path = "{path}"
wrk.headers["Content-Type"] = "application/json"
wrk.body = {json.dumps(body)}
"""


def consume_script(topic: str, consumer_ids: list[int]) -> str:
    ids = ", ".join(str(i) for i in consumer_ids)
    return f"""
local ids = {{{ids}}}
local n = 0
request = function()
  n = n + 1
  local id = ids[(n % #ids) + 1]
  return wrk.format("GET", "/consumer/consume?topic={topic}&consumer_id=" .. id)
end
"""


# ---------------------------------------------------------------------------------------------
# Scenarios: each returns a dict of figures for one store
# ---------------------------------------------------------------------------------------------


def http_produce(s: Settings, broker: Broker) -> dict:
    """1. The assignment's single-message produce, 64 keep-alive connections, vs POST /noop."""
    producer_id = broker.post("/producer/register", {"topic": "bench"})["producer_id"]
    body = json.dumps({"topic": "bench", "producer_id": producer_id, "message": MESSAGE})
    noop, produce, p50, p99, errors = [], [], [], [], 0
    # Warm-up, not measured: the first seconds of a new store grow its files (SQLite's WAL),
    # which costs more than the steady state.
    wrk(broker.url, post_script("/producer/produce", body), 64, s.warmup_seconds)
    for _ in range(s.runs):
        noop.append(wrk(broker.url, post_script("/noop", body), 64, s.http_seconds)["rps"])
        r = wrk(broker.url, post_script("/producer/produce", body), 64, s.http_seconds)
        produce.append(r["rps"])
        p50.append(r.get("p50_ms", 0))
        p99.append(r.get("p99_ms", 0))
        errors += r["non_2xx"] + r["socket_errors"]
    return {
        "rate": median(produce),
        "baseline": median(noop),
        "ratio": median(produce) / median(noop),
        "p50_ms": median(p50),
        "p99_ms": median(p99),
        "errors": errors,
        "runs": {"produce": produce, "noop": noop},
    }


def insert_baseline(s: Settings, broker: Broker, postgres: Postgres) -> float:
    """What the database itself takes: 100-row INSERT transactions from 8 clients, rows/s.

    PostgreSQL: pgbench with prepared statements (`-M prepared -c 8 -j 2`), one
    `INSERT ... VALUES` of 100 rows per transaction, on a fresh database after a CHECKPOINT
    (so that neither the producer's rows nor its dirty pages weigh on it): the honest ceiling
    of plain INSERTs, which the producer's group commits are compared with.
    SQLite: the same transactions from 8 threads on a fresh file (bench/workers/sqlite_baseline.py).
    """
    seconds = s.http_seconds
    if broker.store == "postgres":
        url = postgres.fresh_database()
        postgres.psql(
            "CREATE TABLE bench_rows (id BIGSERIAL PRIMARY KEY, "
            "producer_id BIGINT, stored_ms BIGINT, payload BYTEA)",
            url,
        )
        postgres.psql("CHECKPOINT")
        values = ", ".join(f"(1, 0, '\\x{'78' * 100}'::bytea)" for _ in range(100))
        with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
            f.write(f"INSERT INTO bench_rows (producer_id, stored_ms, payload) VALUES {values};\n")
            script = f.name
        try:
            command = ["pgbench", "-n", "-M", "prepared", "-c", "8", "-j", "2"]
            out = subprocess.run(
                [*command, "-T", str(seconds), "-f", script, url],
                check=True,
                capture_output=True,
                text=True,
                timeout=seconds + 60,
            ).stdout
        finally:
            os.unlink(script)
            postgres.drop_database(url)
        tps = float(next(line for line in out.splitlines() if line.startswith("tps")).split()[2])
        return tps * 100
    with tempfile.TemporaryDirectory() as directory:
        return run_worker("sqlite_baseline", directory, "8", str(seconds))["rows_per_s"]


def python_producer(s: Settings, broker: Broker, postgres: Postgres) -> dict:
    """2. MyProducer from one Python process, until stop() returns, vs plain INSERTs (the
    prepared 100-row INSERT baseline measured right after, in the same run)."""
    rates, rss = [], []
    for run in range(s.runs):
        r = run_worker(
            "produce",
            broker.address,
            f"produce-{run}",
            str(s.producer_count),
            "100",
            *s.max_in_flight,
        )
        rates.append(r["rate"])
        rss.append(r["peak_rss_mb"])
    baseline = insert_baseline(s, broker, postgres)
    return {
        "rate": median(rates),
        "baseline": baseline,
        "ratio": median(rates) / baseline,
        "producer_peak_rss_mb": max(rss),
        "runs": rates,
    }


def python_consumer(s: Settings, broker: Broker) -> dict:
    """3. MyConsumer.get_next() draining a topic of COUNT messages."""
    run_worker("produce", broker.address, "drain", str(s.drain_count), "100")
    rates = [
        run_worker("consume", broker.address, "drain", str(s.drain_count))["rate"]
        for _ in range(s.runs)
    ]
    return {"rate": median(rates), "runs": rates}


def http_consume(s: Settings, broker: Broker) -> dict:
    """4. The assignment's single-message consume, 64 connections over 64 consumers, vs no-op."""
    backlog = 5_000 if s.quick else 40_000
    run_worker("produce", broker.address, "consume", str(backlog), "100")
    noop, consume, p99, errors = [], [], [], 0
    body = json.dumps({"topic": "consume", "consumer_id": 1})
    warm_up = [
        broker.post("/consumer/register", {"topic": "consume"})["consumer_id"] for _ in range(64)
    ]
    wrk(broker.url, consume_script("consume", warm_up), 64, s.warmup_seconds)
    for _ in range(s.runs):
        ids = [
            broker.post("/consumer/register", {"topic": "consume"})["consumer_id"]
            for _ in range(64)
        ]
        noop.append(wrk(broker.url, post_script("/noop", body), 64, s.http_seconds)["rps"])
        r = wrk(broker.url, consume_script("consume", ids), 64, s.http_seconds)
        consume.append(r["rps"])
        p99.append(r.get("p99_ms", 0))
        errors += r["non_2xx"] + r["socket_errors"]
    return {
        "rate": median(consume),
        "baseline": median(noop),
        "ratio": median(consume) / median(noop),
        "p99_ms": median(p99),
        "errors": errors,
        "runs": {"consume": consume, "noop": noop},
    }


def latency(s: Settings, broker: Broker) -> dict:
    """5. send() to get_next() at a steady 1,000 messages/s."""
    results = [
        run_worker("latency", broker.address, f"latency-{run}", "1000", str(s.latency_seconds))
        for run in range(s.runs)
    ]
    return {
        "p50_ms": median([r["p50_ms"] for r in results]),
        "p99_ms": median([r["p99_ms"] for r in results]),
        "runs": results,
    }


def idle_consumers(s: Settings, broker: Broker) -> dict:
    """6. N consumers blocked in get_next() on empty topics: the broker's CPU meanwhile."""
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "bench" / "workers" / "idle_consumers.py"),
            broker.address,
            str(s.idle_consumers),
            str(s.idle_seconds),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "waiting"
    before, started = cpu_seconds(broker.pid), time.perf_counter()
    time.sleep(s.idle_seconds - 0.5)
    used, wall = cpu_seconds(broker.pid) - before, time.perf_counter() - started
    proc.wait(timeout=60)
    return {"consumers": s.idle_consumers, "broker_cpu_percent": 100 * used / wall}


# ---------------------------------------------------------------------------------------------
# Targets, the table, the chart
# ---------------------------------------------------------------------------------------------

TARGETS: dict[str, tuple[str, str, Callable[[dict], bool]]] = {
    "1 http_produce": ("ratio", ">= 0.50 of no-op", lambda r: r["ratio"] >= 0.50),
    "2 python_producer": (
        "rate",
        ">= 100k/s and >= prepared INSERT baseline",
        lambda r: r["rate"] >= 100_000 and r["ratio"] >= 1.0,
    ),
    "3 python_consumer": ("rate", ">= 300k/s", lambda r: r["rate"] >= 300_000),
    "4 http_consume": ("ratio", ">= 0.25 of no-op", lambda r: r["ratio"] >= 0.25),
    "5 latency": (
        "p50_ms",
        "p50 < 5 ms, p99 < 5 ms",
        lambda r: r["p50_ms"] < 5 and r["p99_ms"] < 5,
    ),
    "6 idle_consumers": ("broker_cpu_percent", "< 1% CPU", lambda r: r["broker_cpu_percent"] < 1.0),
}


def describe(name: str, r: dict) -> str:
    if name.startswith(("1", "4")):
        return (
            f"{r['rate']:,.0f} req/s vs no-op {r['baseline']:,.0f} = {r['ratio']:.2f}; "
            f"p99 {r['p99_ms']:.1f} ms; errors {r['errors']}"
        )
    if name.startswith("2"):
        return (
            f"{r['rate']:,.0f} msg/s vs INSERT {r['baseline']:,.0f} rows/s = {r['ratio']:.2f}; "
            f"producer RSS {r['producer_peak_rss_mb']:.0f} MB"
        )
    if name.startswith("3"):
        return f"{r['rate']:,.0f} msg/s"
    if name.startswith("5"):
        return f"p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms"
    if name.startswith("6"):
        return f"{r['consumers']} consumers: broker CPU {r['broker_cpu_percent']:.2f}%"
    return json.dumps(r)


def sweep(s: Settings, store: str, postgres: Postgres) -> dict:
    """Throughput against connections, for the chart: produce and no-op."""
    points: dict[str, list] = {"connections": [], "produce": [], "noop": []}
    with Broker(store, postgres) as broker:
        producer_id = broker.post("/producer/register", {"topic": "sweep"})["producer_id"]
        body = json.dumps({"topic": "sweep", "producer_id": producer_id, "message": MESSAGE})
        for connections in (1, 4, 16, 64, 256):
            points["connections"].append(connections)
            points["produce"].append(
                wrk(broker.url, post_script("/producer/produce", body), connections, 5)["rps"]
            )
            points["noop"].append(
                wrk(broker.url, post_script("/noop", body), connections, 5)["rps"]
            )
    return points


def chart(sweeps: dict, path: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        print(
            f"matplotlib is not installed: {path.name} not drawn (pip install matplotlib)",
            file=sys.stderr,
        )
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for store, points in sweeps.items():
        ax.plot(points["connections"], points["produce"], marker="o", label=f"produce ({store})")
    first = next(iter(sweeps.values()))
    ax.plot(
        first["connections"],
        first["noop"],
        marker="s",
        linestyle="--",
        color="grey",
        label="no-op ceiling",
    )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent connections (wrk, keep-alive)")
    ax.set_ylabel("requests / s")
    ax.set_title("Single-message HTTP produce, 100-byte messages")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def machine() -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem = int(
        next(
            line.split()[1]
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
    ) // (1024 * 1024)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def render_table(results: dict, s: Settings) -> str:
    m = results["machine"]
    lines = [
        (
            f"Run {results['date']} on {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, "
            f"Linux {m['kernel']}, Python {m['python']}; "
            f"{'quick mode, one run' if s.quick else f'median of {s.runs} runs'}."
        ),
        "",
        "| scenario | store | result | target | met |",
        "| --- | --- | --- | --- | --- |",
    ]
    for store, figures in results["stores"].items():
        for name, r in figures.items():
            if name in TARGETS:
                _, target, check = TARGETS[name]
                lines.append(
                    f"| {name} | {store} | {describe(name, r)} | {target} | {'yes' if check(r) else 'NO'} |"
                )
        rss = figures["7 broker_memory"]["broker_peak_rss_mb"]
        lines.append(
            f"| 7 broker_memory | {store} | peak RSS {rss:.0f} MB | < 150 MB | {'yes' if rss < 150 else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


def update_report(path: Path, table: str) -> None:
    """Replaces the table between the markers of docs/BENCHMARKS.md."""
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    text = path.read_text()
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        path.write_text(f"{head}{start}\n{table}{end}{tail}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="seconds per scenario, one run (CI)")
    parser.add_argument("--runs", type=int, default=5, help="runs per scenario (median reported)")
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--scenarios", default="1,2,3,4,5,6", help="which scenarios, by number")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    parser.add_argument("--json", type=Path, help="where to write the figures")
    parser.add_argument(
        "--max-in-flight",
        type=int,
        help="MyProducer's max_in_flight in scenario 2 (1 for a broker from before it)",
    )
    parser.add_argument(
        "--no-sweep", action="store_true", help="skip the connection sweep (and its chart)"
    )
    args = parser.parse_args()
    s = Settings(args.quick, args.runs)
    if args.max_in_flight is not None:
        s.max_in_flight = [str(args.max_in_flight)]
    out = args.json or ROOT / "bench" / "results" / ("quick.json" if args.quick else "latest.json")
    wanted = set(args.scenarios.split(","))
    postgres = Postgres(args.database_url)
    started = time.time()
    results: dict = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "quick": s.quick,
        "runs": s.runs,
        "stores": {},
    }
    try:
        for store in args.stores.split(","):
            figures: dict = {}
            peak_rss = 0.0
            plan = [
                ("1", "1 http_produce", lambda b: http_produce(s, b)),
                ("2", "2 python_producer", lambda b: python_producer(s, b, postgres)),
                ("3", "3 python_consumer", lambda b: python_consumer(s, b)),
                ("4", "4 http_consume", lambda b: http_consume(s, b)),
                ("5", "5 latency", lambda b: latency(s, b)),
                ("6", "6 idle_consumers", lambda b: idle_consumers(s, b)),
            ]
            for number, name, scenario in plan:
                if number not in wanted:
                    continue
                print(f"[{store}] {name} ...", file=sys.stderr, flush=True)
                with Broker(store, postgres) as broker:
                    figures[name] = scenario(broker)
                peak_rss = max(peak_rss, broker.peak_rss_mb)
                figures[name]["broker_peak_rss_mb"] = broker.peak_rss_mb
            figures["7 broker_memory"] = {"broker_peak_rss_mb": peak_rss}
            results["stores"][store] = figures
        if not s.quick and "1" in wanted and not args.no_sweep:
            results["sweep"] = {
                store: sweep(s, store, postgres) for store in args.stores.split(",")
            }
    finally:
        postgres.close()
    results["seconds"] = time.time() - started
    # The figures are written first: nothing after this line may lose a run's measurements.
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    if "sweep" in results:
        chart(results["sweep"], ROOT / "docs" / "bench-throughput.png")

    table = render_table(results, s)
    print("\n" + table)
    print(
        f"figures: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}; {results['seconds']:.0f} s"
    )
    if not s.quick and args.json is None:
        update_report(ROOT / "docs" / "BENCHMARKS.md", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
