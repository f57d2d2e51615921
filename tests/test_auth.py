"""Tokens and permissions (--auth-file) against the real broker and the real client: the exact
answer of every endpoint with no token, an unknown one, and tokens allowed and not; reloading
on SIGHUP without dropping connections; protected mode; `myqueue-broker hash-token`."""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests
from conftest import broker_binary
from helpers import expected_status, failed

from myqueue import Admin, Forbidden, MyConsumer, MyProducer, MyQueueError, Unauthorized

TOKENS = {
    "ops": ("ops-secret", 'admin = true\nmonitor = true\nproduce = ["*"]\nconsume = ["*"]'),
    "writer": ("writer-secret", 'produce = ["app.*"]'),
    "reader": ("reader-secret", 'consume = ["app.*", "audit"]'),
    "logs": ("logs-secret", 'produce = ["logs"]\nconsume = ["logs"]'),
}


def good(resp: requests.Response) -> dict:
    """A 200 success; returns the body (whatever else it holds)."""
    assert resp.status_code == 200, f"{resp.status_code} {resp.text}"
    body = resp.json()
    assert body["status"] == "success", body
    return body


def auth_file(path: Path, tokens: dict[str, tuple[str, str]]) -> Path:
    entries = [
        f'[tokens.{name}]\nsha256 = "{hashlib.sha256(secret.encode()).hexdigest()}"\n{rest}\n'
        for name, (secret, rest) in tokens.items()
    ]
    path.write_text("\n".join(entries))
    return path


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name][0]}"}


@pytest.fixture
def secured(make_broker, tmp_path: Path):
    broker = make_broker(
        "--store", "memory", "--auth-file", str(auth_file(tmp_path / "auth.toml", TOKENS))
    )
    for topic in ("app.web", "audit", "logs"):
        good(broker.post("/topics", {"name": topic}, headers=bearer("ops")))
    return broker


def unauthorized(resp: requests.Response) -> None:
    failed(resp, 401, "unauthorized")
    assert resp.headers["WWW-Authenticate"].startswith("Bearer"), resp.headers


def test_every_endpoint_but_healthz_needs_a_known_token(secured) -> None:
    calls = [
        ("POST", "/topics", {"name": "x"}),
        ("GET", "/topics", None),
        ("GET", "/topics/app.web", None),
        ("PATCH", "/topics/app.web", {"retention_ms": 1000}),
        ("DELETE", "/topics/app.web", None),
        ("POST", "/producer/register", {"topic": "app.web"}),
        ("POST", "/producer/produce", {"topic": "app.web", "producer_id": 1, "message": "m"}),
        (
            "POST",
            "/producer/produce_batch",
            {"topic": "app.web", "producer_id": 1, "messages": ["m"]},
        ),
        ("POST", "/consumer/register", {"topic": "app.web"}),
        ("GET", "/consumer/consume", {"topic": "app.web", "consumer_id": 1}),
        ("GET", "/consumer/fetch", {"topic": "app.web", "consumer_id": 1}),
        ("POST", "/consumer/commit", {"topic": "app.web", "consumer_id": 1, "offset": 0}),
        ("GET", "/size", {"topic": "app.web", "consumer_id": 1}),
        ("POST", "/noop", {}),
    ]
    for headers in (
        {},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": "Basic b3BzOng="},
    ):
        for method, path, body in calls:
            resp = requests.request(
                method, secured.url + path, json=body, headers=headers, timeout=10
            )
            unauthorized(resp)
    assert good(secured.get("/healthz"))["store"] == "memory"
    # Nothing above changed anything.
    assert good(secured.get("/topics", headers=bearer("ops")))["topics"] == [
        "app.web",
        "audit",
        "logs",
    ]


def test_administering_topics_needs_admin(secured) -> None:
    for name in ("writer", "reader", "logs"):
        failed(secured.post("/topics", {"name": "app.new"}, headers=bearer(name)), 403, "forbidden")
        resp = requests.patch(
            secured.url + "/topics/app.web",
            json={"retention_ms": 1000},
            headers=bearer(name),
            timeout=10,
        )
        failed(resp, 403, "forbidden")
        resp = requests.delete(secured.url + "/topics/app.web", headers=bearer(name), timeout=10)
        failed(resp, 403, "forbidden")
    good(secured.post("/topics", {"name": "app.new"}, headers=bearer("ops")))
    resp = requests.delete(secured.url + "/topics/app.new", headers=bearer("ops"), timeout=10)
    good(resp)


def test_topics_list_and_describe_only_what_the_token_may_see(secured) -> None:
    topics = lambda name: good(secured.get("/topics", headers=bearer(name)))["topics"]
    assert topics("ops") == ["app.web", "audit", "logs"]
    assert topics("writer") == ["app.web"]
    assert topics("reader") == ["app.web", "audit"]
    assert topics("logs") == ["logs"]
    good(secured.get("/topics/app.web", headers=bearer("writer")))
    body = failed(secured.get("/topics/logs", headers=bearer("writer")), 403, "forbidden")
    assert "writer" in body["message"] and "logs" in body["message"]


