"""Black-box tests of every HTTP endpoint of ``myqueue-broker``: success and failure paths.

Every response is checked for its exact HTTP status, its JSON content type, its body shape
(exactly the fields the assignment names on success; ``status``, ``message`` and ``code`` on
failure) and the stable error ``code`` (see ``wire/src/error.rs``).

Every test runs twice: against brokers with ``--failure-status precise`` (each code's own
status) and with ``--failure-status 400`` (400 for every failure a client causes, the same
``code``); ``failed()`` expects the status of the setting.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import helpers
import pytest
import requests
from helpers import failed, is_json, ok

TIMEOUT = 15


@pytest.fixture(autouse=True, params=["precise", "400"])
def failure_status(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Overrides conftest's: every broker of the test inherits MYQUEUE_FAILURE_STATUS."""
    monkeypatch.setenv("MYQUEUE_FAILURE_STATUS", request.param)
    monkeypatch.setattr(helpers, "failure_status", request.param)
    return request.param


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def create_topic(broker, name: str) -> None:
    ok(broker.post("/topics", {"name": name}), "message")


def register_producer(broker, topic: str) -> int:
    body = ok(broker.post("/producer/register", {"topic": topic}), "producer_id")
    assert is_int(body["producer_id"]), body
    return body["producer_id"]


def register_consumer(broker, topic: str) -> int:
    body = ok(broker.post("/consumer/register", {"topic": topic}), "consumer_id")
    assert is_int(body["consumer_id"]), body
    return body["consumer_id"]


def produce(broker, topic: str, producer_id: Any, message: str) -> None:
    body = ok(
        broker.post(
            "/producer/produce", {"topic": topic, "producer_id": producer_id, "message": message}
        )
    )
    assert body == {"status": "success"}


def consume(broker, topic: str, consumer_id: Any) -> str:
    body = ok(
        broker.get("/consumer/consume", {"topic": topic, "consumer_id": consumer_id}), "message"
    )
    assert isinstance(body["message"], str)
    return body["message"]


def size(broker, topic: str, consumer_id: Any) -> int:
    body = ok(broker.get("/size", {"topic": topic, "consumer_id": consumer_id}), "size")
    assert is_int(body["size"]), body
    return body["size"]


def fetch(broker, topic: str, consumer_id: Any, **params: Any) -> dict[str, Any]:
    body = ok(
        broker.get("/consumer/fetch", {"topic": topic, "consumer_id": consumer_id, **params}),
        "messages",
        "next_offset",
        "end_offset",
    )
    assert is_int(body["next_offset"]) and is_int(body["end_offset"]), body
    assert isinstance(body["messages"], list), body
    for m in body["messages"]:
        assert set(m) == {"offset", "message", "timestamp"}, m
        assert is_int(m["offset"]) and isinstance(m["message"], str) and is_int(m["timestamp"]), m
    return body


def produce_batch(
    broker, topic: str, producer_id: Any, messages: list[str], sequence: int | None = None
):
    body: dict[str, Any] = {"topic": topic, "producer_id": producer_id, "messages": messages}
    if sequence is not None:
        body["sequence"] = sequence
    return broker.post("/producer/produce_batch", body)


def raw(
    broker,
    method: str,
    path: str,
    data: Any = None,
    headers: dict | None = None,
    params: dict | None = None,
) -> requests.Response:
    return requests.request(
        method, broker.url + path, data=data, headers=headers, params=params, timeout=TIMEOUT
    )


# --------------------------------------------------------------------------------------------
# POST /topics, GET /topics
# --------------------------------------------------------------------------------------------


def test_create_topic_with_name(broker):
    body = ok(broker.post("/topics", {"name": "post_created"}), "message")
    assert "post_created" in body["message"]
    assert ok(broker.get("/topics"), "topics")["topics"] == ["post_created"]


def test_create_topic_with_the_examples_topic_name(broker):
    resp = broker.post("/topics", {"topic_name": "example_topic"})
    body = ok(resp, "message")
    assert body == {"status": "success", "message": "Topic 'example_topic' created successfully"}
    assert ok(broker.get("/topics"), "topics")["topics"] == ["example_topic"]


@pytest.mark.parametrize("key", ["name", "topic_name"])
def test_create_duplicate_topic_is_409_topic_exists(broker, key):
    create_topic(broker, "dup")
    failed(broker.post("/topics", {key: "dup"}), 409, "topic_exists")
    assert ok(broker.get("/topics"), "topics")["topics"] == ["dup"]


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a" * 250,
        "has space",
        "a/b",
        "/",
        " lead",
        "tab\t",
        "dot/../x",
        "é",
        "emoji😀",
        "new\nline",
    ],
    ids=[
        "empty",
        "250-chars",
        "space",
        "slash",
        "only-slash",
        "leading-space",
        "tab",
        "path",
        "non-ascii",
        "emoji",
        "newline",
    ],
)
def test_invalid_topic_names_are_400_invalid_topic_name(broker, name):
    failed(broker.post("/topics", {"name": name}), 400, "invalid_topic_name")
    failed(broker.post("/topics", {"topic_name": name}), 400, "invalid_topic_name")
    failed(broker.post("/producer/register", {"topic": name}), 400, "invalid_topic_name")
    failed(broker.post("/consumer/register", {"topic": name}), 400, "invalid_topic_name")
    assert ok(broker.get("/topics"), "topics")["topics"] == []


def test_topic_name_of_249_chars_and_all_allowed_characters(broker):
    long = "a" * 249
    create_topic(broker, long)
    create_topic(broker, "Az09._-")
    topics = ok(broker.get("/topics"), "topics")["topics"]
    assert sorted(topics) == sorted([long, "Az09._-"])
    pid = register_producer(broker, long)
    cid = register_consumer(broker, long)
    produce(broker, long, pid, "hello")
    assert consume(broker, long, cid) == "hello"


def test_list_topics(broker):
    assert ok(broker.get("/topics"), "topics") == {"status": "success", "topics": []}
    names = ["user_signup", "post_created", "user_login"]
    for name in names:
        create_topic(broker, name)
    topics = ok(broker.get("/topics"), "topics")["topics"]
    assert all(isinstance(t, str) for t in topics)
    assert sorted(topics) == sorted(names)


def test_topic_names_are_case_sensitive(broker):
    create_topic(broker, "Topic")
    create_topic(broker, "topic")
    assert sorted(ok(broker.get("/topics"), "topics")["topics"]) == ["Topic", "topic"]


# --------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------


def test_register_producer_creates_a_missing_topic(broker):
    pid = register_producer(broker, "fresh")
    assert ok(broker.get("/topics"), "topics")["topics"] == ["fresh"]
    # The topic now exists: creating it again is a conflict, consumers may register.
    failed(broker.post("/topics", {"name": "fresh"}), 409, "topic_exists")
    register_consumer(broker, "fresh")
    produce(broker, "fresh", pid, "x")


def test_register_producer_on_existing_topic_and_ids_are_distinct(broker):
    create_topic(broker, "t")
    ids = [register_producer(broker, "t") for _ in range(5)]
    ids.append(register_producer(broker, "other"))
    assert len(set(ids)) == len(ids)
    assert sorted(ok(broker.get("/topics"), "topics")["topics"]) == ["other", "t"]


def test_register_consumer(broker):
    create_topic(broker, "t")
    ids = [register_consumer(broker, "t") for _ in range(5)]
    assert len(set(ids)) == len(ids)


def test_register_consumer_for_a_missing_topic_is_404_topic_not_found(broker):
    failed(broker.post("/consumer/register", {"topic": "nope"}), 404, "topic_not_found")
    # And it did not create the topic.
    assert ok(broker.get("/topics"), "topics")["topics"] == []


def test_register_consumer_with_a_group_returns_the_same_id(broker):
    """Addition: a durable consumer name; the same (topic, group) is the same consumer."""
    pid = register_producer(broker, "t")
    register_producer(broker, "u")
    first = ok(broker.post("/consumer/register", {"topic": "t", "group": "g1"}), "consumer_id")[
        "consumer_id"
    ]
    again = ok(broker.post("/consumer/register", {"topic": "t", "group": "g1"}), "consumer_id")[
        "consumer_id"
    ]
    other = ok(broker.post("/consumer/register", {"topic": "t", "group": "g2"}), "consumer_id")[
        "consumer_id"
    ]
    elsewhere = ok(broker.post("/consumer/register", {"topic": "u", "group": "g1"}), "consumer_id")[
        "consumer_id"
    ]
    plain = register_consumer(broker, "t")
    assert first == again
    assert len({first, other, elsewhere, plain}) == 4
    produce(broker, "t", pid, "one")
    produce(broker, "t", pid, "two")
    assert consume(broker, "t", first) == "one"
    # The position belongs to the group's id.
    again = ok(broker.post("/consumer/register", {"topic": "t", "group": "g1"}), "consumer_id")[
        "consumer_id"
    ]
    assert consume(broker, "t", again) == "two"
    assert size(broker, "t", other) == 2
    failed(
        broker.post("/consumer/register", {"topic": "t", "group": "bad group"}),
        400,
        "invalid_topic_name",
    )
    failed(
        broker.post("/consumer/register", {"topic": "t", "group": ""}), 400, "invalid_topic_name"
    )
    failed(
        broker.post("/consumer/register", {"topic": "missing", "group": "g1"}),
        404,
        "topic_not_found",
    )


