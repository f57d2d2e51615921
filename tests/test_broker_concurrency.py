"""Black-box concurrency tests of ``myqueue-broker``: many producers, many consumers sharing one
consumer id, and two broker processes sharing one PostgreSQL database.

Invariants: every acknowledged message is stored exactly once; offsets are gap-free; each
producer's messages keep their order; a consumer id hands each message out once, however many
threads (or brokers) consume with it.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Any, Callable

import requests
from helpers import ok

TIMEOUT = 15


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def register_producer(url: str, topic: str) -> int:
    resp = requests.post(url + "/producer/register", json={"topic": topic}, timeout=TIMEOUT)
    return ok(resp, "producer_id")["producer_id"]


def register_consumer(url: str, topic: str) -> int:
    resp = requests.post(url + "/consumer/register", json={"topic": topic}, timeout=TIMEOUT)
    return ok(resp, "consumer_id")["consumer_id"]


def read_all(url: str, topic: str, cid: int) -> list[dict[str, Any]]:
    """Every message of the topic with its offset, by fetch pages from offset 0."""
    messages: list[dict[str, Any]] = []
    offset = 0
    with requests.Session() as session:
        for _ in range(10_000):
            body = ok(
                session.get(
                    url + "/consumer/fetch",
                    params={
                        "topic": topic,
                        "consumer_id": cid,
                        "offset": offset,
                        "max_messages": 700,
                    },
                    timeout=TIMEOUT,
                ),
                "messages",
                "next_offset",
                "end_offset",
            )
            messages += body["messages"]
            offset = body["next_offset"]
            if offset >= body["end_offset"]:
                assert offset == body["end_offset"]
                return messages
    raise AssertionError("fetch did not reach the end")


def run_threads(targets: list[Callable[[], None]], timeout: float = 60) -> None:
    """Runs each target in its own thread; re-raises the first failure."""
    errors: list[BaseException] = []

    def wrap(target):
        def run():
            try:
                target()
            except BaseException as err:  # noqa: BLE001
                errors.append(err)

        return run

    threads = [threading.Thread(target=wrap(t), daemon=True) for t in targets]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "threads did not finish in time"
    if errors:
        raise errors[0]


def producer_loop(url: str, topic: str, pid: int, tag: str, n: int) -> Callable[[], None]:
    def run() -> None:
        with requests.Session() as session:
            for i in range(n):
                resp = session.post(
                    url + "/producer/produce",
                    json={"topic": topic, "producer_id": pid, "message": f"{tag}:{i}"},
                    timeout=TIMEOUT,
                )
                assert ok(resp) == {"status": "success"}

    return run


def check_log(messages: list[dict[str, Any]], expected_per_tag: dict[str, int]) -> None:
    """Offsets 0..N-1 without gaps; every message once; each producer's order kept."""
    total = sum(expected_per_tag.values())
    assert [m["offset"] for m in messages] == list(range(total)), "offsets are not gap-free"
    texts = [m["message"] for m in messages]
    assert len(set(texts)) == len(texts), "a message is stored twice"
    per_tag: dict[str, list[int]] = defaultdict(list)
    for text in texts:
        tag, i = text.rsplit(":", 1)
        per_tag[tag].append(int(i))
    assert set(per_tag) == set(expected_per_tag)
    for tag, n in expected_per_tag.items():
        assert per_tag[tag] == list(range(n)), (
            f"producer {tag}'s messages are missing or out of order"
        )


def consumer_loop(
    url: str,
    topic: str,
    cid: int,
    out: list[tuple[int, str]],
    worker: int,
    stop: Callable[[], bool],
) -> Callable[[], None]:
    """Consumes until ``stop()`` says so; records (worker, message)."""

    def run() -> None:
        deadline = time.monotonic() + 45
        with requests.Session() as session:
            while time.monotonic() < deadline:
                # Asked before the request: a queue_empty after everything was produced means
                # everything was consumed.
                done = stop()
                resp = session.get(
                    url + "/consumer/consume",
                    params={"topic": topic, "consumer_id": cid},
                    timeout=TIMEOUT,
                )
                if resp.status_code == 200:
                    out.append((worker, ok(resp, "message")["message"]))
                    continue
                assert resp.status_code == 404 and resp.json()["code"] == "queue_empty", resp.text
                if done:
                    return
                time.sleep(0.002)
        raise AssertionError("consumer did not finish in time")

    return run


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