def test_producing_and_consuming_follow_the_topic_patterns(secured) -> None:
    post, get = secured.post, secured.get
    producer = good(post("/producer/register", {"topic": "app.web"}, headers=bearer("writer")))[
        "producer_id"
    ]
    failed(
        post("/producer/register", {"topic": "audit"}, headers=bearer("writer")), 403, "forbidden"
    )
    failed(
        post("/producer/register", {"topic": "app.web"}, headers=bearer("reader")), 403, "forbidden"
    )
    good(
        post(
            "/producer/produce",
            {"topic": "app.web", "producer_id": producer, "message": "one"},
            headers=bearer("writer"),
        )
    )
    batch = {"topic": "app.web", "producer_id": producer, "messages": ["two", "three"]}
    good(post("/producer/produce_batch", batch, headers=bearer("writer")))
    failed(post("/producer/produce_batch", batch, headers=bearer("reader")), 403, "forbidden")

    consumer = good(post("/consumer/register", {"topic": "app.web"}, headers=bearer("reader")))[
        "consumer_id"
    ]
    failed(
        post("/consumer/register", {"topic": "app.web"}, headers=bearer("writer")), 403, "forbidden"
    )
    failed(
        post("/consumer/register", {"topic": "logs"}, headers=bearer("reader")), 403, "forbidden"
    )
    params = {"topic": "app.web", "consumer_id": consumer}
    assert good(get("/size", params, headers=bearer("reader")))["size"] == 3
    assert good(get("/consumer/consume", params, headers=bearer("reader")))["message"] == "one"
    fetched = good(get("/consumer/fetch", params, headers=bearer("reader")))
    assert [m["message"] for m in fetched["messages"]] == ["two", "three"]
    good(post("/consumer/commit", {**params, "offset": 3}, headers=bearer("reader")))
    for path in ("/size", "/consumer/consume", "/consumer/fetch"):
        failed(get(path, params, headers=bearer("writer")), 403, "forbidden")
    failed(
        post("/consumer/commit", {**params, "offset": 3}, headers=bearer("writer")),
        403,
        "forbidden",
    )


def test_ids_only_work_under_a_token_allowed_on_their_topic(secured) -> None:
    producer = good(
        secured.post("/producer/register", {"topic": "app.web"}, headers=bearer("writer"))
    )["producer_id"]
    consumer = good(
        secured.post("/consumer/register", {"topic": "app.web"}, headers=bearer("reader"))
    )["consumer_id"]
    # The ids are known, the token is not allowed on their topic: 403 before the store is asked.
    body = {"topic": "app.web", "producer_id": producer, "message": "stolen id"}
    failed(secured.post("/producer/produce", body, headers=bearer("logs")), 403, "forbidden")
    params = {"topic": "app.web", "consumer_id": consumer}
    failed(secured.get("/consumer/fetch", params, headers=bearer("logs")), 403, "forbidden")
    # Under the topic the token may use, the ids belong to another topic: wrong_topic.
    body = {"topic": "logs", "producer_id": producer, "message": "stolen id"}
    failed(secured.post("/producer/produce", body, headers=bearer("logs")), 403, "wrong_topic")
    failed(
        secured.get(
            "/consumer/fetch", {"topic": "logs", "consumer_id": consumer}, headers=bearer("logs")
        ),
        403,
        "wrong_topic",
    )
    assert good(secured.get("/size", params, headers=bearer("reader")))["size"] == 0


def test_the_client_sends_its_token_and_raises_at_once(secured, monkeypatch) -> None:
    with MyProducer(["app.web"], secured.address, token=TOKENS["writer"][0]) as producer:
        producer.send("app.web", "from the client").get(timeout=10)
    with MyConsumer(["app.web"], secured.address, token=TOKENS["reader"][0]) as consumer:
        assert [str(m) for m in consumer.get_next(timeout=2)] == ["from the client"]

    started = time.monotonic()
    with pytest.raises(Unauthorized) as missing:
        MyProducer(["app.web"], secured.address)
    assert missing.value.code == "unauthorized"
    with pytest.raises(Unauthorized):
        MyConsumer(["app.web"], secured.address, token="wrong")
    with pytest.raises(Forbidden) as forbidden:
        MyConsumer(["app.web"], secured.address, token=TOKENS["writer"][0])
    assert forbidden.value.code == "forbidden" and isinstance(forbidden.value, MyQueueError)
    with pytest.raises(Forbidden):
        MyProducer(["audit"], secured.address, token=TOKENS["writer"][0])
    with pytest.raises(Forbidden):
        Admin(secured.address, token=TOKENS["writer"][0]).create_topic("app.other")
    assert time.monotonic() - started < 5, "refusals are raised at once, never retried"

    # MYQUEUE_TOKEN when no token= is given.
    monkeypatch.setenv("MYQUEUE_TOKEN", TOKENS["ops"][0])
    Admin(secured.address).create_topic("app.env")
    with MyProducer(["app.env"], secured.address) as producer:
        producer.send("app.env", "via the environment").get(timeout=10)


