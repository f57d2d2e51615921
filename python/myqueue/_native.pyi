"""Type stubs and documentation of myqueue's compiled core.

Defaults are written ``...`` here: each is defined once in the Rust core
(``myqueue-py/src/client/defaults.rs``) and can be read at run time from ``PRODUCER_DEFAULTS``
and ``CONSUMER_DEFAULTS``, keyed by parameter name.
"""

from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Final, Literal, TypedDict

from typing_extensions import Self, disjoint_base, final

__all__ = [
    "CONSUMER_DEFAULTS",
    "MAX_FETCH_BYTES",
    "MAX_FETCH_MESSAGES",
    "PRODUCER_DEFAULTS",
    "Admin",
    "BrokerUnavailable",
    "ClientClosed",
    "ConsumerInfo",
    "DeliveryFailed",
    "Forbidden",
    "Message",
    "MessageIterator",
    "MyConsumer",
    "MyProducer",
    "MyQueueError",
    "MyQueueTimeout",
    "RequestRejected",
    "SendFuture",
    "TlsError",
    "TopicInfo",
    "TopicNotFound",
    "Unauthorized",
    "__version__",
]

__version__: str

class _ProducerDefaults(TypedDict):
    broker: str
    linger_ms: float
    batch_size: int
    buffer_size: int
    delivery_timeout: float
    request_timeout: float
    max_message_bytes: int
    max_in_flight: int

class _ConsumerDefaults(TypedDict):
    broker: str
    fetch_max_messages: int
    fetch_max_bytes: int
    buffer_messages: int
    buffer_bytes: int
    auto_commit_interval: float
    request_timeout: float
    stop_timeout: float
    """The default ``timeout`` of ``MyConsumer.stop()`` and ``close()``."""

PRODUCER_DEFAULTS: Final[_ProducerDefaults]
"""``MyProducer``'s defaults by parameter name (a copy: changing it changes nothing)."""
CONSUMER_DEFAULTS: Final[_ConsumerDefaults]
"""``MyConsumer``'s defaults by parameter name (a copy: changing it changes nothing)."""
MAX_FETCH_MESSAGES: Final[int]
"""The broker's limit on messages per fetch: the most ``fetch_max_messages`` may be."""
MAX_FETCH_BYTES: Final[int]
"""The broker's limit on payload bytes per fetch: the most ``fetch_max_bytes`` may be."""

class MyQueueError(Exception):
    """Base class of every myqueue error.

    ``code`` is the broker's machine-readable error code (e.g. ``"topic_not_found"``) when the
    broker answered with one, else ``None``.
    """

    code: str | None

class BrokerUnavailable(MyQueueError):
    """The broker cannot be reached, or cannot serve now (it answered 503)."""

class TopicNotFound(MyQueueError):
    """The topic does not exist (consumers need an existing topic)."""

class RequestRejected(MyQueueError):
    """The broker refused the request; ``code`` says why (e.g. ``"payload_too_large"``)."""

class Unauthorized(RequestRejected):
    """The broker needs a token and got none, or one it does not know (HTTP 401,
    ``code == "unauthorized"``): pass ``token=`` or set ``MYQUEUE_TOKEN``. Never retried."""

class Forbidden(RequestRejected):
    """The token may not do this: produce to or consume from this topic, or administer topics
    (HTTP 403, ``code == "forbidden"``). Never retried."""

class TlsError(MyQueueError):
    """TLS failed: the broker's certificate is expired, not signed by a trusted CA (pass
    ``ca_file=``), or for another host name; or the broker does not serve HTTPS. Never
    retried."""

class DeliveryFailed(MyQueueError):
    """Messages accepted by ``send()`` could not be delivered within ``delivery_timeout``."""

class ClientClosed(MyQueueError):
    """The producer or consumer was stopped (e.g. ``send()`` after ``stop()``)."""

class MyQueueTimeout(MyQueueError):
    """A wait ran out of time (``flush(timeout)``, ``stop(timeout)``, ``SendFuture.get(timeout)``)."""

@final
class SendFuture:
    """The delivery of one message, returned by ``MyProducer.send()``."""

    def get(self, timeout: float | None = None) -> int:
        """Waits until the message is stored and returns its offset in the topic.

        Raises the delivery error (``DeliveryFailed``), or ``MyQueueTimeout`` after
        ``timeout`` seconds.
        """
    def done(self) -> bool:
        """True once the message was stored or given up."""
    def succeeded(self) -> bool:
        """True once the message was stored."""
    def failed(self) -> bool:
        """True once the message was given up."""

