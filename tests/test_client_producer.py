"""MyProducer against a real broker: delivery, errors, threads, back-pressure, restarts."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest
from helpers import read_topic

import myqueue
from myqueue import MyProducer


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_stop_right_after_10000_rapid_sends_delivers_exactly_10000(broker):
    producer = MyProducer(["burst"], broker.address)
    for i in range(10_000):
        producer.send("burst", f"m{i}".encode())
    producer.stop()
    stored = read_topic(broker.url, "burst")
    assert [message for _, message in stored] == [f"m{i}" for i in range(10_000)]


def test_send_returns_a_future_with_the_offset(broker):
    with MyProducer(["t"], broker.address) as producer:
        futures = [producer.send("t", f"m{i}") for i in range(5)]
        assert [f.get(timeout=30) for f in futures] == [0, 1, 2, 3, 4]
        assert all(f.done() and f.succeeded() and not f.failed() for f in futures)
        # str and bytes both work, and a topic outside the list is registered on the fly.
        assert producer.send("elsewhere", "text").get(timeout=30) == 0
    assert producer.closed


def test_bad_input_is_refused_at_once(broker):
    producer = MyProducer(["t"], broker.address, max_message_bytes=100)
    with pytest.raises(ValueError, match="UTF-8"):
        producer.send("t", b"\xff\xfe")
    with pytest.raises(TypeError, match="bytes or str"):
        producer.send("t", 42)
    with pytest.raises(ValueError, match="topic name"):
        producer.send("bad topic", b"x")
    with pytest.raises(ValueError, match="limit is 100"):
        producer.send("t", b"x" * 101)
    producer.stop()
    with pytest.raises(myqueue.ClientClosed):
        producer.send("t", b"late")
    assert not producer.can_send()
    assert read_topic(broker.url, "t") == []


def test_an_unreachable_broker_raises_within_a_bounded_time():
    started = time.monotonic()
    with pytest.raises(myqueue.BrokerUnavailable) as raised:
        MyProducer(["t"], f"127.0.0.1:{closed_port()}")
    assert time.monotonic() - started < 10
    assert "connect" in str(raised.value)
    assert isinstance(raised.value, myqueue.MyQueueError)


def test_four_threads_share_one_producer(broker):
    producer = MyProducer(["shared"], broker.address)
    each = 2500

    def work(worker: int) -> None:
        for i in range(each):
            producer.send("shared", f"{worker}:{i}")

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    producer.stop()
    stored = [message for _, message in read_topic(broker.url, "shared")]
    assert len(stored) == 4 * each and len(set(stored)) == 4 * each
    for worker in range(4):
        mine = [int(m.split(":")[1]) for m in stored if m.startswith(f"{worker}:")]
        assert mine == list(range(each)), f"thread {worker}'s order"


@pytest.mark.timeout(60)
def test_flush_waits_for_what_was_sent_before_it_not_for_other_threads(broker):
    producer = MyProducer(["t"], broker.address)
    before = [producer.send("t", f"before-{i}") for i in range(1000)]
    flushed = threading.Event()

    def keep_sending() -> None:
        i = 0
        while not flushed.is_set():  # stops only once the flush below has returned
            producer.send("t", f"during-{i}")
            i += 1

    sender = threading.Thread(target=keep_sending)
    sender.start()
    try:
        producer.flush()
        assert all(f.done() and f.succeeded() for f in before)
    finally:
        flushed.set()
        sender.join(timeout=30)
    producer.stop()


def test_undeliverable_messages_are_reported_not_lost_silently(broker):
    producer = MyProducer(["t"], broker.address, delivery_timeout=1.0, buffer_size=4096)
    assert producer.send("t", "before").get(timeout=30) == 0
    broker.kill()
    futures = [producer.send("t", f"m{i}") for i in range(10)]
    with pytest.raises(myqueue.DeliveryFailed):
        futures[0].get(timeout=30)
    # The failure makes the producer unhealthy: the example's `while can_send()` loop ends.
    assert not producer.can_send()
    with pytest.raises(myqueue.DeliveryFailed, match="10 message"):
        producer.stop()


def test_send_waits_while_the_buffer_is_full(broker):
    producer = MyProducer(["t"], broker.address, buffer_size=1000, linger_ms=0)
    for i in range(2000):
        producer.send("t", f"{i:04d}")  # 4 bytes each: the buffer holds 250 at most
    producer.stop()
    assert len(read_topic(broker.url, "t")) == 2000


def test_a_broker_killed_and_restarted_mid_stream_loses_and_repeats_nothing(
    make_broker, durable_broker_args
):
    # Small batches: several of them in flight at each kill.
    broker = make_broker(*durable_broker_args)
    producer = MyProducer(["t"], broker.address, linger_ms=1, batch_size=4000, max_in_flight=5)
    sent = 0
    for round_ in range(3):
        for _ in range(3000):
            producer.send("t", f"m{sent}")
            sent += 1
        broker.kill()
        time.sleep(0.3)
        broker.restart()
    producer.stop(timeout=120)
    stored = [message for _, message in read_topic(broker.url, "t")]
    assert stored == [f"m{i}" for i in range(sent)], "every message once, in order"


def test_a_producer_carries_on_after_a_memory_broker_forgot_it(make_broker):
    broker = make_broker("--store", "memory")
    producer = MyProducer(["t"], broker.address)
    assert producer.send("t", "before").get(timeout=30) == 0
    broker.kill()
    broker.restart()  # an empty broker: it knows neither the topic nor the producer id
    assert producer.send("t", "after").get(timeout=60) == 0
    producer.stop()
    assert [m for _, m in read_topic(broker.url, "t")] == ["after"]


def test_a_forked_child_produces_on_its_own(broker):
    producer = MyProducer(["fork"], broker.address)
    producer.send("fork", "parent-before").get(timeout=30)
    # Leave a message buffered in the parent: the child must not send it again.
    producer.send("fork", "parent-buffered")
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            producer.send("fork", "child").get(timeout=30)
            producer.stop(timeout=30)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    producer.stop(timeout=30)
    stored = sorted(message for _, message in read_topic(broker.url, "fork"))
    assert stored == ["child", "parent-before", "parent-buffered"]
