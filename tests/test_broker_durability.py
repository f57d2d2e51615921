"""Black-box durability tests of ``myqueue-broker`` on its durable stores (SQLite, PostgreSQL).

What is acknowledged must survive a SIGKILL exactly once and in order; a message whose
request was in flight when the broker died may or may not be there, but never twice.
Consumer positions and producer sequence numbers survive too. SIGTERM is a clean exit (code 0)
that keeps everything. A PostgreSQL outage answers 503 ``storage_unavailable`` quickly (no
hang), and the broker recovers by itself when the database is back.
"""

from __future__ import annotations

import subprocess
import threading
import time
from typing import Any

import requests
from helpers import failed, is_json, ok, wait_for

TIMEOUT = 15


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def register_producer(broker, topic: str) -> int:
    return ok(broker.post("/producer/register", {"topic": topic}), "producer_id")["producer_id"]


def register_consumer(broker, topic: str) -> int:
    return ok(broker.post("/consumer/register", {"topic": topic}), "consumer_id")["consumer_id"]


def produce(broker, topic: str, pid: int, message: str) -> None:
    ok(broker.post("/producer/produce", {"topic": topic, "producer_id": pid, "message": message}))


def consume(broker, topic: str, cid: int) -> str:
    return ok(broker.get("/consumer/consume", {"topic": topic, "consumer_id": cid}), "message")[
        "message"
    ]


def size(broker, topic: str, cid: int) -> int:
    return ok(broker.get("/size", {"topic": topic, "consumer_id": cid}), "size")["size"]


def read_all(broker, topic: str, cid: int) -> list[str]:
    """Every message of the topic, by fetch pages from offset 0 (does not move ``cid``)."""
    messages: list[str] = []
    offset = 0
    for _ in range(10_000):
        body = ok(
            broker.get(
                "/consumer/fetch",
                {"topic": topic, "consumer_id": cid, "offset": offset, "max_messages": 1000},
            ),
            "messages",
            "next_offset",
            "end_offset",
        )
        assert [m["offset"] for m in body["messages"]] == list(
            range(offset, offset + len(body["messages"]))
        )
        messages += [m["message"] for m in body["messages"]]
        offset = body["next_offset"]
        if offset >= body["end_offset"]:
            assert offset == body["end_offset"] == len(messages)
            return messages
    raise AssertionError("fetch did not reach the end")


def assert_acknowledged_kept(stored: list[str], acked: list[str], in_flight: str | None) -> None:
    """``stored`` is exactly ``acked`` in order, optionally followed by the in-flight one."""
    assert len(stored) == len(set(stored)), "a message is stored twice"
    if in_flight is not None and len(stored) == len(acked) + 1:
        assert stored[-1] == in_flight, (stored[-3:], in_flight)
        stored = stored[:-1]
    assert len(stored) == len(acked), (len(stored), len(acked))
    assert stored == acked


class ProduceStream(threading.Thread):
    """Produces ``prefix-i`` one at a time until the broker stops answering (or ``n``)."""

    def __init__(
        self,
        url: str,
        topic: str,
        pid: int,
        prefix: str,
        n: int = 1_000_000,
        deadline: float = 25.0,
    ):
        super().__init__(daemon=True)
        self.url, self.topic, self.pid, self.prefix, self.n = url, topic, pid, prefix, n
        self.deadline = time.monotonic() + deadline
        self.acked: list[str] = []
        self.in_flight: str | None = None
        self.refused: requests.Response | None = None
        self.errors: list[str] = []

    def run(self) -> None:
        with requests.Session() as session:
            for i in range(self.n):
                if time.monotonic() > self.deadline:
                    return
                message = f"{self.prefix}-{i:06d}"
                self.in_flight = message
                try:
                    resp = session.post(
                        self.url + "/producer/produce",
                        json={"topic": self.topic, "producer_id": self.pid, "message": message},
                        timeout=TIMEOUT,
                    )
                except requests.RequestException:
                    return  # the broker went away with this message in flight
                if resp.status_code == 200:
                    if resp.json() != {"status": "success"}:
                        self.errors.append(f"{message}: {resp.text}")
                        return
                    self.acked.append(message)
                    self.in_flight = None
                    continue
                if (
                    resp.status_code == 503
                    and is_json(resp)
                    and resp.json().get("code") == "shutting_down"
                ):
                    self.refused = resp  # refused, so not stored (checked by the caller)
                    return
                self.errors.append(f"{message}: {resp.status_code} {resp.text}")
                return