@disjoint_base
class MyProducer:
    """Publishes messages to topics, in batches, in the background.

    ``MyProducer(topics, broker)`` registers a producer for each topic at once and raises
    ``BrokerUnavailable`` if the broker cannot be reached. Sending to a topic not in
    ``topics`` registers it on the fly (creating the topic if needed).

    Delivery is at least once into the log and stored once: a batch retried after a lost
    response or a broker restart is recognised by its sequence number and not stored twice.
    Transient failures are retried with backoff for up to ``delivery_timeout`` seconds.

    ``broker`` is ``"host:port"``, ``"http://host:port"`` or ``"https://host:port"``. Keyword
    options (defaults in ``PRODUCER_DEFAULTS``):
        linger_ms: how long a batch waits for more messages before it is sent.
        batch_size: bytes of messages per batch request.
        buffer_size: bytes of accepted, undelivered messages at most; ``send()`` and
            ``can_send()`` wait while the buffer is full.
        delivery_timeout: seconds a batch is retried before it is given up.
        request_timeout: seconds one HTTP request may take.
        max_message_bytes: largest message ``send()`` accepts (by default the broker's
            default limit).
        max_in_flight: batches per topic sent before the first is answered, 1 to 5 (the
            batches the broker recognises when resent); order and "stored once" hold for
            any value. ``ValueError`` outside that range.

    Security (a broker started with ``--auth-file`` or ``--tls-cert``):
        token: the bearer token; default: env ``MYQUEUE_TOKEN``. Without a token the
            broker has or with one it does not know, calls raise ``Unauthorized``; a token
            not allowed on a topic raises ``Forbidden``. Neither is retried.
        ca_file: a PEM file of the CA certificates to trust for ``broker="https://..."``
            instead of the system's; default: env ``MYQUEUE_CA_FILE``. A certificate that is
            expired, untrusted or for another host raises ``TlsError`` at once.

    Several threads may share one producer. A producer used in a process forked after it
    was created (multiprocessing, gunicorn) starts afresh in the child: the parent's
    buffered messages are left to the parent, never sent twice.
    """

    def __new__(
        cls,
        topics: Sequence[str] | str | None = None,
        broker: str = ...,
        *,
        linger_ms: float = ...,
        batch_size: int = ...,
        buffer_size: int = ...,
        delivery_timeout: float = ...,
        request_timeout: float = ...,
        max_message_bytes: int = ...,
        max_in_flight: int = ...,
        token: str | None = None,
        ca_file: str | None = None,
    ) -> Self: ...
    def send(self, topic: str, value: bytes | str, *, timeout: float | None = None) -> SendFuture:
        """Queues ``value`` (UTF-8 bytes or str) for ``topic`` and returns at once.

        Waits only while the buffer is full: for ever by default, at most ``timeout`` seconds
        if given (then it raises ``MyQueueTimeout`` and the message is not accepted; ``0``
        never waits). Raises ``ValueError`` for bytes that are not UTF-8, an invalid topic
        name or a message over ``max_message_bytes``, and ``ClientClosed`` after ``stop()``.
        """
    def can_send(self) -> bool:
        """True while the producer is open and healthy; False once stopped, or after a
        message could not be delivered. Waits while the buffer is full (back-pressure)."""
    def flush(self, timeout: float | None = None) -> None:
        """Sends everything buffered now and waits until it is stored.

        Raises ``DeliveryFailed`` if messages failed meanwhile, ``MyQueueTimeout`` after
        ``timeout`` seconds.
        """
    def stop(self, timeout: float | None = None) -> None:
        """Delivers every message ``send()`` accepted, then closes the producer.

        Raises ``DeliveryFailed`` saying how many messages could not be delivered, or
        ``MyQueueTimeout`` after ``timeout`` seconds (delivery then goes on in the background).
        """
    def close(self, timeout: float | None = None) -> None:
        """Alias of ``stop()``."""
    @property
    def closed(self) -> bool:
        """True once stopped, or after a delivery failure."""
    @property
    def broker(self) -> str:
        """The broker's base URL."""
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        """Calls ``stop()``."""

@final
class Message:
    """A consumed message."""

    @property
    def topic(self) -> str:
        """The topic it was read from."""
    @property
    def value(self) -> bytes:
        """The message as UTF-8 bytes (``str(msg)`` gives the text)."""
    @property
    def offset(self) -> int:
        """Its position in the topic: 0, 1, 2, …"""
    @property
    def timestamp(self) -> int:
        """When the broker stored it, in milliseconds since the Unix epoch."""

@final
class MessageIterator(Iterator[Message]):
    """What ``MyConsumer.get_next()`` returns."""

    def __iter__(self) -> MessageIterator: ...
    def __next__(self) -> Message: ...

