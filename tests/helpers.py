"""Small HTTP helpers shared by the black-box tests: checking response shapes, and reading
what a broker holds independently of the client library."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import requests

#: The ``--failure-status`` of the brokers the running test talks to: ``"precise"`` or ``"400"``.
#: Set by the ``failure_status`` fixture (conftest.py); ``failed()`` expects statuses by it.
failure_status = "precise"


def expected_status(http_status: int) -> int:
    """The status a failure whose precise status is ``http_status`` is answered with: under
    ``--failure-status 400`` every failure a client causes is 400; 5xx stay."""
    if failure_status == "400" and 400 <= http_status < 500:
        return 400
    return http_status


def read_topic(base_url: str, topic: str, limit: int = 10_000_000) -> list[tuple[int, str]]:
    """Every (offset, message) of ``topic``, read with a fresh consumer through /consumer/fetch."""
    consumer = requests.post(
        f"{base_url}/consumer/register", json={"topic": topic}, timeout=30
    ).json()
    consumer_id = consumer["consumer_id"]
    out: list[tuple[int, str]] = []
    offset = 0
    while len(out) < limit:
        page = requests.get(
            f"{base_url}/consumer/fetch",
            params={
                "topic": topic,
                "consumer_id": consumer_id,
                "offset": offset,
                "max_messages": 10_000,
            },
            timeout=60,
        ).json()
        out.extend((m["offset"], m["message"]) for m in page["messages"])
        if not page["messages"]:
            return out
        offset = page["next_offset"]
    return out


def produce(base_url: str, topic: str, messages: list[str]) -> None:
    """Appends ``messages`` to ``topic`` through the assignment's endpoints."""
    producer_id = requests.post(
        f"{base_url}/producer/register", json={"topic": topic}, timeout=30
    ).json()["producer_id"]
    with requests.Session() as session:
        for message in messages:
            reply = session.post(
                f"{base_url}/producer/produce",
                json={"topic": topic, "producer_id": producer_id, "message": message},
                timeout=30,
            )
            assert reply.status_code == 200, reply.text


def is_json(resp: requests.Response) -> bool:
    return resp.headers.get("content-type", "").split(";")[0].strip() == "application/json"


def ok(resp: requests.Response, *fields: str) -> dict[str, Any]:
    """A 200 success with exactly ``status`` and ``fields``; returns the body."""
    assert resp.status_code == 200, f"{resp.status_code} {resp.text}"
    assert is_json(resp), resp.headers.get("content-type")
    body = resp.json()
    assert isinstance(body, dict), body
    assert body.get("status") == "success", body
    assert set(body) == {"status", *fields}, body
    return body


def failed(resp: requests.Response, http_status: int, code: str) -> dict[str, Any]:
    """A failure with the given (precise) HTTP status and code, in the one error shape."""
    expected = expected_status(http_status)
    assert resp.status_code == expected, (
        f"expected {expected} {code}, got {resp.status_code} {resp.text}"
    )
    assert is_json(resp), f"{resp.headers.get('content-type')}: {resp.text}"
    body = resp.json()
    assert isinstance(body, dict), body
    assert set(body) == {"status", "message", "code"}, body
    assert body["status"] == "failure", body
    assert body["code"] == code, body
    assert isinstance(body["message"], str) and body["message"].strip(), body
    return body


# Prometheus' text format, as GET /metrics answers it.
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Every sample line of Prometheus' text format: (name, labels, value)."""
    found = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        labels = dict(LABEL.findall(match.group(2) or ""))
        found.append((match.group(1), labels, float(match.group(3))))
    return found


def value(text: str, name: str, **labels: str) -> float | None:
    """The value of the one sample `name` whose labels include `labels`, or None."""
    matching = [
        v
        for n, ls, v in samples(text)
        if n == name and all(ls.get(k) == want for k, want in labels.items())
    ]
    assert len(matching) <= 1, f"{name}{labels} matches {len(matching)} samples"
    return matching[0] if matching else None


def scrape(broker) -> str:
    response = broker.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return response.text


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    """Polls `predicate` every `every` seconds until it answers something true, and returns
    that; fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)
    return value
