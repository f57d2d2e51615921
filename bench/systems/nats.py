"""NATS JetStream: nats-server -js with file storage, nats-py; acknowledged publishes (many in
flight), a pull consumer to drain, a push consumer as the waiting reader."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType

from .base import (
    Received,
    Schedule,
    Settings,
    Unavailable,
    free_port,
    paced_async,
    spawn,
    terminate,
    wait_for_port,
)

LABEL = "NATS JetStream, file storage (nats-py)"
DURABILITY = (
    "per interval, not per write: acked once written to the OS, fsynced in the background "
    "(nats-server 2.9 cannot sync every write)"
)
WINDOW = 1000  # acknowledged publishes in flight
FETCH = 1000  # messages per pull while draining


class Server:
    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, workdir: Path) -> Settings:
        binary = shutil.which("nats-server")
        if binary is None:
            raise Unavailable("nats-server is not installed (Debian: apt-get install nats-server)")
        port = free_port()
        log = workdir / "nats.log"
        self.proc = spawn(
            [binary, "-js", "-sd", str(workdir / "jetstream"), "-a", "127.0.0.1",
             "-p", str(port), "-m", "0"],
            log,
        )  # fmt: skip
        wait_for_port(port, self.proc, 60, log)
        return {"url": f"nats://127.0.0.1:{port}"}

    def stop(self) -> None:
        terminate(self.proc)


def stream(topic: str) -> str:
    return "S_" + topic.replace("-", "_")


class Client:
    def __init__(self, settings: Settings) -> None:
        self.url = settings["url"]

    def prepare(self, topic: str) -> None:
        async def run() -> None:
            nc = await nats.connect(self.url)
            await nc.jetstream().add_stream(
                name=stream(topic), subjects=[topic], storage=StorageType.FILE
            )
            await nc.close()

        asyncio.run(run())

    def produce(self, topic: str, count: int, payload: bytes) -> None:
        async def run() -> None:
            nc = await nats.connect(self.url)
            js = nc.jetstream(publish_async_max_pending=WINDOW)
            futures = [await js.publish_async(topic, payload) for _ in range(count)]
            acks = await asyncio.gather(*futures, return_exceptions=True)
            await nc.close()
            failed = [a for a in acks if isinstance(a, BaseException)]
            if failed:
                raise RuntimeError(f"{len(failed)} publishes failed: {failed[0]!r}")

        asyncio.run(run())

    def drain(self, topic: str, count: int) -> None:
        async def run() -> int:
            nc = await nats.connect(self.url)
            js = nc.jetstream()
            sub = await js.pull_subscribe(
                topic,
                durable="drain",
                stream=stream(topic),
                config=ConsumerConfig(ack_policy=AckPolicy.ALL),
            )
            taken = 0
            while taken < count:
                try:
                    msgs = await sub.fetch(FETCH, timeout=5)
                except asyncio.TimeoutError:
                    break
                taken += len(msgs)
                await msgs[-1].ack()  # AckPolicy.ALL: acks everything up to it
            await nc.close()
            return taken

        taken = asyncio.run(run())
        if taken != count:
            raise RuntimeError(f"drained {taken} of {count}")

    def send_paced(self, topic: str, rate: float, count: int) -> None:
        async def run() -> None:
            nc = await nats.connect(self.url)
            js = nc.jetstream()
            schedule = Schedule(rate, count)

            async def send(i: int) -> None:
                await js.publish(topic, schedule.payload(i))  # waits for its PubAck only

            await paced_async(schedule, send, WINDOW)
            await nc.close()

        asyncio.run(run())

    def receive(
        self, topic: str, count: int, ready: Callable[[], None], timeout: float
    ) -> Received:
        async def run() -> Received:
            nc = await nats.connect(self.url)
            # A push consumer: the server sends each message as it is stored. (A pull per
            # message costs two round trips in Python and fell behind 1,000 msg/s here.)
            sub = await nc.jetstream().subscribe(
                topic,
                stream=stream(topic),
                config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.NEW),
            )
            ready()  # the consumer exists: everything published from now on reaches it
            got: Received = []
            while len(got) < count:
                try:
                    msg = await sub.next_msg(timeout=timeout)
                except asyncio.TimeoutError:
                    break
                got.append((time.time_ns(), msg.data))
            await nc.close()
            return got

        return asyncio.run(run())
