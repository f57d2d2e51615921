"""The `myqueue` command as real processes against a real broker: every command, both output
formats, exit statuses, Ctrl-C, groups, and a broker that cannot be reached."""

from __future__ import annotations

import json
import os
import pty
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from helpers import produce, read_topic


def restore_ctrl_c() -> None:
    """In the child: SIGINT as a terminal would deliver it, even if pytest runs with it ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli_env(address: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # The test suite uses MYQUEUE_BROKER for the broker *binary*; the command reads it as the
    # broker's address.
    env.pop("MYQUEUE_BROKER", None)
    if address is not None:
        env["MYQUEUE_BROKER"] = address
    return env


def myqueue(
    address: str | None, *args: str, input: bytes | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Runs `python -m myqueue ARGS` with MYQUEUE_BROKER=address; text output."""
    proc = subprocess.run(
        [sys.executable, "-m", "myqueue", *args],
        check=False,
        input=input,
        capture_output=True,
        timeout=timeout,
        env=cli_env(address),
        preexec_fn=restore_ctrl_c,
    )
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode()
    )


_started: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _stop_leftovers():
    """Whatever a failed test leaves running is killed (by its PID) at its end."""
    yield
    while _started:
        proc = _started.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def start(address: str, *args: str) -> subprocess.Popen[str]:
    """Starts `python -m myqueue ARGS` with pipes; stopped by the test, else at its end."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "myqueue", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(address),
        preexec_fn=restore_ctrl_c,  # noqa: PLW1509 -- resets one signal, nothing else
    )
    _started.append(proc)
    return proc


def finish(proc: subprocess.Popen[str], timeout: float = 10) -> tuple[str, str]:
    """The rest of a started command's output once it exits. (Not communicate(): it would
    miss what readline() has already buffered.)"""
    assert proc.stdout is not None and proc.stderr is not None
    timer = threading.Timer(timeout, proc.kill)  # bounded, whatever happens
    timer.start()
    try:
        out, err = proc.stdout.read(), proc.stderr.read()
        proc.wait()
    finally:
        timer.cancel()
    return out, err


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The command failed with exactly one line on stderr, and no traceback."""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------------------------


def test_the_console_script_and_python_m_both_run(broker):
    script = Path(sysconfig.get_path("scripts")) / "myqueue"
    assert script.exists(), f"{script}: the console script is missing from the wheel"
    for command in ([str(script)], [sys.executable, "-m", "myqueue"]):
        shown = subprocess.run(
            [*command, "--help"],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
            env=cli_env(),
        )
        assert shown.returncode == 0, shown.stderr
        for name in ("topics", "create", "describe", "delete", "produce", "consume", "lag"):
            assert name in shown.stdout
        listed = subprocess.run(
            [*command, "--broker", broker.address, "topics"],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
            env=cli_env(),
        )
        assert listed.returncode == 0, listed.stderr


@pytest.mark.parametrize(
    "command", ["topics", "create", "describe", "delete", "produce", "consume", "lag"]
)
def test_every_command_has_help(command):
    shown = myqueue(None, command, "--help")
    assert shown.returncode == 0 and shown.stdout.startswith("usage: myqueue " + command)


def test_create_and_topics_in_both_formats(broker):
    created = myqueue(broker.address, "create", "logs")
    assert (created.returncode, created.stdout) == (0, "Topic 'logs' created successfully\n")
    created = myqueue(broker.address, "create", "audit", "--json")
    assert created.returncode == 0
    assert json.loads(created.stdout) == {"topic": "audit", "created": True}

    again = myqueue(broker.address, "create", "logs")
    assert again.returncode == 1 and again.stdout == ""
    assert "already exists" in one_error_line(again)
    for args in (["create", "bad name"], ["produce", "bad/name"], ["consume", "bad name"]):
        refused = myqueue(broker.address, *args, input=b"x\n")
        assert refused.returncode == 2, refused  # a malformed name is a usage error
        assert "name" in one_error_line(refused)

    listed = myqueue(broker.address, "topics")
    assert (listed.returncode, sorted(listed.stdout.splitlines())) == (0, ["audit", "logs"])
    listed = myqueue(broker.address, "topics", "--json")
    assert listed.returncode == 0 and sorted(json.loads(listed.stdout)) == ["audit", "logs"]


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["frobnicate"],
        ["consume"],
        ["create"],
        ["consume", "t", "--max", "0"],
        ["consume", "t", "--max", "many"],
        ["consume", "t", "--from-beginning", "--from-end"],
        ["--broker", "ftp://127.0.0.1:1", "topics"],
        ["produce", "t", "--file", "/nonexistent/lines.txt"],
    ],
)
def test_usage_errors_exit_2_with_one_line(args):
    proc = myqueue(None, *args)
    assert proc.returncode == 2, proc
    assert one_error_line(proc).startswith("myqueue")


