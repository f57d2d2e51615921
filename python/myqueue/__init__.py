"""myqueue: a client for the myqueue durable logging queue.

``MyProducer`` publishes messages to topics; ``MyConsumer`` reads topics in order; ``Admin``
creates, describes and deletes topics and sets their retention. The work (HTTP, batching,
retries, prefetching) is done by a Rust core in ``myqueue._native``; this package re-exports
it. See the type stubs (``_native.pyi``) for the documentation. The package also installs the
``myqueue`` command (``myqueue.cli``) and a logging handler (``myqueue.logging.QueueHandler``).

    from myqueue import Admin, MyConsumer, MyProducer

    with MyProducer(["logs"], broker="localhost:9092") as producer:
        producer.send("logs", b"DEBUG: hello")

    with MyConsumer(["logs"], broker="localhost:9092", group="printer") as consumer:
        for msg in consumer.get_next(timeout=1.0):
            print(msg.topic, msg.offset, str(msg))

    admin = Admin("localhost:9092")
    admin.set_retention("logs", retention_bytes=500_000_000)
    print(admin.describe("logs").messages)
"""

from myqueue._native import (
    CONSUMER_DEFAULTS,
    MAX_FETCH_BYTES,
    MAX_FETCH_MESSAGES,
    PRODUCER_DEFAULTS,
    Admin,
    BrokerUnavailable,
    ClientClosed,
    ConsumerInfo,
    DeliveryFailed,
    Forbidden,
    Message,
    MessageIterator,
    MyConsumer,
    MyProducer,
    MyQueueError,
    MyQueueTimeout,
    RequestRejected,
    SendFuture,
    TlsError,
    TopicInfo,
    TopicNotFound,
    Unauthorized,
    __version__,
)

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
