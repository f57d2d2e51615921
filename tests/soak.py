"""Fault soaks: real brokers, real PostgreSQL, real client processes, real faults.

Each soak runs 4 ``MyProducer`` processes and 2 ``MyConsumer`` groups (one process each) on one
topic while faults are injected, then checks, reading the store back through the HTTP API:

- every message a producer saw acknowledged (its ``SendFuture`` succeeded) is stored, once,
  at the offset the acknowledgement named; each producer's messages are stored in the order
  it sent them; no message is stored twice (lost and stored twice must be 0);
- every group received every stored message, in order, at least once (a group may get a
  message again after a fault: such redeliveries are counted, not failures).

Scenarios (``--scenario``):
  kill-sqlite    the broker (SQLite) killed with SIGKILL and restarted, ``--cycles`` times
  kill-postgres  the same on PostgreSQL
  pg-restart     PostgreSQL stopped in immediate mode and restarted under a running broker
  haproxy        three brokers on one PostgreSQL behind haproxy; the clients talk only to
                 haproxy; one broker killed and brought back each cycle
  disk-full      a SQLite broker on a small tmpfs filled up: 503 while full, healthz
                 503 store_unwritable, nothing acknowledged lost, normal service after

``scripts/soak.sh`` runs every scenario at full length; ``tests/test_soak.py`` runs short
ones in the test suite. Run as a program: ``python3 tests/soak.py --help``. Everything runs
on 127.0.0.1; every process started here is stopped by its PID.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import requests

ROOT = Path(__file__).resolve().parent.parent
TOPIC = "soak"
GROUPS = ("soak-a", "soak-b")
PRODUCERS = 4
START_TIMEOUT = 60.0
#: How long producers may take to deliver what they hold once the faults are over.
DRAIN_TIMEOUT = 180.0
MESSAGE = re.compile(r"p(\d+)-(\d+)")
#: A consumer process is killed (SIGKILL) and started again once every this many faults,
#: the first time after the third.
CONSUMER_KILL_EVERY = 5


class SkipScenario(Exception):
    """The machine cannot run this scenario (the reason says why)."""


# ---------------------------------------------------------------------------------------------
# Processes: brokers, PostgreSQL, haproxy
# ---------------------------------------------------------------------------------------------


def broker_binary() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return Path(os.environ.get("MYQUEUE_BROKER", target / "release" / "myqueue-broker"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """A broker process; ``kill()`` is SIGKILL, ``start()`` again reuses the port and data."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.args = args
        self.log_path = log_path
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait_healthy: bool = True) -> None:
        env = dict(os.environ)
        env.pop("DATABASE_URL", None)
        env.setdefault("MYQUEUE_LOG", "info")
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                [str(broker_binary()), "--listen", f"127.0.0.1:{self.port}", *self.args],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=env,
            )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if not match:
            self.proc.wait(timeout=10)
            raise RuntimeError(f"broker did not start: {line!r}\n{self.log_tail()}")
        self.port = int(match.group(1))
        if wait_healthy:
            wait_healthy_url(self.url, self.log_tail)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def wait_healthy_url(
    url: str, why: Callable[[], str] = str, timeout: float = START_TIMEOUT
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            if requests.get(url + "/healthz", timeout=2).status_code == 200:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{url} not healthy after {timeout}s\n{why()}")


class Postgres:
    """A throwaway PostgreSQL server (scripts/throwaway-postgres.sh) that can be stopped hard."""

    script = ROOT / "scripts" / "throwaway-postgres.sh"

    def __init__(self) -> None:
        if not sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
            raise SkipScenario("PostgreSQL server binaries are missing")
        # Its own directory under /tmp: the postgres user must reach it (a work directory
        # made by mkdtemp is root's alone).
        directory = Path(tempfile.mkdtemp(prefix="myqueue-soak-pg-"))
        self.directory = directory
        self.url = subprocess.run(
            ["bash", str(self.script), "start", str(directory)],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout.strip()

    def _pg_ctl(self, *args: str) -> None:
        pg_ctl = max(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        cmd = [str(pg_ctl), "-D", str(self.directory / "data"), *args]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def stop_immediately(self) -> None:
        """A crash, as far as the database is concerned: no checkpoint, recovery at start."""
        self._pg_ctl("-m", "immediate", "-w", "-t", "60", "stop")

    def start(self) -> None:
        port = (self.directory / "port").read_text().strip()
        self._pg_ctl(
            "-l",
            str(self.directory / "server.log"),
            "-w",
            "-t",
            "60",
            "-o",
            f"-c listen_addresses=127.0.0.1 -p {port} -k {self.directory} -c max_connections=200",
            "start",
        )

    def close(self) -> None:
        subprocess.run(
            ["bash", str(self.script), "stop", str(self.directory)],
            check=False,
            capture_output=True,
            timeout=120,
        )
        shutil.rmtree(self.directory, ignore_errors=True)


def fresh_database(server_url: str, name: str) -> str:
    """A new empty database on the server at ``server_url``; its URL."""
    for sql in (f"DROP DATABASE IF EXISTS {name}", f"CREATE DATABASE {name}"):
        subprocess.run(
            ["psql", server_url, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql],
            check=True,
            capture_output=True,
            timeout=60,
        )
    parts = urlsplit(server_url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


class Haproxy:
    """haproxy on a free loopback port in front of ``backends`` (ports), checking /healthz."""

    def __init__(self, backends: list[int], directory: Path) -> None:
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not Path(binary).exists():
            raise SkipScenario("haproxy is not installed (apt-get install haproxy)")
        self.port = free_port()
        servers = "\n".join(
            f"    server b{i} 127.0.0.1:{port} check" for i, port in enumerate(backends)
        )
        # A dead broker is out of rotation after 2 failed checks 200 ms apart; requests that
        # could not connect are tried again on another broker (redispatch).
        config = f"""
global
    maxconn 4096
defaults
    mode http
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    retries 3
    option redispatch
frontend soak
    bind 127.0.0.1:{self.port}
    default_backend brokers
backend brokers
    balance roundrobin
    option httpchk GET /healthz
    default-server inter 200ms fall 2 rise 1
{servers}
"""
        path = directory / "haproxy.cfg"
        path.write_text(config)
        self.log = open(directory / "haproxy.log", "a")  # noqa: SIM115 (closed by close())
        self.proc = subprocess.Popen(
            [binary, "-db", "-f", str(path)], stdout=self.log, stderr=subprocess.STDOUT
        )
        wait_healthy_url(self.url, lambda: (directory / "haproxy.log").read_text())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


# ---------------------------------------------------------------------------------------------
# The load: producer and consumer processes (this file run as `producer` / `consumer`)
# ---------------------------------------------------------------------------------------------


def producer_main(broker: str, index: int, out: Path, stop_file: Path, rate: float) -> None:
    """Sends ``p{index}-{seq}`` at ``rate`` messages a second until ``stop_file`` exists,
    then stops the producer (delivering everything) and writes what was acknowledged."""
    from myqueue import BrokerUnavailable, MyProducer, MyQueueError

    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            producer = MyProducer([TOPIC], broker, delivery_timeout=DRAIN_TIMEOUT)
            break
        except BrokerUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    futures = []
    tick = 0.02
    per_tick = max(1, round(rate * tick))
    next_tick = time.monotonic()
    while not stop_file.exists():
        for _ in range(per_tick):
            futures.append(producer.send(TOPIC, f"p{index}-{len(futures)}"))
        next_tick += tick
        time.sleep(max(0.0, next_tick - time.monotonic()))
    error = None
    try:
        producer.stop(timeout=DRAIN_TIMEOUT)
    except MyQueueError as err:
        error = f"{type(err).__name__}: {err}"
    # The acknowledgement names the offset: the check looks there.
    acked = [[seq, f.get(0)] for seq, f in enumerate(futures) if f.succeeded()]
    result = {"sent": len(futures), "acked": acked, "failed": sum(f.failed() for f in futures)}
    out.write_text(json.dumps({**result, "error": error}))


def consumer_main(broker: str, group: str, out: Path, control: Path) -> None:
    """Consumes ``TOPIC`` as ``group``, one line ``offset message`` per delivery, until it has
    seen the offset before the end written into ``control``."""
    from myqueue import MyConsumer, MyQueueError

    last = -1
    with open(out, "a", buffering=1) as log:
        while True:
            try:
                consumer = MyConsumer([TOPIC], broker, group=group, start="beginning")
            except MyQueueError:
                time.sleep(0.2)
                continue
            try:
                while True:
                    msg = consumer.poll(timeout=0.5)
                    if msg is not None:
                        last = max(last, msg.offset)
                        log.write(f"{msg.offset} {msg.value.decode()}\n")
                        continue
                    end = control.read_text().strip() if control.exists() else ""
                    if end and last >= int(end) - 1:
                        consumer.stop()
                        return
            except MyQueueError as err:
                # Start again from the group's committed position: redeliveries, not loss.
                log.write(f"# restarted after {type(err).__name__}: {err}\n")
                with contextlib.suppress(MyQueueError):
                    consumer.stop(timeout=1)


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Report:
    scenario: str
    cycles: int = 0
    acknowledged: int = 0
    stored: int = 0
    lost: int = 0
    stored_twice: int = 0
    stored_out_of_order: int = 0
    wrong_offset: int = 0
    not_delivered: int = 0
    producer_failures: int = 0
    consumer_kills: int = 0
    delivered_twice: dict[str, int] = dataclasses.field(default_factory=dict)
    group_missing: dict[str, int] = dataclasses.field(default_factory=dict)
    group_out_of_order: dict[str, int] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    notes: list[str] = dataclasses.field(default_factory=list)

    def problems(self) -> list[str]:
        """What broke a guarantee; empty when the soak passed."""
        out = [
            f"{name} = {value}"
            for name in ("lost", "stored_twice", "stored_out_of_order", "wrong_offset")
            if (value := getattr(self, name))
        ]
        out += [f"group {g} misses {n} stored messages" for g, n in self.group_missing.items() if n]
        out += [
            f"group {g} skipped ahead {n} times" for g, n in self.group_out_of_order.items() if n
        ]
        if self.acknowledged == 0:
            out.append("nothing was acknowledged")
        return out

    def line(self) -> str:
        twice = ", ".join(f"{g} {n}" for g, n in self.delivered_twice.items())
        return (
            f"{self.scenario}: {self.cycles} cycles, {self.acknowledged} acknowledged, "
            f"{self.lost} lost, {self.stored_twice} stored twice, "
            f"{self.consumer_kills} consumer kills, delivered twice: {twice} "
            f"({self.seconds:.0f} s)"
        )


def read_back(
    base_url: str, timeout: float = 120, consumer_id: int | None = None
) -> list[tuple[int, str]]:
    """Every (offset, message) of TOPIC through /consumer/fetch, retrying over faults, as
    ``consumer_id`` (registered here if not given: a write)."""
    deadline = time.monotonic() + timeout
    session = requests.Session()

    def call(method: str, path: str, **kwargs: object) -> dict:
        while True:
            try:
                resp = session.request(method, base_url + path, timeout=30, **kwargs)  # type: ignore[arg-type]
                if resp.status_code == 200:
                    return resp.json()
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{method} {path} kept failing")
            time.sleep(0.2)

    if consumer_id is None:
        consumer_id = call("POST", "/consumer/register", json={"topic": TOPIC})["consumer_id"]
    out: list[tuple[int, str]] = []
    offset = 0
    while time.monotonic() < deadline:
        page = call(
            "GET",
            "/consumer/fetch",
            params={
                "topic": TOPIC,
                "consumer_id": consumer_id,
                "offset": offset,
                "max_messages": 10_000,
            },
        )
        out.extend((m["offset"], m["message"]) for m in page["messages"])
        if not page["messages"]:
            return out
        offset = page["next_offset"]
    raise TimeoutError("reading the topic back took too long")


def check_store(report: Report, stored: list[tuple[int, str]], acked: dict[int, list]) -> None:
    report.stored = len(stored)
    at_offset = dict(stored)
    seen: dict[tuple[int, int], int] = {}
    last_seq: dict[int, int] = {}
    for _, message in stored:
        match = MESSAGE.fullmatch(message)
        assert match, f"unexpected message {message!r}"
        key = (int(match.group(1)), int(match.group(2)))
        seen[key] = seen.get(key, 0) + 1
        if key[1] <= last_seq.get(key[0], -1):
            report.stored_out_of_order += 1
        last_seq[key[0]] = key[1]
    report.stored_twice = sum(n - 1 for n in seen.values())
    for index, pairs in acked.items():
        report.acknowledged += len(pairs)
        for seq, offset in pairs:
            if (index, seq) not in seen:
                report.lost += 1
            elif at_offset.get(offset) != f"p{index}-{seq}":
                report.wrong_offset += 1


def check_group(report: Report, group: str, lines: list[str], stored: list[tuple[int, str]]):
    """In order at least once: each delivery is a message seen before (a redelivery) or the
    very next stored one; every stored one is delivered."""
    at_offset = dict(stored)
    delivered: set[int] = set()
    twice = skipped = 0
    high = -1
    for line in lines:
        if line.startswith("#"):
            report.notes.append(f"{group}: {line.strip()}")
            continue
        offset_text, message = line.rstrip("\n").split(" ", 1)
        offset = int(offset_text)
        if at_offset.get(offset) != message:
            report.wrong_offset += 1
        if offset in delivered:
            twice += 1
            continue
        if offset != high + 1:
            skipped += 1
        high = max(high, offset)
        delivered.add(offset)
    report.delivered_twice[group] = twice
    report.group_out_of_order[group] = skipped
    report.group_missing[group] = len(set(at_offset) - delivered)


# ---------------------------------------------------------------------------------------------
# Running a soak
# ---------------------------------------------------------------------------------------------


def spawn_worker(*args: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "a") as out:
        return subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


def ensure_topic(url: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            resp = requests.post(url + "/topics", json={"name": TOPIC}, timeout=10)
            if resp.status_code in (200, 409):
                return
        time.sleep(0.2)
    raise TimeoutError(f"cannot create topic {TOPIC} at {url}")


def run_load(
    scenario: str,
    url: str,
    fault: Callable[[int], None],
    cycles: int,
    interval: float,
    rate: float,
    work: Path,
) -> Report:
    """Runs producers and consumers against ``url`` while ``fault(i)`` runs every
    ``interval`` seconds, ``cycles`` times; then drains and checks."""
    report = Report(scenario)
    started = time.monotonic()
    ensure_topic(url)
    address = url.removeprefix("http://")
    stop_file, control = work / "stop", work / "end"
    workers: list[subprocess.Popen[bytes]] = []
    try:

        def start_consumer(group: str) -> subprocess.Popen[bytes]:
            return spawn_worker(
                "consumer",
                address,
                group,
                str(work / f"{group}.log"),
                str(control),
                log=work / f"{group}.out",
            )

        consumers = [start_consumer(group) for group in GROUPS]
        producers = [
            spawn_worker(
                "producer",
                address,
                str(i),
                str(work / f"producer-{i}.json"),
                str(stop_file),
                str(rate),
                log=work / f"producer-{i}.out",
            )
            for i in range(PRODUCERS)
        ]
        workers = [*consumers, *producers]
        for cycle in range(cycles):
            time.sleep(interval)
            fault(cycle)
            report.cycles += 1
            if cycle % CONSUMER_KILL_EVERY == CONSUMER_KILL_EVERY - 3:
                # A consumer process dies too: its group continues from its committed
                # position, and gets again what it took since (counted as delivered twice).
                index = report.consumer_kills % len(GROUPS)
                stop_worker(consumers[index])
                consumers[index] = start_consumer(GROUPS[index])
                workers.append(consumers[index])
                report.consumer_kills += 1
        time.sleep(interval)  # a last stretch without faults
        stop_file.touch()
        deadline = time.monotonic() + DRAIN_TIMEOUT + 30
        for proc in producers:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        acked: dict[int, list] = {}
        for i in range(PRODUCERS):
            path = work / f"producer-{i}.json"
            if not path.exists():
                out = (work / f"producer-{i}.out").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"producer {i} wrote no result:\n{out}")
            result = json.loads(path.read_text())
            acked[i] = result["acked"]
            report.producer_failures += result["failed"]
            if result["error"]:
                report.notes.append(f"producer {i}: {result['error']}")
        stored = read_back(url)
        check_store(report, stored, acked)
        control.write_text(str(len(stored) and stored[-1][0] + 1))
        for proc in consumers:
            proc.wait(timeout=120)
        for group in GROUPS:
            lines = (work / f"{group}.log").read_text().splitlines()
            check_group(report, group, lines, stored)
    finally:
        for proc in workers:
            stop_worker(proc)
    report.seconds = time.monotonic() - started
    return report


@contextlib.contextmanager
def postgres_server(work: Path, server_url: str | None, name: str) -> Iterator[str]:
    """A fresh database: on ``server_url`` if given, else on a throwaway server."""
    if server_url:
        yield fresh_database(server_url, f"{name}_{os.getpid()}")
        return
    pg = Postgres()
    try:
        yield pg.url
    finally:
        pg.close()


def soak_broker_kills(
    store: str, cycles: int, interval: float, rate: float, work: Path, server_url: str | None = None
) -> Report:
    with contextlib.ExitStack() as stack:
        if store == "sqlite":
            args = ["--data-dir", str(work / "data")]
        else:
            url = stack.enter_context(postgres_server(work, server_url, "myqueue_soak_kill"))
            args = ["--database-url", url]
        broker = Broker(args, work / "broker.log")
        broker.start()
        stack.callback(broker.kill)

        def fault(_: int) -> None:
            broker.kill()
            broker.start()

        return run_load(f"kill-{store}", broker.url, fault, cycles, interval, rate, work)
    raise AssertionError("unreachable")


def soak_postgres_restarts(cycles: int, interval: float, rate: float, work: Path) -> Report:
    pg = Postgres()
    broker = Broker(["--database-url", pg.url], work / "broker.log")
    try:
        broker.start()

        def fault(_: int) -> None:
            pg.stop_immediately()
            time.sleep(1.0)  # the broker answers 503 meanwhile; clients retry
            pg.start()

        return run_load("pg-restart", broker.url, fault, cycles, interval, rate, work)
    finally:
        broker.kill()
        pg.close()


def soak_haproxy(
    cycles: int, interval: float, rate: float, work: Path, server_url: str | None = None
) -> Report:
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(postgres_server(work, server_url, "myqueue_soak_haproxy"))
        brokers = [Broker(["--database-url", url], work / f"broker-{i}.log") for i in range(3)]
        for broker in brokers:
            broker.start()
            stack.callback(broker.kill)
        proxy = Haproxy([b.port for b in brokers], work)
        stack.callback(proxy.close)

        def fault(cycle: int) -> None:
            victim = brokers[cycle % len(brokers)]
            victim.kill()
            time.sleep(min(1.0, interval / 2))  # haproxy notices, traffic goes to the others
            victim.start()

        return run_load("haproxy", proxy.url, fault, cycles, interval, rate, work)
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------------
# The disk filling up
# ---------------------------------------------------------------------------------------------

DISK_SIZE = "24m"
BLOCK = "x" * 60_000


@contextlib.contextmanager
def small_filesystem(work: Path) -> Iterator[Path]:
    """A tmpfs of DISK_SIZE mounted at ``work/disk`` (root only); SkipScenario otherwise."""
    mount_point = work / "disk"
    mount_point.mkdir()
    if os.geteuid() != 0:
        raise SkipScenario("mounting a small filesystem needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE}", "tmpfs", str(mount_point)],
        check=False,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SkipScenario(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False, capture_output=True)


def fill(path: Path, leave_bytes: int) -> None:
    """Writes ``path`` until the filesystem has about ``leave_bytes`` free."""
    stats = os.statvfs(path.parent)
    size = stats.f_bavail * stats.f_frsize - leave_bytes
    with open(path, "wb") as f:
        chunk = b"\0" * (1 << 20)
        while size > 0:
            try:
                f.write(chunk[: min(size, len(chunk))])
                f.flush()
            except OSError:
                break
            size -= len(chunk)


def soak_disk_full(work: Path) -> Report:
    """Produces large batches with sequence numbers (as the client does) until the disk is
    full; checks 503 and healthz while full; frees space; retries the refused batch; checks
    that everything acknowledged is stored once."""
    report = Report("disk-full")
    started = time.monotonic()
    with small_filesystem(work) as disk:
        broker = Broker(["--data-dir", str(disk / "data")], work / "broker.log")
        broker.start()
        try:
            session = requests.Session()
            producer_id = session.post(
                broker.url + "/producer/register", json={"topic": TOPIC}, timeout=30
            ).json()["producer_id"]
            # Registered before the disk is full: registering writes.
            reader = session.post(
                broker.url + "/consumer/register", json={"topic": TOPIC}, timeout=30
            ).json()["consumer_id"]
            filler = disk / "filler"
            fill(filler, leave_bytes=3 << 20)
            acked: list[list[int]] = []
            sequence = 0
            refused = None
            for _ in range(500):  # 3 MiB of room, 60 kB a message, 4 a batch: ~13 batches
                batch = [f"p0-{sequence + i}{BLOCK}" for i in range(4)]
                resp = session.post(
                    broker.url + "/producer/produce_batch",
                    json={
                        "topic": TOPIC,
                        "producer_id": producer_id,
                        "sequence": sequence,
                        "messages": batch,
                    },
                    timeout=30,
                )
                if resp.status_code != 200:
                    refused = resp
                    break
                base = resp.json()["base_offset"]
                acked += [[sequence + i, base + i] for i in range(4)]
                sequence += 4
            assert refused is not None, "the disk never filled up"
            assert refused.status_code == 503, refused.text
            assert refused.json()["code"] == "storage_unavailable", refused.text
            report.notes.append(f"full after {len(acked)} messages: {refused.json()['message']}")
            # Still full: the same batch again is refused the same way, not half stored.
            again = session.post(
                broker.url + "/producer/produce_batch",
                json={
                    "topic": TOPIC,
                    "producer_id": producer_id,
                    "sequence": sequence,
                    "messages": [f"p0-{sequence + i}{BLOCK}" for i in range(4)],
                },
                timeout=30,
            )
            assert again.status_code == 503, again.text
            health = session.get(broker.url + "/healthz", timeout=10)
            assert health.status_code == 503, health.text
            assert health.json()["code"] == "store_unwritable", health.text
            # Reads go on while full.
            fetched = read_back(broker.url, timeout=30, consumer_id=reader)
            assert len(fetched) == len(acked)
            filler.unlink()
            # The refused batch again, as the client would retry it: stored once now.
            resp = session.post(
                broker.url + "/producer/produce_batch",
                json={
                    "topic": TOPIC,
                    "producer_id": producer_id,
                    "sequence": sequence,
                    "messages": [f"p0-{sequence + i}{BLOCK}" for i in range(4)],
                },
                timeout=30,
            )
            assert resp.status_code == 200, resp.text
            base = resp.json()["base_offset"]
            acked += [[sequence + i, base + i] for i in range(4)]
            health = session.get(broker.url + "/healthz", timeout=10)
            assert health.status_code == 200, health.text
            stored = [(o, m[: -len(BLOCK)]) for o, m in read_back(broker.url, timeout=30)]
            check_store(report, stored, {0: acked})
            report.cycles = 1
        finally:
            broker.kill()
    report.seconds = time.monotonic() - started
    return report


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

SCENARIOS = ("kill-sqlite", "kill-postgres", "pg-restart", "haproxy", "disk-full")


def run_scenario(
    name: str, cycles: int, interval: float, rate: float, work: Path, server_url: str | None = None
) -> Report:
    work.mkdir(parents=True, exist_ok=True)
    if name == "kill-sqlite":
        return soak_broker_kills("sqlite", cycles, interval, rate, work)
    if name == "kill-postgres":
        return soak_broker_kills("postgres", cycles, interval, rate, work, server_url)
    if name == "pg-restart":
        return soak_postgres_restarts(cycles, interval, rate, work)
    if name == "haproxy":
        return soak_haproxy(cycles, interval, rate, work, server_url)
    if name == "disk-full":
        return soak_disk_full(work)
    raise ValueError(f"unknown scenario {name}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run soaks and print their counts")
    run.add_argument(
        "--scenario", action="append", choices=SCENARIOS, help="repeatable; default: all"
    )
    run.add_argument(
        "--cycles", type=int, default=20, help="faults per soak (pg-restart: --pg-cycles)"
    )
    run.add_argument("--pg-cycles", type=int, default=5)
    run.add_argument("--interval", type=float, default=3.0, help="seconds between faults")
    run.add_argument("--rate", type=float, default=250.0, help="messages/s per producer")
    run.add_argument(
        "--database-url",
        help="a PostgreSQL server for kill-postgres and "
        "haproxy (default: a throwaway server of their own)",
    )
    run.add_argument("--report", type=Path, help="also write the reports here as JSON")
    p = sub.add_parser("producer")
    p.add_argument("broker")
    p.add_argument("index", type=int)
    p.add_argument("out", type=Path)
    p.add_argument("stop_file", type=Path)
    p.add_argument("rate", type=float)
    c = sub.add_parser("consumer")
    c.add_argument("broker")
    c.add_argument("group")
    c.add_argument("out", type=Path)
    c.add_argument("control", type=Path)
    args = parser.parse_args()
    if args.command == "producer":
        producer_main(args.broker, args.index, args.out, args.stop_file, args.rate)
        return 0
    if args.command == "consumer":
        consumer_main(args.broker, args.group, args.out, args.control)
        return 0
    reports = []
    failed = False
    for name in args.scenario or SCENARIOS:
        work = Path(tempfile.mkdtemp(prefix=f"myqueue-soak-{name}-"))
        cycles = args.pg_cycles if name == "pg-restart" else args.cycles
        try:
            report = run_scenario(name, cycles, args.interval, args.rate, work, args.database_url)
        except SkipScenario as why:
            print(f"{name}: SKIPPED: {why}", flush=True)
            continue
        reports.append(report)
        print(report.line(), flush=True)
        for note in report.notes[:10]:
            print(f"    {note}", flush=True)
        if report.problems():
            failed = True
            print(f"    FAILED: {'; '.join(report.problems())} (work dir {work})", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    if args.report:
        args.report.write_text(json.dumps([dataclasses.asdict(r) for r in reports], indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
