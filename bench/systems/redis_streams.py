"""Redis Streams: redis-server with every write fsynced before its reply (appendfsync always),
redis-py with hiredis; XADD pipelined to produce, XREAD to drain, XREAD BLOCK to wait."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis

from .base import (
    Received,
    Schedule,
    Settings,
    Unavailable,
    free_port,
    spawn,
    terminate,
    wait_for_port,
)

LABEL = "Redis Streams (redis-py + hiredis)"
DURABILITY = "fsync per write (AOF `appendfsync always`: fsynced before the reply)"
PIPELINE = 1000  # XADDs per round trip
READ_COUNT = 5000  # entries per XREAD while draining


class Server:
    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, workdir: Path) -> Settings:
        binary = shutil.which("redis-server")
        if binary is None:
            raise Unavailable("redis-server is not installed")
        port = free_port()
        log = workdir / "redis.log"
        # redis runs as root without complaint; its data stays in workdir.
        self.proc = spawn(
            [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(workdir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "",
             "--protected-mode", "yes", "--daemonize", "no"],
            log,
        )  # fmt: skip
        wait_for_port(port, self.proc, 60, log)
        return {"port": str(port)}

    def stop(self) -> None:
        terminate(self.proc)


class Client:
    def __init__(self, settings: Settings) -> None:
        self.port = int(settings["port"])
        self.redis = redis.Redis(host="127.0.0.1", port=self.port)

    def prepare(self, topic: str) -> None:
        pass  # XADD creates the stream

    def produce(self, topic: str, count: int, payload: bytes) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for sent in range(0, count, PIPELINE):
            for _ in range(min(PIPELINE, count - sent)):
                pipe.xadd(topic, {"v": payload})
            pipe.execute()  # raises on any error reply

    def drain(self, topic: str, count: int) -> None:
        last, taken = "0-0", 0
        while taken < count:
            reply = self.redis.xread({topic: last}, count=READ_COUNT, block=5000)
            if not reply:
                raise RuntimeError(f"drained {taken} of {count}")
            entries = reply[0][1]
            taken += len(entries)
            last = entries[-1][0]

    def send_paced(self, topic: str, rate: float, count: int) -> None:
        # Every message due is sent in one pipeline; those that fall due while its replies
        # (one fsync) are awaited go in the next: a batch per fsync, as a pipelining client
        # would do it.
        pipe = self.redis.pipeline(transaction=False)
        schedule = Schedule(rate, count)
        sent = 0
        while sent < count:
            schedule.sleep_until(sent)
            due = schedule.due_now()
            for i in range(sent, due):
                pipe.xadd(topic, {"v": schedule.payload(i)})
            pipe.execute()
            sent = due

    def receive(
        self, topic: str, count: int, ready: Callable[[], None], timeout: float
    ) -> Received:
        newest = self.redis.xrevrange(topic, count=1)
        last = newest[0][0] if newest else "0-0"
        ready()  # from here on nothing can be missed: we read after `last`
        got: Received = []
        while len(got) < count:
            reply = self.redis.xread({topic: last}, count=READ_COUNT, block=int(timeout * 1000))
            now = time.time_ns()
            if not reply:
                break
            for entry_id, fields in reply[0][1]:
                got.append((now, fields[b"v"]))
                last = entry_id
        return got
