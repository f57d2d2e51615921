#!/usr/bin/env python3
"""Retention's cost: MyProducer at full speed into a broker with a size limit that retention
enforces during the measurement, against the same broker without one, in the same run.

    python3 bench/retention.py            # 3 runs of 30 s per store and mode (~8 minutes)
    python3 bench/retention.py --quick    # 1 run of 6 s (CI runs this so it never rots)

Each run starts a fresh broker (SQLite in a temporary directory, or a fresh database on a
throwaway PostgreSQL), modes alternating, and samples every half second the topic's end offset
(acknowledged messages, from GET /topics/{name}) and the store's size on disk: SQLite, every
file of the data directory (WAL included); PostgreSQL, pg_total_relation_size over the
partitions of `messages`. The rate is measured over the second half of each run, once
retention is deleting (the limit is reached within the first few seconds), so both modes are
compared in their steady state.

Writes bench/results/retention.json first, then docs/bench-retention.png (store size over time;
skipped with one line when matplotlib is missing). Speed is reported, never asserted.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import ROOT, WORKERS, Broker, Postgres, cpu_seconds, median

MESSAGE_BYTES = 100
TOPIC = "flood"


def store_bytes(broker: Broker, postgres: Postgres | None) -> int:
    if broker.store == "sqlite":
        assert broker.data_dir is not None
        return sum(f.stat().st_size for f in broker.data_dir.iterdir() if f.is_file())
    assert postgres is not None
    out = postgres.psql(
        "SELECT coalesce(sum(pg_total_relation_size(relid)), 0) FROM pg_partition_tree('messages')",
        url=broker.database_url,
    )
    return int(out.strip())


def postgres_cpu_seconds(postgres: Postgres | None) -> float:
    """CPU used so far by a throwaway server's postmaster and its live children (0 for a
    server at a URL). Backends that exited are not counted: the broker's pool keeps its."""
    if postgres is None or postgres.directory is None:
        return 0.0
    pidfile = postgres.directory / "data" / "postmaster.pid"
    postmaster = int(pidfile.read_text().split()[0])
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid, parent = int(stat.parent.name), int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if postmaster in (pid, parent):
                total += cpu_seconds(pid)
        except (OSError, ValueError, IndexError):
            continue  # a process that ended meanwhile
    return total


def end_offset(broker: Broker) -> int:
    reply = requests.get(f"{broker.url}/topics/{TOPIC}", timeout=10)
    return int(reply.json()["end_offset"]) if reply.status_code == 200 else 0


