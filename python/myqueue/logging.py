"""Python's ``logging`` into myqueue: ``QueueHandler`` sends each record to a topic.

    import logging
    from myqueue.logging import QueueHandler

    logging.getLogger().addHandler(QueueHandler("app-logs", broker="localhost:9092"))
    logging.getLogger().warning("disk %d%% full", 91)   # returns at once

or with ``logging.config.dictConfig``::

    {"version": 1,
     "formatters": {"json": {"()": "myqueue.logging.JsonFormatter"}},
     "handlers": {"queue": {"class": "myqueue.logging.QueueHandler", "topic": "app-logs",
                            "broker": "localhost:9092", "formatter": "json"}},
     "root": {"level": "INFO", "handlers": ["queue"]}}

The calling thread only formats the record and hands it to a ``MyProducer`` shared by every
handler of the same broker (and producer settings); the producer's background tasks batch and
deliver it, retrying while the broker is down (up to ``delivery_timeout``). Records still
pending are delivered when logging shuts down (``logging.shutdown()``, which runs at
interpreter exit), waiting at most ``close_timeout`` seconds.

When the producer's buffer is full (the broker has been down for a while, or records come
faster than it stores them), ``emit()`` waits up to ``max_block`` seconds for room; after that,
or at once with the default ``max_block=0``, the record is dropped and counted in
``QueueHandler.dropped`` (the first drop and the total at close are reported on stderr).
Logging never raises into the application and never waits longer than ``max_block``.
"""

from __future__ import annotations

import atexit
import json
import logging
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from myqueue._admin import DEFAULT_BROKER, base_url
from myqueue._native import ClientClosed, MyProducer, MyQueueError, MyQueueTimeout

__all__ = ["JsonFormatter", "QueueHandler"]