@disjoint_base
class MyConsumer:
    """Reads topics in order, each message once, prefetching in the background.

    ``MyConsumer(topics, broker)`` registers one consumer per topic and raises
    ``TopicNotFound`` naming a topic that does not exist, ``BrokerUnavailable`` if the broker
    cannot be reached.

    Without ``group``, the consumer is anonymous: it starts where ``start`` says (by default
    the broker's ``--consumer-start``, itself by default the beginning of each topic). With
    ``group="name"`` it is durable: a consumer registered again with the same group and topic
    continues where the last one stopped, whatever ``start`` says.

    A message counts as consumed once the program has taken it and asked for the next one
    (or called ``stop()``; not when a ``with`` block ends with an exception). Consumed
    positions are stored on the broker every ``auto_commit_interval`` seconds and by
    ``stop()``; a program that crashes while handling a message gets it again when it
    restarts with the same group (at least once).

    Retention: a consumer that lags by more than a topic keeps misses the messages retention
    removed before it read them. It then warns once per gap, with a ``RuntimeWarning`` naming
    the topic, how many messages it missed and the offset it continues from, and carries on
    from the topic's oldest message (``warnings.simplefilter("error", RuntimeWarning)`` turns
    the warning into an exception raised from ``get_next()`` or ``poll()``; the message comes
    with the next call).

    ``broker`` is ``"host:port"``, ``"http://host:port"`` or ``"https://host:port"``. Keyword
    options (defaults in ``CONSUMER_DEFAULTS``):
        group: a durable consumer name (letters, digits, '.', '_', '-'); none by default.
        start: where a consumer starts when this registration creates it: ``"beginning"``
            (everything the topic holds) or ``"end"`` (only messages produced after it
            registered). A group that already has a position keeps it. Default: the broker's
            ``--consumer-start`` (``"beginning"`` unless the broker was started otherwise).
        fetch_max_messages: messages per fetch request at most (at most
            ``MAX_FETCH_MESSAGES``).
        fetch_max_bytes: payload bytes per fetch request at most, past its first message
            (at most ``MAX_FETCH_BYTES``).
        buffer_messages: messages prefetched per topic at most.
        buffer_bytes: payload bytes prefetched per topic at most.
        auto_commit_interval: seconds between commits of consumed positions.
        request_timeout: seconds one HTTP request may take (on top of the long poll).

    Security (a broker started with ``--auth-file`` or ``--tls-cert``):
        token: the bearer token; default: env ``MYQUEUE_TOKEN``. Without a token the
            broker has or with one it does not know, calls raise ``Unauthorized``; a token
            not allowed on a topic raises ``Forbidden``. Neither is retried.
        ca_file: a PEM file of the CA certificates to trust for ``broker="https://..."``
            instead of the system's; default: env ``MYQUEUE_CA_FILE``. A certificate that is
            expired, untrusted or for another host raises ``TlsError`` at once.
    """

    def __new__(
        cls,
        topics: Sequence[str] | str,
        broker: str = ...,
        *,
        group: str | None = None,
        start: Literal["beginning", "end"] | None = None,
        fetch_max_messages: int = ...,
        fetch_max_bytes: int = ...,
        buffer_messages: int = ...,
        buffer_bytes: int = ...,
        auto_commit_interval: float = ...,
        request_timeout: float = ...,
        token: str | None = None,
        ca_file: str | None = None,
    ) -> Self: ...
    def get_next(self, timeout: float | None = None) -> MessageIterator:
        """Messages of all topics, taken in turn, as they arrive.

        Waits for new messages without polling (the broker holds the request until one
        arrives). With ``timeout``, the iteration ends after that many seconds without a
        message. It ends when ``stop()`` is called (also from another thread). Ctrl-C raises
        ``KeyboardInterrupt`` at once.
        """
    def __iter__(self) -> MessageIterator:
        """Same as ``get_next()``."""
    def poll(self, timeout: float | None = None) -> Message | None:
        """The next message, or None after ``timeout`` seconds without one (or once stopped)."""
    def size(self, topic: str) -> int:
        """Messages in ``topic`` that this consumer has not consumed yet (the message the
        program holds counts until it asks for the next one)."""
    def commit(self) -> None:
        """Stores the consumed positions on the broker now."""
    def seek(self, topic: str, offset: int) -> int:
        """Continues ``topic`` from ``offset``; returns the new position."""
    def seek_to_beginning(self, topic: str) -> int:
        """Replays ``topic`` from its first message; returns the new position (0)."""
    def seek_to_end(self, topic: str) -> int:
        """Skips what ``topic`` holds now; returns the new position."""
    def stop(self, timeout: float | None = ...) -> None:
        """Ends ``get_next()`` (also from another thread) and stores the final positions,
        waiting up to ``timeout`` seconds (default ``CONSUMER_DEFAULTS["stop_timeout"]``;
        ``None``: no limit). If they cannot be stored (the broker is down), a
        ``RuntimeWarning`` says so: the messages taken since the last commit will be delivered
        again, nothing is lost. A ``with`` block's end waits as long."""
    def close(self, timeout: float | None = ...) -> None:
        """Alias of ``stop()``."""
    @property
    def topics(self) -> list[str]:
        """The subscribed topics."""
    @property
    def group(self) -> str | None:
        """The durable group name, if any."""
    @property
    def broker(self) -> str:
        """The broker's base URL."""
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        """Stops like ``stop()``; when the block ends with an exception, the message being
        handled does not count as consumed, so it is delivered again."""