def one_run(store: str, limit: str, seconds: float, postgres: Postgres | None) -> dict:
    """One broker, one producer for `seconds`; samples of (t, end offset, store bytes)."""
    with Broker(store, postgres=postgres, extra_args=["--retention-bytes", limit]) as broker:
        # (seconds, end offset, store bytes, broker CPU seconds, PostgreSQL CPU seconds)
        samples: list[tuple[float, int, int, float, float]] = []
        done = threading.Event()
        started = time.monotonic()

        def sample() -> None:
            while not done.wait(0.5):
                samples.append(
                    (
                        time.monotonic() - started,
                        end_offset(broker),
                        store_bytes(broker, postgres),
                        cpu_seconds(broker.pid),
                        postgres_cpu_seconds(postgres if store == "postgres" else None),
                    )
                )

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        out = subprocess.run(
            [
                sys.executable,
                str(WORKERS / "flood.py"),
                broker.address,
                TOPIC,
                str(seconds),
                str(MESSAGE_BYTES),
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=seconds + 300,
        )
        done.set()
        sampler.join(timeout=30)
        sent = json.loads(out.stdout.strip().splitlines()[-1])["sent"]
    # The steady state: the second half of the sending, by the samples' clock.
    window = [s for s in samples if seconds / 2 <= s[0] <= seconds]
    first, last = (window[0], window[-1]) if len(window) > 1 else (samples[0], samples[-1])
    stored = max(last[1] - first[1], 1)
    return {
        "limit": limit,
        "sent": sent,
        "steady_rate": stored / max(last[0] - first[0], 1e-9),
        # CPU per message is steadier than the rate on a loaded machine: it counts the work.
        "broker_cpu_us_per_message": (last[3] - first[3]) * 1e6 / stored,
        "postgres_cpu_us_per_message": (last[4] - first[4]) * 1e6 / stored,
        "largest_bytes": max((s[2] for s in samples), default=0),
        "samples": samples,
    }


def cpu(mode: dict) -> float:
    """CPU µs per stored message: the broker's and PostgreSQL's."""
    return mode["broker_cpu_us_per_message"] + mode["postgres_cpu_us_per_message"]


def chart(results: dict, path: Path, limit_bytes: int) -> None:
    try:
        import matplotlib
    except ImportError:
        print(f"matplotlib is not installed: {path.name} not drawn (pip install matplotlib)")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stores = list(results["stores"])
    fig, axes = plt.subplots(1, len(stores), figsize=(5.5 * len(stores), 4), squeeze=False)
    for ax, store in zip(axes[0], stores):
        for mode, style in (("unlimited", "--"), ("retention", "-")):
            run = results["stores"][store][mode]["runs"][-1]
            ax.plot(
                [s[0] for s in run["samples"]],
                [s[2] / 1e6 for s in run["samples"]],
                style,
                label=f"--retention-bytes {run['limit']}",
            )
        ax.axhline(limit_bytes / 1e6, color="grey", linewidth=0.8, linestyle=":")
        ax.set_title(f"{store}: store size under MyProducer at full speed")
        ax.set_xlabel("seconds")
        ax.set_ylabel("MB on disk")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"chart: {path.relative_to(ROOT)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one run of 6 s per store and mode")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--limit", default="64MB", help="--retention-bytes of the measured mode")
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--database-url", help="a PostgreSQL server to use instead of a throwaway")
    args = parser.parse_args()
    runs, seconds, limit = (1, 6.0, "8MB") if args.quick else (args.runs, args.seconds, args.limit)
    limit_bytes = int(limit.removesuffix("MB")) * 1_000_000
    stores = args.stores.split(",")

    postgres = Postgres(args.database_url) if "postgres" in stores else None
    results: dict = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "seconds": seconds,
        "message_bytes": MESSAGE_BYTES,
        "stores": {},
    }
    try:
        for store in stores:
            modes: dict = {"unlimited": {"runs": []}, "retention": {"runs": []}}
            for run in range(runs):
                for mode in ("unlimited", "retention"):
                    r = one_run(
                        store, "unlimited" if mode == "unlimited" else limit, seconds, postgres
                    )
                    modes[mode]["runs"].append(r)
                    print(
                        f"{store} run {run + 1} {mode}: {r['steady_rate']:,.0f} msg/s, "
                        f"CPU µs/message: broker {r['broker_cpu_us_per_message']:.2f}, "
                        f"PostgreSQL {r['postgres_cpu_us_per_message']:.2f}; "
                        f"largest {r['largest_bytes'] / 1e6:.0f} MB",
                        flush=True,
                    )
            for mode in modes.values():
                for key in (
                    "steady_rate",
                    "broker_cpu_us_per_message",
                    "postgres_cpu_us_per_message",
                ):
                    mode[key] = median([r[key] for r in mode["runs"]])
                mode["largest_bytes"] = max(r["largest_bytes"] for r in mode["runs"])
            modes["ratio"] = modes["retention"]["steady_rate"] / max(
                modes["unlimited"]["steady_rate"], 1
            )
            results["stores"][store] = modes
    finally:
        if postgres:
            postgres.close()

    out = ROOT / "bench" / "results" / ("retention-quick.json" if args.quick else "retention.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"figures: {out.relative_to(ROOT)}")
    print(
        f"| store | unlimited msg/s | --retention-bytes {limit} msg/s | ratio "
        "| CPU µs/message, unlimited / retention | largest store MB, unlimited / retention |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for store, m in results["stores"].items():
        unlimited, kept = m["unlimited"], m["retention"]
        print(
            f"| {store} | {unlimited['steady_rate']:,.0f} | {kept['steady_rate']:,.0f} "
            f"| {m['ratio']:.2f} | {cpu(unlimited):.2f} / {cpu(kept):.2f} "
            f"| {unlimited['largest_bytes'] / 1e6:.0f} / {kept['largest_bytes'] / 1e6:.0f} |"
        )
    if not args.quick:
        chart(results, ROOT / "docs" / "bench-retention.png", limit_bytes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
