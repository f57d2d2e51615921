"""MyConsumer against a real broker: order, fairness, groups, seeks, crashes, restarts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from helpers import produce

import myqueue
from myqueue import MyConsumer, MyProducer


def fill(broker, topic: str, n: int, prefix: str = "m") -> None:
    with MyProducer([topic], broker.address) as producer:
        for i in range(n):
            producer.send(topic, f"{prefix}{i}")


def take(consumer: MyConsumer, n: int, timeout: float = 30) -> list:
    out = []
    for msg in consumer.get_next(timeout=timeout):
        out.append(msg)
        if len(out) == n:
            break
    return out


def test_a_missing_topic_raises_topic_not_found_naming_it(broker):
    fill(broker, "exists", 1)
    with pytest.raises(myqueue.TopicNotFound, match="'nope'") as raised:
        MyConsumer(["exists", "nope"], broker.address)
    assert raised.value.code == "topic_not_found"


def test_messages_come_in_order_with_their_metadata(broker):
    fill(broker, "t", 100)
    with MyConsumer(["t"], broker.address) as consumer:
        got = take(consumer, 100)
    assert [m.offset for m in got] == list(range(100))
    assert [str(m) for m in got] == [f"m{i}" for i in range(100)]
    assert got[0].value == b"m0" and got[0].topic == "t"
    assert got[0].timestamp > 1_600_000_000_000


@pytest.mark.parametrize(
    "limits",
    [
        {"buffer_messages": 100, "fetch_max_messages": 30},
        {"buffer_bytes": 500, "fetch_max_bytes": 300},
    ],
    ids=["by-count", "by-bytes"],
)
def test_a_small_prefetch_buffer_refills_until_the_topic_is_drained(broker, limits):
    fill(broker, "t", 1000)
    with MyConsumer(["t"], broker.address, **limits) as consumer:
        got = take(consumer, 1000, timeout=10)
    assert [m.offset for m in got] == list(range(1000))


def test_get_next_with_a_timeout_ends_when_nothing_comes(broker):
    fill(broker, "t", 3)
    with MyConsumer(["t"], broker.address) as consumer:
        assert len(list(consumer.get_next(timeout=0.5))) == 3


def test_topics_are_served_in_turn(broker):
    fill(broker, "a", 500, "a")
    fill(broker, "b", 500, "b")
    with MyConsumer(["a", "b"], broker.address) as consumer:
        first = consumer.poll(timeout=30)
        assert first is not None
        time.sleep(0.5)  # both prefetch buffers fill
        got = take(consumer, 200)
    counts = {"a": 0, "b": 0}
    for m in got:
        counts[m.topic] += 1
    assert abs(counts["a"] - counts["b"]) <= 2, counts


def test_a_message_produced_later_wakes_a_waiting_consumer(broker):
    fill(broker, "t", 0)
    with MyConsumer(["t"], broker.address) as consumer:
        threading.Timer(0.3, lambda: produce(broker.url, "t", ["late"])).start()
        got = take(consumer, 1, timeout=20)
    assert [str(m) for m in got] == ["late"]


def test_a_consumer_that_drained_a_backlog_waits_for_the_next_message(broker):
    # Draining a backlog keeps a read-ahead in flight; at the topic's end the consumer must
    # fall back to a waiting fetch that a later message wakes.
    fill(broker, "t", 3000)
    with MyConsumer(["t"], broker.address, fetch_max_messages=200) as consumer:
        assert [m.offset for m in take(consumer, 3000)] == list(range(3000))
        threading.Timer(0.3, lambda: produce(broker.url, "t", ["late"])).start()
        got = take(consumer, 1, timeout=20)
    assert [(m.offset, str(m)) for m in got] == [(3000, "late")]


def test_read_aheads_that_guess_wrong_change_nothing(broker):
    # Messages of uneven size: many fetches stop at the byte limit before the message count,
    # so a read-ahead sent on the guess that the fetch before it would be full starts at the
    # wrong offset; its answer must be dropped, never handed out.
    sizes = [10 + (i * 37) % 400 for i in range(3000)]
    with MyProducer(["t"], broker.address) as producer:
        for i, size in enumerate(sizes):
            producer.send("t", f"{i}:".ljust(size, "x"))
    with MyConsumer(["t"], broker.address, fetch_max_messages=10, fetch_max_bytes=2000) as c:
        got = take(c, 3000)
    assert [m.offset for m in got] == list(range(3000))
    assert [str(m) for m in got] == [f"{i}:".ljust(n, "x") for i, n in enumerate(sizes)]


def test_read_ahead_keeps_order_across_a_broker_killed_mid_drain(make_broker, tmp_path):
    broker = make_broker("--data-dir", str(tmp_path / "data"))
    total = 20_000
    fill(broker, "t", total)
    consumer = MyConsumer(
        ["t"], broker.address, group="g", fetch_max_messages=100, buffer_messages=300
    )
    offsets: list[int] = []
    for msg in consumer.get_next(timeout=60):
        offsets.append(msg.offset)
        if len(offsets) in (3000, 12000):  # fetches are in flight: the buffer is small
            broker.kill()
            broker.restart()
        if len(offsets) == total:
            break
    consumer.stop()
    assert offsets == list(range(total)), "every message once, in order"


def test_stop_ends_the_long_poll_in_flight(make_broker, tmp_path):
    # A fetch waiting on the broker is cancelled by stop(): with one long poll allowed per
    # client, a consumer started right after gets the slot and its message at once, not when
    # the stopped consumer's poll would have ended (20 s).
    broker = make_broker("--data-dir", str(tmp_path / "data"), "--max-long-polls-per-client", "1")
    fill(broker, "quiet", 0)
    fill(broker, "t", 0)
    waiting = MyConsumer(["quiet"], broker.address)
    assert waiting.poll(timeout=0.5) is None  # its fetch now waits on the broker
    waiting.stop()
    with MyConsumer(["t"], broker.address) as consumer:
        threading.Timer(0.5, lambda: produce(broker.url, "t", ["now"])).start()
        got = take(consumer, 1, timeout=8)
    assert [str(m) for m in got] == ["now"]


def test_stop_from_another_thread_ends_the_iteration(broker):
    fill(broker, "t", 0)
    consumer = MyConsumer(["t"], broker.address)
    threading.Timer(0.3, consumer.stop).start()
    assert list(consumer.get_next()) == []


def test_a_group_continues_where_it_stopped(broker):
    fill(broker, "t", 20)
    first = MyConsumer(["t"], broker.address, group="indexer")
    got = take(first, 10)
    first.stop()
    assert [m.offset for m in got] == list(range(10))
    with MyConsumer(["t"], broker.address, group="indexer") as again:
        assert [m.offset for m in take(again, 10)] == list(range(10, 20))
        # The last one is still held by the program until it asks for the next.
        assert again.size("t") == 1
    # Another group, and an anonymous consumer, start at the beginning.
    with MyConsumer(["t"], broker.address, group="archiver") as other:
        assert take(other, 1)[0].offset == 0
    with MyConsumer(["t"], broker.address) as anonymous:
        assert take(anonymous, 1)[0].offset == 0


def test_start_end_reads_only_what_is_produced_after_it_registered(broker):
    fill(broker, "t", 2)
    with MyConsumer(["t"], broker.address, start="end") as consumer:
        assert consumer.size("t") == 0
        assert consumer.poll(timeout=0.3) is None
        produce(broker.url, "t", ["third"])
        assert consumer.size("t") == 1
        msg = consumer.poll(timeout=30)
        assert msg is not None and (msg.offset, str(msg)) == (2, "third")
        assert consumer.poll(timeout=0.3) is None
    with MyConsumer(["t"], broker.address, start="beginning") as consumer:
        assert consumer.size("t") == 3


def test_start_applies_only_to_a_new_group(broker):
    fill(broker, "t", 5)
    with MyConsumer(["t"], broker.address, group="g", start="beginning") as first:
        assert [m.offset for m in take(first, 2)] == [0, 1]
    with MyConsumer(["t"], broker.address, group="g", start="end") as again:
        # The held message (offset 1) was consumed by stop(): the group goes on from 2.
        assert again.size("t") == 3
        assert take(again, 1)[0].offset == 2
    with MyConsumer(["t"], broker.address, group="fresh", start="end") as fresh:
        assert fresh.size("t") == 0


def test_without_start_the_brokers_default_applies(make_broker, tmp_path):
    broker = make_broker("--data-dir", str(tmp_path / "data"), "--consumer-start", "end")
    fill(broker, "t", 3)
    with MyConsumer(["t"], broker.address) as consumer:
        assert consumer.size("t") == 0
    with MyConsumer(["t"], broker.address, start="beginning") as consumer:
        assert consumer.size("t") == 3


@pytest.mark.parametrize("start", ["middle", "END", ""])
def test_a_bad_start_is_a_value_error(broker, start):
    fill(broker, "t", 1)
    with pytest.raises(ValueError, match="start must be 'beginning' or 'end'"):
        MyConsumer(["t"], broker.address, start=start)


def test_size_counts_what_the_program_has_not_taken(broker):
    fill(broker, "t", 10)
    with MyConsumer(["t"], broker.address) as consumer:
        assert consumer.size("t") == 10
        take(consumer, 3)
        # The third message is held by the program until it asks for the next one.
        assert consumer.size("t") == 8
        consumer.poll(timeout=5)
        assert consumer.size("t") == 7


def test_seeks_replay_and_skip(broker):
    fill(broker, "t", 10)
    with MyConsumer(["t"], broker.address) as consumer:
        assert [m.offset for m in take(consumer, 5)] == [0, 1, 2, 3, 4]
        assert consumer.seek_to_beginning("t") == 0
        assert take(consumer, 1)[0].offset == 0
        assert consumer.seek("t", 7) == 7
        assert [m.offset for m in take(consumer, 3)] == [7, 8, 9]
        assert consumer.seek_to_end("t") == 10
        produce(broker.url, "t", ["after"])
        assert str(take(consumer, 1)[0]) == "after"
        with pytest.raises(myqueue.RequestRejected) as raised:
            consumer.seek("t", 1000)
        assert raised.value.code == "offset_out_of_range"


CRASHING_CONSUMER = textwrap.dedent(
    """
    import sys, time
    from myqueue import MyConsumer
    consumer = MyConsumer(["t"], sys.argv[1], group="worker", auto_commit_interval=0.1)
    for n, msg in enumerate(consumer.get_next()):
        print(msg.offset, flush=True)
        if n == 4:
            time.sleep(3600)  # "handling" message 4 when the process is killed
    """
)


def test_a_consumer_killed_while_handling_a_message_gets_it_again(broker):
    fill(broker, "t", 10)
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASHING_CONSUMER, broker.address], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    seen = [int(proc.stdout.readline()) for _ in range(5)]
    assert seen == [0, 1, 2, 3, 4]
    time.sleep(1.0)  # several auto-commit intervals
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    with MyConsumer(["t"], broker.address, group="worker") as restarted:
        # 0..3 were taken and followed by a request for the next one: consumed.
        # 4 was being handled: it comes again (at least once), and nothing is skipped.
        assert [m.offset for m in take(restarted, 6)] == [4, 5, 6, 7, 8, 9]


def test_a_with_block_that_fails_does_not_consume_the_message_in_hand(broker):
    fill(broker, "t", 5)
    with pytest.raises(RuntimeError), MyConsumer(["t"], broker.address, group="g") as consumer:
        for msg in consumer.get_next(timeout=10):
            if msg.offset == 2:
                raise RuntimeError("handling failed")
    with MyConsumer(["t"], broker.address, group="g") as again:
        assert take(again, 1)[0].offset == 2, "the failed message comes again"


def test_broker_killed_and_restarted_while_producer_and_consumer_run(make_broker, tmp_path):
    broker = make_broker("--data-dir", str(tmp_path / "data"))
    total = 6000
    producer = MyProducer(["t"], broker.address, linger_ms=1)
    consumer = MyConsumer(["t"], broker.address, group="g")
    got: list = []

    def consume() -> None:
        for msg in consumer.get_next(timeout=60):
            got.append((msg.offset, str(msg)))
            if len(got) == total:
                return

    reader = threading.Thread(target=consume)
    reader.start()
    for i in range(total):
        producer.send("t", f"m{i}")
        if i in (2000, 4000):
            broker.kill()
            broker.restart()
    producer.stop(timeout=120)
    reader.join(timeout=120)
    consumer.stop()
    assert [m for _, m in got] == [f"m{i}" for i in range(total)], "every message once, in order"
    assert [o for o, _ in got] == list(range(total))


def test_a_forked_child_consumes_on_its_own(broker):
    fill(broker, "t", 10)
    consumer = MyConsumer(["t"], broker.address, group="forked")
    assert [m.offset for m in take(consumer, 3)] == [0, 1, 2]
    consumer.commit()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            # The child goes on from the committed position with the same consumer id.
            offsets = [m.offset for m in take(consumer, 3, timeout=20)]
            code = 0 if offsets[0] >= 2 and offsets == sorted(offsets) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    consumer.stop()
