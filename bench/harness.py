"""Processes and measurements for the benchmarks: brokers, PostgreSQL, wrk, CPU and memory.

Everything listens on 127.0.0.1; every process started here is stopped by its PID.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import requests

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self needs 3.11; annotations are not evaluated

ROOT = Path(__file__).resolve().parent.parent
# Where cargo builds: `target`, or CARGO_TARGET_DIR (as scripts/test.sh and maturin use it).
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
BROKER = Path(os.environ.get("MYQUEUE_BROKER", TARGET / "release" / "myqueue-broker"))
WORKERS = Path(__file__).resolve().parent / "workers"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mb(pid: int, key: str = "VmHWM") -> float:
    """Peak (VmHWM) or current (VmRSS) resident memory of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


class Postgres:
    """A throwaway PostgreSQL server (scripts/throwaway-postgres.sh), or the one at a URL."""

    def __init__(self, url: str | None = None) -> None:
        self.directory: Path | None = None
        if url:
            self.url = url
        else:
            self.directory = Path(tempfile.mkdtemp(prefix="myqueue-bench-pg-"))
            self.url = subprocess.run(
                [
                    "bash",
                    str(ROOT / "scripts" / "throwaway-postgres.sh"),
                    "start",
                    str(self.directory),
                ],
                check=True,
                capture_output=True,
                text=True,
                timeout=120,
            ).stdout.strip()
        self.counter = 0

    def fresh_database(self) -> str:
        self.counter += 1
        name = f"myqueue_bench_{os.getpid()}_{self.counter}"
        self.psql(f"DROP DATABASE IF EXISTS {name}")
        self.psql(f"CREATE DATABASE {name}")
        parts = urlsplit(self.url)
        return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))

    def drop_database(self, url: str) -> None:
        """Drops a database that `fresh_database` made (named by its URL)."""
        name = urlsplit(url).path.lstrip("/")
        self.psql(f"DROP DATABASE IF EXISTS {name}")

    def psql(self, sql: str, url: str | None = None) -> str:
        return subprocess.run(
            ["psql", url or self.url, "-v", "ON_ERROR_STOP=1", "-qtA", "-c", sql],
            check=True,
            capture_output=True,
            text=True,
            timeout=300,
        ).stdout

    def close(self) -> None:
        if self.directory:
            subprocess.run(
                [
                    "bash",
                    str(ROOT / "scripts" / "throwaway-postgres.sh"),
                    "stop",
                    str(self.directory),
                ],
                check=False,  # best effort: the directory goes either way
                capture_output=True,
                timeout=120,
            )
            shutil.rmtree(self.directory, ignore_errors=True)


@dataclass
class Broker:
    """A release broker on a fresh store: `sqlite` (a temporary directory), `postgres` or
    `memory` (nothing durable: the reference for what the stores add)."""

    store: str
    postgres: Postgres | None = None
    proc: subprocess.Popen | None = None
    port: int = 0
    database_url: str = ""
    data_dir: Path | None = None
    peak_rss_mb: float = 0.0
    args: list = field(default_factory=list)
    # Options beyond the store's, e.g. ["--retention-bytes", "64MB"].
    extra_args: list = field(default_factory=list)
    # The build to run (another than this checkout's, for an A/B).
    binary: Path = BROKER
    # A PostgreSQL broker's database is dropped when it stops, unless the caller reads it after.
    keep_database: bool = False

    def __enter__(self) -> Self:
        if self.store == "postgres":
            assert self.postgres is not None
            self.database_url = self.postgres.fresh_database()
            self.args = ["--database-url", self.database_url]
        elif self.store == "memory":
            self.args = ["--store", "memory"]
        else:
            self.data_dir = Path(tempfile.mkdtemp(prefix="myqueue-bench-sqlite-"))
            self.args = ["--store", "sqlite", "--data-dir", str(self.data_dir)]
        env = dict(os.environ, MYQUEUE_LOG="warn")
        env.pop("DATABASE_URL", None)
        self.proc = subprocess.Popen(
            [str(self.binary), "--listen", "127.0.0.1:0", *self.args, *self.extra_args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = re.search(r":(\d+)\s*$", line)
        if not match:
            raise RuntimeError(f"broker did not start: {line!r}")
        self.port = int(match.group(1))
        for _ in range(600):
            try:
                if requests.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise RuntimeError("broker not healthy")

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.peak_rss_mb = rss_mb(self.proc.pid)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        if self.postgres and self.database_url and not self.keep_database:
            try:  # a server named by --database-url keeps nothing of a benchmark's
                self.postgres.drop_database(self.database_url)
            except (subprocess.SubprocessError, OSError) as e:
                print(f"cannot drop {self.database_url}: {e}", file=sys.stderr)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def current_peak_rss_mb(self) -> float:
        return rss_mb(self.pid)

    def post(self, path: str, body: dict) -> dict:
        reply = requests.post(self.url + path, json=body, timeout=60)
        reply.raise_for_status()
        return reply.json()


def wrk(url: str, script: str, connections: int, seconds: float, threads: int = 2) -> dict:
    """Runs wrk with a Lua script; returns requests/s, latency percentiles (ms) and errors."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is missing: apt-get install -y wrk")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
        path = f.name
    try:
        out = subprocess.run(
            [
                "wrk",
                "-t",
                str(min(threads, connections)),
                "-c",
                str(connections),
                "-d",
                f"{seconds}s",
                "--latency",
                "--timeout",
                "10s",
                "-s",
                path,
                url,
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=seconds + 60,
        ).stdout
    finally:
        os.unlink(path)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    latency = {}
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        if m:
            value = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
            latency[f"p{pct}_ms"] = value
    return {
        "rps": rps,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(int(x) for x in errors.groups()) if errors else 0,
        **latency,
    }


def run_worker(name: str, *args: str, timeout: float = 900) -> dict:
    """Runs bench/workers/NAME.py in its own process; it prints one JSON line."""
    out = subprocess.run(
        [sys.executable, str(WORKERS / f"{name}.py"), *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def median(values: list[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
