"""``myqueue produce`` and ``myqueue consume``: the two commands that move messages.

Both go through the client library (``MyProducer``, ``MyConsumer``), so they batch, retry and
prefetch exactly as a program using the library does.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
import warnings
from types import FrameType
from typing import IO, Any, final

from myqueue._exit import INTERRUPTED, OK, USAGE, CliError
from myqueue._native import Message, MyConsumer, MyProducer

# Without --follow, `consume` gives up when nothing arrives for this long although the topics
# held more when it started (their messages were deleted meanwhile, or the broker is down).
IDLE_LIMIT = 30.0
# How often a waiting `consume` looks at its stop flag: the delay of a Ctrl-C.
STOP_CHECK = 0.1
# How often the progress line of `produce` is redrawn.
PROGRESS_EVERY = 0.2


def produce(args: argparse.Namespace, broker: str) -> int:
    """Sends each line of the input as one message; the count and rate go to stderr."""
    topic: str = args.topic
    with _input(args.file) as source:
        producer = MyProducer([topic], broker)
        started = time.monotonic()
        sent, failure = 0, None
        interrupted = False
        try:
            sent, failure = _send_lines(producer, topic, source, started)
        except KeyboardInterrupt:
            interrupted = True
    # Everything accepted is delivered before the report (a second Ctrl-C abandons it).
    producer.stop()
    seconds = time.monotonic() - started
    rate = sent / seconds if seconds > 0 else 0.0
    report = f"produced {sent:,} messages to '{topic}' in {seconds:.2f} s ({rate:,.0f} messages/s)"
    print(("interrupted: " if interrupted else "") + report, file=sys.stderr)
    if args.json:
        summary = {"topic": topic, "messages": sent, "seconds": round(seconds, 3), "rate": rate}
        _write(json.dumps(summary).encode())
    if failure is not None:
        raise CliError(failure)
    return INTERRUPTED if interrupted else OK


def _input(path: str | None) -> IO[bytes]:
    """The file at ``path``, or stdin; bytes either way (the producer checks the UTF-8)."""
    if path is None:
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except OSError as err:
        raise CliError(f"cannot read {path}: {err.strerror or err}", USAGE) from None


def _send_lines(
    producer: MyProducer, topic: str, source: IO[bytes], started: float
) -> tuple[int, str | None]:
    """Sends every line; returns how many, and why it stopped early (a line it refused)."""
    # A progress line only on a terminal, and not while someone types the lines at it.
    progress = sys.stderr.isatty() and not source.isatty()
    sent = 0
    shown = started
    try:
        for line in source:
            try:
                producer.send(topic, _strip_newline(line))
            except ValueError as err:  # not UTF-8, or over the size limit
                return sent, f"line {sent + 1}: {err}"
            sent += 1
            if progress and time.monotonic() - shown >= PROGRESS_EVERY:
                shown = time.monotonic()
                rate = sent / (shown - started)
                sys.stderr.write(f"\rsent {sent:,} messages ({rate:,.0f}/s) ")
                sys.stderr.flush()
    finally:
        if progress:
            sys.stderr.write("\r" + " " * 60 + "\r")
    return sent, None


def _strip_newline(line: bytes) -> bytes:
    if line.endswith(b"\r\n"):
        return line[:-2]
    if line.endswith(b"\n"):
        return line[:-1]
    return line


def consume(args: argparse.Namespace, broker: str) -> int:
    """Prints messages, one per line, until the topics are read (or, with --follow, until
    Ctrl-C). What was printed, and only that, counts as consumed for --group."""
    with _StopSignals() as stop:
        consumer = MyConsumer(args.topics, broker, group=args.group)
        try:
            for topic in args.topics:
                # MyConsumer has no `start=` yet: move the fresh registration to the start
                # asked for (POST /consumer/commit with "beginning" or "end").
                if args.from_end:
                    consumer.seek_to_end(topic)
                elif args.from_beginning:
                    consumer.seek_to_beginning(topic)
            # Without --follow: what the topics hold now, after this consumer's positions.
            left: dict[str, int] | None = None
            if not args.follow:
                left = {topic: consumer.size(topic) for topic in args.topics}
            printed = 0
            idle_since = time.monotonic()
            while not stop.requested and (args.max is None or printed < args.max):
                if left is not None and not any(n > 0 for n in left.values()):
                    break
                # A Ctrl-C only sets `stop.requested`: the wait is short so that it is seen
                # soon, and a message is never taken without being printed.
                msg = consumer.poll(STOP_CHECK)
                if msg is None:
                    if left is not None and time.monotonic() - idle_since > IDLE_LIMIT:
                        missing = sum(left.values())
                        raise CliError(
                            f"no message for {IDLE_LIMIT:.0f} s although {missing} more were "
                            "expected; stopping"
                        )
                    continue
                idle_since = time.monotonic()
                _write(_render(msg) if args.json else msg.value)
                printed += 1
                if left is not None and left.get(msg.topic, 0) > 0:
                    left[msg.topic] -= 1
        except BaseException:
            # The message being written (if any) was not printed: it stays unconsumed.
            _stop(consumer, failed=True)
            raise
        _stop(consumer, failed=False)
    return OK


def _stop(consumer: MyConsumer, *, failed: bool) -> None:
    """Stops the consumer and stores its positions; the message in hand counts as consumed
    unless ``failed``. A position that cannot be stored is reported in one line on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        if failed:
            consumer.__exit__(*sys.exc_info())
        else:
            consumer.stop()
    for warning in caught:
        print(f"myqueue: {' '.join(str(warning.message).split())}", file=sys.stderr)


def _render(msg: Message) -> bytes:
    record = {
        "topic": msg.topic,
        "offset": msg.offset,
        "timestamp": msg.timestamp,
        "value": str(msg),
    }
    return json.dumps(record, ensure_ascii=False).encode("utf-8")


def _write(line: bytes) -> None:
    # Bytes, so that the output is UTF-8 whatever the locale; flushed per message, so that a
    # message counts as consumed only once it is really out.
    out = sys.stdout.buffer
    out.write(line + b"\n")
    out.flush()


@final
class _StopSignals:
    """Ctrl-C (SIGINT) and SIGTERM set ``requested`` instead of raising, so that ``consume``
    stops between two messages and commits exactly what it printed.

    A signal that the process inherited as ignored stays ignored (``nohup``, background jobs):
    only Python's default handlers are replaced, and they are restored at the end.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
        for signum, default in defaults.items():
            if signal.getsignal(signum) is default:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
