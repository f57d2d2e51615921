"""Black-box tests of topic administration and retention over HTTP: ``POST /topics`` with
retention settings, ``GET``, ``PATCH`` and ``DELETE /topics/{name}``, the broker's
``--retention`` and ``--retention-bytes``, and what consumers see once retention removed
messages (the start offset, ``skipped``). Every refusal is checked for its status and code, and
for changing nothing; like test_broker_api.py, every test runs under ``--failure-status
precise`` and ``400``."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import helpers
import pytest
from conftest import broker_binary
from helpers import failed, ok, wait_for

DAY_MS = 24 * 3600 * 1000
TOPIC_FIELDS = (
    "name",
    "start_offset",
    "end_offset",
    "messages",
    "bytes",
    "retention_ms",
    "retention_bytes",
    "retention",
    "created_ms",
    "consumers",
)


@pytest.fixture(autouse=True, params=["precise", "400"])
def failure_status(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Overrides conftest's: every broker of the test inherits MYQUEUE_FAILURE_STATUS."""
    monkeypatch.setenv("MYQUEUE_FAILURE_STATUS", request.param)
    monkeypatch.setattr(helpers, "failure_status", request.param)
    return request.param


# What retention counts per message beyond its payload.
OVERHEAD = 64


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def describe(broker, name: str) -> dict[str, Any]:
    body = ok(broker.get(f"/topics/{name}"), *TOPIC_FIELDS)
    for field in ("start_offset", "end_offset", "messages", "bytes", "created_ms"):
        assert is_int(body[field]), body
    assert body["messages"] == body["end_offset"] - body["start_offset"], body
    assert set(body["retention"]) == {"ms", "bytes"}, body
    for consumer in body["consumers"]:
        assert set(consumer) == {"consumer_id", "group", "position", "lag"}, consumer
    return body


def patch(broker, name: str, body: Any) -> Any:
    import requests

    return requests.patch(f"{broker.url}/topics/{name}", json=body, timeout=30)


def delete(broker, name: str) -> Any:
    import requests

    return requests.delete(f"{broker.url}/topics/{name}", timeout=30)


def register_producer(broker, topic: str) -> int:
    return ok(broker.post("/producer/register", {"topic": topic}), "producer_id")["producer_id"]


def register_consumer(broker, topic: str, group: str | None = None) -> int:
    body: dict[str, Any] = {"topic": topic}
    if group is not None:
        body["group"] = group
    return ok(broker.post("/consumer/register", body), "consumer_id")["consumer_id"]


def produce_batch(broker, topic: str, producer_id: int, messages: list[str]) -> dict[str, Any]:
    return ok(
        broker.post(
            "/producer/produce_batch",
            {"topic": topic, "producer_id": producer_id, "messages": messages},
        ),
        "base_offset",
        "count",
        "duplicate",
    )


# --------------------------------------------------------------------------------------------
# POST /topics with retention, GET /topics/{name}
# --------------------------------------------------------------------------------------------


def test_a_new_topic_has_the_broker_defaults_and_nothing_in_it(broker):
    ok(broker.post("/topics", {"name": "logs"}), "message")
    before = int(time.time() * 1000)
    body = describe(broker, "logs")
    assert body["name"] == "logs"
    assert (body["start_offset"], body["end_offset"], body["messages"], body["bytes"]) == (
        0,
        0,
        0,
        0,
    )
    assert (body["retention_ms"], body["retention_bytes"]) == (None, None)
    assert body["retention"] == {"ms": 7 * DAY_MS, "bytes": None}
    assert abs(body["created_ms"] - before) < 60_000
    assert body["consumers"] == []


@pytest.mark.parametrize("key", ["name", "topic_name"])
def test_create_with_retention_settings_of_its_own(broker, key):
    body = ok(
        broker.post("/topics", {key: "t", "retention_ms": 3_600_000, "retention_bytes": "5000000"}),
        "message",
    )
    assert body["message"] == "Topic 't' created successfully"
    got = describe(broker, "t")
    assert (got["retention_ms"], got["retention_bytes"]) == (3_600_000, 5_000_000)
    assert got["retention"] == {"ms": 3_600_000, "bytes": 5_000_000}


