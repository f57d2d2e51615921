"""RabbitMQ: a quorum queue on one rabbitmq-server node, publisher confirms, pika.

Publishing uses pika's asynchronous SelectConnection so that many confirms can be in flight
(pika's BlockingConnection waits for each confirm in turn); reading uses BlockingConnection.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pika
import pika.channel
import pika.spec

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

LABEL = "RabbitMQ quorum queue, publisher confirms (pika)"
DURABILITY = "fsync per write (quorum queue: Raft log fsynced before the confirm; one node)"
SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
WINDOW = 1000  # publishes awaiting their confirm
PREFETCH = 2000  # deliveries in flight to a consumer
ACK_EVERY = 1000  # a consumer acks this many at once (multiple=True)


class Server:
    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.epmd_port = 0

    def start(self, workdir: Path) -> Settings:
        if not SERVER.exists():
            raise Unavailable("rabbitmq-server is not installed")
        port, self.epmd_port = free_port(), free_port()
        (workdir / "rabbitmq.conf").write_text("loopback_users = none\n")
        env = {
            # The real server script, run as the invoking user (also root) with everything it
            # writes in workdir; /usr/sbin's wrapper would switch to the rabbitmq user and the
            # system's directories.
            "HOME": str(workdir),  # the Erlang cookie goes here
            "RABBITMQ_NODENAME": f"peers{port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "ERL_EPMD_PORT": str(self.epmd_port),  # its own epmd, not the shared 4369
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_MNESIA_BASE": str(workdir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(workdir / "log"),
            "RABBITMQ_LOGS": "-",
            "RABBITMQ_CONFIG_FILE": str(workdir / "rabbitmq"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(workdir / "enabled_plugins"),
            "RABBITMQ_ENABLED_PLUGINS": "",
            "RABBITMQ_PID_FILE": str(workdir / "rabbitmq.pid"),
            # exec erl instead of waiting on it in a shell: the PID we hold is the server's.
            "RUNNING_UNDER_SYSTEMD": "1",
        }
        log = workdir / "rabbitmq.log"
        self.proc = spawn([str(SERVER)], log, env)
        wait_for_port(port, self.proc, 180, log)
        return {"port": str(port)}

    def stop(self) -> None:
        terminate(self.proc, grace=60)
        if self.epmd_port and shutil.which("epmd"):
            # epmd detaches from the server's session: stop the one on our own port.
            subprocess.run(
                ["epmd", "-port", str(self.epmd_port), "-kill"],
                env=dict(os.environ, ERL_EPMD_ADDRESS="127.0.0.1"),
                capture_output=True,
                timeout=30,
                check=False,
            )


class _Publisher:
    """Publishes count persistent messages with up to WINDOW unconfirmed, each no earlier
    than due(i) seconds after the start; returns once every one is confirmed."""

    def __init__(self, port: int, queue: str) -> None:
        self.params = pika.ConnectionParameters("127.0.0.1", port)
        self.queue = queue
        self.properties = pika.BasicProperties(delivery_mode=2)
        self.unconfirmed: set[int] = set()
        self.sent = 0
        self.timer_set = False
        self.finished = False
        self.error: str | None = None

    def run(self, count: int, rate: float | None, payload: bytes = b"") -> None:
        """rate None: as fast as confirms allow, every message payload; else on a Schedule."""
        self.count, self.rate, self.payload = count, rate, payload
        self.connection = pika.SelectConnection(
            self.params,
            on_open_callback=lambda c: c.channel(on_open_callback=self._on_channel),
            on_open_error_callback=self._fail,
            on_close_callback=lambda c, reason: c.ioloop.stop(),
        )
        self.connection.ioloop.start()
        if self.error:
            raise RuntimeError(self.error)
        if self.sent != count or self.unconfirmed:
            raise RuntimeError(f"{self.sent} of {count} sent, {len(self.unconfirmed)} unconfirmed")

    def _fail(self, _connection: Any, reason: Any) -> None:
        if self.finished:
            return  # our own close() at the end
        self.error = str(reason)
        self.connection.ioloop.stop()

    def _finish(self) -> None:
        self.finished = True
        self.connection.close()  # its close callback stops the ioloop

    def _on_channel(self, channel: pika.channel.Channel) -> None:
        self.channel = channel
        channel.add_on_close_callback(lambda _ch, reason: self._fail(None, reason))
        channel.confirm_delivery(self._on_confirm, callback=lambda _frame: self._start())

    def _start(self) -> None:
        self.schedule = Schedule(self.rate or 1.0, self.count) if self.rate else None
        self._pump()

    def _pump(self) -> None:
        while self.sent < self.count and len(self.unconfirmed) < WINDOW:
            wait = self.schedule.wait(self.sent) if self.schedule else 0.0
            if wait > 0:
                if not self.timer_set:  # one timer at a time, however many acks arrive
                    self.timer_set = True
                    self.connection.ioloop.call_later(wait, self._on_timer)
                return
            body = self.schedule.payload(self.sent) if self.schedule else self.payload
            self.channel.basic_publish("", self.queue, body, self.properties)
            self.sent += 1
            self.unconfirmed.add(self.sent)  # delivery tags count from 1

    def _on_timer(self) -> None:
        self.timer_set = False
        self._pump()

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        if isinstance(method, pika.spec.Basic.Nack):
            self.error = f"nack for delivery tag {method.delivery_tag}"
            self._finish()
            return
        if method.multiple:
            self.unconfirmed = {t for t in self.unconfirmed if t > method.delivery_tag}
        else:
            self.unconfirmed.discard(method.delivery_tag)
        if self.sent == self.count and not self.unconfirmed:
            self._finish()
        elif self.sent < self.count:
            self._pump()


class Client:
    def __init__(self, settings: Settings) -> None:
        self.port = int(settings["port"])

    def _blocking(self) -> pika.BlockingConnection:
        return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", self.port))

    def prepare(self, topic: str) -> None:
        connection = self._blocking()
        connection.channel().queue_declare(
            topic, durable=True, arguments={"x-queue-type": "quorum"}
        )
        connection.close()

    def produce(self, topic: str, count: int, payload: bytes) -> None:
        _Publisher(self.port, topic).run(count, None, payload)

    def send_paced(self, topic: str, rate: float, count: int) -> None:
        _Publisher(self.port, topic).run(count, rate)

    def drain(self, topic: str, count: int) -> None:
        got = self._consume(topic, count, lambda: None, 30, lambda _body: None)
        if got != count:
            raise RuntimeError(f"drained {got} of {count}")

    def receive(
        self, topic: str, count: int, ready: Callable[[], None], timeout: float
    ) -> Received:
        got: Received = []
        self._consume(topic, count, ready, timeout, lambda body: got.append((time.time_ns(), body)))
        return got

    def _consume(
        self,
        topic: str,
        count: int,
        ready: Callable[[], None],
        timeout: float,
        each: Callable[[bytes], None],
    ) -> int:
        """Takes count messages with acks in batches; stops after timeout s without one."""
        connection = self._blocking()
        channel = connection.channel()
        channel.basic_qos(prefetch_count=PREFETCH)
        taken = 0
        idle_since = time.monotonic()

        def on_message(ch: Any, method: Any, _props: Any, body: bytes) -> None:
            nonlocal taken, idle_since
            each(body)
            taken += 1
            idle_since = time.monotonic()
            if taken % ACK_EVERY == 0 or taken == count:
                ch.basic_ack(method.delivery_tag, multiple=True)

        channel.basic_consume(topic, on_message)  # waits for ConsumeOk: we are a reader now
        ready()
        while taken < count and time.monotonic() - idle_since < timeout:
            connection.process_data_events(time_limit=0.5)
        connection.close()
        return taken