class ConsumeStream(threading.Thread):
    """Consumes with one consumer id until the broker stops answering."""

    def __init__(self, url: str, topic: str, cid: int, deadline: float = 25.0):
        super().__init__(daemon=True)
        self.url, self.topic, self.cid = url, topic, cid
        self.deadline = time.monotonic() + deadline
        self.received: list[str] = []
        self.in_flight = False
        self.errors: list[str] = []

    def run(self) -> None:
        with requests.Session() as session:
            while time.monotonic() < self.deadline:
                self.in_flight = True
                try:
                    resp = session.get(
                        self.url + "/consumer/consume",
                        params={"topic": self.topic, "consumer_id": self.cid},
                        timeout=TIMEOUT,
                    )
                except requests.RequestException:
                    return
                if resp.status_code == 200:
                    self.received.append(resp.json()["message"])
                elif resp.status_code == 404 and resp.json().get("code") == "queue_empty":
                    time.sleep(0.005)
                elif resp.status_code == 503 and resp.json().get("code") == "shutting_down":
                    self.in_flight = False
                    return
                else:
                    self.errors.append(f"{resp.status_code} {resp.text}")
                    return
                self.in_flight = False


# --------------------------------------------------------------------------------------------
# SIGKILL
# --------------------------------------------------------------------------------------------


def test_sigkill_mid_stream_keeps_every_acknowledged_message_once_and_in_order(
    make_broker, durable_broker_args
):
    broker = make_broker(*durable_broker_args)
    topic = "durable"
    pid = register_producer(broker, topic)
    c_consumed = register_consumer(broker, topic)  # consumes some before and during the stream
    c_committed = register_consumer(broker, topic)  # moved by a commit
    c_reader = register_consumer(broker, topic)  # never moves
    pre = [f"pre-{i:03d}" for i in range(20)]
    for m in pre:
        produce(broker, topic, pid, m)
    assert [consume(broker, topic, c_consumed) for _ in range(7)] == pre[:7]
    ok(
        broker.post("/consumer/commit", {"topic": topic, "consumer_id": c_committed, "offset": 15}),
        "position",
    )

    stream = ProduceStream(broker.url, topic, pid, "live")
    consumer = ConsumeStream(broker.url, topic, c_consumed)
    stream.start()
    consumer.start()
    wait_for(
        lambda: len(stream.acked) >= 200 or not stream.is_alive(),
        20,
        "200 acknowledged produces",
        every=0.01,
    )
    assert stream.is_alive(), f"the stream stopped early: {stream.errors}"
    broker.kill()
    stream.join(timeout=20)
    consumer.join(timeout=20)
    assert not stream.is_alive() and not consumer.is_alive()
    assert stream.errors == [] and consumer.errors == [], (stream.errors, consumer.errors)
    assert stream.refused is None

    broker.restart()
    stored = read_all(broker, topic, c_reader)
    assert_acknowledged_kept(stored, pre + stream.acked, stream.in_flight)

    # What the consumer received was the log, in order, once each.
    received = pre[:7] + consumer.received
    assert received == stored[: len(received)]
    # Its position is kept: right after what it received (or one further, if a consume was
    # in flight when the broker died and had been committed).
    position = len(stored) - size(broker, topic, c_consumed)
    allowed = {len(received), len(received) + 1} if consumer.in_flight else {len(received)}
    assert position in allowed, (position, len(received), consumer.in_flight)
    if position < len(stored):
        assert consume(broker, topic, c_consumed) == stored[position]
    # The committed position and the untouched one are kept.
    assert size(broker, topic, c_committed) == len(stored) - 15
    assert consume(broker, topic, c_committed) == stored[15]
    assert size(broker, topic, c_reader) == len(stored)

    # The broker carries on: old ids work, new ids are new.
    produce(broker, topic, pid, "after-restart")
    new_pid = register_producer(broker, topic)
    new_cid = register_consumer(broker, topic)
    assert new_pid != pid
    assert new_cid not in (c_consumed, c_committed, c_reader)
    assert ok(broker.get("/topics"), "topics")["topics"] == [topic]
    assert read_all(broker, topic, new_cid) == stored + ["after-restart"]