@pytest.mark.parametrize(
    "args",
    [
        ["topics"],
        ["create", "t"],
        ["describe", "t"],
        ["delete", "t"],
        ["lag", "--group", "g"],
        ["produce", "t"],
        ["consume", "t"],
        ["consume", "t", "--follow"],
    ],
)
def test_an_unreachable_broker_exits_1_with_one_line(args):
    started = time.monotonic()
    proc = myqueue(f"127.0.0.1:{closed_port()}", *args, input=b"a\nb\n", timeout=60)
    assert proc.returncode == 1, proc
    line = one_error_line(proc)
    assert "127.0.0.1" in line and ("cannot" in line or "unavailable" in line), line
    assert time.monotonic() - started < 20


def test_the_broker_comes_from_the_option_before_the_environment(broker):
    myqueue(broker.address, "create", "here")
    wrong = f"127.0.0.1:{closed_port()}"
    for args in (["--broker", broker.address, "topics"], ["topics", "-b", broker.address]):
        proc = myqueue(wrong, *args)
        assert (proc.returncode, proc.stdout) == (0, "here\n"), proc.stderr


def test_describe_and_delete_say_when_the_broker_cannot_yet(older_broker):
    broker, address = older_broker
    myqueue(address, "create", "t")
    for command in ("describe", "delete"):
        proc = myqueue(address, command, "t")
        assert proc.returncode == 1 and proc.stdout == ""
        assert one_error_line(proc) == f"myqueue: this broker does not support {command} yet"
    assert myqueue(broker.address, "topics").stdout == "t\n"  # nothing was deleted


def test_produce_100000_lines_from_a_file_then_consume_them_in_order(broker, tmp_path):
    lines = [f"line {i} ünïcode ✓" for i in range(100_000)]
    path = tmp_path / "lines.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    produced = myqueue(broker.address, "produce", "big", "--file", str(path))
    assert produced.returncode == 0, produced.stderr
    assert produced.stdout == ""
    report = one_error_line(produced)  # the report, on stderr; no progress line on a pipe
    assert report.startswith("produced 100,000 messages to 'big' in ")
    assert report.endswith(" messages/s)") and "\r" not in produced.stderr

    consumed = myqueue(broker.address, "consume", "big", "--from-beginning", "--max", "100000")
    assert consumed.returncode == 0, consumed.stderr
    assert consumed.stdout.splitlines() == lines
    assert consumed.stderr == ""


def test_produce_reads_stdin_and_consume_prints_json(broker):
    text = "first\nsecond line, with spaces\n\nemoji 🎉\r\nlast without newline"
    produced = myqueue(broker.address, "produce", "t", "--json", input=text.encode())
    assert produced.returncode == 0, produced.stderr
    summary = json.loads(produced.stdout)
    assert summary["topic"] == "t" and summary["messages"] == 5

    consumed = myqueue(broker.address, "consume", "t", "--json")
    assert consumed.returncode == 0, consumed.stderr
    records = [json.loads(line) for line in consumed.stdout.splitlines()]
    expected = ["first", "second line, with spaces", "", "emoji 🎉", "last without newline"]
    assert [r["value"] for r in records] == expected
    assert [r["offset"] for r in records] == [0, 1, 2, 3, 4]
    assert {r["topic"] for r in records} == {"t"}
    assert all(r["timestamp"] > 1_600_000_000_000 for r in records)
    assert set(records[0]) == {"topic", "offset", "timestamp", "value"}


def test_produce_refuses_a_line_that_is_not_utf8_after_sending_the_ones_before(broker):
    proc = myqueue(broker.address, "produce", "t", input=b"ok\n\xff\xfe\nnever\n")
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1].startswith("myqueue: line 2:")
    assert [m for _, m in read_topic(broker.url, "t")] == ["ok"]