def register_consumer_at(broker, topic: str, start: Any, group: str | None = None) -> int:
    body = {"topic": topic, "start": start}
    if group is not None:
        body["group"] = group
    return ok(broker.post("/consumer/register", body), "consumer_id")["consumer_id"]


def test_a_consumer_registered_at_the_end_gets_only_what_is_produced_after(broker):
    """Addition (issue 14): ``start: "end"``, the reading of clients that expect size 0 for a
    consumer registered after two messages."""
    pid = register_producer(broker, "t")
    produce(broker, "t", pid, "one")
    produce(broker, "t", pid, "two")
    cid = register_consumer_at(broker, "t", "end")
    assert size(broker, "t", cid) == 0
    failed(broker.get("/consumer/consume", {"topic": "t", "consumer_id": cid}), 404, "queue_empty")
    assert fetch(broker, "t", cid)["messages"] == []
    produce(broker, "t", pid, "three")
    assert size(broker, "t", cid) == 1
    assert consume(broker, "t", cid) == "three"
    failed(broker.get("/consumer/consume", {"topic": "t", "consumer_id": cid}), 404, "queue_empty")
    assert size(broker, "t", cid) == 0
    # "beginning", and no start at all (this broker's default), read the whole topic.
    assert size(broker, "t", register_consumer_at(broker, "t", "beginning")) == 3
    assert size(broker, "t", register_consumer(broker, "t")) == 3
    # As a form body and in the query string too.
    formed = ok(
        raw(broker, "POST", "/consumer/register", data={"topic": "t", "start": "end"}),
        "consumer_id",
    )
    assert size(broker, "t", formed["consumer_id"]) == 0
    queried = ok(
        raw(broker, "POST", "/consumer/register", params={"topic": "t", "start": "end"}),
        "consumer_id",
    )
    assert size(broker, "t", queried["consumer_id"]) == 0


def test_start_applies_only_when_the_registration_creates_the_consumer(broker):
    pid = register_producer(broker, "t")
    for m in ["a", "b", "c"]:
        produce(broker, "t", pid, m)
    early = register_consumer_at(broker, "t", "beginning", group="early")
    assert consume(broker, "t", early) == "a"
    assert register_consumer_at(broker, "t", "end", group="early") == early
    assert size(broker, "t", early) == 2
    late = register_consumer_at(broker, "t", "end", group="late")
    produce(broker, "t", pid, "d")
    assert register_consumer_at(broker, "t", "beginning", group="late") == late
    assert consume(broker, "t", late) == "d"


def test_the_brokers_consumer_start_is_the_default(make_broker, tmp_path):
    for broker in (
        make_broker("--data-dir", str(tmp_path / "data"), "--consumer-start", "end"),
        make_broker("--store", "memory", env={"MYQUEUE_CONSUMER_START": "end"}),
    ):
        pid = register_producer(broker, "t")
        produce(broker, "t", pid, "before")
        at_end = register_consumer(broker, "t")
        assert size(broker, "t", at_end) == 0
        assert size(broker, "t", register_consumer_at(broker, "t", "beginning")) == 1
        produce(broker, "t", pid, "after")
        assert consume(broker, "t", at_end) == "after"


@pytest.mark.parametrize("start", ["middle", "End", "", 0, 5, True, ["end"], {"at": "end"}])
def test_a_bad_start_is_400_invalid_request(broker, start):
    create_topic(broker, "t")
    failed(
        broker.post("/consumer/register", {"topic": "t", "start": start}), 400, "invalid_request"
    )


@pytest.mark.parametrize("path", ["/producer/register", "/consumer/register"])
def test_register_without_topic_is_400_invalid_request(broker, path):
    failed(broker.post(path, {}), 400, "invalid_request")
    failed(broker.post(path, {"name": "t"}), 400, "invalid_request")
    failed(broker.post(path, {"topic": 7}), 400, "invalid_request")
    failed(broker.post(path, {"topic": None}), 400, "invalid_request")


# --------------------------------------------------------------------------------------------
# POST /producer/produce
# --------------------------------------------------------------------------------------------


def test_produce_and_consume_in_order(broker):
    pid = register_producer(broker, "t")
    cid = register_consumer(broker, "t")
    for i in range(5):
        produce(broker, "t", pid, f"log {i}")
    assert [consume(broker, "t", cid) for _ in range(5)] == [f"log {i}" for i in range(5)]
    failed(broker.get("/consumer/consume", {"topic": "t", "consumer_id": cid}), 404, "queue_empty")


def test_produce_with_unknown_producer_is_404_producer_not_found(broker):
    create_topic(broker, "t")
    cid = register_consumer(broker, "t")
    for unknown in [0, 999, 10**12, "4242"]:
        failed(
            broker.post(
                "/producer/produce", {"topic": "t", "producer_id": unknown, "message": "m"}
            ),
            404,
            "producer_not_found",
        )
    assert size(broker, "t", cid) == 0


def test_produce_with_producer_of_another_topic_is_403_wrong_topic(broker):
    pid_a = register_producer(broker, "a")
    register_producer(broker, "b")
    cid_b = register_consumer(broker, "b")
    cid_a = register_consumer(broker, "a")
    failed(
        broker.post("/producer/produce", {"topic": "b", "producer_id": pid_a, "message": "m"}),
        403,
        "wrong_topic",
    )
    # A topic that does not exist at all: still the producer's wrong topic, and not created.
    resp = broker.post(
        "/producer/produce", {"topic": "nowhere", "producer_id": pid_a, "message": "m"}
    )
    code = resp.json().get("code")
    assert code in ("wrong_topic", "topic_not_found"), resp.text
    failed(resp, 403 if code == "wrong_topic" else 404, code)
    assert sorted(ok(broker.get("/topics"), "topics")["topics"]) == ["a", "b"]
    assert size(broker, "b", cid_b) == 0
    assert size(broker, "a", cid_a) == 0


def test_ids_as_numeric_strings_work(broker):
    pid = register_producer(broker, "t")
    cid = register_consumer(broker, "t")
    produce(broker, "t", str(pid), "one")
    produce(broker, "t", pid, "two")
    assert size(broker, "t", str(cid)) == 2
    # JSON body on GET with the id as a string.
    body = ok(
        requests.get(
            broker.url + "/consumer/consume",
            json={"topic": "t", "consumer_id": str(cid)},
            timeout=TIMEOUT,
        ),
        "message",
    )
    assert body["message"] == "one"
    assert consume(broker, "t", str(cid)) == "two"


@pytest.mark.parametrize("bad_id", ["abc", -1, "-1", 1.5, "", None, [1], {"id": 1}, True])
def test_produce_with_a_malformed_producer_id_is_400_invalid_request(broker, bad_id):
    register_producer(broker, "t")
    failed(
        broker.post("/producer/produce", {"topic": "t", "producer_id": bad_id, "message": "m"}),
        400,
        "invalid_request",
    )


@pytest.mark.parametrize(
    "body",
    [
        {"producer_id": 1, "message": "m"},
        {"topic": "t", "message": "m"},
        {"topic": "t", "producer_id": 1},
        {"topic": "t", "producer_id": 1, "message": 5},
        {"topic": "t", "producer_id": 1, "message": None},
        {"topic": "t", "producer_id": 1, "message": ["m"]},
        {},
    ],
    ids=[
        "no-topic",
        "no-producer-id",
        "no-message",
        "message-number",
        "message-null",
        "message-list",
        "empty",
    ],
)
def test_produce_with_missing_or_mistyped_field_is_400_invalid_request(broker, body):
    pid = register_producer(broker, "t")
    body = {k: (pid if k == "producer_id" else v) for k, v in body.items()}
    failed(broker.post("/producer/produce", body), 400, "invalid_request")


def test_message_over_the_limit_is_413_payload_too_large(make_broker, tmp_path):
    broker = make_broker("--data-dir", str(tmp_path / "data"), "--max-message-bytes", "100")
    pid = register_producer(broker, "t")
    cid = register_consumer(broker, "t")
    produce(broker, "t", pid, "x" * 100)  # exactly the limit
    failed(
        broker.post("/producer/produce", {"topic": "t", "producer_id": pid, "message": "x" * 101}),
        413,
        "payload_too_large",
    )
    # The limit is in UTF-8 bytes: 25 four-byte emoji fit, 26 do not.
    produce(broker, "t", pid, "😀" * 25)
    failed(
        broker.post("/producer/produce", {"topic": "t", "producer_id": pid, "message": "😀" * 26}),
        413,
        "payload_too_large",
    )
    # A batch with one message over the limit is refused whole.
    failed(produce_batch(broker, "t", pid, ["ok", "y" * 101]), 413, "payload_too_large")
    assert size(broker, "t", cid) == 2
    assert consume(broker, "t", cid) == "x" * 100
    assert consume(broker, "t", cid) == "😀" * 25