def test_null_retention_is_the_broker_default(make_broker, tmp_path):
    broker = make_broker(
        "--data-dir", str(tmp_path / "data"), "--retention", "30m", "--retention-bytes", "20MB"
    )
    ok(
        broker.post("/topics", {"name": "t", "retention_ms": None, "retention_bytes": None}),
        "message",
    )
    got = describe(broker, "t")
    assert (got["retention_ms"], got["retention_bytes"]) == (None, None)
    assert got["retention"] == {"ms": 30 * 60 * 1000, "bytes": 20_000_000}


def test_describe_counts_messages_bytes_and_every_consumer_with_its_lag(broker):
    producer = register_producer(broker, "t")
    produce_batch(broker, "t", producer, ["a", "bb", "ccc", "dddd"])
    anonymous = register_consumer(broker, "t")
    grouped = register_consumer(broker, "t", "indexer")
    ok(
        broker.post("/consumer/commit", {"topic": "t", "consumer_id": grouped, "offset": 3}),
        "position",
    )
    ok(broker.get("/consumer/consume", {"topic": "t", "consumer_id": anonymous}), "message")
    got = describe(broker, "t")
    assert (got["start_offset"], got["end_offset"], got["messages"]) == (0, 4, 4)
    assert got["bytes"] == 1 + 2 + 3 + 4 + 4 * OVERHEAD
    assert got["consumers"] == [
        {"consumer_id": anonymous, "group": None, "position": 1, "lag": 3},
        {"consumer_id": grouped, "group": "indexer", "position": 3, "lag": 1},
    ]


@pytest.mark.parametrize("field", ["retention_ms", "retention_bytes"])
@pytest.mark.parametrize(
    "value",
    [-1, 0, "abc", 1.5, True, [], {}, "", "7d", 2**63, -(2**63)],
    ids=[
        "negative",
        "zero",
        "word",
        "fraction",
        "bool",
        "list",
        "object",
        "empty",
        "unit",
        "too-large",
        "very-negative",
    ],
)
def test_bad_retention_on_create_is_400_invalid_retention_and_creates_nothing(broker, field, value):
    body = failed(broker.post("/topics", {"name": "t", field: value}), 400, "invalid_retention")
    assert field in body["message"]
    assert ok(broker.get("/topics"), "topics")["topics"] == []


def test_create_with_a_bad_name_and_retention_is_refused_for_the_name(broker):
    failed(
        broker.post("/topics", {"name": "bad name", "retention_ms": 5}), 400, "invalid_topic_name"
    )
    assert ok(broker.get("/topics"), "topics")["topics"] == []


def test_describe_an_unknown_topic_is_404_topic_not_found(broker):
    failed(broker.get("/topics/nope"), 404, "topic_not_found")


@pytest.mark.parametrize(
    "name",
    ["a%20b", "%C3%A9", "a" * 250, "semi;colon"],
    ids=["space", "non-ascii", "250-chars", "semicolon"],
)
@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
def test_names_outside_the_rules_are_400_invalid_topic_name(broker, name, method):
    import requests

    resp = requests.request(
        method, f"{broker.url}/topics/{name}", json={"retention_ms": 5}, timeout=30
    )
    failed(resp, 400, "invalid_topic_name")


@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_other_methods_on_a_topic_are_405(broker, method):
    import requests

    ok(broker.post("/topics", {"name": "t"}), "message")
    failed(
        requests.request(method, f"{broker.url}/topics/t", json={}, timeout=30),
        405,
        "method_not_allowed",
    )


def test_a_path_below_a_topic_is_404_not_found(broker):
    failed(broker.get("/topics/t/more"), 404, "not_found")


# --------------------------------------------------------------------------------------------
# PATCH /topics/{name}
# --------------------------------------------------------------------------------------------


