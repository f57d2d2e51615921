#!/usr/bin/env python3
"""myqueue against what a user would pick instead: the same three workloads on each system.

    python3 bench/peers.py           # medians of 3 runs, ~10 minutes; installs what is
                                     # missing, writes bench/results/peers.json, the table
                                     # in docs/BENCHMARKS.md and docs/bench-peers.png
    python3 bench/peers.py --quick   # fewer messages, one run, 2 s of latency (CI)
    python3 bench/peers.py --systems redis,nats --runs 5
    python3 bench/peers.py --systems myqueue-sqlite,redis --workloads latency
    python3 bench/peers.py --systems myqueue-memory,myqueue-sqlite,redis --workloads latency

Systems: myqueue on SQLite and on PostgreSQL (the release broker and the installed wheel),
Redis Streams, RabbitMQ (quorum queue), NATS JetStream, and PostgreSQL's COPY as the write
ceiling; and, only when named, myqueue on its memory store: not durable, a yardstick for what
the trip costs without a store (bench/commit_floor.py measures the stores' commits alone).
Workloads, each client in a fresh Python process:
  produce  COUNT messages of 100 bytes, acknowledged and as durable as the system makes them;
           timed until the last acknowledgement
  drain    the same COUNT messages read back from a new process
  latency  one process sends 1,000 messages/s for 10 s, another waits for them: p50 and p99
           of (receive time - the time the message was due to be sent)
Servers (redis-server, rabbitmq-server, nats-server, PostgreSQL; from Debian when missing,
clients from PyPI) run as the invoking user on free 127.0.0.1 ports, each with a throwaway
data directory, and are stopped by PID at the end, also after a failure or Ctrl-C. Every run
and process is bounded in count and time. Speed is reported, never asserted; the exit code is
non-zero when myqueue could not be measured or a system failed while measured. A peer that is
unavailable (its server could not be installed, e.g. a package mirror down) is reported in the
table and on stderr, and does not fail the run: CI must not turn red for a mirror.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import ROOT, median
from run import machine
from systems import SYSTEMS, System
from systems.base import Server, Settings, Shared, Unavailable
from systems.install import ensure

WORKER = Path(__file__).resolve().parent / "workers" / "peer.py"
MARK_START, MARK_END = "<!-- peers:start -->", "<!-- peers:end -->"


WORKLOADS = ("produce", "drain", "latency")


class Plan:
    def __init__(self, quick: bool, runs: int, workloads: tuple[str, ...] = WORKLOADS) -> None:
        self.quick = quick
        self.workloads = workloads
        self.runs = 1 if quick else runs
        self.count = 20_000 if quick else 200_000
        self.size = 100
        self.rate = 1000.0
        self.latency_seconds = 2.0 if quick else 10.0
        self.timeout = 300.0 if quick else 900.0  # for any one worker process


def worker(
    system: System, settings: Settings, role: str, topic: str, *args: object, timeout: float
) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(WORKER), system.name, json.dumps(settings), role, topic]
        + [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{role} failed: {out.stderr.strip()[-500:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def latency(system: System, settings: Settings, topic: str, plan: Plan) -> dict[str, Any]:
    """A waiting reader in one process, a paced sender in another."""
    count = int(plan.rate * plan.latency_seconds)
    wait = plan.latency_seconds + 30
    reader = subprocess.Popen(
        [sys.executable, str(WORKER), system.name, json.dumps(settings), "receive", topic]
        + [str(count), str(wait)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdout is not None
        line = reader.stdout.readline()  # "ready", or "" if it died first
        if line.strip() != "ready":
            reader.wait(timeout=30)
            raise RuntimeError(f"reader did not start: {reader.stderr.read()[-500:]}")  # type: ignore[union-attr]
        worker(system, settings, "send", topic, plan.rate, count, timeout=plan.timeout)
        stdout, stderr = reader.communicate(timeout=wait + 30)
        if reader.returncode != 0:
            raise RuntimeError(f"reader failed: {stderr.strip()[-500:]}")
        return json.loads(stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait(timeout=10)


def one_run(system: System, settings: Settings, run: int, plan: Plan) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    workloads = [w for w in system.workloads() if w in plan.workloads]
    topic = f"bench-{run}"
    worker(system, settings, "prepare", topic, timeout=plan.timeout)
    if "produce" in workloads:
        figures["produce"] = worker(
            system, settings, "produce", topic, plan.count, plan.size, timeout=plan.timeout
        )
    if "drain" in workloads:
        if "produce" not in workloads:  # something to drain: filled by the same producer
            worker(system, settings, "produce", topic, plan.count, plan.size, timeout=plan.timeout)
        figures["drain"] = worker(
            system, settings, "drain", topic, plan.count, timeout=plan.timeout
        )
    if "latency" in workloads:
        worker(system, settings, "prepare", f"latency-{run}", timeout=plan.timeout)
        figures["latency"] = latency(system, settings, f"latency-{run}", plan)
    return figures


def medians(runs: list[dict[str, Any]]) -> dict[str, float]:
    keys = [("produce", "rate"), ("drain", "rate"), ("latency", "p50_ms"), ("latency", "p99_ms")]
    out: dict[str, float] = {}
    for workload, key in keys:
        values = [r[workload][key] for r in runs if workload in r]
        if values:
            out[f"{workload}_{key}"] = median(values)
    return out


def versions() -> dict[str, str]:
    found: dict[str, str] = {}
    for package in ("redis-server", "rabbitmq-server", "nats-server", "postgresql"):
        out = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", package],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        if out.returncode == 0 and out.stdout:
            found[package] = out.stdout
    return found


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    runs = "quick mode, one run" if results["quick"] else f"median of {results['runs']} runs"
    lines = [
        (
            f"Run {results['date']} on {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, "
            f"Linux {m['kernel']}, Python {m['python']}; {runs}; {results['count']:,} messages of "
            f"100 bytes; latency at {results['rate']:.0f} msg/s for {results['latency_seconds']:.0f} s"
            f"; load average at the start {results['load_at_start']}."
        ),
        "",
        (
            "| system | produce msg/s | ÷ COPY | drain msg/s | latency p50 ms | latency p99 ms "
            "| an acknowledged write is |"
        ),
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    ceiling = results["systems"].get("postgres-copy", {}).get("median", {}).get("produce_rate")
    for entry in results["systems"].values():
        f = entry.get("median", {})
        if entry["status"] != "ok":
            reason = entry["reason"].strip().splitlines()[-1][:160]  # the JSON has it all
            lines.append(
                f"| {entry['label']} | {entry['status']}: {reason} | | | | | {entry['durability']} |"
            )
            continue

        def cell(key: str, fmt: str, f: dict[str, float] = f) -> str:
            return format(f[key], fmt) if key in f else "—"

        rate = f.get("produce_rate")
        share = f"{rate / ceiling:.2f}" if rate and ceiling else "—"
        lines.append(
            f"| {entry['label']} | {cell('produce_rate', ',.0f')} | {share} "
            f"| {cell('drain_rate', ',.0f')} "
            f"| {cell('latency_p50_ms', '.2f')} | {cell('latency_p99_ms', '.2f')} "
            f"| {entry['durability']} |"
        )
    return "\n".join(lines) + "\n"


def chart(results: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        print(f"matplotlib is not installed: {path.name} not drawn (pip install matplotlib)")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    done = [e for e in results["systems"].values() if e["status"] == "ok"]
    names = [e["label"].split(" (")[0] for e in done]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6))
    panels = [
        ("produce msg/s", ["produce_rate"]),
        ("drain msg/s", ["drain_rate"]),
        ("latency ms (p50, p99)", ["latency_p50_ms", "latency_p99_ms"]),
    ]
    for ax, (title, keys) in zip(axes, panels):
        height = 0.8 / len(keys)
        for k, key in enumerate(keys):
            values = [e["median"].get(key, 0.0) for e in done]
            ax.barh(
                [i + k * height for i in range(len(done))], values, height, label=key.split("_")[-2]
            )
        ax.set_yticks([i + height * (len(keys) - 1) / 2 for i in range(len(done))])
        ax.set_yticklabels(names if ax is axes[0] else [""] * len(done), fontsize=8)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
        if "msg/s" in title:  # 120k, not 120000 running into its neighbour
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1000:.0f}k"))
        if len(keys) > 1:
            ax.legend(fontsize=8)
    fig.suptitle(f"bench/peers.py, {results['date']} (higher is better, latency lower)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    print(f"chart: {path.relative_to(ROOT)}")


def update_docs(path: Path, table: str) -> None:
    """Replaces what lies between the peers markers of docs/BENCHMARKS.md."""
    text = path.read_text()
    if MARK_START in text and MARK_END in text:
        head, rest = text.split(MARK_START, 1)
        _, tail = rest.split(MARK_END, 1)
        path.write_text(f"{head}{MARK_START}\n{table}{MARK_END}{tail}")
    else:
        print(f"{path.name} has no {MARK_START} section: table not written there", file=sys.stderr)


def stop_on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # so that the servers are stopped in the finally below


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer messages, one run (CI)")
    parser.add_argument("--runs", type=int, default=3, help="runs per system (median reported)")
    parser.add_argument(
        "--systems",
        default=",".join(name for name, s in SYSTEMS.items() if not s.reference),
        help="which, comma-separated (myqueue-memory, the broker without a store, only when named)",
    )
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help="which, comma-separated (drain alone still produces its messages first, untimed)",
    )
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    parser.add_argument("--no-install", action="store_true", help="install nothing")
    parser.add_argument("--json", type=Path, help="where to write the figures")
    args = parser.parse_args()
    workloads = tuple(w for w in args.workloads.split(",") if w)
    if unknown := set(workloads) - set(WORKLOADS):
        parser.error(f"unknown workload(s) {', '.join(sorted(unknown))}; known: {WORKLOADS}")
    plan = Plan(args.quick, args.runs, workloads)
    chosen = [SYSTEMS[name] for name in args.systems.split(",") if name]
    every_workload = plan.workloads == WORKLOADS
    default_json = "peers-quick.json" if plan.quick else "peers.json"
    if not every_workload:  # a partial run leaves the full run's figures alone
        default_json = "peers-partial.json"
    out: Path = args.json or ROOT / "bench" / "results" / default_json
    signal.signal(signal.SIGTERM, stop_on_sigterm)

    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_at_start": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "quick": plan.quick,
        "runs": plan.runs,
        "count": plan.count,
        "rate": plan.rate,
        "latency_seconds": plan.latency_seconds,
        "workloads": list(plan.workloads),
        "systems": {},
    }
    started = time.time()
    unavailable = ensure(chosen, install=not args.no_install)
    results["versions"] = versions()
    shared = Shared(args.database_url)
    workdir = Path(tempfile.mkdtemp(prefix="myqueue-peers-"))
    servers: dict[str, tuple[Server, Settings]] = {}
    try:
        for s in chosen:
            entry = results["systems"][s.name] = {"status": "ok", "runs": []}
            entry["label"] = s.described("LABEL") if s.name not in unavailable else s.name
            entry["durability"] = s.described("DURABILITY") if s.name not in unavailable else "—"
            if s.name in unavailable:
                entry.update(status="unavailable", reason=unavailable[s.name])
                print(f"peers: {s.name} unavailable: {unavailable[s.name]}", file=sys.stderr)
                continue
            print(f"peers: starting {s.name} ...", file=sys.stderr, flush=True)
            directory = workdir / s.name
            directory.mkdir()
            server = s.server(shared)
            try:
                servers[s.name] = (server, server.start(directory))
            except Exception as e:  # noqa: BLE001 - any start failure makes that system unmeasured
                server.stop()
                status = "unavailable" if isinstance(e, Unavailable) else "error"
                entry.update(status=status, reason=f"server did not start: {e}")
                print(f"peers: {s.name}: {entry['reason']}", file=sys.stderr)
        # Runs are interleaved (each system once per round) so that a burst of load from the
        # machine's other work is spread over every system rather than landing on one.
        for run in range(plan.runs):
            for name, (_, settings) in servers.items():
                entry = results["systems"][name]
                if entry["status"] != "ok":
                    continue
                print(f"peers: run {run + 1}/{plan.runs}: {name} ...", file=sys.stderr, flush=True)
                try:
                    entry["runs"].append(one_run(SYSTEMS[name], settings, run, plan))
                except (RuntimeError, subprocess.TimeoutExpired, ValueError) as e:
                    entry.update(status="error", reason=str(e))
                    print(f"peers: {name}: {e}", file=sys.stderr)
    except KeyboardInterrupt:
        results["interrupted"] = True
        print("peers: interrupted: stopping the servers, keeping the runs done", file=sys.stderr)
    finally:
        for name, (server, _) in servers.items():
            print(f"peers: stopping {name}", file=sys.stderr, flush=True)
            server.stop()
        shared.close()
        shutil.rmtree(workdir, ignore_errors=True)
    for entry in results["systems"].values():
        entry["median"] = medians(entry["runs"]) if entry["status"] == "ok" else {}
    results["seconds"] = time.time() - started
    # The figures are written first: nothing after this may lose a run's measurements.
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    table = render(results)
    print("\n" + table)
    print(f"figures: {out}; {results['seconds']:.0f} s")
    if results.get("interrupted"):
        return 130
    if not plan.quick and args.json is None and every_workload:
        update_docs(ROOT / "docs" / "BENCHMARKS.md", table)
        chart(results, ROOT / "docs" / "bench-peers.png")
    missing = [n for n, e in results["systems"].items() if e["status"] != "ok"]
    if missing:
        print(f"peers: not measured: {', '.join(missing)}", file=sys.stderr)
    failed = [
        n
        for n, e in results["systems"].items()
        if e["status"] == "error" or (e["status"] != "ok" and n.startswith("myqueue"))
    ]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