def test_eight_concurrent_producers_each_message_once_in_producer_order(
    make_broker, durable_broker_args
):
    broker = make_broker(*durable_broker_args)
    topic = "many"
    per_producer = 200
    pids = [register_producer(broker.url, topic) for _ in range(8)]
    assert len(set(pids)) == 8
    cid = register_consumer(broker.url, topic)
    run_threads([producer_loop(broker.url, topic, pid, f"p{pid}", per_producer) for pid in pids])

    messages = read_all(broker.url, topic, cid)
    check_log(messages, {f"p{pid}": per_producer for pid in pids})
    assert (
        ok(broker.get("/size", {"topic": topic, "consumer_id": cid}), "size")["size"]
        == 8 * per_producer
    )
    # /consumer/consume hands out the same log in the same order.
    with requests.Session() as session:
        for expected in messages[:50]:
            resp = session.get(
                broker.url + "/consumer/consume",
                params={"topic": topic, "consumer_id": cid},
                timeout=TIMEOUT,
            )
            assert ok(resp, "message")["message"] == expected["message"]


def test_concurrent_producers_on_several_topics_do_not_mix(make_broker, durable_broker_args):
    broker = make_broker(*durable_broker_args)
    topics = ["a", "b", "c", "d"]
    pids = {t: [register_producer(broker.url, t) for _ in range(2)] for t in topics}
    run_threads(
        [producer_loop(broker.url, t, pid, f"{t}{pid}", 100) for t in topics for pid in pids[t]]
    )
    for t in topics:
        cid = register_consumer(broker.url, t)
        check_log(read_all(broker.url, t, cid), {f"{t}{pid}": 100 for pid in pids[t]})


def test_four_threads_sharing_one_consumer_id_get_each_message_once(
    make_broker, durable_broker_args
):
    broker = make_broker(*durable_broker_args)
    topic = "shared"
    pid = register_producer(broker.url, topic)
    total = 1200
    for start in range(0, total, 400):
        ok(
            broker.post(
                "/producer/produce_batch",
                {
                    "topic": topic,
                    "producer_id": pid,
                    "messages": [f"m:{i}" for i in range(start, start + 400)],
                },
            ),
            "base_offset",
            "count",
            "duplicate",
        )
    cid = register_consumer(broker.url, topic)

    got: list[tuple[int, str]] = []
    run_threads([consumer_loop(broker.url, topic, cid, got, w, lambda: True) for w in range(4)])

    texts = [m for _, m in got]
    assert len(texts) == len(set(texts)), "a message was consumed twice"
    assert set(texts) == {f"m:{i}" for i in range(total)}, "a message is missing"
    # Each thread's consumes are sequential, so each saw increasing offsets.
    for w in range(4):
        mine = [int(m.split(":")[1]) for worker, m in got if worker == w]
        assert mine == sorted(mine), f"worker {w} got messages out of order"
    assert ok(broker.get("/size", {"topic": topic, "consumer_id": cid}), "size")["size"] == 0


def test_producers_and_shared_consumer_at_the_same_time(make_broker, durable_broker_args):
    broker = make_broker(*durable_broker_args)
    topic = "live"
    pids = [register_producer(broker.url, topic) for _ in range(4)]
    cid = register_consumer(broker.url, topic)
    per_producer = 150
    produced_done = threading.Event()
    got: list[tuple[int, str]] = []

    def producers() -> None:
        try:
            run_threads(
                [producer_loop(broker.url, topic, pid, f"p{pid}", per_producer) for pid in pids]
            )
        finally:
            produced_done.set()

    run_threads(
        [producers]
        + [consumer_loop(broker.url, topic, cid, got, w, produced_done.is_set) for w in range(4)]
    )
    texts = [m for _, m in got]
    assert len(texts) == len(set(texts)), "a message was consumed twice"
    assert set(texts) == {f"p{pid}:{i}" for pid in pids for i in range(per_producer)}
    check_log(read_all(broker.url, topic, cid), {f"p{pid}": per_producer for pid in pids})


