"""Fixtures for the black-box tests: real broker processes, real PostgreSQL servers.

The broker binary is ``release/myqueue-broker`` under cargo's target directory (``target``, or
``CARGO_TARGET_DIR``; ``cargo build --release -p broker``), or the path in ``MYQUEUE_BROKER``. PostgreSQL tests use the server at ``TEST_DATABASE_URL``
(a fresh database per test); without it they are skipped, except under ``CI=true`` where that
is a failure. Tests that restart PostgreSQL start a throwaway server of their own.

Everything listens on 127.0.0.1 only; every process started here is stopped by its PID.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import helpers
import pytest
import requests
import urllib3

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI") == "true"
START_TIMEOUT = 60.0


def broker_binary() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    path = Path(os.environ.get("MYQUEUE_BROKER", target / "release" / "myqueue-broker"))
    if not path.exists():
        pytest.fail(f"{path} is missing: run `cargo build --release -p broker` first")
    return path


class Broker:
    """A myqueue-broker process. ``restart()`` starts it again on the same port and data."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.args = args
        self.env = env
        self.port = 0
        self.scheme = "http"  # https with --tls-cert
        self.proc: subprocess.Popen[str] | None = None
        self.log_path = Path(tempfile.mkstemp(prefix="myqueue-broker-", suffix=".log")[1])
        self.start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        """``host:port``, as the client library takes it."""
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        env = dict(os.environ)
        env.pop("DATABASE_URL", None)
        env.update(self.env or {})
        env.setdefault("MYQUEUE_LOG", "info")
        # The child keeps its own descriptor of the log; ours is closed once it started.
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                [str(broker_binary()), "--listen", f"127.0.0.1:{self.port}", *self.args],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=env,
            )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the broker prints its address once ready
        match = re.search(r"listening on (https?)://127\.0\.0\.1:(\d+)", line)
        if not match:
            self.proc.wait(timeout=10)
            raise RuntimeError(f"broker did not start: {line!r}\n{self.log()}")
        self.scheme, self.port = match.group(1), int(match.group(2))
        self.wait_healthy()

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                # /healthz needs no token; over HTTPS only liveness matters here, not trust.
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
                    healthz = requests.get(self.url + "/healthz", timeout=2, verify=False)
                if healthz.status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"broker not healthy after {timeout}s\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL: no chance to flush or clean up."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM and wait: a graceful shutdown. Returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise
        return self.proc.returncode

    def restart(self) -> None:
        self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    # Small helpers for tests that speak HTTP directly.
    def post(self, path: str, body: object, **kwargs) -> requests.Response:
        return requests.post(
            self.url + path, json=body, timeout=kwargs.pop("timeout", 30), **kwargs
        )

    def get(self, path: str, params: dict | None = None, **kwargs) -> requests.Response:
        return requests.get(
            self.url + path, params=params, timeout=kwargs.pop("timeout", 30), **kwargs
        )


FAILURE_STATUS_ENV = "MYQUEUE_FAILURE_STATUS"


@pytest.fixture(autouse=True)
def failure_status(monkeypatch: pytest.MonkeyPatch) -> str:
    """The ``--failure-status`` of the brokers a test starts. Brokers read it from
    ``MYQUEUE_FAILURE_STATUS``, which they inherit: ``MYQUEUE_FAILURE_STATUS=400 pytest ...``
    runs tests against brokers that answer every failure a client causes with 400. A module
    may override this fixture to run its tests under both settings (test_broker_api.py)."""
    mode = os.environ.get(FAILURE_STATUS_ENV, "precise")
    monkeypatch.setattr(helpers, "failure_status", mode)
    return mode


@pytest.fixture
def make_broker(tmp_path: Path) -> Iterator:
    """``make_broker(*args)`` starts a broker with extra arguments; all are stopped at the end."""
    started: list[Broker] = []

    def make(*args: str, env: dict[str, str] | None = None) -> Broker:
        broker = Broker(list(args), env)
        started.append(broker)
        return broker

    yield make
    for broker in started:
        broker.kill()


@pytest.fixture
def broker(make_broker, tmp_path: Path) -> Broker:
    """A broker on its default store (SQLite) in a fresh data directory."""
    return make_broker("--data-dir", str(tmp_path / "data"))


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------

_database_counter = itertools.count()


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def _psql(url: str, sql: str) -> None:
    subprocess.run(
        ["psql", url, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql],
        check=True,
        timeout=60,
        capture_output=True,
    )


@pytest.fixture
def postgres_url() -> str:
    """A fresh, empty database on the server at TEST_DATABASE_URL."""
    server = os.environ.get("TEST_DATABASE_URL")
    if not server:
        if IN_CI:
            pytest.fail("CI=true but TEST_DATABASE_URL is unset")
        pytest.skip("TEST_DATABASE_URL is unset")
    name = f"myqueue_py_{os.getpid()}_{next(_database_counter)}"
    _psql(server, f"DROP DATABASE IF EXISTS {name}")
    _psql(server, f"CREATE DATABASE {name}")
    return _with_database(server, name)


class OwnPostgres:
    """A throwaway PostgreSQL server that a test may stop and start."""

    script = ROOT / "scripts" / "throwaway-postgres.sh"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.url = subprocess.run(
            ["bash", str(self.script), "start", str(directory)],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout.strip()

    def stop(self) -> None:
        subprocess.run(
            ["bash", str(self.script), "stop", str(self.directory)],
            check=True,
            timeout=120,
            capture_output=True,
        )

    def start(self) -> None:
        port = (self.directory / "port").read_text().strip()
        data = self.directory / "data"
        pg_ctl = max(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        cmd = [
            str(pg_ctl),
            "-D",
            str(data),
            "-l",
            str(self.directory / "server.log"),
            "-w",
            "-t",
            "60",
            "-o",
            f"-c listen_addresses=127.0.0.1 -p {port} -k {self.directory} -c max_connections=200",
            "start",
        ]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    if shutil.which("runuser") is None and os.geteuid() == 0:
        pytest.skip("runuser is missing")
    if not sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        if IN_CI:
            pytest.fail("PostgreSQL server binaries are missing")
        pytest.skip("PostgreSQL server binaries are missing")
    directory = Path(tempfile.mkdtemp(prefix="myqueue-pg-"))
    server = OwnPostgres(directory)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgres"])
def durable_broker_args(request, tmp_path: Path) -> list[str]:
    """Arguments that start a broker on each durable store in turn (same data every restart)."""
    if request.param == "sqlite":
        return ["--data-dir", str(tmp_path / "data")]
    return ["--database-url", request.getfixturevalue("postgres_url")]