def test_body_over_max_body_bytes_is_413_payload_too_large(make_broker, tmp_path):
    broker = make_broker("--data-dir", str(tmp_path / "data"), "--max-body-bytes", "1000")
    pid = register_producer(broker, "t")
    cid = register_consumer(broker, "t")
    produce(broker, "t", pid, "y" * 900)
    # With a Content-Length.
    failed(
        broker.post("/producer/produce", {"topic": "t", "producer_id": pid, "message": "x" * 2000}),
        413,
        "payload_too_large",
    )
    failed(produce_batch(broker, "t", pid, ["x" * 100] * 20), 413, "payload_too_large")
    failed(broker.post("/topics", {"name": "n" * 2000}), 413, "payload_too_large")

    # Chunked, without a Content-Length.
    payload = json.dumps({"topic": "t", "producer_id": pid, "message": "z" * 3000}).encode()

    def chunks():
        for i in range(0, len(payload), 256):
            yield payload[i : i + 256]

    resp = requests.post(
        broker.url + "/producer/produce",
        data=chunks(),
        headers={"content-type": "application/json"},
        timeout=TIMEOUT,
    )
    failed(resp, 413, "payload_too_large")
    assert size(broker, "t", cid) == 1
    assert consume(broker, "t", cid) == "y" * 900


# --------------------------------------------------------------------------------------------
# GET /consumer/consume
# --------------------------------------------------------------------------------------------


def test_consume_with_query_string_and_with_json_body_on_get(broker):
    pid = register_producer(broker, "t")
    cid = register_consumer(broker, "t")
    for m in ["a", "b", "c"]:
        produce(broker, "t", pid, m)
    # Query string.
    assert (
        ok(broker.get("/consumer/consume", {"topic": "t", "consumer_id": cid}), "message")[
            "message"
        ]
        == "a"
    )
    # JSON body on GET.
    resp = requests.get(
        broker.url + "/consumer/consume", json={"topic": "t", "consumer_id": cid}, timeout=TIMEOUT
    )
    assert ok(resp, "message")["message"] == "b"
    # JSON body on GET without a content type.
    resp = requests.get(
        broker.url + "/consumer/consume",
        data=json.dumps({"topic": "t", "consumer_id": cid}).encode(),
        timeout=TIMEOUT,
    )
    assert ok(resp, "message")["message"] == "c"
    failed(
        requests.get(
            broker.url + "/consumer/consume",
            json={"topic": "t", "consumer_id": cid},
            timeout=TIMEOUT,
        ),
        404,
        "queue_empty",
    )


def test_consume_on_an_empty_topic_is_404_queue_empty(broker):
    create_topic(broker, "t")
    cid = register_consumer(broker, "t")
    body = failed(
        broker.get("/consumer/consume", {"topic": "t", "consumer_id": cid}), 404, "queue_empty"
    )
    assert body["message"]
    # Still empty, still the same answer; and a later message is delivered.
    failed(broker.get("/consumer/consume", {"topic": "t", "consumer_id": cid}), 404, "queue_empty")
    pid = register_producer(broker, "t")
    produce(broker, "t", pid, "late")
    assert consume(broker, "t", cid) == "late"


def test_consume_with_wrong_topic_is_403(broker):
    create_topic(broker, "a")
    create_topic(broker, "b")
    pid = register_producer(broker, "a")
    produce(broker, "a", pid, "m")
    cid_a = register_consumer(broker, "a")
    failed(
        broker.get("/consumer/consume", {"topic": "b", "consumer_id": cid_a}), 403, "wrong_topic"
    )
    failed(broker.get("/size", {"topic": "b", "consumer_id": cid_a}), 403, "wrong_topic")
    # The refused consume did not move the position.
    assert consume(broker, "a", cid_a) == "m"


def test_consume_with_unknown_consumer_is_404_consumer_not_found(broker):
    create_topic(broker, "t")
    for unknown in [0, 77, "12345"]:
        failed(
            broker.get("/consumer/consume", {"topic": "t", "consumer_id": unknown}),
            404,
            "consumer_not_found",
        )
        failed(
            broker.get("/size", {"topic": "t", "consumer_id": unknown}), 404, "consumer_not_found"
        )


def test_producer_id_is_not_a_consumer_id(broker):
    pid = register_producer(broker, "t")
    produce(broker, "t", pid, "m")
    # No consumer was registered, so the producer's id is not a consumer id.
    failed(
        broker.get("/consumer/consume", {"topic": "t", "consumer_id": pid}),
        404,
        "consumer_not_found",
    )


@pytest.mark.parametrize(
    "params",
    [
        {"topic": "t"},
        {"consumer_id": 1},
        {},
        {"topic": "t", "consumer_id": "abc"},
        {"topic": "t", "consumer_id": -3},
    ],
    ids=["no-consumer-id", "no-topic", "nothing", "id-not-a-number", "negative-id"],
)
@pytest.mark.parametrize("path", ["/consumer/consume", "/size", "/consumer/fetch"])
def test_consumer_reads_with_missing_or_bad_params_are_400(broker, path, params):
    create_topic(broker, "t")
    register_consumer(broker, "t")
    failed(broker.get(path, params), 400, "invalid_request")
    failed(requests.get(broker.url + path, json=params, timeout=TIMEOUT), 400, "invalid_request")


def test_consumers_are_independent(broker):
    pid = register_producer(broker, "t")
    c1 = register_consumer(broker, "t")
    c2 = register_consumer(broker, "t")
    for m in ["x", "y"]:
        produce(broker, "t", pid, m)
    assert consume(broker, "t", c1) == "x"
    assert consume(broker, "t", c1) == "y"
    assert consume(broker, "t", c2) == "x"
    # A consumer registered later starts at the beginning of the topic.
    c3 = register_consumer(broker, "t")
    assert size(broker, "t", c3) == 2
    assert consume(broker, "t", c3) == "x"


def test_topics_are_separate(broker):
    pa = register_producer(broker, "a")
    pb = register_producer(broker, "b")
    ca = register_consumer(broker, "a")
    cb = register_consumer(broker, "b")
    produce(broker, "a", pa, "for a")
    produce(broker, "b", pb, "for b")
    assert consume(broker, "a", ca) == "for a"
    assert consume(broker, "b", cb) == "for b"
    failed(broker.get("/consumer/consume", {"topic": "a", "consumer_id": ca}), 404, "queue_empty")


# --------------------------------------------------------------------------------------------
# GET /size
# --------------------------------------------------------------------------------------------


def test_size_counts_what_is_left_for_this_consumer(broker):
    pid = register_producer(broker, "t")
    c1 = register_consumer(broker, "t")
    c2 = register_consumer(broker, "t")
    assert ok(broker.get("/size", {"topic": "t", "consumer_id": c1}), "size") == {
        "status": "success",
        "size": 0,
    }
    for i in range(7):
        produce(broker, "t", pid, f"m{i}")
    assert size(broker, "t", c1) == 7
    for _ in range(3):
        consume(broker, "t", c1)
    assert size(broker, "t", c1) == 4
    assert size(broker, "t", c2) == 7
    # Size is read-only.
    assert size(broker, "t", c1) == 4
    assert consume(broker, "t", c1) == "m3"
    # JSON body on GET.
    resp = requests.get(
        broker.url + "/size", json={"topic": "t", "consumer_id": c1}, timeout=TIMEOUT
    )
    assert ok(resp, "size")["size"] == 3
    for _ in range(3):
        consume(broker, "t", c1)
    assert size(broker, "t", c1) == 0
    failed(broker.get("/consumer/consume", {"topic": "t", "consumer_id": c1}), 404, "queue_empty")
    assert size(broker, "t", c1) == 0


def test_size_after_batches_and_commits(broker):
    pid = register_producer(broker, "t")
    cid = register_consumer(broker, "t")
    ok(
        produce_batch(broker, "t", pid, [str(i) for i in range(50)]),
        "base_offset",
        "count",
        "duplicate",
    )
    assert size(broker, "t", cid) == 50
    ok(
        broker.post("/consumer/commit", {"topic": "t", "consumer_id": cid, "offset": 20}),
        "position",
    )
    assert size(broker, "t", cid) == 30
    ok(
        broker.post("/consumer/commit", {"topic": "t", "consumer_id": cid, "offset": "end"}),
        "position",
    )
    assert size(broker, "t", cid) == 0


# --------------------------------------------------------------------------------------------
# Malformed requests, unknown paths, wrong methods
# --------------------------------------------------------------------------------------------

POST_ENDPOINTS = [
    "/topics",
    "/producer/register",
    "/consumer/register",
    "/producer/produce",
    "/producer/produce_batch",
    "/consumer/commit",
]
GET_ENDPOINTS = ["/consumer/consume", "/size", "/consumer/fetch"]


@pytest.mark.parametrize("path", POST_ENDPOINTS)
@pytest.mark.parametrize(
    "data",
    [
        b"{",
        b'{"topic": ',
        b"not json",
        b"[1, 2",
        b'{"topic": "t",}',
        b"\xff\xfe\x00garbage",
        b"{'topic': 't'}",
    ],
    ids=[
        "open-brace",
        "truncated",
        "text",
        "open-list",
        "trailing-comma",
        "binary",
        "single-quotes",
    ],
)
def test_malformed_json_is_400_invalid_request(broker, path, data):
    failed(
        raw(broker, "POST", path, data=data, headers={"content-type": "application/json"}),
        400,
        "invalid_request",
    )


