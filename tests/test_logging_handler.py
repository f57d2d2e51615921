"""myqueue.logging: QueueHandler through dictConfig in real processes, JsonFormatter, and what
happens when the buffer is full."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import textwrap
import time

import pytest
from helpers import read_topic

from myqueue.logging import JsonFormatter, QueueHandler

# Configures logging from a dict, logs 10,000 records from 4 threads, and exits: nothing is
# flushed, closed or stopped by hand.
SCRIPT = textwrap.dedent(
    """
    import logging, logging.config, sys, threading

    logging.config.dictConfig({
        "version": 1,
        "formatters": {"json": {"()": "myqueue.logging.JsonFormatter",
                                "fields": {"service": "test"}}},
        "handlers": {"queue": {"class": "myqueue.logging.QueueHandler", "topic": "app-logs",
                               "broker": sys.argv[1], "formatter": "json"}},
        "root": {"level": "INFO", "handlers": ["queue"]},
    })
    log = logging.getLogger("worker")

    def work(thread):
        for seq in range(2500):
            log.info("record %d of thread %d", seq, thread, extra={"thread_no": thread, "seq": seq})

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("logged", flush=True)
    """
)


def run_script(address: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, address],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def communicate(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()  # the test fails; nothing is left running
        proc.communicate()
        raise


def check_all_arrived(broker) -> None:
    records = [json.loads(message) for _, message in read_topic(broker.url, "app-logs")]
    assert len(records) == 10_000
    for thread in range(4):
        mine = [r["seq"] for r in records if r["thread_no"] == thread]
        assert mine == list(range(2500)), f"thread {thread}: every record, in order"
    first = records[0]
    assert set(first) == {"time", "level", "logger", "message", "thread_no", "seq", "service"}
    assert first["level"] == "INFO" and first["logger"] == "worker"
    assert first["message"] == f"record {first['seq']} of thread {first['thread_no']}"
    assert first["service"] == "test" and first["time"].endswith("Z")


def test_dictconfig_4_threads_10000_records_all_arrive_in_order_at_exit(broker):
    proc = run_script(broker.address)
    out, err = communicate(proc)
    assert proc.returncode == 0, err
    assert out == "logged\n" and err == ""
    check_all_arrived(broker)


def test_records_logged_while_the_broker_is_down_arrive_once_it_is_up(broker):
    broker.kill()  # down when the script starts; the same port comes back 2 s later
    proc = run_script(broker.address)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "logged\n"  # logging did not wait for the broker
    time.sleep(2)
    broker.restart()
    _, err = communicate(proc)
    assert proc.returncode == 0, err
    assert err == ""
    check_all_arrived(broker)


def test_json_formatter_writes_one_object_per_record():
    formatter = JsonFormatter(fields={"service": "api", "level": "ignored"})
    record = logging.LogRecord("app.db", logging.ERROR, __file__, 1, "failed %s", ("x",), None)
    record.__dict__.update({"request_id": 17, "when": object(), "message_extra": "ü"})
    entry = json.loads(formatter.format(record))
    assert entry["level"] == "ERROR" and entry["logger"] == "app.db"
    assert entry["message"] == "failed x" and entry["request_id"] == 17
    assert entry["when"].startswith("<object object") and entry["message_extra"] == "ü"
    assert entry["service"] == "api"
    assert "exception" not in entry
    assert time.strptime(entry["time"][:19], "%Y-%m-%dT%H:%M:%S")

    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("app", logging.ERROR, __file__, 1, "oops", (), sys.exc_info())
    line = formatter.format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["exception"].startswith("Traceback") and "ValueError: boom" in entry["exception"]


@pytest.fixture
def nowhere():
    """An address where no broker listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def test_a_full_buffer_drops_and_counts_without_blocking_the_caller(nowhere, capsys):
    handler = QueueHandler("t", nowhere, buffer_size=1000, close_timeout=0.5)
    logger = logging.getLogger("test.drop")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        started = time.monotonic()
        for i in range(200):
            logger.warning("message number %d, about forty bytes", i)
        assert time.monotonic() - started < 1.0
        assert 150 < handler.dropped < 200
    finally:
        logger.removeHandler(handler)
        handler.close()
    err = capsys.readouterr().err
    assert "dropping log records for topic 't': the buffer is full" in err
    assert f"dropped {handler.dropped} log record(s) for topic 't'" in err
    assert "log records not delivered" in err


def test_max_block_waits_that_long_for_room_then_drops(nowhere, capsys):
    handler = QueueHandler("t", nowhere, buffer_size=100, max_block=0.3, close_timeout=0.2)
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "y" * 80, (), None)
    try:
        handler.handle(record)  # fills the buffer
        started = time.monotonic()
        handler.handle(record)
        waited = time.monotonic() - started
        assert 0.25 < waited < 1.5 and handler.dropped == 1
    finally:
        handler.close()
    capsys.readouterr()


def test_handlers_of_one_broker_share_a_producer(nowhere):
    a, b = QueueHandler("a", nowhere), QueueHandler("b", nowhere.replace("127.0.0.1", "localhost"))
    c = QueueHandler("c", nowhere, buffer_size=1 << 20)
    try:
        assert a._producer is b._producer
        assert c._producer is not a._producer
    finally:
        for handler in (a, b, c):
            handler.close_timeout = 0
            handler.close()
