"""The installed package's topic administration (``myqueue.Admin``) and what ``MyConsumer``
does when retention removed messages before it read them: it warns once per gap and reads on."""

from __future__ import annotations

import time
import warnings

import pytest
from helpers import produce, wait_for

import myqueue
from myqueue import Admin, MyConsumer, MyProducer

DAY_MS = 24 * 3600 * 1000


def unit(i: int) -> str:
    """A message that retention counts as 100 bytes (36 of payload, 64 of overhead)."""
    return f"{i:036d}"


def fill_in_chunks(broker, topic: str, start: int, batches: int, each: int = 10) -> int:
    """Produces `batches` batches of unit messages, pausing after each so that a retention
    pass (every 250 ms) closes it into a chunk of its own. Returns the next message number."""
    for b in range(batches):
        first = start + b * each
        produce(broker.url, topic, [unit(i) for i in range(first, first + each)])
        time.sleep(0.3)
    return start + batches * each


# --------------------------------------------------------------------------------------------
# Admin
# --------------------------------------------------------------------------------------------


def test_create_describe_and_the_broker_defaults(broker):
    admin = Admin(broker.address)
    assert admin.broker == broker.url
    admin.create_topic("plain")
    admin.create_topic("own", retention_ms=3_600_000, retention_bytes=5_000_000)
    assert admin.list_topics() == ["own", "plain"]
    plain = admin.describe("plain")
    assert isinstance(plain, myqueue.TopicInfo)
    assert (plain.name, plain.start_offset, plain.end_offset, plain.messages, plain.bytes) == (
        "plain",
        0,
        0,
        0,
        0,
    )
    assert (plain.retention_ms, plain.retention_bytes) == (None, None)
    assert (plain.effective_retention_ms, plain.effective_retention_bytes) == (7 * DAY_MS, None)
    assert abs(plain.created_ms - time.time() * 1000) < 60_000
    assert plain.consumers == []
    own = admin.describe("own")
    assert (own.retention_ms, own.retention_bytes) == (3_600_000, 5_000_000)
    assert (own.effective_retention_ms, own.effective_retention_bytes) == (3_600_000, 5_000_000)
    assert "own" in repr(own)


def test_describe_lists_consumers_with_their_positions_and_lag(broker):
    admin = Admin(broker.address)
    produce(broker.url, "t", ["a", "bb", "ccc"])
    with MyConsumer(["t"], broker.address, group="reader") as consumer:
        first = consumer.poll(timeout=10)
        assert first is not None and first.offset == 0
        consumer.poll(timeout=10)
        consumer.commit()
        info = admin.describe("t")
        assert (info.end_offset, info.messages, info.bytes) == (3, 3, 1 + 2 + 3 + 3 * 64)
        (described,) = info.consumers
        assert isinstance(described, myqueue.ConsumerInfo)
        assert (described.group, described.position, described.lag) == ("reader", 1, 2)
        assert "reader" in repr(described)


def test_set_retention_changes_only_what_it_names(broker):
    admin = Admin(broker.address)
    admin.create_topic("t", retention_bytes=9000)
    info = admin.set_retention("t", retention_ms=60_000)
    assert (info.retention_ms, info.retention_bytes) == (60_000, 9000)
    info = admin.set_retention("t", retention_bytes=None)
    assert (info.retention_ms, info.retention_bytes) == (60_000, None)
    assert info.effective_retention_bytes is None
    info = admin.set_retention("t", retention_ms=None, retention_bytes=1_000_000)
    assert (info.effective_retention_ms, info.effective_retention_bytes) == (7 * DAY_MS, 1_000_000)
    assert admin.describe("t").retention_bytes == 1_000_000


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({}, TypeError),
        ({"retention": 5}, TypeError),
        ({"retention_ms": 0}, ValueError),
        ({"retention_ms": -1}, ValueError),
        ({"retention_bytes": True}, ValueError),
        ({"retention_bytes": "5"}, TypeError),
        ({"retention_ms": 1.5}, TypeError),
        ({"retention_ms": 2**64}, ValueError),
    ],
    ids=["nothing", "unknown", "zero", "negative", "bool", "str", "float", "too-large"],
)
def test_bad_retention_arguments_are_refused_before_any_request(broker, kwargs, error):
    admin = Admin(broker.address)
    admin.create_topic("t", retention_ms=1000)
    with pytest.raises(error):
        admin.set_retention("t", **kwargs)
    if kwargs:
        with pytest.raises(error):
            admin.create_topic("u", **kwargs)
    assert admin.describe("t").retention_ms == 1000
    assert admin.list_topics() == ["t"]


def test_refusals_raise_with_the_brokers_code(broker):
    admin = Admin(broker.address)
    admin.create_topic("t")
    with pytest.raises(myqueue.RequestRejected) as exists:
        admin.create_topic("t")
    assert exists.value.code == "topic_exists"
    for call in (
        lambda: admin.describe("nope"),
        lambda: admin.delete_topic("nope"),
        lambda: admin.set_retention("nope", retention_ms=5),
    ):
        with pytest.raises(myqueue.TopicNotFound) as missing:
            call()
        assert missing.value.code == "topic_not_found"
    with pytest.raises(ValueError):
        admin.describe("bad name")
    with pytest.raises(ValueError):
        admin.create_topic("a/b")