def test_sigkill_twice_and_restart_without_traffic(make_broker, durable_broker_args):
    broker = make_broker(*durable_broker_args)
    pid = register_producer(broker, "t")
    cid = register_consumer(broker, "t")
    group_id = ok(broker.post("/consumer/register", {"topic": "t", "group": "g"}), "consumer_id")[
        "consumer_id"
    ]
    for i in range(10):
        produce(broker, "t", pid, f"m{i}")
    consume(broker, "t", cid)
    assert consume(broker, "t", group_id) == "m0"
    for _ in range(2):
        broker.kill()
        broker.restart()
    # A consumer group keeps its id and its position.
    assert (
        ok(broker.post("/consumer/register", {"topic": "t", "group": "g"}), "consumer_id")[
            "consumer_id"
        ]
        == group_id
    )
    assert consume(broker, "t", group_id) == "m1"
    assert size(broker, "t", cid) == 9
    assert consume(broker, "t", cid) == "m1"
    assert read_all(broker, "t", cid) == [f"m{i}" for i in range(10)]
    failed(broker.post("/topics", {"name": "t"}), 409, "topic_exists")


def test_producer_sequences_survive_a_sigkill(make_broker, durable_broker_args):
    broker = make_broker(*durable_broker_args)
    pid = register_producer(broker, "t")
    cid = register_consumer(broker, "t")
    body = ok(
        broker.post(
            "/producer/produce_batch",
            {"topic": "t", "producer_id": pid, "messages": ["a", "b", "c"], "sequence": 0},
        ),
        "base_offset",
        "count",
        "duplicate",
    )
    assert body["duplicate"] is False
    broker.kill()
    broker.restart()
    # The response was "lost" by the crash: the retry is recognised.
    retry = ok(
        broker.post(
            "/producer/produce_batch",
            {"topic": "t", "producer_id": pid, "messages": ["a", "b", "c"], "sequence": 0},
        ),
        "base_offset",
        "count",
        "duplicate",
    )
    assert retry == {"status": "success", "base_offset": 0, "count": 3, "duplicate": True}
    failed(
        broker.post(
            "/producer/produce_batch",
            {"topic": "t", "producer_id": pid, "messages": ["x"], "sequence": 7},
        ),
        409,
        "sequence_mismatch",
    )
    ok(
        broker.post(
            "/producer/produce_batch",
            {"topic": "t", "producer_id": pid, "messages": ["d"], "sequence": 3},
        ),
        "base_offset",
        "count",
        "duplicate",
    )
    assert read_all(broker, "t", cid) == ["a", "b", "c", "d"]


def wait_for_sessions_to_end(args: list[str]) -> None:
    """On PostgreSQL, waits until no session but this check's is connected to the broker's
    database (a killed broker's sessions end once they notice it is gone)."""
    if "--database-url" not in args:
        return
    url = args[args.index("--database-url") + 1]
    sql = (
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )

    def others() -> int:
        out = subprocess.run(
            ["psql", url, "-Atc", sql], capture_output=True, text=True, timeout=30, check=True
        )
        return int(out.stdout.strip())

    wait_for(lambda: others() == 0, 20, "the killed broker's database sessions to end", every=0.01)