def test_the_command_line_tool_reads_the_token_from_the_environment(secured) -> None:
    env = {**os.environ, "MYQUEUE_BROKER": secured.address, "MYQUEUE_TOKEN": TOKENS["reader"][0]}
    listed = subprocess.run(
        ["myqueue", "topics"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ["app.web", "audit"]
    env.pop("MYQUEUE_TOKEN")
    refused = subprocess.run(
        ["myqueue", "topics"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert refused.returncode == 1 and "token" in refused.stderr, refused


def test_sighup_reloads_tokens_without_dropping_connections(make_broker, tmp_path: Path) -> None:
    path = auth_file(tmp_path / "auth.toml", {"old": ("old-secret", "admin = true")})
    broker = make_broker("--store", "memory", "--auth-file", str(path))
    conn = http.client.HTTPConnection("127.0.0.1", broker.port, timeout=10)

    def status(token: str) -> int:
        conn.request("GET", "/topics", headers={"Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        resp.read()
        return resp.status

    assert status("old-secret") == 200
    auth_file(path, {"new": ("new-secret", "admin = true")})
    os.kill(broker.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while status("new-secret") != 200:
        assert time.monotonic() < deadline, broker.log()
        time.sleep(0.05)
    # The same connection all along: http.client would raise had the broker closed it.
    assert status("old-secret") == expected_status(401)

    path.write_text('[tokens.broken]\nsha256 = "not a hash"\n')
    os.kill(broker.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "the tokens in force stay" not in broker.log():
        assert time.monotonic() < deadline, broker.log()
        time.sleep(0.05)
    assert status("new-secret") == 200
    assert "token broken" in broker.log()
    conn.close()


def test_protected_mode_refuses_a_public_address_without_tokens(tmp_path: Path) -> None:
    # Refused before anything is bound: this never listens beyond loopback.
    started = subprocess.run(
        [str(broker_binary()), "--store", "memory", "--listen", "0.0.0.0:0"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "MYQUEUE_LOG": "info"},
        check=False,
    )
    assert started.returncode != 0
    assert "refusing to listen on 0.0.0.0:0 without --auth-file" in started.stderr
    assert "--allow-anonymous" in started.stderr
    assert started.stdout == ""


def test_a_broken_auth_file_stops_the_start(tmp_path: Path) -> None:
    path = tmp_path / "auth.toml"
    path.write_text('[tokens.a]\nsha256 = "abc"\n')
    started = subprocess.run(
        [
            str(broker_binary()),
            "--store",
            "memory",
            "--listen",
            "127.0.0.1:0",
            "--auth-file",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert started.returncode != 0 and "token a" in started.stderr and str(path) in started.stderr


def test_hash_token_prints_an_auth_file_entry(tmp_path: Path) -> None:
    given = subprocess.run(
        [str(broker_binary()), "hash-token", "s3cret"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert f'sha256 = "{hashlib.sha256(b"s3cret").hexdigest()}"' in given.stdout
    assert "s3cret" not in given.stdout
    piped = subprocess.run(
        [str(broker_binary()), "hash-token", "-"],
        input="s3cret\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert piped.stdout == given.stdout
    new = subprocess.run(
        [str(broker_binary()), "hash-token"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    token = re.search(r"# token: (mq_[0-9a-f]{64})", new).group(1)
    assert f'sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"' in new
    # The printed entry is a working auth file once named.
    path = tmp_path / "auth.toml"
    path.write_text(
        new.replace("[tokens.NAME]", "[tokens.me]").replace("admin = false", "admin = true")
    )
    started = subprocess.Popen(
        [
            str(broker_binary()),
            "--store",
            "memory",
            "--listen",
            "127.0.0.1:0",
            "--auth-file",
            str(path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        port = re.search(r":(\d+)$", started.stdout.readline().strip()).group(1)
        resp = requests.post(
            f"http://127.0.0.1:{port}/topics",
            json={"name": "t"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert resp.status_code == 200, resp.text
    finally:
        started.kill()
        started.wait(timeout=10)


def test_metrics_and_the_dashboard_need_the_monitor_permission(secured) -> None:
    for path in ("/metrics", "/ui", "/ui/app.js"):
        unauthorized(requests.get(secured.url + path, timeout=10))
        failed(
            requests.get(secured.url + path, headers=bearer("writer"), timeout=10), 403, "forbidden"
        )
        resp = requests.get(secured.url + path, headers=bearer("ops"), timeout=10)
        assert resp.status_code == 200, f"{path}: {resp.status_code} {resp.text[:200]}"
    assert (
        "myqueue_store_up"
        in requests.get(secured.url + "/metrics", headers=bearer("ops"), timeout=10).text
    )
    # The API's description needs a known token, any one.
    unauthorized(requests.get(secured.url + "/openapi.json", timeout=10))
    resp = requests.get(secured.url + "/openapi.json", headers=bearer("writer"), timeout=10)
    assert resp.status_code == 200 and resp.json()["openapi"].startswith("3.1"), resp.text[:200]
