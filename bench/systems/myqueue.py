"""myqueue itself: the release broker (bench/harness.py's Broker) on SQLite or PostgreSQL, and
the installed `myqueue` package's MyProducer/MyConsumer as the README documents them."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from harness import BROKER, Broker

from .base import Received, Schedule, Settings, Shared, Unavailable

LABEL = {
    "sqlite": "myqueue, SQLite",
    "postgres": "myqueue, PostgreSQL",
    "memory": "myqueue, memory store (reference)",
}
DURABILITY = {
    "sqlite": "fsync per write (group commit: WAL, `synchronous=FULL`)",
    "postgres": "fsync per write (group commit: `fsync`, `synchronous_commit` on)",
    "memory": "**none**: kept in memory, lost on restart (the trip without a store)",
}


class Server:
    def __init__(self, store: str, shared: Shared) -> None:
        self.store = store
        self.shared = shared
        self.broker: Broker | None = None

    def start(self, workdir: Path) -> Settings:
        if not BROKER.exists():
            raise Unavailable(f"{BROKER} is missing: cargo build --release -p broker")
        postgres = self.shared.postgres() if self.store == "postgres" else None
        self.broker = Broker(self.store, postgres).__enter__()
        return {"address": self.broker.address}

    def stop(self) -> None:
        if self.broker is not None:
            self.broker.__exit__(None, None, None)


class Client:
    def __init__(self, settings: Settings) -> None:
        self.address = settings["address"]

    def prepare(self, topic: str) -> None:
        from myqueue import MyProducer

        MyProducer([topic], self.address).stop()  # registering creates the topic

    def produce(self, topic: str, count: int, payload: bytes) -> None:
        from myqueue import MyProducer

        producer = MyProducer([topic], self.address)
        send = producer.send
        for _ in range(count):
            send(topic, payload)
        producer.stop()  # returns once every batch is acknowledged (raises otherwise)

    def drain(self, topic: str, count: int) -> None:
        from myqueue import MyConsumer

        consumer = MyConsumer([topic], self.address)
        taken = 0
        for _ in consumer.get_next(timeout=30):
            taken += 1
            if taken == count:
                break
        consumer.stop()
        if taken != count:
            raise RuntimeError(f"drained {taken} of {count}")

    def send_paced(self, topic: str, rate: float, count: int) -> None:
        from myqueue import MyProducer

        producer = MyProducer([topic], self.address, linger_ms=0)
        schedule = Schedule(rate, count)
        for i in range(count):
            schedule.sleep_until(i)
            producer.send(topic, schedule.payload(i))  # returns at once: delivery is background
        producer.stop()

    def receive(
        self, topic: str, count: int, ready: Callable[[], None], timeout: float
    ) -> Received:
        from myqueue import MyConsumer

        consumer = MyConsumer([topic], self.address)  # the prepared topic is empty
        ready()
        got: Received = []
        for msg in consumer.get_next(timeout=timeout):
            got.append((time.time_ns(), msg.value))
            if len(got) == count:
                break
        consumer.stop()
        return got
