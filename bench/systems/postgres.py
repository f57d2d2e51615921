"""PostgreSQL itself, as the write ceiling: the same rows through one COPY in one transaction
(psycopg 3), and read back with COPY TO. No latency workload: it is not a queue."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg import sql

from .base import Received, Settings, Shared

LABEL = "PostgreSQL `COPY` (psycopg), the write ceiling"
DURABILITY = "fsync per commit (one transaction; `fsync`, `synchronous_commit` on)"
WORKLOADS = ("produce", "drain")


class Server:
    def __init__(self, shared: Shared) -> None:
        self.shared = shared

    def start(self, workdir: Path) -> Settings:
        return {"url": self.shared.postgres().fresh_database()}

    def stop(self) -> None:
        pass  # the shared server is stopped by bench/peers.py


def table(topic: str) -> sql.Identifier:
    return sql.Identifier("rows_" + topic.replace("-", "_"))


class Client:
    def __init__(self, settings: Settings) -> None:
        self.url = settings["url"]

    def prepare(self, topic: str) -> None:
        with psycopg.connect(self.url) as conn:
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (id BIGINT GENERATED ALWAYS AS IDENTITY "
                    "PRIMARY KEY, stored_ms BIGINT NOT NULL DEFAULT 0, payload BYTEA NOT NULL)"
                ).format(table(topic))
            )

    def produce(self, topic: str, count: int, payload: bytes) -> None:
        with psycopg.connect(self.url) as conn:  # commits at the end of the block
            statement = sql.SQL("COPY {} (payload) FROM STDIN").format(table(topic))
            with conn.cursor() as cur, cur.copy(statement) as copy:
                row = (payload,)
                for _ in range(count):
                    copy.write_row(row)

    def drain(self, topic: str, count: int) -> None:
        statement = sql.SQL("COPY (SELECT payload FROM {} ORDER BY id) TO STDOUT").format(
            table(topic)
        )
        taken = 0
        with psycopg.connect(self.url) as conn, conn.cursor() as cur, cur.copy(statement) as copy:
            for _ in copy.rows():
                taken += 1
        if taken != count:
            raise RuntimeError(f"drained {taken} of {count}")

    def send_paced(self, topic: str, rate: float, count: int) -> None:
        raise NotImplementedError("not a queue: no latency workload")

    def receive(
        self, topic: str, count: int, ready: Callable[[], None], timeout: float
    ) -> Received:
        raise NotImplementedError("not a queue: no latency workload")
