"""HTTPS (--tls-cert/--tls-key) with certificates made at test time: the client produces and
consumes over TLS with ca_file=; a certificate that is untrusted, for another host or expired
is a TlsError at once (not a retry loop); SIGHUP loads a renewed certificate."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import requests
from tls_certs import make_ca, make_server_cert

from myqueue import Admin, MyConsumer, MyProducer, TlsError


@pytest.fixture
def ca(tmp_path: Path):
    return make_ca(tmp_path)


def tls_broker(make_broker, cert: Path, key: Path, *args: str):
    return make_broker("--store", "memory", "--tls-cert", str(cert), "--tls-key", str(key), *args)


def test_produce_and_consume_over_https(make_broker, ca, tmp_path: Path) -> None:
    broker = tls_broker(make_broker, *make_server_cert(ca, tmp_path))
    assert broker.scheme == "https"
    address = f"https://localhost:{broker.port}"
    with MyProducer(["secure"], address, ca_file=str(ca.path)) as producer:
        for i in range(100):
            producer.send("secure", f"m{i}")
        producer.flush(timeout=10)
    with MyConsumer(["secure"], address, ca_file=str(ca.path)) as consumer:
        got = [str(m) for m in consumer.get_next(timeout=2)]
    assert got == [f"m{i}" for i in range(100)]
    # By IP address too (the certificate names 127.0.0.1), and plain HTTP is not served.
    assert Admin(f"https://127.0.0.1:{broker.port}", ca_file=str(ca.path)).list_topics() == [
        "secure"
    ]
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{broker.port}/healthz", timeout=5)


def refused(address: str, ca_file: str | None, says: str) -> None:
    started = time.monotonic()
    with pytest.raises(TlsError) as error:
        MyProducer(["t"], address, ca_file=ca_file)
    assert says in str(error.value), error.value
    with pytest.raises(TlsError):
        MyConsumer(["t"], address, ca_file=ca_file)
    assert time.monotonic() - started < 5, "a certificate error must not be retried"


def test_an_untrusted_certificate_is_an_error_at_once(make_broker, ca, tmp_path: Path) -> None:
    broker = tls_broker(make_broker, *make_server_cert(ca, tmp_path))
    # The system's roots do not know the test CA; another CA does not either.
    refused(f"https://localhost:{broker.port}", None, "not signed by a trusted CA")
    other = make_ca(tmp_path, "another CA")
    refused(f"https://localhost:{broker.port}", str(other.path), "not signed by a trusted CA")


def test_a_certificate_for_another_host_is_an_error(make_broker, ca, tmp_path: Path) -> None:
    broker = tls_broker(make_broker, *make_server_cert(ca, tmp_path, hosts=("queue.example",)))
    refused(f"https://localhost:{broker.port}", str(ca.path), "another host")


def test_an_expired_certificate_is_an_error(make_broker, ca, tmp_path: Path) -> None:
    broker = tls_broker(make_broker, *make_server_cert(ca, tmp_path, expired=True))
    refused(f"https://localhost:{broker.port}", str(ca.path), "expired")


def test_sighup_loads_a_renewed_certificate(make_broker, ca, tmp_path: Path) -> None:
    cert, key = make_server_cert(ca, tmp_path, expired=True)
    broker = tls_broker(make_broker, cert, key)
    address = f"https://localhost:{broker.port}"
    refused(address, str(ca.path), "expired")
    make_server_cert(ca, tmp_path)  # renewed in place, as certbot does
    os.kill(broker.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "certificate reloaded" not in broker.log():
        assert time.monotonic() < deadline, broker.log()
        time.sleep(0.05)
    assert Admin(address, ca_file=str(ca.path)).list_topics() == []
    # A broken file on reload keeps the certificate in use.
    key.write_text("not a key")
    os.kill(broker.pid, signal.SIGHUP)
    while "the certificate in use stays" not in broker.log():
        assert time.monotonic() < deadline, broker.log()
        time.sleep(0.05)
    assert Admin(address, ca_file=str(ca.path)).list_topics() == []