def test_patch_changes_what_it_names_and_null_returns_to_the_default(broker):
    ok(broker.post("/topics", {"name": "t", "retention_bytes": 9000}), "message")
    body = ok(patch(broker, "t", {"retention_ms": 60_000}), *TOPIC_FIELDS)
    assert (body["retention_ms"], body["retention_bytes"]) == (60_000, 9000)
    assert body["retention"] == {"ms": 60_000, "bytes": 9000}
    body = ok(patch(broker, "t", {"retention_bytes": None}), *TOPIC_FIELDS)
    assert (body["retention_ms"], body["retention_bytes"]) == (60_000, None)
    body = ok(
        patch(broker, "t", {"retention_ms": None, "retention_bytes": "1000000"}), *TOPIC_FIELDS
    )
    assert body["retention"] == {"ms": 7 * DAY_MS, "bytes": 1_000_000}
    assert describe(broker, "t") == body


@pytest.mark.parametrize("body", [{}, {"other": 5}], ids=["empty", "unknown-field"])
def test_patch_without_a_setting_is_400_invalid_request(broker, body):
    ok(broker.post("/topics", {"name": "t"}), "message")
    failed(patch(broker, "t", body), 400, "invalid_request")


@pytest.mark.parametrize(
    "value",
    [-5, 0, "abc", 2.5, False, [1]],
    ids=["negative", "zero", "word", "fraction", "bool", "list"],
)
def test_a_bad_patch_is_400_invalid_retention_and_changes_nothing(broker, value):
    ok(broker.post("/topics", {"name": "t", "retention_ms": 1000}), "message")
    before = describe(broker, "t")
    # One good value and one bad: nothing at all changes.
    failed(
        patch(broker, "t", {"retention_ms": 5000, "retention_bytes": value}),
        400,
        "invalid_retention",
    )
    failed(patch(broker, "t", {"retention_ms": value}), 400, "invalid_retention")
    assert describe(broker, "t") == before


def test_patch_of_an_unknown_topic_is_404_and_creates_nothing(broker):
    failed(patch(broker, "nope", {"retention_ms": 5}), 404, "topic_not_found")
    assert ok(broker.get("/topics"), "topics")["topics"] == []


# --------------------------------------------------------------------------------------------
# DELETE /topics/{name}
# --------------------------------------------------------------------------------------------


def test_delete_ends_the_topic_and_its_ids_and_a_new_one_starts_at_0(
    make_broker, durable_broker_args
):
    broker = make_broker(*durable_broker_args)
    producer = register_producer(broker, "t")
    produce_batch(broker, "t", producer, ["old-1", "old-2"])
    consumer = register_consumer(broker, "t", "g")
    ok(broker.get("/consumer/consume", {"topic": "t", "consumer_id": consumer}), "message")
    register_producer(broker, "other")

    body = ok(delete(broker, "t"), "message")
    assert body["message"] == "Topic 't' deleted"
    assert ok(broker.get("/topics"), "topics")["topics"] == ["other"]
    failed(delete(broker, "t"), 404, "topic_not_found")
    failed(broker.get("/topics/t"), 404, "topic_not_found")
    failed(
        broker.post("/producer/produce", {"topic": "t", "producer_id": producer, "message": "x"}),
        404,
        "producer_not_found",
    )
    for path, params in [
        ("/consumer/consume", {}),
        ("/size", {}),
        ("/consumer/fetch", {"offset": 0}),
    ]:
        failed(
            broker.get(path, {"topic": "t", "consumer_id": consumer, **params}),
            404,
            "consumer_not_found",
        )
    failed(
        broker.post("/consumer/commit", {"topic": "t", "consumer_id": consumer, "offset": 0}),
        404,
        "consumer_not_found",
    )
    failed(broker.post("/consumer/register", {"topic": "t"}), 404, "topic_not_found")

    # Created again under its name: empty, from offset 0, and the old ids do not work with it.
    ok(broker.post("/topics", {"name": "t"}), "message")
    failed(
        broker.post(
            "/producer/produce_batch",
            {"topic": "t", "producer_id": producer, "messages": ["x"], "sequence": 2},
        ),
        404,
        "producer_not_found",
    )
    failed(
        broker.get("/consumer/consume", {"topic": "t", "consumer_id": consumer}),
        404,
        "consumer_not_found",
    )
    new_producer = register_producer(broker, "t")
    assert new_producer != producer
    assert produce_batch(broker, "t", new_producer, ["new"])["base_offset"] == 0
    new_consumer = register_consumer(broker, "t", "g")
    assert new_consumer != consumer
    assert (
        ok(broker.get("/consumer/consume", {"topic": "t", "consumer_id": new_consumer}), "message")[
            "message"
        ]
        == "new"
    )
    got = describe(broker, "t")
    assert (got["start_offset"], got["end_offset"]) == (0, 1)
    assert [c["consumer_id"] for c in got["consumers"]] == [new_consumer]
    # The other topic is untouched.
    assert describe(broker, "other")["end_offset"] == 0


