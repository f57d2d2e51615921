#!/usr/bin/env python3
"""The figures of issue 12 (docs/BENCHMARKS.md, "Security and hostile clients"):

1. the cost of tokens and of TLS on scenario 1 (the assignment's single-message produce over
   64 keep-alive connections, wrk): plain, --auth-file, TLS, both; runs interleaved, medians;
2. 500 slow-header connections held open by an attacker (one byte every second, reconnecting
   when cut): produce rate of a normal client (wrk, 16 connections) during the attack vs
   without, alternating in the same run;
3. 5,000 idle keep-alive connections (each made one request): the broker's RSS, and the normal
   client's produce rate with them open vs without.

    python3 bench/security.py [--runs 3] [--seconds 5] [--quick]

Needs the release broker, wrk and the openssl command (a throwaway self-signed certificate).
SQLite store, loopback only, bounded in time. Speed is reported, not asserted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import requests
import urllib3
from harness import BROKER, median, rss_mb, wrk

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
MESSAGE = "x" * 100
TOKEN = "bench-token"


class Broker:
    def __init__(self, *args: str) -> None:
        self.dir = tempfile.mkdtemp(prefix="myqueue-bench-sec-")
        env = dict(os.environ, MYQUEUE_LOG="warn")
        env.pop("DATABASE_URL", None)
        self.proc = subprocess.Popen(
            [str(BROKER), "--listen", "127.0.0.1:0", "--data-dir", f"{self.dir}/data", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        line = self.proc.stdout.readline()
        match = re.search(r"(https?)://127\.0\.0\.1:(\d+)", line)
        if not match:
            raise RuntimeError(f"broker did not start: {line!r}")
        self.url = f"{match.group(1)}://127.0.0.1:{match.group(2)}"
        self.port = int(match.group(2))

    def post(self, path: str, body: dict, token: str | None) -> dict:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        reply = requests.post(self.url + path, json=body, headers=headers, timeout=30, verify=False)
        reply.raise_for_status()
        return reply.json()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


def produce_script(producer_id: int, token: str | None) -> str:
    body = json.dumps({"topic": "bench", "producer_id": producer_id, "message": MESSAGE})
    auth = f'wrk.headers["Authorization"] = "Bearer {token}"\n' if token else ""
    return (
        'wrk.method = "POST"\nwrk.path = "/producer/produce"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"{auth}wrk.body = {json.dumps(body)}\n"
    )


def prepared(broker: Broker, token: str | None) -> str:
    producer_id = broker.post("/producer/register", {"topic": "bench"}, token)["producer_id"]
    return produce_script(producer_id, token)


def auth_and_tls_cost(work: Path, runs: int, seconds: int) -> dict:
    auth = work / "auth.toml"
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    auth.write_text(f'[tokens.bench]\nsha256 = "{digest}"\nproduce = ["*"]\nadmin = true\n')
    cert, key = work / "cert.pem", work / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    tls = ["--tls-cert", str(cert), "--tls-key", str(key)]
    modes = {
        "plain": ([], None),
        "auth": (["--auth-file", str(auth)], TOKEN),
        "tls": (tls, None),
        "auth+tls": (["--auth-file", str(auth), *tls], TOKEN),
    }
    brokers = {name: Broker(*args) for name, (args, _) in modes.items()}
    try:
        scripts = {name: prepared(brokers[name], token) for name, (_, token) in modes.items()}
        for name, broker in brokers.items():  # warm-up (SQLite's files grow)
            wrk(broker.url, scripts[name], 64, min(seconds, 3))
        rates: dict[str, list[float]] = {name: [] for name in modes}
        for _ in range(runs):
            for name, broker in brokers.items():
                rates[name].append(wrk(broker.url, scripts[name], 64, seconds)["rps"])
    finally:
        for broker in brokers.values():
            broker.stop()
    plain = median(rates["plain"])
    return {
        name: {"rps": median(r), "vs_plain": median(r) / plain, "runs": r}
        for name, r in rates.items()
    }


class SlowHeaders(threading.Thread):
    """`count` connections that send a request head one byte a second, reconnecting when cut."""

    def __init__(self, port: int, count: int) -> None:
        super().__init__(daemon=True)
        self.port, self.count = port, count
        self.stopping = threading.Event()
        self.reconnects = 0

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        sock.setblocking(False)
        return sock

    def run(self) -> None:
        socks = [self.connect() for _ in range(self.count)]
        while not self.stopping.wait(1.0):
            for i, sock in enumerate(socks):
                try:
                    sock.send(b"X")
                    sock.recv(1)  # b"" once the broker closed it
                    raise ConnectionError
                except BlockingIOError:
                    continue
                except OSError:
                    sock.close()
                    socks[i] = self.connect()
                    self.reconnects += 1
        for sock in socks:
            sock.close()


def slow_header_attack(runs: int, seconds: int) -> dict:
    broker = Broker()
    try:
        script = prepared(broker, None)
        wrk(broker.url, script, 16, min(seconds, 3))
        without, during = [], []
        for _ in range(runs):
            without.append(wrk(broker.url, script, 16, seconds)["rps"])
            attack = SlowHeaders(broker.port, 500)
            attack.start()
            time.sleep(2)  # all 500 connected and dribbling
            during.append(wrk(broker.url, script, 16, seconds)["rps"])
            attack.stopping.set()
            attack.join(timeout=30)
    finally:
        broker.stop()
    return {
        "attackers": 500,
        "without_rps": median(without),
        "during_rps": median(during),
        "ratio": median(during) / median(without),
        "runs": {"without": without, "during": during},
    }


def idle_keep_alive(count: int, runs: int, seconds: int) -> dict:
    broker = Broker()
    try:
        script = prepared(broker, None)
        wrk(broker.url, script, 16, min(seconds, 3))
        rss_before = rss_mb(broker.proc.pid, "VmRSS")
        without, during, rss_with = [], [], []
        for _ in range(runs):
            without.append(wrk(broker.url, script, 16, seconds)["rps"])
            socks = []
            sel = selectors.DefaultSelector()
            for _ in range(count):
                sock = socket.create_connection(("127.0.0.1", broker.port), timeout=10)
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                socks.append(sock)
            for sock in socks:  # each got its answer: a keep-alive connection, now idle
                assert sock.recv(4096).startswith(b"HTTP/1.1 200")
            rss_with.append(rss_mb(broker.proc.pid, "VmRSS"))
            during.append(wrk(broker.url, script, 16, seconds)["rps"])
            for sock in socks:
                sock.close()
            sel.close()
            time.sleep(1)
    finally:
        broker.stop()
    return {
        "connections": count,
        "rss_mb_before": rss_before,
        "rss_mb_with": median(rss_with),
        "without_rps": median(without),
        "during_rps": median(during),
        "ratio": median(during) / median(without),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one run of 2 s each")
    args = parser.parse_args()
    runs, seconds = (1, 2) if args.quick else (args.runs, args.seconds)
    with tempfile.TemporaryDirectory(prefix="myqueue-bench-sec-") as work:
        results = {
            "cost": auth_and_tls_cost(Path(work), runs, seconds),
            "slow_headers": slow_header_attack(runs, seconds),
            "idle_keep_alive": idle_keep_alive(5000, runs, seconds),
        }
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