@pytest.mark.parametrize("path", GET_ENDPOINTS)
def test_malformed_json_body_on_get_is_400_invalid_request(broker, path):
    failed(
        raw(broker, "GET", path, data=b'{"topic": ', headers={"content-type": "application/json"}),
        400,
        "invalid_request",
    )


@pytest.mark.parametrize("path", POST_ENDPOINTS)
def test_missing_fields_are_400_invalid_request(broker, path):
    failed(broker.post(path, {}), 400, "invalid_request")
    failed(raw(broker, "POST", path), 400, "invalid_request")  # no body at all
    failed(broker.post(path, []), 400, "invalid_request")
    failed(broker.post(path, "a string"), 400, "invalid_request")
    failed(broker.post(path, None), 400, "invalid_request")


def test_every_failure_a_client_can_cause_keeps_its_code_under_either_failure_status(
    make_broker, tmp_path, failure_status
):
    """One request per error code a client can cause (``unsupported_media_type`` cannot be:
    any content type is read), with raw statuses: ``--failure-status 400`` answers each with
    400 and its usual code and body; a success is still 200."""
    broker = make_broker("--data-dir", str(tmp_path / "data"), "--max-message-bytes", "10")
    pid = register_producer(broker, "t")
    register_producer(broker, "u")
    ok(produce_batch(broker, "t", pid, ["a"], sequence=0), "base_offset", "count", "duplicate")
    cid = register_consumer(broker, "t")
    at_end = register_consumer_at(broker, "t", "end")
    cases = [
        ("invalid_request", 400, lambda: broker.post("/topics", {})),
        ("invalid_topic_name", 400, lambda: broker.post("/topics", {"name": "a b"})),
        (
            "invalid_retention",
            400,
            lambda: broker.post("/topics", {"name": "r", "retention_ms": 0}),
        ),
        (
            "offset_out_of_range",
            400,
            lambda: broker.post(
                "/consumer/commit", {"topic": "t", "consumer_id": cid, "offset": 5}
            ),
        ),
        ("wrong_topic", 403, lambda: produce_batch(broker, "u", pid, ["m"])),
        ("topic_not_found", 404, lambda: broker.post("/consumer/register", {"topic": "missing"})),
        ("producer_not_found", 404, lambda: produce_batch(broker, "t", 10**9, ["m"])),
        (
            "consumer_not_found",
            404,
            lambda: broker.get("/size", {"topic": "t", "consumer_id": 10**9}),
        ),
        (
            "queue_empty",
            404,
            lambda: broker.get("/consumer/consume", {"topic": "t", "consumer_id": at_end}),
        ),
        ("not_found", 404, lambda: broker.get("/nope")),
        ("method_not_allowed", 405, lambda: raw(broker, "DELETE", "/topics")),
        ("topic_exists", 409, lambda: broker.post("/topics", {"name": "t"})),
        ("sequence_mismatch", 409, lambda: produce_batch(broker, "t", pid, ["m"], sequence=7)),
        ("payload_too_large", 413, lambda: produce_batch(broker, "t", pid, ["x" * 11])),
    ]
    for code, precise, send in cases:
        resp = send()
        expected = 400 if failure_status == "400" else precise
        assert (resp.status_code, resp.json().get("code")) == (expected, code), resp.text
        assert resp.json()["status"] == "failure" and resp.json()["message"], resp.text
    assert ok(broker.get("/size", {"topic": "t", "consumer_id": cid}), "size")["size"] == 1


def _non_object_bodies(pid: int, cid: int) -> list[tuple[str, str, Any]]:
    """(method, path, JSON body): for each endpoint, an array that names every field in order
    (serde would read it as the request) and the other non-objects."""
    arrays = {
        ("POST", "/topics"): ["x"],
        ("POST", "/producer/register"): ["x"],
        ("POST", "/consumer/register"): ["t"],
        ("POST", "/producer/produce"): ["t", pid, "m"],
        ("POST", "/producer/produce_batch"): ["t", pid, ["m"]],
        ("POST", "/consumer/commit"): ["t", cid, 1],
        ("GET", "/consumer/consume"): ["t", cid],
        ("GET", "/size"): ["t", cid],
        ("GET", "/consumer/fetch"): ["t", cid],
        ("PATCH", "/topics/t"): [1000, 1000],
    }
    return [
        (method, path, body)
        for (method, path), array in arrays.items()
        for body in (array, [array], "x", 7, None)
    ]


def test_a_json_body_that_is_not_an_object_is_400_and_changes_nothing(broker):
    pid = register_producer(broker, "t")
    cid = register_consumer(broker, "t")
    produce(broker, "t", pid, "first")
    registered = register_consumer(broker, "t")
    for method, path, body in _non_object_bodies(pid, cid):
        resp = raw(
            broker,
            method,
            path,
            data=json.dumps(body).encode(),
            headers={"content-type": "application/json"},
        )
        failed(resp, 400, "invalid_request")
    assert ok(broker.get("/topics"), "topics")["topics"] == ["t"]
    assert size(broker, "t", cid) == 1  # nothing produced, consumed or committed
    topic = broker.get("/topics/t").json()  # no retention setting changed
    assert (topic["retention_ms"], topic["retention_bytes"]) == (None, None), topic
    # No consumer was registered in between: the next id follows the last one.
    assert register_consumer(broker, "t") == registered + 1


@pytest.mark.parametrize(
    "data",
    [b"name=x&junk", b"junk&name=x", b"=v&name=x", b"name=x&", b"name"],
    ids=["bare-word-after", "bare-word-before", "empty-key", "trailing-ampersand", "only-a-word"],
)
def test_a_form_body_that_is_not_key_value_pairs_is_400_and_changes_nothing(broker, data):
    headers = {"content-type": "application/x-www-form-urlencoded"}
    failed(raw(broker, "POST", "/topics", data=data, headers=headers), 400, "invalid_request")
    failed(
        raw(
            broker,
            "POST",
            "/producer/register",
            data=data.replace(b"name", b"topic"),
            headers=headers,
        ),
        400,
        "invalid_request",
    )
    assert ok(broker.get("/topics"), "topics")["topics"] == []


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/nope",
        "/topic",
        "/topics/x/y",
        "/producer",
        "/consumer/consume/extra",
        "/producer/produce2",
        "/SIZE",
        "/healthz/x",
        "/%ff",
    ],
)
def test_unknown_path_is_404_not_found(broker, path):
    failed(raw(broker, "GET", path), 404, "not_found")
    failed(
        raw(broker, "POST", path, data=b"{}", headers={"content-type": "application/json"}),
        404,
        "not_found",
    )


@pytest.mark.parametrize(
    "method,path",
    [
        ("DELETE", "/topics"),
        ("PUT", "/topics"),
        ("PATCH", "/topics"),
        ("GET", "/producer/register"),
        ("GET", "/consumer/register"),
        ("GET", "/producer/produce"),
        ("GET", "/producer/produce_batch"),
        ("POST", "/consumer/consume"),
        ("POST", "/size"),
        ("DELETE", "/size"),
        ("POST", "/consumer/fetch"),
        ("GET", "/consumer/commit"),
        ("POST", "/healthz"),
    ],
)
def test_wrong_method_is_405_method_not_allowed(broker, method, path):
    failed(
        raw(broker, method, path, data=b"{}", headers={"content-type": "application/json"}),
        405,
        "method_not_allowed",
    )


def test_form_body_is_accepted(broker):
    """Parameters may come as a form body too (clients of the assignment differ)."""
    resp = raw(broker, "POST", "/producer/register", data={"topic": "formed"})
    pid = ok(resp, "producer_id")["producer_id"]
    resp = raw(
        broker,
        "POST",
        "/producer/produce",
        data={"topic": "formed", "producer_id": str(pid), "message": "hi"},
    )
    assert ok(resp) == {"status": "success"}