def test_concurrent_registrations_get_distinct_ids(make_broker, durable_broker_args):
    broker = make_broker(*durable_broker_args)
    producer_ids: list[int] = []
    consumer_ids: list[int] = []
    ok(broker.post("/topics", {"name": "t"}), "message")

    def register(i: int) -> Callable[[], None]:
        def run() -> None:
            with requests.Session() as session:
                for _ in range(25):
                    # Registering a producer creates its topic: many threads race to create it.
                    resp = session.post(
                        broker.url + "/producer/register",
                        json={"topic": f"new{i % 3}"},
                        timeout=TIMEOUT,
                    )
                    producer_ids.append(ok(resp, "producer_id")["producer_id"])
                    resp = session.post(
                        broker.url + "/consumer/register", json={"topic": "t"}, timeout=TIMEOUT
                    )
                    consumer_ids.append(ok(resp, "consumer_id")["consumer_id"])

        return run

    run_threads([register(i) for i in range(8)])
    assert len(producer_ids) == len(set(producer_ids)) == 200
    assert len(consumer_ids) == len(set(consumer_ids)) == 200
    topics = ok(broker.get("/topics"), "topics")["topics"]
    assert sorted(topics) == ["new0", "new1", "new2", "t"]


def test_concurrent_create_topic_exactly_one_wins(make_broker, durable_broker_args):
    broker = make_broker(*durable_broker_args)
    statuses: list[tuple[int, str]] = []

    def create() -> None:
        resp = requests.post(broker.url + "/topics", json={"name": "race"}, timeout=TIMEOUT)
        statuses.append((resp.status_code, resp.json().get("code", "")))

    run_threads([create for _ in range(12)])
    assert sorted(statuses) == [(200, "")] + [(409, "topic_exists")] * 11
    assert ok(broker.get("/topics"), "topics")["topics"] == ["race"]


# --------------------------------------------------------------------------------------------
# Two brokers, one PostgreSQL database
# --------------------------------------------------------------------------------------------


def test_two_brokers_on_one_database(make_broker, postgres_url):
    a = make_broker("--database-url", postgres_url)
    b = make_broker("--database-url", postgres_url)
    urls = [a.url, b.url]
    topic = "shared"
    ok(a.post("/topics", {"name": topic}), "message")
    # Registered on one broker, the topic and ids are known on the other.
    assert ok(b.get("/topics"), "topics")["topics"] == [topic]
    # Producers registered on both; each produces through both brokers, alternating.
    pids = [register_producer(urls[i % 2], topic) for i in range(6)]
    assert len(set(pids)) == 6
    cid = register_consumer(a.url, topic)  # one consumer id, used on both brokers
    per_producer = 150
    produced_done = threading.Event()
    got: list[tuple[int, str]] = []

    def producer(pid: int, k: int) -> Callable[[], None]:
        def run() -> None:
            sessions = [requests.Session(), requests.Session()]
            try:
                for i in range(per_producer):
                    # Order per producer holds because each produce is acknowledged before
                    # the next one is sent, whichever broker it goes to.
                    url = urls[(i + k) % 2]
                    resp = sessions[(i + k) % 2].post(
                        url + "/producer/produce",
                        json={"topic": topic, "producer_id": pid, "message": f"p{pid}:{i}"},
                        timeout=TIMEOUT,
                    )
                    assert ok(resp) == {"status": "success"}
            finally:
                for s in sessions:
                    s.close()

        return run

    def producers() -> None:
        try:
            run_threads([producer(pid, k) for k, pid in enumerate(pids)])
        finally:
            produced_done.set()

    consumers = [
        consumer_loop(urls[w % 2], topic, cid, got, w, produced_done.is_set) for w in range(4)
    ]
    run_threads([producers] + consumers)

    texts = [m for _, m in got]
    assert len(texts) == len(set(texts)), "a message was consumed twice across the brokers"
    expected = {f"p{pid}:{i}" for pid in pids for i in range(per_producer)}
    assert set(texts) == expected, f"missing: {len(expected - set(texts))}"
    # Both brokers consumed some.
    assert {w % 2 for w, _ in got} == {0, 1}
    for w in range(4):
        mine = [m for worker, m in got if worker == w]
        # Per worker, each producer's messages come in that producer's order.
        per_tag: dict[str, list[int]] = defaultdict(list)
        for m in mine:
            tag, i = m.rsplit(":", 1)
            per_tag[tag].append(int(i))
        for tag, seq in per_tag.items():
            assert seq == sorted(seq), f"worker {w} got {tag} out of order"

    # Both brokers see the same gap-free log.
    reader = register_consumer(b.url, topic)
    log_a = read_all(a.url, topic, reader)
    log_b = read_all(b.url, topic, reader)
    assert log_a == log_b
    check_log(log_a, {f"p{pid}": per_producer for pid in pids})
    for url in urls:
        assert (
            ok(
                requests.get(
                    url + "/size", params={"topic": topic, "consumer_id": cid}, timeout=TIMEOUT
                ),
                "size",
            )["size"]
            == 0
        )