def test_produce_shows_progress_only_on_a_terminal(broker):
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "myqueue", "produce", "slow"],
        stdin=subprocess.PIPE,
        stderr=follower,
        env=cli_env(broker.address),
        preexec_fn=restore_ctrl_c,  # noqa: PLW1509 -- resets one signal, nothing else
    )
    _started.append(proc)
    os.close(follower)
    assert proc.stdin is not None
    for i in range(15):  # 1.5 s of input: several progress intervals
        proc.stdin.write(b"x%d\n" % i)
        proc.stdin.flush()
        time.sleep(0.1)
    proc.stdin.close()
    assert proc.wait(timeout=60) == 0
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the terminal's other side is closed and drained
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    assert b"\rsent " in shown
    assert b"produced 15 messages to 'slow'" in shown


def test_consume_stops_at_the_end_and_takes_topics_in_turn(broker):
    produce(broker.url, "a", ["a0", "a1", "a2"])
    produce(broker.url, "b", ["b0", "b1"])
    proc = myqueue(broker.address, "consume", "a", "b")
    assert proc.returncode == 0, proc.stderr
    assert sorted(proc.stdout.splitlines()) == ["a0", "a1", "a2", "b0", "b1"]
    assert [line for line in proc.stdout.splitlines() if line.startswith("a")] == ["a0", "a1", "a2"]

    limited = myqueue(broker.address, "consume", "a", "--max", "2")
    assert (limited.returncode, limited.stdout) == (0, "a0\na1\n")
    missing = myqueue(broker.address, "consume", "a", "nope")
    assert missing.returncode == 1 and "'nope'" in one_error_line(missing)


def test_a_group_continues_and_the_start_can_be_chosen(broker):
    produce(broker.url, "t", [f"m{i}" for i in range(10)])
    first = myqueue(broker.address, "consume", "t", "--group", "g", "--max", "4")
    assert first.stdout.split() == ["m0", "m1", "m2", "m3"]
    rest = myqueue(broker.address, "consume", "t", "--group", "g")
    assert rest.stdout.split() == [f"m{i}" for i in range(4, 10)]
    nothing = myqueue(broker.address, "consume", "t", "--group", "g")
    assert (nothing.returncode, nothing.stdout) == (0, "")
    again = myqueue(
        broker.address, "consume", "t", "--group", "g", "--from-beginning", "--max", "2"
    )
    assert again.stdout.split() == ["m0", "m1"]
    after = myqueue(broker.address, "consume", "t", "--group", "g", "--max", "1")
    assert after.stdout.split() == ["m2"]

    # --from-end with --follow: only what is produced after it started.
    proc = start(broker.address, "consume", "t", "--from-end", "--follow")
    time.sleep(1.5)  # registered and moved to the end
    produce(broker.url, "t", ["new"])
    assert proc.stdout is not None and proc.stdout.readline() == "new\n"
    proc.send_signal(signal.SIGINT)
    out, err = finish(proc)
    assert (proc.returncode, out, err) == (0, "", "")


def test_follow_stops_on_ctrl_c_within_2s_and_its_group_continues_after_the_last_line(broker):
    total = 50_000
    messages = [f"m{i}" for i in range(total)]
    produced = myqueue(broker.address, "produce", "t", input="\n".join(messages).encode())
    assert produced.returncode == 0, produced.stderr

    proc = start(broker.address, "consume", "t", "--group", "tail", "--follow")
    assert proc.stdout is not None
    printed = [proc.stdout.readline().rstrip("\n") for _ in range(2000)]
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)  # while it is printing as fast as it can
    out, err = finish(proc)
    elapsed = time.monotonic() - sent
    assert proc.returncode == 0, err
    assert err == "" and elapsed < 2.0, (elapsed, err)
    printed += out.splitlines()
    assert printed == messages[: len(printed)], "in order, nothing skipped"
    assert len(printed) < total, "interrupted before the end"

    # The next run of the group starts right after the last line printed: none again, none lost.
    rest = myqueue(broker.address, "consume", "t", "--group", "tail")
    assert rest.returncode == 0
    assert rest.stdout.splitlines() == messages[len(printed) :]

    # Idle, waiting for messages: Ctrl-C also ends it at once, with status 0.
    proc = start(broker.address, "consume", "t", "--group", "tail", "--follow")
    time.sleep(1.0)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = finish(proc)
    assert (proc.returncode, out, err) == (0, "", "")
    assert time.monotonic() - sent < 2.0


def test_follow_also_stops_cleanly_on_sigterm(broker):
    produce(broker.url, "t", ["one"])
    proc = start(broker.address, "consume", "t", "--group", "g", "--follow")
    assert proc.stdout is not None and proc.stdout.readline() == "one\n"
    proc.send_signal(signal.SIGTERM)
    out, err = finish(proc)
    assert (proc.returncode, out, err) == (0, "", "")
    produce(broker.url, "t", ["two"])
    assert myqueue(broker.address, "consume", "t", "--group", "g").stdout == "two\n"