def _bad_requests() -> list[tuple[str, str, dict]]:
    j = {"content-type": "application/json"}
    huge_number = "1" + "0" * 40
    return [
        ("POST", "/topics", {"data": b"{", "headers": j}),
        ("POST", "/topics", {"data": b'{"name": null}', "headers": j}),
        ("POST", "/topics", {"data": b'{"name": 123}', "headers": j}),
        ("POST", "/topics", {"data": b'{"name": "\\ud800"}', "headers": j}),  # lone surrogate
        ("POST", "/topics", {"data": b'{"name": "a\x00b"}', "headers": j}),  # raw NUL in JSON
        ("POST", "/topics", {"data": b"\x00\x01\x02", "headers": j}),
        ("POST", "/topics", {"data": '{"name": "x"}'.encode("utf-16"), "headers": j}),
        ("POST", "/topics", {"data": b'{"name": "t"}', "headers": {"content-type": "text/plain"}}),
        (
            "POST",
            "/topics",
            {"data": b"name=%ZZ", "headers": {"content-type": "application/x-www-form-urlencoded"}},
        ),
        (
            "POST",
            "/topics",
            {"data": b'{"name": ' + b"[" * 10000 + b"]" * 10000 + b"}", "headers": j},
        ),
        ("POST", "/producer/register", {"data": b'{"topic": {"x": 1}}', "headers": j}),
        (
            "POST",
            "/producer/register",
            {"data": b'{"topic": "' + b"a" * 5000 + b'"}', "headers": j},
        ),
        ("POST", "/consumer/register", {"data": b'{"topic": "missing"}', "headers": j}),
        (
            "POST",
            "/consumer/register",
            {"data": b'{"topic": "t", "group": "bad group"}', "headers": j},
        ),
        ("POST", "/consumer/register", {"data": b'{"topic": "t", "group": 5}', "headers": j}),
        (
            "POST",
            "/producer/produce",
            {
                "data": b'{"topic": "t", "producer_id": '
                + huge_number.encode()
                + b', "message": "m"}',
                "headers": j,
            },
        ),
        (
            "POST",
            "/producer/produce",
            {
                "data": b'{"topic": "t", "producer_id": "'
                + huge_number.encode()
                + b'", "message": "m"}',
                "headers": j,
            },
        ),
        (
            "POST",
            "/producer/produce",
            {"data": b'{"topic": "t", "producer_id": 1e400, "message": "m"}', "headers": j},
        ),
        (
            "POST",
            "/producer/produce",
            {
                "data": b'{"topic": "t", "producer_id": 18446744073709551615, "message": "m"}',
                "headers": j,
            },
        ),
        (
            "POST",
            "/producer/produce",
            {
                "data": b'{"topic": "t", "producer_id": 9223372036854775808, "message": "m"}',
                "headers": j,
            },
        ),
        (
            "POST",
            "/producer/produce",
            {
                "data": b'{"topic": "t", "producer_id": -9223372036854775808, "message": "m"}',
                "headers": j,
            },
        ),
        (
            "POST",
            "/producer/produce",
            {"data": b'{"topic": "", "producer_id": 1, "message": "m"}', "headers": j},
        ),
        (
            "POST",
            "/producer/produce",
            {"data": b'{"topic": "nope", "producer_id": 1, "message": "m"}', "headers": j},
        ),
        (
            "POST",
            "/producer/produce",
            {"data": b'{"topic": "t", "producer_id": 1, "message": "\xff"}', "headers": j},
        ),  # invalid UTF-8
        (
            "POST",
            "/producer/produce_batch",
            {"data": b'{"topic": "t", "producer_id": 1, "messages": "m"}', "headers": j},
        ),
        (
            "POST",
            "/producer/produce_batch",
            {"data": b'{"topic": "t", "producer_id": 1, "messages": [1]}', "headers": j},
        ),
        (
            "POST",
            "/producer/produce_batch",
            {
                "data": b'{"topic": "t", "producer_id": 1, "messages": ["m"], "sequence": -1}',
                "headers": j,
            },
        ),
        (
            "POST",
            "/producer/produce_batch",
            {
                "data": b'{"topic": "t", "producer_id": 1, "messages": ["m"],'
                b' "sequence": 18446744073709551615}',
                "headers": j,
            },
        ),
        (
            "POST",
            "/producer/produce_batch",
            {
                "data": b'{"topic": "t", "producer_id": 1, "messages": ["m"],'
                b' "sequence": 9223372036854775807}',
                "headers": j,
            },
        ),
        (
            "POST",
            "/consumer/commit",
            {"data": b'{"topic": "t", "consumer_id": 1, "offset": "middle"}', "headers": j},
        ),
        (
            "POST",
            "/consumer/commit",
            {"data": b'{"topic": "t", "consumer_id": 1, "offset": -1}', "headers": j},
        ),
        (
            "POST",
            "/consumer/commit",
            {
                "data": b'{"topic": "t", "consumer_id": 1, "offset": 18446744073709551615}',
                "headers": j,
            },
        ),
        (
            "POST",
            "/consumer/commit",
            {
                "data": b'{"topic": "t", "consumer_id": 1, "offset": 9223372036854775808}',
                "headers": j,
            },
        ),
        ("GET", "/consumer/consume", {"params": {"topic": "t", "consumer_id": huge_number}}),
        (
            "GET",
            "/consumer/consume",
            {"params": {"topic": "t", "consumer_id": "18446744073709551615"}},
        ),
        (
            "GET",
            "/consumer/consume",
            {"params": {"topic": "t", "consumer_id": "9223372036854775808"}},
        ),
        ("GET", "/consumer/consume", {"params": {"topic": "t", "consumer_id": "1", "extra": "x"}}),
        ("GET", "/consumer/consume", {"params": {"topic": "t" * 10000, "consumer_id": "1"}}),
        ("GET", "/consumer/consume", {"params": {"topic": "", "consumer_id": "1"}}),
        ("GET", "/consumer/consume", {"data": b"\xff\xff", "headers": j}),
        ("GET", "/size", {"params": {"topic": "t", "consumer_id": "1.5"}}),
        ("GET", "/size", {"params": {"topic": "t", "consumer_id": "0x10"}}),
        (
            "GET",
            "/consumer/fetch",
            {"params": {"topic": "t", "consumer_id": "1", "max_messages": "0"}},
        ),
        (
            "GET",
            "/consumer/fetch",
            {"params": {"topic": "t", "consumer_id": "1", "max_messages": "10001"}},
        ),
        (
            "GET",
            "/consumer/fetch",
            {"params": {"topic": "t", "consumer_id": "1", "max_messages": huge_number}},
        ),
        (
            "GET",
            "/consumer/fetch",
            {"params": {"topic": "t", "consumer_id": "1", "wait_ms": "30001"}},
        ),
        ("GET", "/consumer/fetch", {"params": {"topic": "t", "consumer_id": "1", "wait_ms": "-5"}}),
        (
            "GET",
            "/consumer/fetch",
            {"params": {"topic": "t", "consumer_id": "1", "offset": "99999999"}},
        ),
        (
            "GET",
            "/consumer/fetch",
            {"params": {"topic": "t", "consumer_id": "1", "offset": "18446744073709551615"}},
        ),
        (
            "GET",
            "/consumer/fetch",
            {"params": {"topic": "t", "consumer_id": "1", "offset": "9223372036854775808"}},
        ),
        ("GET", "/consumer/fetch", {"params": {"topic": "t", "consumer_id": "1", "offset": "x"}}),
        ("DELETE", "/consumer/fetch", {}),
        ("OPTIONS", "/topics", {}),
        ("GET", "/../../etc/passwd", {}),
    ]


@pytest.mark.parametrize(
    "method,path,kwargs",
    _bad_requests(),
    ids=[f"{i}-{m}-{p}" for i, (m, p, _) in enumerate(_bad_requests())],
)
def test_bad_requests_are_json_failures_never_5xx_or_html(broker, method, path, kwargs):
    pid = register_producer(broker, "t")
    register_consumer(broker, "t")
    assert pid == 1, "the ids in the bad requests assume producer 1"
    resp = requests.request(method, broker.url + path, timeout=TIMEOUT, **kwargs)
    assert resp.status_code < 500, f"{resp.status_code} {resp.text[:500]}"
    assert resp.status_code >= 400, f"{resp.status_code} {resp.text[:500]}"
    assert is_json(resp), f"{resp.headers.get('content-type')}: {resp.text[:500]}"
    assert "html" not in resp.headers.get("content-type", "")
    body = resp.json()
    assert set(body) == {"status", "message", "code"}, body
    assert body["status"] == "failure"
    assert isinstance(body["code"], str) and body["code"] not in ("internal", "unknown"), body
    # And the broker is still fine.
    ok(broker.get("/healthz"), "store")


def test_malformed_http_is_a_4xx_without_html(broker):
    """A header value with a control byte is refused by the HTTP layer itself (hyper answers a
    bare 400 before any route runs, so it cannot be JSON); it must still be a 4xx, never HTML."""
    resp = raw(broker, "POST", "/topics", data=b'{"name": "t"}', headers={"content-type": "\x01"})
    assert 400 <= resp.status_code < 500, resp.status_code
    assert "html" not in resp.headers.get("content-type", "")
    assert "<html" not in resp.text.lower()
    ok(broker.get("/healthz"), "store")


def test_huge_ids_and_offsets_are_not_found_or_out_of_range(make_broker, durable_broker_args):
    """u64 values above i64::MAX must not wrap around in the database."""
    broker = make_broker(*durable_broker_args)
    pid = register_producer(broker, "t")
    cid = register_consumer(broker, "t")
    produce(broker, "t", pid, "m")
    for big in [2**63 - 1, 2**63, 2**64 - 1]:
        failed(
            broker.post("/producer/produce", {"topic": "t", "producer_id": big, "message": "m"}),
            404,
            "producer_not_found",
        )
        failed(produce_batch(broker, "t", big, ["m"], sequence=0), 404, "producer_not_found")
        failed(
            broker.get("/consumer/consume", {"topic": "t", "consumer_id": str(big)}),
            404,
            "consumer_not_found",
        )
        failed(
            broker.get("/size", {"topic": "t", "consumer_id": str(big)}), 404, "consumer_not_found"
        )
        failed(
            broker.post("/consumer/commit", {"topic": "t", "consumer_id": cid, "offset": big}),
            400,
            "offset_out_of_range",
        )
        failed(
            broker.get("/consumer/fetch", {"topic": "t", "consumer_id": cid, "offset": str(big)}),
            400,
            "offset_out_of_range",
        )
        failed(produce_batch(broker, "t", pid, ["m"], sequence=big), 409, "sequence_mismatch")
    failed(
        broker.post("/producer/produce", {"topic": "t", "producer_id": 2**64, "message": "m"}),
        400,
        "invalid_request",
    )
    assert size(broker, "t", cid) == 1
    assert consume(broker, "t", cid) == "m"


