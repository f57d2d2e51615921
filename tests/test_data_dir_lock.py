"""One broker per SQLite data directory, with real processes: a second broker on the same
directory exits at once, non-zero, naming the directory and the running broker's PID; a
broker killed with SIGKILL leaves no stale lock behind."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import broker_binary
from helpers import produce, read_topic

SECOND_START_TIMEOUT = 30


def start_second(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(broker_binary()), "--listen", "127.0.0.1:0", "--data-dir", str(data_dir)],
        check=False,
        capture_output=True,
        text=True,
        timeout=SECOND_START_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


def test_a_second_broker_on_the_same_directory_exits_naming_it_and_the_pid(
    make_broker, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    first = make_broker("--data-dir", str(data))
    produce(first.url, "t", ["kept"])

    second = start_second(data)

    assert second.returncode != 0
    assert "listening" not in second.stdout
    last_line = second.stderr.strip().splitlines()[-1]
    assert last_line.startswith("myqueue-broker: the data directory"), second.stderr
    assert str(data) in last_line
    assert f"(PID {first.pid})" in last_line
    assert (data / "myqueue.lock").read_text().strip() == str(first.pid)
    # The first broker is untouched: it serves, and its data is whole.
    assert read_topic(first.url, "t") == [(0, "kept")]


def test_after_sigkill_a_new_broker_starts_on_the_directory(make_broker, tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = make_broker("--data-dir", str(data))
    produce(first.url, "t", ["before the kill"])
    first.kill()
    # The lock file is still there, with the dead broker's PID: it is no lock.
    assert (data / "myqueue.lock").read_text().strip() == str(first.pid)

    second = make_broker("--data-dir", str(data))

    assert (data / "myqueue.lock").read_text().strip() == str(second.pid)
    assert read_topic(second.url, "t") == [(0, "before the kill")]
    # And it holds the lock in turn.
    third = start_second(data)
    assert third.returncode != 0
    assert f"(PID {second.pid})" in third.stderr


def test_brokers_on_different_directories_run_side_by_side(make_broker, tmp_path: Path) -> None:
    one = make_broker("--data-dir", str(tmp_path / "one"))
    two = make_broker("--data-dir", str(tmp_path / "two"))
    produce(one.url, "t", ["a"])
    produce(two.url, "t", ["b"])
    assert read_topic(one.url, "t") == [(0, "a")]
    assert read_topic(two.url, "t") == [(0, "b")]