# The attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName"}
)


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object on one line.

    Keys: ``time`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger``, ``message`` (the
    message with its arguments applied), ``exception`` (the formatted traceback, only when the
    record has one), ``stack`` (only with ``stack_info=True``), then every field passed with
    ``extra=``, then ``fields`` (constant fields for every record, e.g. the service name).
    Values that JSON cannot hold are written as ``str(value)``.
    """

    def __init__(self, fields: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.fields = dict(fields or {})

    def format(self, record: logging.LogRecord) -> str:
        seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        entry: dict[str, Any] = {
            "time": f"{seconds}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            # Cached on the record like logging.Formatter does, for the other handlers.
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and key not in entry:
                entry[key] = value
        for key, value in self.fields.items():
            entry.setdefault(key, value)
        return json.dumps(entry, ensure_ascii=False, default=str)


@dataclass
class _Shared:
    """A producer and how many open handlers use it."""

    producer: MyProducer
    users: int
    close_timeout: float
    gave_up: bool = False  # delivery failed at exit: later closes do not wait again


_shared: dict[tuple[str, tuple[tuple[str, Any], ...]], _Shared] = {}
_shared_lock = threading.Lock()


class QueueHandler(logging.Handler):
    """A ``logging.Handler`` that sends each record to ``topic`` without blocking the caller.

    Arguments:
        topic: the topic the records go to (created if missing).
        broker: ``host:port`` of the broker (default ``localhost:9092``). The handler does not
            contact it when it is created: records logged while the broker is down are
            buffered and delivered once it is up.
        formatter: how a record becomes the message text (default ``JsonFormatter()``).
        level: the handler's level (default ``NOTSET``: everything its loggers pass on).
        max_block: seconds ``emit()`` may wait for room when the buffer is full; the record is
            dropped (and counted in ``dropped``) after that. 0 (default): never wait.
        close_timeout: seconds ``flush()``, ``close()`` and interpreter exit wait for pending
            records to be delivered (default 10).
        buffer_size, linger_ms, delivery_timeout: the shared ``MyProducer``'s settings (see
            its documentation); handlers with the same broker and settings share a producer.
    """

    def __init__(
        self,
        topic: str,
        broker: str = DEFAULT_BROKER,
        *,
        formatter: logging.Formatter | None = None,
        level: int | str = logging.NOTSET,
        max_block: float = 0.0,
        close_timeout: float = 10.0,
        buffer_size: int | None = None,
        linger_ms: float | None = None,
        delivery_timeout: float | None = None,
    ) -> None:
        super().__init__(level)
        if max_block < 0 or close_timeout < 0:
            raise ValueError("max_block and close_timeout must be non-negative seconds")
        self.topic = topic
        self.max_block = max_block
        self.close_timeout = close_timeout
        self.dropped = 0
        self.setFormatter(formatter or JsonFormatter())
        options: dict[str, Any] = {
            name: value
            for name, value in (
                ("buffer_size", buffer_size),
                ("linger_ms", linger_ms),
                ("delivery_timeout", delivery_timeout),
            )
            if value is not None
        }
        self._key = (base_url(broker), tuple(sorted(options.items())))
        with _shared_lock:
            shared = _shared.get(self._key)
            if shared is None:
                # No topics: creating the producer contacts no broker; the topic is
                # registered by the first delivery, which retries while the broker is down.
                producer = MyProducer(None, broker, **options)
                shared = _shared[self._key] = _Shared(producer, 0, close_timeout)
            shared.users += 1
            shared.close_timeout = max(shared.close_timeout, close_timeout)
            self._shared = shared
            self._producer = shared.producer
        self._closed = False

    def emit(self, record: logging.LogRecord) -> None:
        """Formats the record and hands it to the producer; drops it if the buffer stays full
        for ``max_block`` seconds."""
        try:
            text = self.format(record)
            self._producer.send(self.topic, text, timeout=self.max_block)
        except (MyQueueTimeout, ClientClosed) as err:
            self.dropped += 1
            if self.dropped == 1:
                why = "the buffer is full" if isinstance(err, MyQueueTimeout) else "it is closed"
                _report(
                    f"dropping log records for topic '{self.topic}': {why} "
                    "(counted in QueueHandler.dropped)"
                )
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 -- logging's rule: a failed emit never raises
            self.handleError(record)

    def flush(self) -> None:
        """Waits (up to ``close_timeout``) until every record emitted so far is delivered."""
        if self._shared.gave_up:
            return  # delivery already failed at exit: do not wait (or report) twice
        try:
            self._producer.flush(timeout=self.close_timeout)
        except MyQueueError as err:
            _report(f"log records for topic '{self.topic}' not delivered yet: {err}")

    def close(self) -> None:
        """Delivers what is pending (the last handler of a producer stops it), then closes."""
        with _shared_lock:
            if self._closed:
                return
            self._closed = True
            shared = self._shared
            shared.users -= 1
            last = shared.users == 0
            if last:
                del _shared[self._key]
        if last:
            _stop(shared)
        if self.dropped:
            _report(f"dropped {self.dropped} log record(s) for topic '{self.topic}'")
        super().close()


def _stop(shared: _Shared) -> None:
    try:
        shared.producer.stop(timeout=0.0 if shared.gave_up else shared.close_timeout)
    except MyQueueError as err:
        if not shared.gave_up:
            _report(f"log records not delivered: {err}")


def _flush_at_exit() -> None:
    """Delivers what every shared producer holds before the interpreter exits.

    Registered after ``logging`` registered ``logging.shutdown``, so it runs first: it also
    covers handlers that were dropped without being closed. The handlers' own ``close()``
    (from ``logging.shutdown``) then finds little or nothing left to send.
    """
    with _shared_lock:
        entries = list(_shared.values())
    for shared in entries:
        try:
            shared.producer.flush(timeout=shared.close_timeout)
        except MyQueueError as err:
            shared.gave_up = True
            _report(f"log records not delivered at exit: {err}")


def _report(message: str) -> None:
    """One line on stderr: logging's own failures cannot be logged through logging."""
    try:
        sys.stderr.write(f"myqueue.logging: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


atexit.register(_flush_at_exit)
