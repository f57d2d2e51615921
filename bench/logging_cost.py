"""What one ``logger.info(...)`` costs the calling thread, through each handler.

    python3 bench/logging_cost.py [--calls 100000]

Times every call of ``logger.info("request %d handled in %.1f ms", i, 3.2)`` with
``perf_counter_ns`` (the timer's own cost is printed as a baseline) and prints the median and
p99 in microseconds, as a Markdown table, for:

- ``logging.NullHandler``: the logging module's own cost, no output;
- ``logging.FileHandler`` (a text format, then ``JsonFormatter``): a write(2) per record;
- ``myqueue.logging.QueueHandler`` (``JsonFormatter``, then the same text format): format the
  record and hand it to the shared producer; delivery runs on the client's own threads.

The QueueHandler rows run against a real broker (SQLite, a temporary directory, 127.0.0.1,
started and stopped here by its PID); their records are all delivered before the next row.
"""

from __future__ import annotations

import argparse
import logging
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from myqueue.logging import JsonFormatter, QueueHandler

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import BROKER

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


@contextmanager
def broker(directory: str) -> Iterator[str]:
    proc = subprocess.Popen(
        [str(BROKER), "--listen", "127.0.0.1:0", "--data-dir", directory],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        match = re.search(r"listening on http://(\S+)", proc.stdout.readline())
        assert match, "the broker did not start"
        yield match.group(1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def measure(handler: logging.Handler, calls: int) -> list[int]:
    """Nanoseconds of each logger.info() call, after a warm-up."""
    logger = logging.getLogger(f"bench.{id(handler)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    info = logger.info
    clock = time.perf_counter_ns
    for i in range(calls // 10):
        info("request %d handled in %.1f ms", i, 3.2)
    samples = []
    for i in range(calls):
        start = clock()
        info("request %d handled in %.1f ms", i, 3.2)
        samples.append(clock() - start)
    logger.removeHandler(handler)
    return samples


def timer_only(calls: int) -> list[int]:
    clock = time.perf_counter_ns
    samples = []
    for _ in range(calls):
        start = clock()
        samples.append(clock() - start)
    return samples


def row(name: str, samples: list[int]) -> str:
    ordered = sorted(samples)
    median = statistics.median(ordered) / 1000
    p99 = ordered[int(len(ordered) * 0.99)] / 1000
    return f"| {name} | {median:.2f} | {p99:.2f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100_000)
    calls = parser.parse_args().calls

    with tempfile.TemporaryDirectory(prefix="myqueue-bench-logging-") as tmp:

        def file_handler(formatter: logging.Formatter) -> logging.Handler:
            handler = logging.FileHandler(Path(tmp) / "bench.log")
            handler.setFormatter(formatter)
            return handler

        with broker(str(Path(tmp) / "data")) as address:

            def queue_handler(formatter: logging.Formatter) -> logging.Handler:
                return QueueHandler("bench-logs", address, formatter=formatter)

            cases: list[tuple[str, Callable[[], logging.Handler]]] = [
                ("NullHandler", logging.NullHandler),
                ("FileHandler, text format", lambda: file_handler(logging.Formatter(TEXT_FORMAT))),
                ("FileHandler, JsonFormatter", lambda: file_handler(JsonFormatter())),
                ("QueueHandler, JsonFormatter (default)", lambda: queue_handler(JsonFormatter())),
                (
                    "QueueHandler, text format",
                    lambda: queue_handler(logging.Formatter(TEXT_FORMAT)),
                ),
            ]
            print(f"{calls:,} calls per handler; {platform.python_version()}; {sys.platform}")
            print("| handler | median µs | p99 µs |")
            print("| --- | --- | --- |")
            print(row("(timer only)", timer_only(calls)))
            for name, make in cases:
                handler = make()
                samples = measure(handler, calls)
                handler.flush()  # QueueHandler: every record delivered before the next case
                dropped = getattr(handler, "dropped", 0)
                handler.close()
                print(row(name + (f" ({dropped} dropped)" if dropped else ""), samples))


if __name__ == "__main__":
    main()
