"""The main job, scripts/run.sh, however it is started: in the background under `nohup` (a
shell without job control starts it with SIGINT ignored) and from a parent that ignores SIGINT.
The examples must still stop on their Ctrl-C, normally, with every message the producer
accepted stored (the producer example exits 0 only if its stop() delivered everything).

Bounded: one second per example, a port and data directory of its own, nothing rebuilt."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import broker_binary

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main_job_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        MYQUEUE_DEMO_SECONDS="1",
        MYQUEUE_DEMO_PORT=str(free_port()),
        MYQUEUE_DEMO_DATA_DIR=str(tmp_path / "data"),
        MYQUEUE_SKIP_BUILD="1",
        CARGO_TARGET_DIR=str(broker_binary().parent.parent),
        # run.sh's `python3` is this interpreter, with the package under test.
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
    )
    return env


LAUNCHERS = {
    # A background job of a shell without job control gets SIGINT ignored; nohup keeps it.
    "nohup": ["bash", "-c", 'nohup bash scripts/run.sh & wait "$!"'],
    "sigint-ignored": [
        sys.executable,
        "-c",
        (
            "import signal, subprocess, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
            "sys.exit(subprocess.run(['bash', 'scripts/run.sh']).returncode)"
        ),
    ],
}


@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_the_main_job_finishes_normally_however_it_is_started(tmp_path, launcher):
    log = tmp_path / "run.log"
    started = time.monotonic()
    with open(log, "w") as out:
        status = subprocess.run(
            LAUNCHERS[launcher],
            cwd=ROOT,
            env=main_job_env(tmp_path),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=300,
            check=False,
        ).returncode
    seconds = time.monotonic() - started
    output = log.read_text()
    assert status == 0, output
    assert "FALLBACK" not in output and "SIGKILL" not in output, output
    assert "exited with status" not in output, output
    stored = re.search(r"'my_topic' has had (\d+) messages", output)
    assert stored and int(stored.group(1)) > 0, output
    assert output.count("consumed:  topic") == 6, output
    assert seconds < 60, f"{seconds:.1f}s: each example should stop within moments of Ctrl-C"