# --------------------------------------------------------------------------------------------
# POST /producer/produce_batch
# --------------------------------------------------------------------------------------------


def test_produce_batch_without_sequence(broker):
    pid = register_producer(broker, "t")
    cid = register_consumer(broker, "t")
    body = ok(produce_batch(broker, "t", pid, ["a", "b", "c"]), "base_offset", "count", "duplicate")
    assert body == {"status": "success", "base_offset": 0, "count": 3, "duplicate": False}
    body = ok(produce_batch(broker, "t", str(pid), ["d", "e"]), "base_offset", "count", "duplicate")
    assert body == {"status": "success", "base_offset": 3, "count": 2, "duplicate": False}
    produce(broker, "t", pid, "f")
    body = ok(produce_batch(broker, "t", pid, ["g"]), "base_offset", "count", "duplicate")
    assert body["base_offset"] == 6
    assert [consume(broker, "t", cid) for _ in range(7)] == list("abcdefg")


def test_an_empty_batch_is_refused_and_stores_nothing(broker):
    pid = register_producer(broker, "t")
    cid = register_consumer(broker, "t")
    failed(produce_batch(broker, "t", pid, [], sequence=0), 400, "invalid_request")
    # The refused batch did not use up sequence number 0.
    ok(produce_batch(broker, "t", pid, ["a"], sequence=0), "base_offset", "count", "duplicate")
    assert size(broker, "t", cid) == 1


def test_produce_batch_retry_with_sequence_is_a_duplicate_and_stored_once(broker):
    pid = register_producer(broker, "t")
    cid = register_consumer(broker, "t")
    first = ok(
        produce_batch(broker, "t", pid, ["a", "b", "c"], sequence=0),
        "base_offset",
        "count",
        "duplicate",
    )
    assert first == {"status": "success", "base_offset": 0, "count": 3, "duplicate": False}
    # The response was "lost": the client retries the same batch.
    for _ in range(3):
        retry = ok(
            produce_batch(broker, "t", pid, ["a", "b", "c"], sequence=0),
            "base_offset",
            "count",
            "duplicate",
        )
        assert retry == {"status": "success", "base_offset": 0, "count": 3, "duplicate": True}
    assert size(broker, "t", cid) == 3
    second = ok(
        produce_batch(broker, "t", pid, ["d", "e"], sequence=3), "base_offset", "count", "duplicate"
    )
    assert second == {"status": "success", "base_offset": 3, "count": 2, "duplicate": False}
    retry = ok(
        produce_batch(broker, "t", pid, ["d", "e"], sequence="3"),
        "base_offset",
        "count",
        "duplicate",
    )
    assert retry == {"status": "success", "base_offset": 3, "count": 2, "duplicate": True}
    # The last 5 batches are remembered (a producer may have 5 in flight): the first one is
    # still recognised, until 5 newer ones are stored; then it is a mismatch.
    again = ok(
        produce_batch(broker, "t", pid, ["a", "b", "c"], sequence=0),
        "base_offset",
        "count",
        "duplicate",
    )
    assert again == {"status": "success", "base_offset": 0, "count": 3, "duplicate": True}
    for i in range(4):
        ok(
            produce_batch(broker, "t", pid, [f"n{i}"], sequence=5 + i),
            "base_offset",
            "count",
            "duplicate",
        )
    failed(produce_batch(broker, "t", pid, ["a", "b", "c"], sequence=0), 409, "sequence_mismatch")
    assert size(broker, "t", cid) == 9
    stored = [m["message"] for m in fetch(broker, "t", cid)["messages"]]
    assert stored == [*"abcde", "n0", "n1", "n2", "n3"]


def test_produce_batch_sequence_gap_is_409_sequence_mismatch(broker):
    pid = register_producer(broker, "t")
    cid = register_consumer(broker, "t")
    failed(produce_batch(broker, "t", pid, ["x"], sequence=1), 409, "sequence_mismatch")
    ok(produce_batch(broker, "t", pid, ["a", "b"], sequence=0), "base_offset", "count", "duplicate")
    failed(produce_batch(broker, "t", pid, ["c"], sequence=5), 409, "sequence_mismatch")
    failed(produce_batch(broker, "t", pid, ["c"], sequence=1), 409, "sequence_mismatch")
    assert size(broker, "t", cid) == 2
    # Sequences are per producer: another producer starts at 0.
    other = register_producer(broker, "t")
    ok(produce_batch(broker, "t", other, ["o"], sequence=0), "base_offset", "count", "duplicate")
    ok(produce_batch(broker, "t", pid, ["c"], sequence=2), "base_offset", "count", "duplicate")
    assert [m["message"] for m in fetch(broker, "t", cid)["messages"]] == ["a", "b", "o", "c"]


def test_a_batch_that_arrives_before_its_predecessor_waits_for_it(broker):
    """A producer with batches in flight on several connections: batch 1 may reach the broker
    before batch 0. It waits for batch 0 (briefly) instead of being refused as a gap."""
    pid = register_producer(broker, "t")
    cid = register_consumer(broker, "t")
    answers: dict[str, Any] = {}

    def send_second() -> None:
        answers["second"] = produce_batch(broker, "t", pid, ["c"], sequence=2)

    early = threading.Thread(target=send_second)
    early.start()
    time.sleep(0.1)  # batch 2 is waiting at the broker; now batches 0 and 1 arrive
    first = ok(
        produce_batch(broker, "t", pid, ["a", "b"], sequence=0), "base_offset", "count", "duplicate"
    )
    early.join(timeout=30)
    assert not early.is_alive()
    second = ok(answers["second"], "base_offset", "count", "duplicate")
    assert first["base_offset"] == 0
    assert second == {"status": "success", "base_offset": 2, "count": 1, "duplicate": False}
    assert [m["message"] for m in fetch(broker, "t", cid)["messages"]] == ["a", "b", "c"]


def test_produce_batch_failures(broker):
    pa = register_producer(broker, "a")
    register_producer(broker, "b")
    cid = register_consumer(broker, "b")
    failed(produce_batch(broker, "b", pa, ["m"]), 403, "wrong_topic")
    failed(produce_batch(broker, "b", 9999, ["m"]), 404, "producer_not_found")
    failed(
        broker.post("/producer/produce_batch", {"topic": "b", "producer_id": pa}),
        400,
        "invalid_request",
    )
    failed(
        broker.post("/producer/produce_batch", {"topic": "b", "messages": ["m"]}),
        400,
        "invalid_request",
    )
    failed(
        broker.post(
            "/producer/produce_batch", {"topic": "b", "producer_id": pa, "messages": [1, 2]}
        ),
        400,
        "invalid_request",
    )
    assert size(broker, "b", cid) == 0


# --------------------------------------------------------------------------------------------
# GET /consumer/fetch
# --------------------------------------------------------------------------------------------


def test_fetch_does_not_move_the_position(broker):
    pid = register_producer(broker, "t")
    cid = register_consumer(broker, "t")
    ok(
        produce_batch(broker, "t", pid, [f"m{i}" for i in range(10)]),
        "base_offset",
        "count",
        "duplicate",
    )
    before = time.time() * 1000
    body = fetch(broker, "t", cid)
    assert [m["offset"] for m in body["messages"]] == list(range(10))
    assert [m["message"] for m in body["messages"]] == [f"m{i}" for i in range(10)]
    assert body["next_offset"] == 10 and body["end_offset"] == 10
    for m in body["messages"]:
        assert abs(m["timestamp"] - before) < 10 * 60 * 1000, m  # milliseconds since the epoch
    assert fetch(broker, "t", cid) == body
    assert size(broker, "t", cid) == 10
    assert consume(broker, "t", cid) == "m0"
    # From the consumer's position when no offset is given.
    body = fetch(broker, "t", cid, max_messages=2)
    assert [m["offset"] for m in body["messages"]] == [1, 2]
    assert body["next_offset"] == 3 and body["end_offset"] == 10
    assert size(broker, "t", cid) == 9