def test_two_brokers_share_consumer_positions_and_sequences(make_broker, postgres_url):
    a = make_broker("--database-url", postgres_url)
    b = make_broker("--database-url", postgres_url)
    pid = register_producer(a.url, "t")
    cid = register_consumer(a.url, "t")
    body = ok(
        b.post(
            "/producer/produce_batch",
            {"topic": "t", "producer_id": pid, "messages": ["x", "y", "z"], "sequence": 0},
        ),
        "base_offset",
        "count",
        "duplicate",
    )
    assert body["duplicate"] is False
    # The retry arrives at the other broker: still recognised.
    retry = ok(
        a.post(
            "/producer/produce_batch",
            {"topic": "t", "producer_id": pid, "messages": ["x", "y", "z"], "sequence": 0},
        ),
        "base_offset",
        "count",
        "duplicate",
    )
    assert retry == {"status": "success", "base_offset": 0, "count": 3, "duplicate": True}
    assert (
        ok(a.get("/consumer/consume", {"topic": "t", "consumer_id": cid}), "message")["message"]
        == "x"
    )
    assert (
        ok(b.get("/consumer/consume", {"topic": "t", "consumer_id": cid}), "message")["message"]
        == "y"
    )
    assert ok(a.get("/size", {"topic": "t", "consumer_id": cid}), "size")["size"] == 1
    ok(
        b.post("/consumer/commit", {"topic": "t", "consumer_id": cid, "offset": "beginning"}),
        "position",
    )
    assert (
        ok(a.get("/consumer/consume", {"topic": "t", "consumer_id": cid}), "message")["message"]
        == "x"
    )
    # Wrong-topic and unknown-id checks hold on the other broker too.
    other = register_producer(b.url, "other")
    resp = a.post("/producer/produce", {"topic": "t", "producer_id": other, "message": "m"})
    assert resp.status_code == 403 and resp.json()["code"] == "wrong_topic", resp.text


def test_long_poll_on_one_broker_wakes_on_a_produce_at_the_other(make_broker, postgres_url):
    a = make_broker("--database-url", postgres_url)
    b = make_broker("--database-url", postgres_url)
    pid = register_producer(a.url, "t")
    cid = register_consumer(b.url, "t")
    result: dict[str, Any] = {}

    def poll() -> None:
        try:
            result["resp"] = requests.get(
                b.url + "/consumer/fetch",
                params={"topic": "t", "consumer_id": cid, "wait_ms": 20000},
                timeout=40,
            )
        except requests.RequestException as err:
            result["error"] = err

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    time.sleep(0.5)
    assert thread.is_alive()
    ok(a.post("/producer/produce", {"topic": "t", "producer_id": pid, "message": "from a"}))
    thread.join(timeout=40)
    assert not thread.is_alive() and "error" not in result, result
    body = ok(result["resp"], "messages", "next_offset", "end_offset")
    assert [m["message"] for m in body["messages"]] == ["from a"]
