"""The broker's log on stderr: no colour codes in a file, and ``--log-format json`` writes one
JSON object per line (also when the broker fails to start)."""

from __future__ import annotations

import json
import subprocess

from conftest import broker_binary
from helpers import failed, ok


def exercise(broker) -> None:
    """Requests that log something at debug: successes, a failure, an unknown path."""
    ok(broker.post("/producer/register", {"topic": "t"}), "producer_id")
    failed(broker.post("/consumer/register", {"topic": "missing"}), 404, "topic_not_found")
    failed(broker.get("/nope"), 404, "not_found")


def test_a_log_written_to_a_file_has_no_colour_codes(make_broker, tmp_path):
    broker = make_broker("--data-dir", str(tmp_path / "data"), env={"MYQUEUE_LOG": "debug"})
    exercise(broker)
    assert broker.stop() == 0
    log = broker.log()
    assert "request" in log and "ready" in log, log  # it did log, at debug
    assert "\x1b[" not in log


def json_lines(text: str) -> list[dict]:
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "nothing was logged"
    parsed = []
    for line in lines:
        value = json.loads(line)  # raises, naming the line, if it is not JSON
        assert isinstance(value, dict), line
        parsed.append(value)
    return parsed


def test_log_format_json_writes_one_json_object_per_line(make_broker, tmp_path):
    broker = make_broker(
        "--data-dir", str(tmp_path / "data"), "--log-format", "json", env={"MYQUEUE_LOG": "debug"}
    )
    exercise(broker)
    assert broker.stop() == 0
    events = json_lines(broker.log())
    messages = [event.get("fields", {}).get("message") for event in events]
    assert "ready" in messages and "request" in messages and "stopped" in messages, messages
    assert all(event.get("level") for event in events)


def test_log_format_json_from_the_environment_and_for_a_failed_start(make_broker, tmp_path):
    running = make_broker("--store", "memory")
    taken = subprocess.run(
        [str(broker_binary()), "--store", "memory", "--listen", running.address],
        env={"MYQUEUE_LOG_FORMAT": "json", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert taken.returncode == 1
    events = json_lines(taken.stderr)
    assert any(
        event["level"] == "ERROR" and "cannot listen" in event["fields"]["message"]
        for event in events
    ), events