def test_follow_says_in_one_line_when_it_cannot_store_its_position(broker):
    produce(broker.url, "t", ["one"])
    proc = start(broker.address, "consume", "t", "--group", "g", "--follow")
    assert proc.stdout is not None and proc.stdout.readline() == "one\n"
    broker.kill()
    proc.send_signal(signal.SIGINT)
    out, err = finish(proc, timeout=30)
    assert (proc.returncode, out) == (0, "")
    assert len(err.splitlines()) == 1 and "could not store the consumed positions" in err, err


def test_a_reader_that_goes_away_ends_consume_quietly(broker):
    produce(broker.url, "t", [f"m{i}" for i in range(100)])
    proc = start(broker.address, "consume", "t", "--follow")
    assert proc.stdout is not None and proc.stdout.readline() == "m0\n"
    proc.stdout.close()  # `myqueue consume t --follow | head -1`
    produce(broker.url, "t", ["more"])  # like `tail -f`, it notices at its next line
    assert proc.wait(timeout=10) == 0
    assert proc.stderr is not None and proc.stderr.read() == ""


def test_lag_shows_a_named_group_and_says_what_it_cannot_show(older_broker):
    broker, address = older_broker
    produce(broker.url, "a", [f"m{i}" for i in range(10)])
    produce(broker.url, "b", ["x"])
    myqueue(broker.address, "consume", "a", "--group", "g", "--max", "4")

    table = myqueue(address, "lag", "--group", "g")
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines() == [
        "TOPIC  CONSUMER  POSITION  END  LAG",
        "a      g         4         10   6",
        "b      g         0         1    1",
    ]
    assert "cannot list consumers" in one_error_line(table)

    rows = json.loads(myqueue(address, "lag", "a", "--group", "g", "--json").stdout)
    assert rows == [{"topic": "a", "consumer": "g", "position": 4, "end": 10, "lag": 6}]

    unnamed = myqueue(address, "lag")
    assert unnamed.returncode == 1 and unnamed.stdout == ""
    assert "--group" in one_error_line(unnamed)


# --------------------------------------------------------------------------------------------
# describe, delete and lag against the broker, which has GET/DELETE /topics/{name} (issue 9),
# and against a broker from before it: the real broker behind a stand-in proxy that answers
# those paths 404 not_found, as brokers without them did, and passes everything else on.
# --------------------------------------------------------------------------------------------


def _register_consumer(url: str, topic: str) -> int:
    reply = requests.post(f"{url}/consumer/register", json={"topic": topic}, timeout=30)
    assert reply.status_code == 200, reply.text
    return int(reply.json()["consumer_id"])


def test_describe_delete_and_lag_on_a_broker_that_has_them(broker):
    produce(broker.url, "t", [f"m{i}" for i in range(15)])
    done = myqueue(broker.address, "consume", "t", "--group", "g", "--max", "10")
    assert done.returncode == 0, done.stderr
    anonymous = _register_consumer(broker.url, "t")
    described = requests.get(f"{broker.url}/topics/t", timeout=30).json()
    group = described["consumers"][0]["consumer_id"]
    assert described["consumers"] == [
        {"consumer_id": group, "group": "g", "position": 10, "lag": 5},
        {"consumer_id": anonymous, "group": None, "position": 0, "lag": 15},
    ]

    shown = myqueue(broker.address, "describe", "t")
    assert shown.returncode == 0, shown.stderr
    # m0..m9 are 2 bytes, m10..m14 3; retention counts 64 more per message.
    held = 10 * 2 + 5 * 3 + 15 * 64
    width = len("consumer_id")
    assert shown.stdout.splitlines() == [
        "name: t",
        "start_offset: 0",
        "end_offset: 15",
        "messages: 15",
        f"bytes: {held}",
        "retention_ms: 604800000 (the broker's default)",
        "retention_bytes: unlimited (the broker's default)",
        f"created_ms: {described['created_ms']}",
        "consumers:",
        "  consumer_id  group  position  lag",
        f"  {str(group).ljust(width)}  g      10        5",
        f"  {str(anonymous).ljust(width)}  -      0         15",
    ]
    as_json = json.loads(myqueue(broker.address, "describe", "t", "--json").stdout)
    assert as_json == {k: v for k, v in described.items() if k != "status"}
    missing = myqueue(broker.address, "describe", "x")
    assert missing.returncode == 1 and "does not exist" in one_error_line(missing)

    table = myqueue(broker.address, "lag")
    assert table.returncode == 0 and table.stderr == ""
    assert [line.split() for line in table.stdout.splitlines()] == [
        ["TOPIC", "CONSUMER", "POSITION", "END", "LAG"],
        ["t", "g", "10", "15", "5"],
        ["t", f"#{anonymous}", "0", "15", "15"],
    ]
    rows = json.loads(myqueue(broker.address, "lag", "--group", "g", "--json").stdout)
    assert rows == [{"topic": "t", "consumer": "g", "position": 10, "end": 15, "lag": 5}]

    deleted = myqueue(broker.address, "delete", "t")
    assert (deleted.returncode, deleted.stdout) == (0, "Topic 't' deleted\n")
    assert myqueue(broker.address, "topics").stdout == ""
    assert myqueue(broker.address, "delete", "t").returncode == 1
    myqueue(broker.address, "create", "t")
    deleted = myqueue(broker.address, "delete", "t", "--json")
    assert json.loads(deleted.stdout) == {
        "topic": "t",
        "deleted": True,
        "message": "Topic 't' deleted",
    }
    assert myqueue(broker.address, "delete", "x").returncode == 1