def test_an_unreachable_broker_raises_broker_unavailable():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    admin = Admin(f"127.0.0.1:{port}", request_timeout=5)
    with pytest.raises(myqueue.BrokerUnavailable):
        admin.list_topics()


def test_delete_topic_ends_its_consumers_and_a_producer_starts_it_afresh(broker):
    admin = Admin(broker.address)
    with MyProducer(["t"], broker.address) as producer:
        assert producer.send("t", "before").get(timeout=30) == 0
        consumer = MyConsumer(["t"], broker.address, group="g")
        assert str(consumer.poll(timeout=10)) == "before"
        admin.delete_topic("t")
        assert admin.list_topics() == []
        # The consumer's id is gone: the next read fails with the broker's code.
        with pytest.raises(myqueue.MyQueueError) as gone:
            consumer.poll(timeout=10)
        assert gone.value.code == "consumer_not_found"
        with pytest.warns(RuntimeWarning, match="could not store"):
            consumer.stop()
        # The producer registers again (its id went with the topic), which creates the topic
        # afresh: its next message is the first of the new topic.
        assert producer.send("t", "after").get(timeout=30) == 0
    assert admin.describe("t").end_offset == 1


# --------------------------------------------------------------------------------------------
# MyConsumer and retention
# --------------------------------------------------------------------------------------------


def read_to(consumer: MyConsumer, last: int) -> list[int]:
    """Polls until the message at offset `last`; returns every offset read."""
    got: list[int] = []
    while not got or got[-1] != last:
        message = consumer.poll(timeout=10)
        assert message is not None, got
        got.append(message.offset)
    return got


def settled_start(broker, topic: str) -> int:
    """The topic's start once retention moved it and the passes after the last append ran."""
    wait_for(lambda: Admin(broker.address).describe(topic).start_offset, 10, "retention")
    time.sleep(0.6)
    return Admin(broker.address).describe(topic).start_offset


def test_a_lagging_consumer_warns_once_per_gap_and_reads_on(make_broker, tmp_path):
    # 3,000 bytes kept: thirty unit messages, removed ten at a time.
    broker = make_broker("--data-dir", str(tmp_path / "data"), "--retention-bytes", "3000")
    produce(broker.url, "t", [unit(0)])
    # A small prefetch: the consumer has fetched at most five messages ahead when it lags.
    consumer = MyConsumer(
        ["t"], broker.address, group="slow", fetch_max_messages=5, buffer_messages=5
    )
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert consumer.poll(timeout=10).offset == 0
            sent = fill_in_chunks(broker, "t", 1, 10)
            start = settled_start(broker, "t")
            got = read_to(consumer, sent - 1)
            # What was prefetched before the gap comes first, then the topic from its start.
            before = [o for o in got if o < start]
            assert before == list(range(1, len(before) + 1))
            assert got[len(before) :] == list(range(start, sent))
            gaps = [w for w in caught if issubclass(w.category, RuntimeWarning)]
            assert len(gaps) == 1, [str(w.message) for w in gaps]
            text = str(gaps[0].message)
            missed = start - len(before) - 1
            assert "topic 't'" in text and "retention" in text, text
            assert f"{missed} message(s)" in text and f"offset {start}" in text, text
            assert gaps[0].filename == __file__, "the warning points at the program's call"

            # It lags again: a second gap, a second warning.
            sent = fill_in_chunks(broker, "t", sent, 8)
            settled_start(broker, "t")
            read_to(consumer, sent - 1)
            gaps = [w for w in caught if issubclass(w.category, RuntimeWarning)]
            assert len(gaps) == 2, [str(w.message) for w in gaps]
            assert "topic 't'" in str(gaps[1].message)
    finally:
        consumer.stop()


def test_a_gap_warning_turned_into_an_error_keeps_the_message(make_broker, tmp_path):
    broker = make_broker("--data-dir", str(tmp_path / "data"), "--retention-bytes", "2000")
    fill_in_chunks(broker, "t", 0, 6)
    start = settled_start(broker, "t")
    with MyConsumer(["t"], broker.address) as consumer:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            with pytest.raises(RuntimeWarning, match="retention"):
                consumer.poll(timeout=10)
            message = consumer.poll(timeout=10)
        assert message is not None and message.offset == start
        assert str(message) == unit(start)


def test_a_consumer_that_keeps_up_sees_no_warning(make_broker, tmp_path):
    broker = make_broker("--data-dir", str(tmp_path / "data"), "--retention-bytes", "2000")
    Admin(broker.address).create_topic("t")
    with MyConsumer(["t"], broker.address) as consumer, warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        for batch in range(8):
            produce(broker.url, "t", [unit(i) for i in range(batch * 10, batch * 10 + 10)])
            offsets = [consumer.poll(timeout=10).offset for _ in range(10)]
            assert offsets == list(range(batch * 10, batch * 10 + 10))
            time.sleep(0.3)
    assert Admin(broker.address).describe("t").start_offset > 0