def test_a_long_poll_on_a_deleted_topic_ends_with_consumer_not_found(broker):
    import threading

    register_producer(broker, "t")
    consumer = register_consumer(broker, "t")
    result: dict[str, Any] = {}

    def poll() -> None:
        result["resp"] = broker.get(
            "/consumer/fetch", {"topic": "t", "consumer_id": consumer, "wait_ms": 20000}
        )

    thread = threading.Thread(target=poll)
    started = time.monotonic()
    thread.start()
    time.sleep(0.5)
    ok(delete(broker, "t"), "message")
    thread.join(timeout=15)
    assert not thread.is_alive()
    assert time.monotonic() - started < 10, "woken by the delete, not by its timeout"
    failed(result["resp"], 404, "consumer_not_found")


# --------------------------------------------------------------------------------------------
# --retention, --retention-bytes
# --------------------------------------------------------------------------------------------


def test_the_broker_takes_its_defaults_from_flags_or_the_environment(make_broker, tmp_path):
    broker = make_broker(
        "--data-dir", str(tmp_path / "a"), "--retention", "12h", "--retention-bytes", "2GiB"
    )
    ok(broker.post("/topics", {"name": "t"}), "message")
    assert describe(broker, "t")["retention"] == {"ms": 12 * 3600 * 1000, "bytes": 2 * 1024**3}
    broker = make_broker(
        "--data-dir",
        str(tmp_path / "b"),
        env={"MYQUEUE_RETENTION": "unlimited", "MYQUEUE_RETENTION_BYTES": "500MB"},
    )
    ok(broker.post("/topics", {"name": "t"}), "message")
    assert describe(broker, "t")["retention"] == {"ms": None, "bytes": 500_000_000}