@final
class ConsumerInfo:
    """A consumer of a topic, as ``TopicInfo.consumers`` lists it."""

    @property
    def consumer_id(self) -> int: ...
    @property
    def group(self) -> str | None:
        """Its durable group, or None for an anonymous consumer."""
    @property
    def position(self) -> int:
        """The next offset it consumes, as stored (before the topic's start, it continues
        from the start)."""
    @property
    def lag(self) -> int:
        """Messages after its position: ``end_offset - max(position, start_offset)``."""

@final
class TopicInfo:
    """What a topic holds, its retention and its consumers (``Admin.describe``)."""

    @property
    def name(self) -> str: ...
    @property
    def start_offset(self) -> int:
        """The oldest offset kept: retention removed every message before it."""
    @property
    def end_offset(self) -> int:
        """The offset the next message gets."""
    @property
    def messages(self) -> int:
        """Messages held: ``end_offset - start_offset``."""
    @property
    def bytes(self) -> int:
        """Bytes held: payload plus 64 per message (what ``retention_bytes`` counts)."""
    @property
    def retention_ms(self) -> int | None:
        """The topic's own retention by age, in milliseconds; None: the broker's default."""
    @property
    def retention_bytes(self) -> int | None:
        """The topic's own retention by size, in bytes; None: the broker's default."""
    @property
    def effective_retention_ms(self) -> int | None:
        """The retention by age in force (the topic's, else the broker's); None: unlimited."""
    @property
    def effective_retention_bytes(self) -> int | None:
        """The retention by size in force (the topic's, else the broker's); None: unlimited."""
    @property
    def created_ms(self) -> int:
        """When the topic was created, in milliseconds since the Unix epoch."""
    @property
    def consumers(self) -> list[ConsumerInfo]:
        """Every consumer registered to the topic, by id."""

@final
class Admin:
    """Looks after a broker's topics: creates them with retention settings, describes them,
    changes their retention, deletes them.

    ``Admin(broker)`` checks only the address; each call is one request. ``broker`` and
    ``request_timeout`` (seconds per request) default as for ``MyProducer``
    (``PRODUCER_DEFAULTS``). Refusals raise
    ``TopicNotFound`` (an unknown topic), ``RequestRejected`` (``code`` says why, e.g.
    ``"topic_exists"``) or ``BrokerUnavailable``; bad arguments raise ``ValueError`` or
    ``TypeError`` before any request. ``token`` and ``ca_file`` are as for ``MyProducer``
    (creating, changing and deleting topics needs a token with ``admin``).

    Retention keeps a topic's newest messages: by age (``retention_ms``) and by size
    (``retention_bytes``, payload plus 64 per message). The broker removes the oldest
    messages in chunks of about an eighth of the retention, in the background; the topic's
    offsets never restart (its ``start_offset`` moves forward).
    """

    def __new__(
        cls,
        broker: str = ...,
        *,
        request_timeout: float = ...,
        token: str | None = None,
        ca_file: str | None = None,
    ) -> Self: ...
    def create_topic(
        self,
        name: str,
        retention_ms: int | None = None,
        retention_bytes: int | None = None,
    ) -> None:
        """Creates an empty topic. ``retention_ms`` / ``retention_bytes``: positive ints, or
        None for the broker's ``--retention`` / ``--retention-bytes``. Raises
        ``RequestRejected`` (code ``"topic_exists"``) if it exists."""
    def describe(self, name: str) -> TopicInfo:
        """What the topic holds, its retention and its consumers."""
    def set_retention(
        self,
        name: str,
        *,
        retention_ms: int | None = ...,
        retention_bytes: int | None = ...,
    ) -> TopicInfo:
        """Changes the topic's retention: an int sets a limit, None returns it to the
        broker's default, a keyword left out leaves it as it is (at least one is needed).
        Returns the topic as ``describe()`` does. A lower limit applies at the broker's next
        retention pass."""
    def delete_topic(self, name: str) -> None:
        """Deletes the topic with its messages, producers and consumers. Their ids are never
        valid again (producers and consumers using them get errors); a topic created again
        under the name starts empty, at offset 0."""
    def list_topics(self) -> list[str]:
        """Every topic's name, sorted."""
    @property
    def broker(self) -> str:
        """The broker's base URL."""
