"""Where scenario 1's CPU goes: CPU time per request of the broker, wrk and PostgreSQL.

    python3 bench/cpu_split.py                          # PostgreSQL (a throwaway server)
    python3 bench/cpu_split.py --stores sqlite,postgres --runs 3 --seconds 6
    python3 bench/cpu_split.py --database-url postgres://...   # a server already running

Runs bench/run.py's scenario 1 (single-message `POST /producer/produce`, 64 keep-alive
connections) and its baseline `POST /noop`, alternately, and reads the kernel's scheduler
statistics (/proc/PID/task/TID/schedstat) of every thread of the broker, of wrk and of every
`postgres` process on the machine, over a window inside each run. It prints, per request, the
CPU time each used and the time each spent runnable but waiting for a CPU, and how busy the
machine's CPUs were. When the CPUs are nearly all busy, the ratio produce ÷ noop is set by
these costs: (noop's CPU per request) ÷ (produce's), whatever the commit cycle does.
Medians over the runs. Loopback only; every process started here is stopped by its PID.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path

from harness import Broker, Postgres, median, wrk
from run import MESSAGE, post_script

CONNECTIONS = 64


def threads_of(pid: int) -> list[Path]:
    try:
        return list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []  # gone


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def parties(broker: Broker) -> dict[str, list[int]]:
    """The processes to account for: the broker, our wrk, and PostgreSQL's (any on this
    machine: its backends are not our children)."""
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    return {
        "broker": [broker.pid],
        "wrk": [p for p in pids if comm(p) == "wrk" and parent(p) == os.getpid()],
        "postgres": postgres_pids() if broker.store == "postgres" else [],
    }


def postgres_pids() -> list[int]:
    """Every `postgres` process on this machine: its backends are not our children."""
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and comm(int(p)) == "postgres"]


def snapshot(groups: dict[str, list[int]]) -> dict[str, dict[str, tuple[int, int]]]:
    """Per party, per thread: (ns on a CPU, ns runnable and waiting for one)."""
    taken: dict[str, dict[str, tuple[int, int]]] = {}
    for party, pids in groups.items():
        taken[party] = {}
        for pid in pids:
            for task in threads_of(pid):
                try:
                    run_ns, wait_ns, _ = (task / "schedstat").read_text().split()
                except (OSError, ValueError):
                    continue
                taken[party][str(task)] = (int(run_ns), int(wait_ns))
    return taken


def per_unit(before: dict, after: dict, units: float) -> dict[str, float]:
    """Each party's CPU time and wait for a CPU between two snapshots, in µs per unit of
    work (`PARTY_cpu_us`, `PARTY_wait_us`)."""
    figures: dict[str, float] = {}
    for party, threads in after.items():
        run = sum(a[0] - before[party].get(t, (0, 0))[0] for t, a in threads.items())
        wait = sum(a[1] - before[party].get(t, (0, 0))[1] for t, a in threads.items())
        figures[f"{party}_cpu_us"] = run / 1e3 / units
        figures[f"{party}_wait_us"] = wait / 1e3 / units
    return figures


def measure(broker: Broker, path: str, body: str, seconds: int) -> dict:
    """One wrk run of `seconds`; the CPU split over its middle (it starts and ends outside)."""
    result: dict = {}
    load = threading.Thread(
        target=lambda: result.update(
            wrk(broker.url, post_script(path, body), CONNECTIONS, int(seconds) + 2)
        )
    )
    load.start()
    time.sleep(1)
    groups = parties(broker)
    before, started = snapshot(groups), time.perf_counter()
    time.sleep(seconds)
    after, window = snapshot(groups), time.perf_counter() - started
    load.join()
    requests = result["rps"] * window
    figures: dict = {"rps": result["rps"], **per_unit(before, after, requests)}
    busy = sum(figures[f"{party}_cpu_us"] for party in after) * requests / 1e6
    figures["busy"] = busy / (window * (os.cpu_count() or 1))
    return figures


def split(store: str, postgres: Postgres | None, runs: int, seconds: int) -> dict:
    with Broker(store, postgres) as broker:
        producer_id = broker.post("/producer/register", {"topic": "bench"})["producer_id"]
        body = json.dumps({"topic": "bench", "producer_id": producer_id, "message": MESSAGE})
        wrk(broker.url, post_script("/producer/produce", body), CONNECTIONS, 3)  # warm-up
        kept: dict[str, list[dict]] = {"noop": [], "produce": []}
        for _ in range(runs):
            kept["noop"].append(measure(broker, "/noop", body, seconds))
            kept["produce"].append(measure(broker, "/producer/produce", body, seconds))
    return {
        workload: {key: median([run[key] for run in done]) for key in done[0]}
        for workload, done in kept.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", default="postgres", help="sqlite, postgres or both")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5, help="measured window per run")
    parser.add_argument("--database-url", help="a PostgreSQL server to use (else a throwaway)")
    args = parser.parse_args()
    stores = args.stores.split(",")
    postgres = Postgres(args.database_url) if "postgres" in stores else None
    try:
        print(
            "| store | workload | req/s | µs of CPU per request: broker, wrk, postgres "
            "(waiting for a CPU) | CPUs busy |"
        )
        print("| --- | --- | --- | --- | --- |")
        for store in stores:
            figures = split(store, postgres, args.runs, args.seconds)
            for workload, f in figures.items():
                cpu = ", ".join(
                    f"{f[f'{p}_cpu_us']:.1f} ({f[f'{p}_wait_us']:.1f})"
                    for p in ("broker", "wrk", "postgres")
                )
                print(f"| {store} | {workload} | {f['rps']:,.0f} | {cpu} | {f['busy']:.0%} |")
            ratio = figures["produce"]["rps"] / figures["noop"]["rps"]
            print(f"| {store} | produce ÷ noop | {ratio:.2f} | | |")
    finally:
        if postgres:
            postgres.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