@pytest.mark.parametrize(
    "arg",
    [
        "--retention=0",
        "--retention=0s",
        "--retention=-5m",
        "--retention=soon",
        "--retention=7",
        "--retention-bytes=0",
        "--retention-bytes=-5",
        "--retention-bytes=lots",
        "--retention-bytes=5 parsecs",
    ],
)
def test_bad_retention_flags_stop_the_broker_before_it_listens(tmp_path, arg):
    flag, value = arg.split("=", 1)
    proc = subprocess.run(
        [
            str(broker_binary()),
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            str(tmp_path / "data"),
            arg,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2, proc
    assert "listening" not in proc.stdout
    assert flag in proc.stderr and value in proc.stderr, proc.stderr
    assert not (tmp_path / "data").exists(), "nothing was created"


@pytest.mark.parametrize("variable", ["MYQUEUE_RETENTION", "MYQUEUE_RETENTION_BYTES"])
def test_a_bad_retention_in_the_environment_stops_the_broker(tmp_path, variable):
    import os

    proc = subprocess.run(
        [str(broker_binary()), "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, variable: "0"},
    )
    assert proc.returncode == 2, proc
    assert "zero" in proc.stderr, proc.stderr


# --------------------------------------------------------------------------------------------
# Retention at work, as a consumer sees it
# --------------------------------------------------------------------------------------------


def test_by_size_the_oldest_messages_go_and_readers_continue_from_the_start(
    make_broker, durable_broker_args
):
    # 2,000 bytes kept: about twenty 100-byte messages.
    broker = make_broker(*durable_broker_args, "--retention-bytes", "2000")
    producer = register_producer(broker, "t")
    behind = register_consumer(broker, "t", "behind")
    sent = 0
    for _ in range(10):
        produce_batch(broker, "t", producer, [f"{i:036d}" for i in range(sent, sent + 10)])
        sent += 10
        time.sleep(0.3)  # a retention pass (every 250 ms) closes each batch into a chunk
    wait_for(lambda: describe(broker, "t")["start_offset"] > 0, 10, "retention to remove some")
    time.sleep(0.6)  # the passes after the last batch
    got = describe(broker, "t")
    start = got["start_offset"]
    assert got["end_offset"] == 100
    # At least the limit is kept, and at most a chunk more (a batch, or two if one pass was late).
    assert 2000 <= got["bytes"] <= 4000, got
    assert got["bytes"] == (100 - start) * 100
    # A fetch from 0 says how many were removed and reads from the start.
    page = ok(
        broker.get(
            "/consumer/fetch", {"topic": "t", "consumer_id": behind, "offset": 0, "max_messages": 5}
        ),
        "messages",
        "next_offset",
        "end_offset",
        "skipped",
    )
    assert page["skipped"] == start
    assert [m["offset"] for m in page["messages"]] == list(range(start, start + 5))
    assert page["messages"][0]["message"] == f"{start:036d}"
    # From inside the log: nothing skipped, no `skipped` field.
    inside = ok(
        broker.get("/consumer/fetch", {"topic": "t", "consumer_id": behind, "offset": 99}),
        "messages",
        "next_offset",
        "end_offset",
    )
    assert [m["offset"] for m in inside["messages"]] == [99]
    # The consumer at 0: size counts from the start, consume takes the message at the start.
    assert (
        ok(broker.get("/size", {"topic": "t", "consumer_id": behind}), "size")["size"]
        == 100 - start
    )
    taken = ok(broker.get("/consumer/consume", {"topic": "t", "consumer_id": behind}), "message")[
        "message"
    ]
    assert taken == f"{start:036d}"
    # Commits before the start land on it.
    assert (
        ok(
            broker.post("/consumer/commit", {"topic": "t", "consumer_id": behind, "offset": 0}),
            "position",
        )["position"]
        >= start
    )
    assert (
        ok(
            broker.post(
                "/consumer/commit", {"topic": "t", "consumer_id": behind, "offset": "beginning"}
            ),
            "position",
        )["position"]
        >= start
    )


def test_by_age_an_idle_topic_empties_and_its_offsets_go_on(make_broker, tmp_path):
    broker = make_broker("--data-dir", str(tmp_path / "data"), "--retention", "1s")
    producer = register_producer(broker, "t")
    produce_batch(broker, "t", producer, ["a", "b", "c"])
    got = wait_for(
        lambda: (d := describe(broker, "t"))["start_offset"] == 3 and d,
        15,
        "the messages to expire",
    )
    assert (got["messages"], got["bytes"]) == (0, 0)
    consumer = register_consumer(broker, "t")
    failed(
        broker.get("/consumer/consume", {"topic": "t", "consumer_id": consumer}), 404, "queue_empty"
    )
    assert produce_batch(broker, "t", producer, ["d"])["base_offset"] == 3
    assert (
        ok(broker.get("/consumer/consume", {"topic": "t", "consumer_id": consumer}), "message")[
            "message"
        ]
        == "d"
    )


def test_a_lower_retention_set_by_patch_applies_once_newer_chunks_hold_it(broker):
    producer = register_producer(broker, "t")
    for i in range(5):
        produce_batch(broker, "t", producer, [f"{j:036d}" for j in range(i * 10, i * 10 + 10)])
        time.sleep(0.3)
    assert describe(broker, "t")["start_offset"] == 0
    # Without a size limit the 50 messages made one chunk: it goes whole, once newer chunks
    # (an eighth of the new limit each) hold the limit.
    ok(patch(broker, "t", {"retention_bytes": 1000}), *TOPIC_FIELDS)
    for i in range(5, 8):
        produce_batch(broker, "t", producer, [f"{j:036d}" for j in range(i * 10, i * 10 + 10)])
        time.sleep(0.3)
    got = wait_for(
        lambda: (d := describe(broker, "t"))["start_offset"] >= 50 and d, 10, "the lower limit"
    )
    assert 1000 <= got["bytes"] <= 3000, got
