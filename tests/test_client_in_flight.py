"""MyProducer with several batches in flight per topic (``max_in_flight``): every message
stored once and in order when answers are lost and batches arrive out of order, on every
store. (A broker SIGKILLed mid-stream with batches in flight: test_client_producer.py.)"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from helpers import read_topic

import myqueue
from myqueue import MyProducer


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store_args(request, tmp_path) -> list[str]:
    """Arguments that start a broker on each store in turn."""
    if request.param == "memory":
        return ["--store", "memory"]
    if request.param == "sqlite":
        return ["--data-dir", str(tmp_path / "data")]
    return ["--database-url", request.getfixturevalue("postgres_url")]


class _Lossy(BaseHTTPRequestHandler):
    """Forwards to the broker. Batches are held a random 0-15 ms first (so a producer's
    batches in flight arrive out of order), and every third batch's answer is lost: the
    broker stored it (or refused it), the client sees its connection close."""

    protocol_version = "HTTP/1.1"
    server: _LossyProxy

    def _forward(self, method: str) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        batch = self.path.startswith("/producer/produce_batch")
        if batch:
            time.sleep(self.server.random.uniform(0, 0.015))
        answer = requests.request(
            method,
            self.server.upstream + self.path,
            data=body,
            headers={"content-type": self.headers.get("content-type", "application/json")},
            timeout=30,
        )
        if batch and self.server.lose_next():
            self.close_connection = True
            return
        self.send_response(answer.status_code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    def do_GET(self) -> None:
        self._forward("GET")

    def do_POST(self) -> None:
        self._forward("POST")

    def log_message(self, *args: Any) -> None:
        pass


class _LossyProxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _Lossy)
        self.upstream = upstream
        self.random = random.Random(13)
        self.batches = 0
        self.lost = 0
        self._lock = threading.Lock()

    def lose_next(self) -> bool:
        with self._lock:
            self.batches += 1
            lose = self.batches % 3 == 0
            self.lost += lose
            return lose


@pytest.fixture
def lossy(make_broker, store_args) -> Iterator[tuple[Any, _LossyProxy]]:
    broker = make_broker(*store_args)
    proxy = _LossyProxy(broker.url)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    yield broker, proxy
    proxy.shutdown()
    proxy.server_close()


def test_lost_answers_and_reordered_batches_store_each_message_once_in_order(lossy):
    broker, proxy = lossy
    address = f"127.0.0.1:{proxy.server_address[1]}"
    # Small batches: many of them, five in flight at a time.
    producer = MyProducer(["t"], address, batch_size=120, linger_ms=0, max_in_flight=5)
    futures = [producer.send("t", f"m{i:05d}") for i in range(2000)]
    producer.stop(timeout=120)
    assert [f.get(timeout=0) for f in futures] == list(range(2000)), "offsets in send order"
    stored = [message for _, message in read_topic(broker.url, "t")]
    assert stored == [f"m{i:05d}" for i in range(2000)], "every message once, in order"
    assert proxy.lost >= 20, f"only {proxy.lost} answers were lost: the retries were not tested"


def test_max_in_flight_is_1_to_5(broker):
    assert myqueue.PRODUCER_DEFAULTS["max_in_flight"] == 5
    for bad in (0, 6, -1):
        with pytest.raises((ValueError, OverflowError), match="max_in_flight|negative|overflow"):
            MyProducer(["t"], broker.address, max_in_flight=bad)
    with MyProducer(["t"], broker.address, max_in_flight=1) as producer:
        assert [producer.send("t", f"m{i}").get(timeout=30) for i in range(3)] == [0, 1, 2]
