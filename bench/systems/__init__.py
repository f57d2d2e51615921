"""The systems bench/peers.py compares, one module each (see base.py for their shape).

A system's module is imported only when it is measured, so a missing client library or
server takes out that system alone, with the reason in the results.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from .base import Client, Server, Shared


@dataclass(frozen=True)
class System:
    name: str
    module: str
    debian: tuple[tuple[str, str], ...]  # (command or path that shows it is there, package)
    pypi: tuple[tuple[str, str], ...]  # (module to import, requirement to pip install)
    variant: str = ""  # myqueue's store
    # Measured only when named in --systems: not a choice a user would make, a yardstick.
    reference: bool = False

    def load(self) -> ModuleType:
        return importlib.import_module(f"systems.{self.module}")

    def described(self, attribute: str) -> Any:
        value = getattr(self.load(), attribute)
        return value[self.variant] if isinstance(value, dict) and self.variant else value

    def server(self, shared: Shared) -> Server:
        module = self.load()
        if self.module == "myqueue":
            return module.Server(self.variant, shared)  # type: ignore[no-any-return]
        if self.module == "postgres":
            return module.Server(shared)  # type: ignore[no-any-return]
        return module.Server()  # type: ignore[no-any-return]

    def client(self, settings: dict[str, str]) -> Client:
        return self.load().Client(settings)  # type: ignore[no-any-return]

    def workloads(self) -> tuple[str, ...]:
        return tuple(getattr(self.load(), "WORKLOADS", ("produce", "drain", "latency")))


# The wheel is built from this tree (pip install .), not fetched by name.
MYQUEUE = (("myqueue", ""),)
POSTGRES_SERVER = (("psql", "postgresql"),)  # the server itself: /usr/lib/postgresql/*/bin

SYSTEMS = {
    s.name: s
    for s in (
        System("myqueue-sqlite", "myqueue", (), MYQUEUE, "sqlite"),
        System("myqueue-postgres", "myqueue", POSTGRES_SERVER, MYQUEUE, "postgres"),
        System("myqueue-memory", "myqueue", (), MYQUEUE, "memory", reference=True),
        System(
            "redis",
            "redis_streams",
            (("redis-server", "redis-server"),),
            (("redis", "redis"), ("hiredis", "hiredis")),
        ),
        System(
            "rabbitmq",
            "rabbitmq",
            (("/usr/lib/rabbitmq/bin/rabbitmq-server", "rabbitmq-server"),),
            (("pika", "pika"),),
        ),
        System("nats", "nats", (("nats-server", "nats-server"),), (("nats", "nats-py"),)),
        System("postgres-copy", "postgres", POSTGRES_SERVER, (("psycopg", "psycopg[binary]"),)),
    )
}
