"""GET /metrics against the real broker: what the series say, the cardinality caps, the store
going down, and two real tools: ``promtool check metrics`` under load, and a Prometheus
server scraping the broker that reports a lagging consumer group's lag through its query API.

Prometheus' binaries come from Debian's ``prometheus`` package (``.ci/run`` installs it).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
from helpers import samples, scrape, value, wait_for

IN_CI = os.environ.get("CI") == "true"


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if IN_CI:
            pytest.fail(f"{tool} is missing (.ci/run installs Debian's prometheus package)")
        pytest.skip(f"{tool} is missing: apt-get install prometheus")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def produce(broker, topic: str, messages: list[str]) -> None:
    producer = broker.post("/producer/register", {"topic": topic}).json()["producer_id"]
    response = broker.post(
        "/producer/produce_batch",
        {"topic": topic, "producer_id": producer, "messages": messages},
    )
    assert response.status_code == 200, response.text


def register(broker, topic: str, group: str | None = None, start: str = "beginning") -> int:
    broker.post("/topics", {"name": topic})  # 409 topic_exists if it does: fine
    body: dict[str, str] = {"topic": topic, "start": start}
    if group is not None:
        body["group"] = group
    response = broker.post("/consumer/register", body)
    assert response.status_code == 200, response.text
    return response.json()["consumer_id"]


def test_requests_appends_offsets_and_lag_are_exported(make_broker) -> None:
    broker = make_broker("--store", "memory")
    assert broker.post("/topics", {"name": "orders"}).status_code == 200
    behind = register(broker, "orders", "billing")
    register(broker, "orders")  # two anonymous consumers, counted together
    register(broker, "orders")
    produce(broker, "orders", ["a", "bb", "ccc"])
    produce(broker, "orders", ["dddd"])
    consumed = broker.get("/consumer/consume", {"topic": "orders", "consumer_id": behind})
    assert consumed.json()["message"] == "a"
    assert broker.get("/topics/nope").status_code == 404

    text = scrape(broker)
    assert value(text, "myqueue_topic_start_offset", topic="orders") == 0
    assert value(text, "myqueue_topic_end_offset", topic="orders") == 4
    assert value(text, "myqueue_topic_messages", topic="orders") == 4
    assert value(text, "myqueue_consumer_lag", topic="orders", group="billing") == 3
    assert value(text, "myqueue_anonymous_consumers", topic="orders") == 2
    assert value(text, "myqueue_anonymous_consumer_lag", topic="orders") == 8
    assert value(text, "myqueue_appended_messages_total", topic="orders") == 4
    assert value(text, "myqueue_appended_bytes_total", topic="orders") == 10
    assert value(text, "myqueue_store_up", store="memory") == 1
    assert value(text, "myqueue_topics") == 1
    assert (
        value(
            text,
            "myqueue_http_requests_total",
            endpoint="/producer/produce_batch",
            method="POST",
            status="200",
        )
        == 2
    )
    # A topic's name is not a label of the request series: the route's template is.
    assert (
        value(
            text,
            "myqueue_http_requests_total",
            endpoint="/topics/{name}",
            method="GET",
            status="404",
        )
        == 1
    )
    count = value(text, "myqueue_http_request_duration_seconds_count", endpoint="/consumer/consume")
    assert count == 1


def test_group_commits_and_pools_are_exported_by_a_durable_store(make_broker, tmp_path) -> None:
    broker = make_broker("--data-dir", str(tmp_path / "data"))
    produce(broker, "t", ["x"] * 5)
    text = scrape(broker)
    assert value(text, "myqueue_group_commit_requests_count", batch="appends", store="sqlite")
    assert value(text, "myqueue_group_commit_duration_seconds_bucket", batch="appends", le="+Inf")
    assert value(text, "myqueue_db_pool_connections", pool="writer", state="in_use") is not None
    assert value(text, "myqueue_db_pool_connections", pool="readers", state="idle") is not None


def test_retention_passes_and_what_they_removed_are_exported(make_broker, tmp_path) -> None:
    broker = make_broker("--data-dir", str(tmp_path / "data"), "--retention-bytes", "2000")

    def passes() -> float:
        return value(scrape(broker), "myqueue_retention_pass_duration_seconds_count") or 0

    # 40 messages of 100 bytes count 164 bytes each (the payload and 64 of overhead): 6,560
    # bytes, which a pass closes into one chunk. Once 40 more follow, what remains after that
    # chunk still holds the 2,000 bytes kept, so it goes whole; the newest chunk stays.
    produce(broker, "t", ["m" * 100] * 40)
    # Two passes ended since: the second began after the batch was stored.
    seen = passes()
    wait_for(lambda: passes() >= seen + 2, 10, "two retention passes")
    produce(broker, "t", ["m" * 100] * 40)
    wait_for(
        lambda: value(scrape(broker), "myqueue_retention_removed_messages_total"),
        10,
        "retention to remove the first chunk",
    )
    text = scrape(broker)
    assert value(text, "myqueue_retention_removed_messages_total", store="sqlite") == 40
    count = value(text, "myqueue_retention_pass_duration_seconds_count", store="sqlite")
    assert count is not None and count >= 2
    assert value(text, "myqueue_retention_pass_duration_seconds_bucket", le="+Inf") == count


def test_long_polls_waiting_are_counted(make_broker) -> None:
    broker = make_broker("--store", "memory")
    consumer = register(broker, "quiet")
    waiting = threading.Thread(
        target=broker.get,
        args=("/consumer/fetch", {"topic": "quiet", "consumer_id": consumer, "wait_ms": 3000}),
    )
    waiting.start()
    try:
        deadline = time.monotonic() + 5
        while value(scrape(broker), "myqueue_long_polls_waiting") != 1:
            assert time.monotonic() < deadline, "the long poll was never counted"
            time.sleep(0.05)
    finally:
        waiting.join(timeout=10)
    assert value(scrape(broker), "myqueue_long_polls_waiting") == 0


def test_label_cardinality_is_capped(make_broker) -> None:
    broker = make_broker(
        "--store", "memory", "--metrics-max-topics", "2", "--metrics-max-groups", "1"
    )
    for topic in ["a", "b", "c"]:
        produce(broker, topic, ["m"] * 3)
    register(broker, "a", "slow")
    fast = register(broker, "a", "fast")
    broker.post("/consumer/commit", {"topic": "a", "consumer_id": fast, "offset": "end"})

    text = scrape(broker)
    topics_labelled = {ls["topic"] for n, ls, _ in samples(text) if n == "myqueue_topic_end_offset"}
    assert topics_labelled == {"a", "b"}
    assert value(text, "myqueue_topics") == 3
    assert value(text, "myqueue_metrics_omitted_series", what="topics") == 1
    assert value(text, "myqueue_metrics_omitted_series", what="groups") == 1
    # The group furthest behind keeps its series.
    assert value(text, "myqueue_consumer_lag", topic="a", group="slow") == 3
    assert value(text, "myqueue_consumer_lag", topic="a", group="fast") is None
    assert value(text, "myqueue_appended_messages_total", topic="(other)") == 3
    assert value(text, "myqueue_appended_messages_total", topic="c") is None


def test_metrics_and_ui_answer_while_the_database_is_down(make_broker, own_postgres) -> None:
    broker = make_broker("--database-url", own_postgres.url)
    produce(broker, "t", ["x"])
    assert value(scrape(broker), "myqueue_store_up", store="postgres") == 1
    own_postgres.stop()
    try:
        began = time.monotonic()
        text = scrape(broker)
        assert time.monotonic() - began < 10
        assert value(text, "myqueue_store_up", store="postgres") == 0
        # The events counted before are still there.
        assert value(text, "myqueue_appended_messages_total", topic="t") == 1
        page = broker.get("/ui")
        assert page.status_code == 200
        assert "text/html" in page.headers["content-type"]
        assert broker.get("/healthz").json()["code"] == "storage_unavailable"
    finally:
        own_postgres.start()
    deadline = time.monotonic() + 30
    while value(scrape(broker), "myqueue_store_up", store="postgres") != 1:
        assert time.monotonic() < deadline, "the store never came back in /metrics"
        time.sleep(0.2)


def test_promtool_accepts_the_metrics_under_load(make_broker, tmp_path) -> None:
    promtool = need("promtool")
    broker = make_broker("--data-dir", str(tmp_path / "data"))
    register(broker, "load", "behind")
    stop = threading.Event()
    errors: list[str] = []

    def load(topic: str) -> None:
        producer = broker.post("/producer/register", {"topic": topic}).json()["producer_id"]
        while not stop.is_set():
            r = broker.post(
                "/producer/produce_batch",
                {"topic": topic, "producer_id": producer, "messages": ["m"] * 20},
            )
            if r.status_code != 200:
                errors.append(r.text)

    workers = [threading.Thread(target=load, args=(t,)) for t in ["load", "load", "other"]]
    for w in workers:
        w.start()
    try:
        for _ in range(3):
            time.sleep(0.3)
            text = scrape(broker)
            checked = subprocess.run(
                [promtool, "check", "metrics"],
                check=False,
                input=text,
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert checked.returncode == 0, checked.stdout + checked.stderr
            assert value(text, "myqueue_consumer_lag", topic="load", group="behind")
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=30)
    assert not errors, errors[:3]


def test_prometheus_scrapes_the_lag_of_a_group_left_behind(make_broker, tmp_path) -> None:
    prometheus = need("prometheus")
    broker = make_broker("--store", "memory")
    register(broker, "payments", "reconciler")
    caught_up = register(broker, "payments", "auditor")
    produce(broker, "payments", [f"payment {i}" for i in range(7)])
    broker.post("/consumer/commit", {"topic": "payments", "consumer_id": caught_up, "offset": 7})

    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "myqueue",
                        "scrape_interval": "1s",
                        "static_configs": [{"targets": [broker.address]}],
                    }
                ],
            }
        )
    )
    log = open(tmp_path / "prometheus.log", "w")  # noqa: SIM115 (closed below)
    server = subprocess.Popen(
        [
            prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        lag = wait_for_query(port, 'myqueue_consumer_lag{topic="payments",group="reconciler"}')
        assert lag == 7
        assert wait_for_query(port, 'myqueue_consumer_lag{topic="payments",group="auditor"}') == 0
        assert wait_for_query(port, 'up{job="myqueue"}') == 1
    except AssertionError:
        log.flush()
        print(Path(tmp_path / "prometheus.log").read_text()[-3000:])
        raise
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        log.close()


def wait_for_query(port: int, query: str, timeout: float = 60) -> float:
    """The value of an instant query once Prometheus has one."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = requests.get(
                f"http://127.0.0.1:{port}/api/v1/query", params={"query": query}, timeout=5
            ).json()
            result = last["data"]["result"]
            if result:
                assert len(result) == 1, result
                return float(result[0]["value"][1])
        except requests.RequestException:
            pass  # not listening yet
        time.sleep(0.5)
    raise AssertionError(f"Prometheus never had {query}: {last}")
