"""Limits against hostile or broken clients, on the real broker over raw sockets: a slow
header is cut by --header-read-timeout (and an idle keep-alive connection is not, until
--idle-timeout), a slow body by --body-read-timeout (408), connections over --max-connections
are closed at once, long polls over --max-long-polls-per-client get 429. Each limit is logged
once per client."""

from __future__ import annotations

import socket
import threading
import time

import requests
from helpers import failed, scrape, value


def good(resp: requests.Response) -> dict:
    """A 200 success; returns the body (whatever else it holds)."""
    assert resp.status_code == 200, f"{resp.status_code} {resp.text}"
    body = resp.json()
    assert body["status"] == "success", body
    return body


def connect(broker) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", broker.port), timeout=10)
    return sock


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the broker closes `sock` within `seconds` (reading and dropping what it sends)."""
    sock.settimeout(0.2)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            continue
        except ConnectionResetError:
            return True
    return False


def request(sock: socket.socket, path: str = "/healthz") -> bytes:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    sock.settimeout(10)
    answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200"), answer
    return answer


def test_a_slow_header_is_cut_and_an_idle_connection_waits_longer(make_broker) -> None:
    broker = make_broker("--store", "memory", "--header-read-timeout", "1s", "--idle-timeout", "3s")
    slow = connect(broker)
    slow.sendall(b"GET /healthz HTTP/1.1\r\n")
    started = time.monotonic()
    for _ in range(3):  # a byte now and then, never the whole head
        time.sleep(0.3)
        try:
            slow.sendall(b"X")
        except OSError:
            break
    assert closed_within(slow, 5), "the slow header was not cut"
    assert time.monotonic() - started < 5
    # A second slow client from the same address: counted, not logged again.
    slow2 = connect(broker)
    slow2.sendall(b"GET /healthz HTTP/1.1\r\nHo")
    assert closed_within(slow2, 5)
    assert broker.log().count('limit="header_read_timeout"') == 1, broker.log()

    # Idle between requests longer than the header timeout: still open, until the idle timeout.
    keep = connect(broker)
    request(keep)
    time.sleep(1.6)
    request(keep)
    assert not closed_within(keep, 1.5), "an idle connection was cut by the header timeout"
    assert closed_within(keep, 5), "the idle connection was never closed"
    # Ordinary clients are unaffected throughout.
    good(broker.get("/healthz"))


def test_a_slow_body_is_answered_408(make_broker) -> None:
    broker = make_broker("--store", "memory", "--body-read-timeout", "1s")
    sock = connect(broker)
    head = "POST /topics HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    sock.sendall(head.encode() + b'{"name": ')
    sock.settimeout(10)
    started = time.monotonic()
    answer = sock.recv(65536)
    assert time.monotonic() - started < 5
    assert answer.startswith((b"HTTP/1.1 408", b"HTTP/1.1 400")), answer
    assert b'"code":"request_timeout"' in answer, answer
    assert 'limit="body_read_timeout"' in broker.log()


def test_connections_over_the_cap_are_closed(make_broker) -> None:
    broker = make_broker("--store", "memory", "--max-connections", "3")
    held = []
    deadline = time.monotonic() + 10
    while len(held) < 3:
        # The health check's connection may not be closed on the broker's side yet: retry.
        sock = connect(broker)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(10)
        try:
            answered = sock.recv(65536).startswith(b"HTTP/1.1 200")
        except OSError:
            answered = False
        if answered:
            held.append(sock)
        else:
            assert time.monotonic() < deadline, "could not hold 3 connections"
            sock.close()
            time.sleep(0.1)
    extra = connect(broker)  # the kernel accepts it; the broker closes it at once
    assert closed_within(extra, 5)
    try:
        requests.get(broker.url + "/healthz", timeout=5)
        raise AssertionError("a fourth connection was served")
    except requests.ConnectionError:
        pass
    held.pop().close()
    deadline = time.monotonic() + 10
    while True:  # the slot is free once the broker noticed the close
        try:
            good(requests.get(broker.url + "/healthz", timeout=5))
            break
        except requests.ConnectionError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert broker.log().count('limit="max_connections"') == 1


def test_long_polls_per_client_are_capped(make_broker) -> None:
    broker = make_broker("--store", "memory", "--max-long-polls-per-client", "2")
    good(broker.post("/topics", {"name": "t"}))
    consumers = [
        good(broker.post("/consumer/register", {"topic": "t"}))["consumer_id"] for _ in range(3)
    ]
    waiting = [
        threading.Thread(
            target=lambda cid=cid: good(
                broker.get("/consumer/fetch", {"topic": "t", "consumer_id": cid, "wait_ms": 3000})
            )
        )
        for cid in consumers[:2]
    ]
    for thread in waiting:
        thread.start()
    time.sleep(0.5)
    refused = broker.get(
        "/consumer/fetch", {"topic": "t", "consumer_id": consumers[2], "wait_ms": 3000}
    )
    failed(refused, 429, "too_many_requests")
    # A fetch that does not wait is not a long poll.
    good(broker.get("/consumer/fetch", {"topic": "t", "consumer_id": consumers[2]}))
    for thread in waiting:
        thread.join(timeout=10)
    good(broker.get("/consumer/fetch", {"topic": "t", "consumer_id": consumers[2], "wait_ms": 100}))
    assert broker.log().count('limit="max_long_polls_per_client"') == 1
    # Every hit is counted on /metrics, each limit's series present from the start.
    metrics = scrape(broker)
    assert value(metrics, "myqueue_limit_hits_total", limit="max_long_polls_per_client") == 1
    assert value(metrics, "myqueue_limit_hits_total", limit="max_connections") == 0
