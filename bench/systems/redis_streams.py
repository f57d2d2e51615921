"""Redis Streams: redis-server with every write fsynced before its reply (appendfsync always),
redis-py with hiredis; XADD pipelined to produce, XREAD to drain, XREAD BLOCK to wait."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis
import redis.asyncio

from .base import (
    Received,
    Settings,
    Unavailable,
    free_port,
    paced_async,
    spawn,
    terminate,
    wait_for_port,
)

LABEL = "Redis Streams (redis-py + hiredis)"
DURABILITY = "fsync per write (AOF `appendfsync always`: fsynced before the reply)"
PIPELINE = 1000  # XADDs per round trip
READ_COUNT = 5000  # entries per XREAD while draining
WINDOW = 64  # XADDs in flight while sending at a steady rate (each on its own connection)


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

    def send_paced(self, topic: str, rate: float, count: int, stamp: Callable[[], bytes]) -> None:
        async def run() -> None:
            # One connection per XADD in flight; at most WINDOW of them, the rest wait.
            pool = redis.asyncio.BlockingConnectionPool(
                host="127.0.0.1", port=self.port, max_connections=WINDOW
            )
            client = redis.asyncio.Redis(connection_pool=pool)

            async def send(_: int) -> None:
                await client.xadd(topic, {"v": stamp()})

            await paced_async(rate, count, send, WINDOW)
            await client.aclose()

        asyncio.run(run())

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
