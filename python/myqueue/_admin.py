"""One-shot HTTP calls to the broker, for the ``myqueue`` command.

Producing and consuming go through the Rust core (``MyProducer``, ``MyConsumer``). The
administrative calls (list, create, describe and delete topics, a group's lag) are single
requests: the standard library's ``urllib`` does them, without a new dependency. Failures are
raised as the package's own exceptions, with ``code`` set to the broker's error code, exactly
as the core raises them.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from myqueue._native import (
    BrokerUnavailable,
    Forbidden,
    MyQueueError,
    RequestRejected,
    TlsError,
    TopicNotFound,
    Unauthorized,
)

DEFAULT_BROKER = "localhost:9092"
DEFAULT_PORT = 9092


class Unsupported(RequestRejected):
    """The broker has no such endpoint (it answered 404 ``not_found``): it is older than the
    call, e.g. ``GET /topics/{name}`` before the broker could describe topics."""


def base_url(broker: str) -> str:
    """``localhost:9092``, ``127.0.0.1:9092``, ``http://host:port`` or ``https://host:port`` →
    ``http(s)://host:port``.

    The same rules as the Rust client's: over plain HTTP ``localhost`` becomes 127.0.0.1 (the
    broker listens on IPv4), a missing port is 9092. Raises ``ValueError`` for anything else.
    """
    address = broker.strip().rstrip("/")
    scheme = "https" if address.startswith("https://") else "http"
    address = address.removeprefix("https://").removeprefix("http://")
    if not address or "://" in address or "/" in address:
        raise ValueError(
            f"broker must look like 'host:port', 'http://host:port' or 'https://host:port', "
            f"not {broker!r}"
        )
    if scheme == "http" and (address == "localhost" or address.startswith("localhost:")):
        address = "127.0.0.1" + address[len("localhost") :]
    if ":" not in address:
        address = f"{address}:{DEFAULT_PORT}"
    return f"{scheme}://{address}"


@dataclass(frozen=True)
class GroupLag:
    """Where a consumer group stands in one topic: its position, the topic's end, the gap."""

    topic: str
    group: str
    position: int
    end: int

    @property
    def lag(self) -> int:
        return max(self.end - self.position, 0)


class Admin:
    """The broker's administrative endpoints, one blocking request each."""

    def __init__(self, broker: str = DEFAULT_BROKER, *, timeout: float = 30.0) -> None:
        self.base = base_url(broker)
        self.timeout = timeout
        # The token and CA file as the Rust client reads them: MYQUEUE_TOKEN, MYQUEUE_CA_FILE.
        self._token = os.environ.get("MYQUEUE_TOKEN", "").strip() or None
        ca_file = os.environ.get("MYQUEUE_CA_FILE") or None
        tls = ssl.create_default_context(cafile=ca_file) if ca_file else None
        # No proxy: like the Rust client, talk to the broker directly whatever http_proxy says.
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=tls)
        )

    def topics(self) -> list[str]:
        """Every topic's name (``GET /topics``)."""
        topics = self._call("GET", "/topics")["topics"]
        return [str(name) for name in topics]

    def create_topic(self, name: str) -> str:
        """Creates a topic (``POST /topics``); returns the broker's message."""
        return str(self._call("POST", "/topics", {"name": name})["message"])

    def describe_topic(self, name: str) -> dict[str, Any]:
        """What the broker says of one topic (``GET /topics/{name}``), without ``status``: the
        fields of ``myqueue_wire::TopicResponse`` (``name``, ``start_offset``, ``end_offset``,
        ``messages``, ``bytes``, ``retention_ms`` and ``retention_bytes`` as set on the topic
        (None: the broker's default), ``retention`` in force (``ms``, ``bytes``; None:
        unlimited), ``created_ms``, and ``consumers``, each with ``consumer_id``, ``group``,
        ``position`` and ``lag``)."""
        body = self._call("GET", "/topics/" + _segment(name))
        body.pop("status", None)
        return body

    def delete_topic(self, name: str) -> str:
        """Deletes a topic with its messages and registrations (``DELETE /topics/{name}``);
        returns the broker's message."""
        return str(self._call("DELETE", "/topics/" + _segment(name))["message"])

    def group_lag(self, topic: str, group: str) -> GroupLag:
        """The lag of consumer group ``group`` in ``topic``.

        For a broker from before ``GET /topics/{name}``, which has no read-only call for this:
        it registers the group on the topic (which returns the group's existing consumer, or
        creates it at the topic's start) and asks ``/size`` (end − position) and
        ``/consumer/fetch`` (the end offset).
        """
        registered = self._call("POST", "/consumer/register", {"topic": topic, "group": group})
        consumer_id = int(registered["consumer_id"])
        query = {"topic": topic, "consumer_id": consumer_id}
        size = int(self._call("GET", "/size", query=query)["size"])
        fetched = self._call("GET", "/consumer/fetch", query={**query, "max_messages": 1})
        end = int(fetched["end_offset"])
        return GroupLag(topic=topic, group=group, position=end - size, end=end)

    def _call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        query: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        url = self.base + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            request.add_header("content-type", "application/json")
        if self._token:
            request.add_header("authorization", f"Bearer {self._token}")
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                status, raw = int(response.status), response.read()
        except urllib.error.HTTPError as err:
            with err:
                status, raw = int(err.code), err.read()
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", None) or err
            if isinstance(reason, ssl.SSLError):
                tls_error = TlsError(f"TLS with {self.base} failed: {reason}")
                raise _with_code(tls_error, None) from None
            unreachable = BrokerUnavailable(f"cannot reach the broker at {self.base}: {reason}")
            raise _with_code(unreachable, None) from None
        return _answer(self.base, method, path, status, raw)


def _segment(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _answer(base: str, method: str, path: str, status: int, raw: bytes) -> dict[str, Any]:
    """The JSON body of a success, or the matching exception."""
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        text = raw[:200].decode("utf-8", "replace")
        if status >= 500:
            raise _with_code(BrokerUnavailable(f"{base} answered HTTP {status}: {text}"), None)
        raise _with_code(RequestRejected(f"{base} answered HTTP {status}: {text}"), None)
    if 200 <= status < 300 and body.get("status") == "success":
        return body
    message = str(body.get("message") or f"HTTP {status}")
    code = body.get("code")
    code = code if isinstance(code, str) else None
    error: MyQueueError
    if status >= 500:
        error = BrokerUnavailable(message)
    elif status == 404 and code == "not_found":
        error = Unsupported(f"{message} ({method} {path})")
    elif code == "unauthorized":
        error = Unauthorized(message)
    elif code == "forbidden":
        error = Forbidden(message)
    elif code == "topic_not_found":
        error = TopicNotFound(message)
    else:
        error = RequestRejected(message)
    raise _with_code(error, code)


def _with_code(error: MyQueueError, code: str | None) -> MyQueueError:
    error.code = code
    return error