def test_fetch_with_offset_and_max_messages(broker):
    pid = register_producer(broker, "t")
    cid = register_consumer(broker, "t")
    ok(
        produce_batch(broker, "t", pid, [f"m{i}" for i in range(25)]),
        "base_offset",
        "count",
        "duplicate",
    )
    body = fetch(broker, "t", cid, offset=5, max_messages=3)
    assert [(m["offset"], m["message"]) for m in body["messages"]] == [
        (5, "m5"),
        (6, "m6"),
        (7, "m7"),
    ]
    assert body["next_offset"] == 8 and body["end_offset"] == 25
    body = fetch(broker, "t", cid, offset="20", max_messages="100")
    assert [m["offset"] for m in body["messages"]] == list(range(20, 25))
    assert body["next_offset"] == 25
    # Paging through everything.
    seen, offset = [], 0
    for _ in range(100):
        page = fetch(broker, "t", cid, offset=offset, max_messages=4)
        if not page["messages"]:
            break
        seen += page["messages"]
        offset = page["next_offset"]
    assert [m["offset"] for m in seen] == list(range(25))
    # At the end: empty, not an error.
    body = fetch(broker, "t", cid, offset=25)
    assert body["messages"] == [] and body["next_offset"] == 25 and body["end_offset"] == 25
    # JSON body on GET.
    resp = requests.get(
        broker.url + "/consumer/fetch",
        json={"topic": "t", "consumer_id": cid, "offset": 24, "max_messages": 1},
        timeout=TIMEOUT,
    )
    body = ok(resp, "messages", "next_offset", "end_offset")
    assert [m["message"] for m in body["messages"]] == ["m24"]
    assert size(broker, "t", cid) == 25


def test_fetch_failures(broker):
    pid = register_producer(broker, "t")
    register_producer(broker, "other")
    cid = register_consumer(broker, "t")
    other = register_consumer(broker, "other")
    produce(broker, "t", pid, "m")
    failed(
        broker.get("/consumer/fetch", {"topic": "t", "consumer_id": cid, "offset": 2}),
        400,
        "offset_out_of_range",
    )
    failed(
        broker.get("/consumer/fetch", {"topic": "t", "consumer_id": cid, "max_messages": 0}),
        400,
        "invalid_request",
    )
    failed(
        broker.get("/consumer/fetch", {"topic": "t", "consumer_id": cid, "max_messages": 10001}),
        400,
        "invalid_request",
    )
    failed(
        broker.get("/consumer/fetch", {"topic": "t", "consumer_id": cid, "wait_ms": 30001}),
        400,
        "invalid_request",
    )
    failed(broker.get("/consumer/fetch", {"topic": "t", "consumer_id": other}), 403, "wrong_topic")
    failed(
        broker.get("/consumer/fetch", {"topic": "t", "consumer_id": 999}), 404, "consumer_not_found"
    )
    # A wait on an unknown consumer is refused at once, not after the wait.
    failed(
        broker.get(
            "/consumer/fetch", {"topic": "t", "consumer_id": 999, "wait_ms": 20000}, timeout=10
        ),
        404,
        "consumer_not_found",
    )


def test_fetch_max_messages_limit(broker):
    pid = register_producer(broker, "t")
    cid = register_consumer(broker, "t")
    ok(produce_batch(broker, "t", pid, ["x"] * 10050), "base_offset", "count", "duplicate")
    body = fetch(broker, "t", cid, max_messages=10000)
    assert (
        len(body["messages"]) == 10000
        and body["next_offset"] == 10000
        and body["end_offset"] == 10050
    )
    # The default is a page of at most 1000.
    body = fetch(broker, "t", cid)
    assert 1 <= len(body["messages"]) <= 1000
    assert body["next_offset"] == len(body["messages"])


def test_fetch_long_poll_returns_the_message_produced_meanwhile(broker):
    pid = register_producer(broker, "t")
    cid = register_consumer(broker, "t")
    produce(broker, "t", pid, "old")
    consume(broker, "t", cid)
    result: dict[str, Any] = {}

    def poll():
        try:
            with requests.Session() as session:
                result["resp"] = session.get(
                    broker.url + "/consumer/fetch",
                    params={"topic": "t", "consumer_id": cid, "wait_ms": 25000},
                    timeout=40,
                )
        except Exception as err:  # noqa: BLE001
            result["error"] = err

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    time.sleep(0.5)  # let the poll start waiting
    assert thread.is_alive(), result
    with requests.Session() as session:
        resp = session.post(
            broker.url + "/producer/produce",
            json={"topic": "t", "producer_id": pid, "message": "new"},
            timeout=TIMEOUT,
        )
        ok(resp)
    thread.join(timeout=40)
    assert not thread.is_alive()
    assert "error" not in result, result
    body = ok(result["resp"], "messages", "next_offset", "end_offset")
    assert [(m["offset"], m["message"]) for m in body["messages"]] == [(1, "new")]
    assert body["next_offset"] == 2 and body["end_offset"] == 2
    assert size(broker, "t", cid) == 1  # a fetch never moves the position


def test_fetch_long_poll_with_explicit_offset(broker):
    pid = register_producer(broker, "t")
    cid = register_consumer(broker, "t")
    ok(produce_batch(broker, "t", pid, ["a", "b"]), "base_offset", "count", "duplicate")
    result: dict[str, Any] = {}

    def poll():
        try:
            result["resp"] = requests.get(
                broker.url + "/consumer/fetch",
                params={"topic": "t", "consumer_id": cid, "offset": 2, "wait_ms": 25000},
                timeout=40,
            )
        except Exception as err:  # noqa: BLE001
            result["error"] = err

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    time.sleep(0.5)
    ok(produce_batch(broker, "t", pid, ["c", "d"]), "base_offset", "count", "duplicate")
    thread.join(timeout=40)
    assert not thread.is_alive() and "error" not in result, result
    body = ok(result["resp"], "messages", "next_offset", "end_offset")
    assert [m["message"] for m in body["messages"]] == ["c", "d"]


def test_fetch_long_poll_times_out_empty(broker):
    create_topic(broker, "t")
    cid = register_consumer(broker, "t")
    body = fetch(broker, "t", cid, wait_ms=300)
    assert body["messages"] == [] and body["next_offset"] == 0 and body["end_offset"] == 0


def test_fetch_long_poll_is_not_woken_by_another_topic(broker):
    create_topic(broker, "t")
    cid = register_consumer(broker, "t")
    other = register_producer(broker, "other")
    result: dict[str, Any] = {}

    def poll():
        try:
            result["resp"] = requests.get(
                broker.url + "/consumer/fetch",
                params={"topic": "t", "consumer_id": cid, "wait_ms": 1500},
                timeout=30,
            )
        except Exception as err:  # noqa: BLE001
            result["error"] = err

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    time.sleep(0.3)
    produce(broker, "other", other, "elsewhere")
    thread.join(timeout=30)
    assert not thread.is_alive() and "error" not in result, result
    body = ok(result["resp"], "messages", "next_offset", "end_offset")
    assert body["messages"] == [] and body["end_offset"] == 0


class Poll:
    """A long-polling fetch in a thread of its own."""

    def __init__(self, broker, **params: Any) -> None:
        self.result: dict[str, Any] = {}
        self.thread = threading.Thread(target=self._get, args=(broker, params), daemon=True)
        self.thread.start()
        time.sleep(0.5)  # let the poll start waiting
        assert self.thread.is_alive(), self.result

    def _get(self, broker, params: dict[str, Any]) -> None:
        try:
            self.result["resp"] = requests.get(
                broker.url + "/consumer/fetch", params={"wait_ms": 25000, **params}, timeout=40
            )
        except Exception as err:  # noqa: BLE001
            self.result["error"] = err

    def answer(self) -> dict[str, Any]:
        self.thread.join(timeout=40)
        assert not self.thread.is_alive() and "error" not in self.result, self.result
        return ok(self.result["resp"], "messages", "next_offset", "end_offset")


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def any_store_broker(request, make_broker, tmp_path):
    if request.param == "memory":
        return make_broker("--store", "memory")
    if request.param == "sqlite":
        return make_broker("--data-dir", str(tmp_path / "data"))
    return make_broker("--database-url", request.getfixturevalue("postgres_url"))


def test_a_woken_long_poll_answers_as_a_read_would(any_store_broker):
    """A fetch waiting at the end is answered with the messages that woke it (the broker
    hands them over without reading them back): the same offsets, payloads and timestamps as
    a read of the store, within the fetch's limits, again and again as the consumer follows."""
    broker = any_store_broker
    pid = register_producer(broker, "t")
    cid = register_consumer(broker, "t")
    ok(produce_batch(broker, "t", pid, ["a"], sequence=0), "base_offset", "count", "duplicate")
    waiting = Poll(broker, topic="t", consumer_id=cid, offset=1, max_messages=2)
    ok(
        produce_batch(broker, "t", pid, ["b", "c", "d"], sequence=1),
        "base_offset",
        "count",
        "duplicate",
    )
    woken = waiting.answer()
    assert [(m["offset"], m["message"]) for m in woken["messages"]] == [(1, "b"), (2, "c")]
    assert (woken["next_offset"], woken["end_offset"]) == (3, 4)
    read = fetch(broker, "t", cid, offset=1, max_messages=2)
    assert woken == read
    # Coming back for the rest of that append, or for part of it again, with a wait: answered
    # at once (from the append's messages, which the broker still holds), as a read would be.
    rest = fetch(broker, "t", cid, offset=3, wait_ms=20000)
    assert [(m["offset"], m["message"]) for m in rest["messages"]] == [(3, "d")]
    assert rest == fetch(broker, "t", cid, offset=3)
    assert fetch(broker, "t", cid, offset=2, max_messages=1, wait_ms=20000) == fetch(
        broker, "t", cid, offset=2, max_messages=1
    )
    # Following the topic: each poll waits at the end and gets the next append, in order.
    offset = 4
    for n in range(3):
        waiting = Poll(broker, topic="t", consumer_id=cid, offset=offset)
        batch = [f"m{n}-{i}" for i in range(n + 1)]
        ok(
            produce_batch(broker, "t", pid, batch, sequence=offset),
            "base_offset",
            "count",
            "duplicate",
        )
        woken = waiting.answer()
        assert [(m["offset"], m["message"]) for m in woken["messages"]] == list(
            zip(range(offset, offset + n + 1), batch)
        )
        assert woken == fetch(broker, "t", cid, offset=offset)
        offset += n + 1
        assert woken["next_offset"] == woken["end_offset"] == offset
    # Nothing appended: the wait ends empty, at the end.
    body = fetch(broker, "t", cid, offset=offset, wait_ms=300)
    assert body["messages"] == [] and body["next_offset"] == body["end_offset"] == offset
    assert size(broker, "t", cid) == offset  # fetches never move the position