def test_describe_shows_a_topic_s_own_retention_and_no_consumers(broker):
    reply = requests.post(
        f"{broker.url}/topics",
        json={"name": "audit", "retention_ms": 3_600_000, "retention_bytes": 1_000_000},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    shown = myqueue(broker.address, "describe", "audit")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[5:7] == [
        "retention_ms: 3600000 (this topic's)",
        "retention_bytes: 1000000 (this topic's)",
    ]
    assert lines[-1] == "consumers: []"


def test_lag_counts_from_the_start_once_retention_removed_what_a_group_had_not_read(
    make_broker, tmp_path
):
    # 2,000 bytes kept: about twenty 100-byte messages (36 bytes of payload, 64 counted more).
    broker = make_broker("--data-dir", str(tmp_path / "data"), "--retention-bytes", "2000")
    myqueue(broker.address, "create", "t")
    assert myqueue(broker.address, "consume", "t", "--group", "g").returncode == 0
    for batch in range(10):
        produce(broker.url, "t", [f"{i:036d}" for i in range(batch * 10, batch * 10 + 10)])
        time.sleep(0.3)  # a retention pass (every 250 ms) closes each batch into a chunk
    deadline = time.monotonic() + 10
    while (start := requests.get(f"{broker.url}/topics/t", timeout=30).json()["start_offset"]) == 0:
        assert time.monotonic() < deadline, "retention removed nothing"
        time.sleep(0.1)
    time.sleep(0.6)  # the passes after the last batch
    described = requests.get(f"{broker.url}/topics/t", timeout=30).json()
    start = described["start_offset"]
    assert [(c["group"], c["position"], c["lag"]) for c in described["consumers"]] == [
        ("g", 0, 100 - start)
    ]
    # The group, still at 0, continues from the start: its row says so.
    rows = json.loads(myqueue(broker.address, "lag", "--json").stdout)
    assert rows == [
        {"topic": "t", "consumer": "g", "position": start, "end": 100, "lag": 100 - start}
    ]


class _BeforeIssue9(BaseHTTPRequestHandler):
    """Passes requests on to ``self.server.upstream``, except ``/topics/{name}``: 404
    ``not_found``, as a broker from before issue 9 answered."""

    def _relay(self) -> None:
        path = self.path.split("?")[0]
        if path.startswith("/topics/"):
            self._answer(
                404, b'{"status":"failure","message":"no such endpoint","code":"not_found"}'
            )
            return
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else None
        assert isinstance(self.server, _ProxyServer)
        upstream = self.server.upstream
        headers = {"content-type": self.headers.get("content-type") or "application/json"}
        reply = requests.request(
            self.command, upstream + self.path, data=body, headers=headers, timeout=60
        )
        self._answer(reply.status_code, reply.content)

    do_GET = do_POST = do_DELETE = do_PATCH = _relay

    def _answer(self, status: int, data: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


class _ProxyServer(ThreadingHTTPServer):
    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _BeforeIssue9)
        self.upstream = upstream


@pytest.fixture
def older_broker(broker):
    """(the real broker, the address of a stand-in for a broker from before issue 9 in front
    of it)."""
    server = _ProxyServer(broker.url)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield broker, f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
