"""What every compared system provides, and the plumbing their servers share.

A system is a module with a `Server` (started by bench/peers.py in its own process group, on
a free loopback port, with a throwaway data directory) and a `Client` (built in a worker
process from the JSON settings the server handed out). The workloads only ever talk to these
two shapes, so each system's code stays in its own small module.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from harness import Postgres

Settings = dict[str, str]
"""How a worker reaches a started server (host, port, URL ...): JSON, passed on argv."""

Received = list[tuple[int, bytes]]
"""(time.time_ns() on receipt, payload) for every message a latency reader took."""


class Unavailable(Exception):
    """The system cannot be measured on this machine; the message says why."""


class Server(Protocol):
    def start(self, workdir: Path) -> Settings: ...

    def stop(self) -> None: ...


class Client(Protocol):
    def prepare(self, topic: str) -> None:
        """Creates the topic/stream/queue before any worker uses it."""

    def produce(self, topic: str, count: int, payload: bytes) -> None:
        """Sends count messages and returns once the last one is acknowledged."""

    def drain(self, topic: str, count: int) -> None:
        """Reads count messages from the start of the topic; fails if fewer arrive."""

    def send_paced(self, topic: str, rate: float, count: int) -> None:
        """Sends count messages at rate/s on a Schedule (begun once connected), each carrying
        its due time; returns once every one is acknowledged."""

    def receive(
        self, topic: str, count: int, ready: Callable[[], None], timeout: float
    ) -> Received:
        """Waits for new messages as a blocked reader; calls ready() once it is waiting."""


def free_port() -> int:
    """A port free on 127.0.0.1 right now (the server binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], seconds: float, log: Path) -> None:
    """Waits until something accepts on the port, or fails with the server's last log lines."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"server did not listen on {port} within {seconds:.0f} s: {tail(log)}")


def tail(log: Path, lines: int = 5) -> str:
    try:
        return " | ".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def spawn(
    command: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Starts a server in its own session, so that stop() can end it and its children by PID."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, **(env or {})),
            # Its own session: a Ctrl-C at the terminal reaches bench/peers.py, which then
            # stops the server by PID, rather than killing the server mid-run.
            start_new_session=True,
        )


def terminate(proc: subprocess.Popen[bytes] | None, grace: float = 20) -> None:
    """SIGTERM to the server, SIGKILL to its process group if it does not end in time."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the group is the server's own (new session)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


class Schedule:
    """Message i is due at start + i/rate and carries that due time (wall clock, ns) as its
    payload, padded to 100 bytes. A sender that falls behind (waiting for acks, or for the
    CPU) is charged for the wait: latency runs from when the message was due, not from when a
    late sender got round to it."""

    def __init__(self, rate: float, count: int) -> None:
        self.rate, self.count = rate, count
        self.start_perf = time.perf_counter()
        self.start_ns = time.time_ns()

    def payload(self, i: int) -> bytes:
        return str(self.start_ns + int(i * 1e9 / self.rate)).encode().ljust(100, b".")

    def wait(self, i: int) -> float:
        """Seconds until message i is due (0 or less: due now)."""
        return self.start_perf + i / self.rate - time.perf_counter()

    def sleep_until(self, i: int) -> None:
        while (left := self.wait(i)) > 0:
            time.sleep(min(left, 0.0005))

    def due_now(self) -> int:
        """How many messages are due by now."""
        return min(self.count, int((time.perf_counter() - self.start_perf) * self.rate) + 1)


async def paced_async(
    schedule: Schedule, send: Callable[[int], Awaitable[None]], window: int = 1000
) -> None:
    """Calls send(i) at each due time without waiting for its ack (at most window in flight),
    then waits for every outstanding one."""
    slots = asyncio.Semaphore(window)
    pending: set[asyncio.Task[None]] = set()

    async def one(i: int) -> None:
        try:
            await send(i)
        finally:
            slots.release()

    for i in range(schedule.count):
        delay = schedule.wait(i)
        if delay > 0:
            await asyncio.sleep(delay)
        await slots.acquire()
        task = asyncio.create_task(one(i))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.gather(*pending)


def stamped_ns(payload: bytes) -> int:
    return int(payload.rstrip(b"."))


class Shared:
    """What several servers share: one throwaway PostgreSQL (or the one at a URL), started the
    first time a system asks for it and stopped by bench/peers.py at the end."""

    def __init__(self, database_url: str | None) -> None:
        self.database_url = database_url
        self._postgres: Postgres | None = None

    def postgres(self) -> Postgres:
        if self._postgres is None:
            if not self.database_url and not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
                raise Unavailable("PostgreSQL is not installed (apt-get install postgresql)")
            self._postgres = Postgres(self.database_url)
        return self._postgres

    def close(self) -> None:
        if self._postgres is not None:
            self._postgres.close()
            self._postgres = None