def test_a_long_poll_at_the_end_still_checks_the_consumer(any_store_broker):
    """The broker knows where a topic it appended to ends, and a fetch from there waits
    without reading first; the consumer id is still checked, at once: an id of another topic
    or an unknown one never waits for (or gets) this topic's messages."""
    broker = any_store_broker
    pid = register_producer(broker, "t")
    cid = register_consumer(broker, "t")
    create_topic(broker, "other")
    stranger = register_consumer(broker, "other")
    waiting = Poll(broker, topic="t", consumer_id=cid, offset=0)
    ok(produce_batch(broker, "t", pid, ["secret"], sequence=0), "base_offset", "count", "duplicate")
    assert [m["message"] for m in waiting.answer()["messages"]] == ["secret"]
    wait = {"offset": 1, "wait_ms": 20000}
    failed(
        broker.get("/consumer/fetch", {"topic": "t", "consumer_id": stranger, **wait}, timeout=10),
        403,
        "wrong_topic",
    )
    # From within the last append (which the broker holds): checked as well.
    within = {"offset": 0, "wait_ms": 20000}
    failed(
        broker.get(
            "/consumer/fetch", {"topic": "t", "consumer_id": stranger, **within}, timeout=10
        ),
        403,
        "wrong_topic",
    )
    failed(
        broker.get("/consumer/fetch", {"topic": "t", "consumer_id": 999, **wait}, timeout=10),
        404,
        "consumer_not_found",
    )
    failed(
        broker.get("/consumer/fetch", {"topic": "t", "consumer_id": cid, "offset": 2}),
        400,
        "offset_out_of_range",
    )


# --------------------------------------------------------------------------------------------
# POST /consumer/commit
# --------------------------------------------------------------------------------------------


def test_commit_offsets_beginning_and_end(broker):
    pid = register_producer(broker, "t")
    cid = register_consumer(broker, "t")
    ok(
        produce_batch(broker, "t", pid, [f"m{i}" for i in range(10)]),
        "base_offset",
        "count",
        "duplicate",
    )

    def commit(offset):
        return ok(
            broker.post("/consumer/commit", {"topic": "t", "consumer_id": cid, "offset": offset}),
            "position",
        )

    assert commit(4) == {"status": "success", "position": 4}
    assert size(broker, "t", cid) == 6
    assert consume(broker, "t", cid) == "m4"
    assert commit("end") == {"status": "success", "position": 10}
    assert size(broker, "t", cid) == 0
    failed(broker.get("/consumer/consume", {"topic": "t", "consumer_id": cid}), 404, "queue_empty")
    assert commit("beginning") == {"status": "success", "position": 0}
    assert consume(broker, "t", cid) == "m0"
    assert commit("7") == {"status": "success", "position": 7}
    assert consume(broker, "t", cid) == "m7"
    assert commit(10)["position"] == 10  # exactly the end is allowed
    assert commit(0)["position"] == 0
    assert fetch(broker, "t", cid, max_messages=1)["messages"][0]["message"] == "m0"
    # Commit by a JSON body with the id as a string.
    assert (
        ok(
            broker.post(
                "/consumer/commit", {"topic": "t", "consumer_id": str(cid), "offset": "end"}
            ),
            "position",
        )["position"]
        == 10
    )


def test_commit_failures(broker):
    pid = register_producer(broker, "t")
    register_producer(broker, "other")
    cid = register_consumer(broker, "t")
    other = register_consumer(broker, "other")
    ok(produce_batch(broker, "t", pid, ["a", "b", "c"]), "base_offset", "count", "duplicate")
    consume(broker, "t", cid)
    failed(
        broker.post("/consumer/commit", {"topic": "t", "consumer_id": cid, "offset": 4}),
        400,
        "offset_out_of_range",
    )
    failed(
        broker.post("/consumer/commit", {"topic": "t", "consumer_id": cid, "offset": 10**15}),
        400,
        "offset_out_of_range",
    )
    failed(
        broker.post("/consumer/commit", {"topic": "t", "consumer_id": cid, "offset": "middle"}),
        400,
        "invalid_request",
    )
    failed(
        broker.post("/consumer/commit", {"topic": "t", "consumer_id": cid, "offset": -1}),
        400,
        "invalid_request",
    )
    failed(
        broker.post("/consumer/commit", {"topic": "t", "consumer_id": cid}), 400, "invalid_request"
    )
    failed(
        broker.post("/consumer/commit", {"topic": "t", "consumer_id": other, "offset": 0}),
        403,
        "wrong_topic",
    )
    failed(
        broker.post("/consumer/commit", {"topic": "t", "consumer_id": 999, "offset": 0}),
        404,
        "consumer_not_found",
    )
    # None of the refused commits moved the position.
    assert size(broker, "t", cid) == 2
    assert consume(broker, "t", cid) == "b"


# --------------------------------------------------------------------------------------------
# GET /healthz
# --------------------------------------------------------------------------------------------


def test_healthz(broker):
    resp = broker.get("/healthz")
    assert resp.status_code == 200
    assert is_json(resp)
    body = resp.json()
    assert body["status"] == "success"


# --------------------------------------------------------------------------------------------
# Unicode and odd payloads come back byte-exact
# --------------------------------------------------------------------------------------------

ODD_MESSAGES = [
    "",
    " ",
    "plain ascii",
    "emoji 😀🎉👩‍👩‍👧‍👦 and flags 🇮🇳",
    "line one\nline two\r\nline three\rend",
    "tabs\tand\vform\ffeeds",
    "quotes \" and ' and `backticks` and \\ backslashes \\\\",
    "NUL \u0000 in the middle",
    "\u0000",
    "\u0000\u0000leading and trailing\u0000",
    "control \u0001\u001f\u007f chars",
    'json-looking {"status": "failure"}',
    "%20%00&topic=x&consumer_id=1",
    "<html><body>not html</body></html>",
    "CJK 日本語 中文 한국어",
    "RTL עברית العربية",
    "combining e\u0301 vs \u00e9",
    "BOM \ufeff and ZWJ \u200d and replacement \ufffd",
    "astral 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \U0010fffd",
    "trailing whitespace   \n\n",
    "x" * 70000,
]


@pytest.mark.parametrize("via", ["produce", "produce_batch"])
def test_unicode_messages_come_back_byte_exact(broker, via):
    pid = register_producer(broker, "t")
    cid = register_consumer(broker, "t")
    if via == "produce":
        for m in ODD_MESSAGES:
            produce(broker, "t", pid, m)
    else:
        ok(produce_batch(broker, "t", pid, ODD_MESSAGES), "base_offset", "count", "duplicate")
    assert size(broker, "t", cid) == len(ODD_MESSAGES)
    # Via fetch (JSON-decoded, then compared as UTF-8 bytes).
    page = fetch(broker, "t", cid)
    assert [m["message"].encode("utf-8") for m in page["messages"]] == [
        m.encode("utf-8") for m in ODD_MESSAGES
    ]
    # Via consume, with query string and with a JSON body.
    for i, expected in enumerate(ODD_MESSAGES):
        if i % 2:
            resp = requests.get(
                broker.url + "/consumer/consume",
                json={"topic": "t", "consumer_id": cid},
                timeout=TIMEOUT,
            )
        else:
            resp = broker.get("/consumer/consume", {"topic": "t", "consumer_id": cid})
        body = ok(resp, "message")
        assert body["message"].encode("utf-8") == expected.encode("utf-8"), (
            i,
            body["message"][:80],
        )
    failed(broker.get("/consumer/consume", {"topic": "t", "consumer_id": cid}), 404, "queue_empty")


def test_raw_utf8_and_escaped_json_are_the_same_message(broker):
    pid = register_producer(broker, "t")
    cid = register_consumer(broker, "t")
    text = 'é😀\u0000\n"'
    raw_body = json.dumps(
        {"topic": "t", "producer_id": pid, "message": text}, ensure_ascii=False
    ).encode("utf-8")
    escaped_body = json.dumps(
        {"topic": "t", "producer_id": pid, "message": text}, ensure_ascii=True
    ).encode("ascii")
    for data in (raw_body, escaped_body):
        ok(
            raw(
                broker,
                "POST",
                "/producer/produce",
                data=data,
                headers={"content-type": "application/json; charset=utf-8"},
            )
        )
    assert consume(broker, "t", cid) == text
    assert consume(broker, "t", cid) == text
