"""myqueue: a client for the myqueue durable logging queue.

``MyProducer`` publishes messages to topics; ``MyConsumer`` reads topics in order. The work
(HTTP, batching, retries, prefetching) is done by a Rust core in ``myqueue._native``; this
package re-exports it. See the type stubs (``_native.pyi``) for the documentation. The package
also installs the ``myqueue`` command (``myqueue.cli``) and a logging handler
(``myqueue.logging.QueueHandler``).

    from myqueue import MyProducer, MyConsumer

    with MyProducer(["logs"], broker="localhost:9092") as producer:
        producer.send("logs", b"DEBUG: hello")

    with MyConsumer(["logs"], broker="localhost:9092", group="printer") as consumer:
        for msg in consumer.get_next(timeout=1.0):
            print(msg.topic, msg.offset, str(msg))
"""

from myqueue._native import (
    CONSUMER_DEFAULTS,
    MAX_FETCH_BYTES,
    MAX_FETCH_MESSAGES,
    PRODUCER_DEFAULTS,
    BrokerUnavailable,
    ClientClosed,
    DeliveryFailed,
    Message,
    MessageIterator,
    MyConsumer,
    MyProducer,
    MyQueueError,
    MyQueueTimeout,
    RequestRejected,
    SendFuture,
    TopicNotFound,
    __version__,
)

__all__ = [
    "CONSUMER_DEFAULTS",
    "MAX_FETCH_BYTES",
    "MAX_FETCH_MESSAGES",
    "PRODUCER_DEFAULTS",
    "BrokerUnavailable",
    "ClientClosed",
    "DeliveryFailed",
    "Message",
    "MessageIterator",
    "MyConsumer",
    "MyProducer",
    "MyQueueError",
    "MyQueueTimeout",
    "RequestRejected",
    "SendFuture",
    "TopicNotFound",
    "__version__",
]