def test_sigkill_during_batches_then_retry_stores_each_batch_exactly_once(
    make_broker, durable_broker_args
):
    """A batch is stored whole or not at all, and retrying the batch that was in flight at the
    crash (same sequence) stores it exactly once."""
    broker = make_broker(*durable_broker_args)
    pid = register_producer(broker, "t")
    reader = register_consumer(broker, "t")
    acked: list[str] = []
    state: dict[str, Any] = {"in_flight": None, "errors": []}

    def batches() -> None:
        sequence = 0
        deadline = time.monotonic() + 25
        with requests.Session() as session:
            for b in range(100_000):
                if time.monotonic() > deadline:
                    return
                messages = [f"b{b:05d}-{j:02d}" for j in range(50)]
                state["in_flight"] = (sequence, messages)
                try:
                    resp = session.post(
                        broker.url + "/producer/produce_batch",
                        json={
                            "topic": "t",
                            "producer_id": pid,
                            "messages": messages,
                            "sequence": sequence,
                        },
                        timeout=TIMEOUT,
                    )
                except requests.RequestException:
                    return
                if resp.status_code != 200:
                    state["errors"].append(f"{resp.status_code} {resp.text}")
                    return
                body = resp.json()
                if body != {
                    "status": "success",
                    "base_offset": sequence,
                    "count": 50,
                    "duplicate": False,
                }:
                    state["errors"].append(f"batch {b}: {body}")
                    return
                acked.extend(messages)
                sequence += 50
                state["in_flight"] = None

    thread = threading.Thread(target=batches, daemon=True)
    thread.start()
    wait_for(
        lambda: len(acked) >= 20 * 50 or not thread.is_alive(),
        20,
        "20 acknowledged batches",
        every=0.01,
    )
    assert thread.is_alive(), state["errors"]
    broker.kill()
    thread.join(timeout=20)
    assert not thread.is_alive() and state["errors"] == [], state["errors"]
    # PostgreSQL finishes what a killed client had sent (a COMMIT included) before its session
    # ends: until then the in-flight batch may still become stored, after the read below.
    wait_for_sessions_to_end(durable_broker_args)

    broker.restart()
    stored = read_all(broker, "t", reader)
    in_flight = state["in_flight"]
    if in_flight is None:
        assert stored == acked
        return
    sequence, messages = in_flight
    assert sequence == len(acked)
    assert stored in (acked, acked + messages), "a batch was stored in part, lost, or twice"
    was_stored = len(stored) > len(acked)
    # The producer does not know whether the in-flight batch was stored: it retries it.
    retry = ok(
        broker.post(
            "/producer/produce_batch",
            {"topic": "t", "producer_id": pid, "messages": messages, "sequence": sequence},
        ),
        "base_offset",
        "count",
        "duplicate",
    )
    assert retry == {
        "status": "success",
        "base_offset": len(acked),
        "count": 50,
        "duplicate": was_stored,
    }
    assert read_all(broker, "t", reader) == acked + messages


# --------------------------------------------------------------------------------------------
# SIGTERM
# --------------------------------------------------------------------------------------------


def test_sigterm_exits_0_and_keeps_everything(make_broker, durable_broker_args):
    broker = make_broker(*durable_broker_args)
    pid = register_producer(broker, "t")
    cid = register_consumer(broker, "t")
    reader = register_consumer(broker, "t")
    register_producer(broker, "idle")
    idle_cid = register_consumer(broker, "idle")
    pre = [f"pre-{i}" for i in range(10)]
    for m in pre:
        produce(broker, "t", pid, m)
    assert [consume(broker, "t", cid) for _ in range(4)] == pre[:4]

    # A long poll in flight must not hold the shutdown up.
    poll: dict[str, Any] = {}

    def long_poll():
        try:
            poll["resp"] = requests.get(
                broker.url + "/consumer/fetch",
                params={"topic": "idle", "consumer_id": idle_cid, "wait_ms": 25000},
                timeout=40,
            )
        except requests.RequestException as err:
            poll["error"] = err

    poller = threading.Thread(target=long_poll, daemon=True)
    poller.start()
    stream = ProduceStream(broker.url, "t", pid, "live")
    stream.start()
    wait_for(
        lambda: len(stream.acked) >= 100 or not stream.is_alive(),
        20,
        "100 acknowledged produces",
        every=0.01,
    )
    assert stream.is_alive(), stream.errors
    assert poller.is_alive()

    started = time.monotonic()
    assert broker.stop(timeout=20) == 0
    stopped_in = time.monotonic() - started
    stream.join(timeout=20)
    poller.join(timeout=20)
    assert not stream.is_alive() and not poller.is_alive()
    assert stream.errors == [], stream.errors
    # The long poll was answered (empty), not cut off, and did not hold the shutdown for 25 s.
    assert "error" not in poll, poll
    body = ok(poll["resp"], "messages", "next_offset", "end_offset")
    assert body["messages"] == []
    assert stopped_in < 15, f"SIGTERM took {stopped_in:.1f}s"

    broker.restart()
    stored = read_all(broker, "t", reader)
    in_flight = stream.in_flight if stream.refused is None else None
    assert_acknowledged_kept(stored, pre + stream.acked, in_flight)
    assert size(broker, "t", cid) == len(stored) - 4
    assert consume(broker, "t", cid) == pre[4]


