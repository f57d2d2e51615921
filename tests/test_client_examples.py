"""The assignment's two example programs, unchanged, as real processes interrupted by SIGINT."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import produce, read_topic

ROOT = Path(__file__).resolve().parent.parent
RUNNER = Path(__file__).resolve().parent / "run_example.py"


def ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def start_example(name: str, broker, sigint_ignored: bool = False) -> subprocess.Popen:
    """The example as a process; with ``sigint_ignored``, started the way `nohup` or a
    background job of a script starts it: with SIGINT ignored."""
    return subprocess.Popen(
        [sys.executable, str(RUNNER), str(ROOT / "examples" / name), broker.address],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=ignore_sigint if sigint_ignored else None,  # noqa: PLW1509 -- one signal
    )


def interrupt(proc: subprocess.Popen, timeout: float = 30) -> tuple[str, str, float]:
    """SIGINT, then wait; returns (stdout, stderr, seconds from the signal to the exit). A
    process still running after ``timeout`` is killed (the test fails; nothing is left over)."""
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return out, err, time.monotonic() - sent


@pytest.mark.parametrize("sigint_ignored", [False, True], ids=["normal", "sigint-ignored"])
def test_the_producer_example_delivers_every_accepted_message(broker, sigint_ignored):
    proc = start_example("producer.py", broker, sigint_ignored)
    time.sleep(2)
    _out, err, _ = interrupt(proc)
    assert proc.returncode == 0, err
    accepted = json.loads(err.strip().splitlines()[-1])["accepted"]
    assert accepted > 1000, "the loop sends until interrupted"
    stored = read_topic(broker.url, "my_topic")
    assert len(stored) == accepted, "every accepted message is stored, once"
    assert [offset for offset, _ in stored] == list(range(accepted))
    assert {message for _, message in stored} == {"DEBUG: This is a log message!"}
    # It registered the topics it was given, too.
    topics = broker.get("/topics").json()["topics"]
    assert {"topic1", "topic2", "my_topic"} <= set(topics)


def test_the_consumer_example_prints_one_line_per_message(broker):
    produce(broker.url, "topic1", [f"one-{i}" for i in range(30)])
    produce(broker.url, "topic2", [f"two-{i}" for i in range(20)])
    proc = start_example("consumer.py", broker)
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 30
    while len(lines) < 50 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
    out, err, seconds = interrupt(proc)
    lines += out.splitlines()
    assert proc.returncode == 0, err
    assert sorted(lines) == sorted(["consumed:  topic1"] * 30 + ["consumed:  topic2"] * 20)
    print(f"the consumer example exited {seconds:.3f}s after SIGINT")


@pytest.mark.parametrize("sigint_ignored", [False, True], ids=["normal", "sigint-ignored"])
def test_the_consumer_example_answers_ctrl_c_while_waiting(broker, sigint_ignored):
    produce(broker.url, "topic1", ["x"])
    produce(broker.url, "topic2", ["y"])
    proc = start_example("consumer.py", broker, sigint_ignored)
    assert proc.stdout is not None
    assert proc.stdout.readline() and proc.stdout.readline()  # both consumed; now it waits
    time.sleep(0.5)
    _out, err, seconds = interrupt(proc, timeout=10)
    assert proc.returncode == 0, err
    print(f"exited {seconds:.3f}s after SIGINT while blocked in get_next()")