def test_sigterm_when_idle_exits_0_and_restart_keeps_everything(make_broker, durable_broker_args):
    broker = make_broker(*durable_broker_args)
    pid = register_producer(broker, "t")
    cid = register_consumer(broker, "t")
    produce(broker, "t", pid, "kept")
    assert broker.stop() == 0
    broker.restart()
    assert consume(broker, "t", cid) == "kept"
    assert broker.stop() == 0


# --------------------------------------------------------------------------------------------
# PostgreSQL going away and coming back
# --------------------------------------------------------------------------------------------


def test_postgres_restart_answers_503_then_recovers_by_itself(make_broker, own_postgres):
    broker = make_broker("--database-url", own_postgres.url)
    pid = register_producer(broker, "t")
    cid = register_consumer(broker, "t")
    reader = register_consumer(broker, "t")
    acked = [f"before-{i}" for i in range(20)]
    for m in acked:
        produce(broker, "t", pid, m)
    assert [consume(broker, "t", cid) for _ in range(5)] == acked[:5]

    own_postgres.stop()

    attempted: list[str] = []
    session = requests.Session()
    # Every request that needs the database fails fast with 503 storage_unavailable.
    for i in range(2):
        message = f"during-{i}"
        attempted.append(message)
        started = time.monotonic()
        resp = session.post(
            broker.url + "/producer/produce",
            json={"topic": "t", "producer_id": pid, "message": message},
            timeout=TIMEOUT,
        )
        failed(resp, 503, "storage_unavailable")
        assert time.monotonic() - started < TIMEOUT
    failed(
        session.get(
            broker.url + "/consumer/consume",
            params={"topic": "t", "consumer_id": cid},
            timeout=TIMEOUT,
        ),
        503,
        "storage_unavailable",
    )
    failed(session.get(broker.url + "/healthz", timeout=TIMEOUT), 503, "storage_unavailable")
    failed(
        session.post(broker.url + "/producer/register", json={"topic": "t2"}, timeout=TIMEOUT),
        503,
        "storage_unavailable",
    )

    own_postgres.start()

    # The broker recovers by itself: a produce succeeds within a bounded time.
    deadline = time.monotonic() + 60
    recovered = False
    last = None
    i = 0
    while time.monotonic() < deadline:
        message = f"retry-{i}"
        i += 1
        attempted.append(message)
        try:
            last = session.post(
                broker.url + "/producer/produce",
                json={"topic": "t", "producer_id": pid, "message": message},
                timeout=TIMEOUT,
            )
        except requests.RequestException as err:
            last = err
            time.sleep(0.2)
            continue
        if last.status_code == 200:
            acked.append(message)
            recovered = True
            break
        failed(last, 503, "storage_unavailable")
        time.sleep(0.2)
    assert recovered, f"the broker did not recover: {last!r} {getattr(last, 'text', '')}"
    for m in ["after-0", "after-1"]:
        produce(broker, "t", pid, m)
        acked.append(m)
    ok(session.get(broker.url + "/healthz", timeout=TIMEOUT), "store")

    stored = read_all(broker, "t", reader)
    assert len(stored) == len(set(stored)), "a message is stored twice"
    assert [m for m in stored if m in set(acked)] == acked, (
        "an acknowledged message was lost or reordered"
    )
    assert set(stored) <= set(acked) | set(attempted)
    # Refused while the database was down means not stored.
    assert not any(m.startswith("during-") for m in stored), stored
    # The consumer's position survived the outage.
    assert consume(broker, "t", cid) == acked[5]
    assert size(broker, "t", cid) == len(stored) - 6
    session.close()
