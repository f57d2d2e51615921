//! Every default of the client, written once. `ProducerConfig::default()`,
//! `ConsumerConfig::default()`, the Python signatures (`#[pyo3(signature = ...)]`) and the
//! Python constants `myqueue.PRODUCER_DEFAULTS` / `myqueue.CONSUMER_DEFAULTS` all read them
//! here; the `.pyi` stub shows `...` and points to those constants.
//!
//! The limits both sides enforce (message and fetch sizes) live in `myqueue_wire`.

use std::time::Duration;

/// The broker the assignment's examples talk to (`myqueue_wire::DEFAULT_PORT`).
pub const BROKER: &str = "localhost:9092";
/// Timeout of one HTTP request (a consumer's long poll comes on top).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// `MyProducer`'s options.
pub mod producer {
    use std::time::Duration;

    /// How long a batch waits for more messages before it is sent.
    pub const LINGER: Duration = Duration::from_millis(5);
    /// A batch is sent once it holds this many bytes of messages.
    pub const BATCH_SIZE: usize = 512 * 1024;
    /// Bytes of accepted, undelivered messages at most; `send()` waits beyond.
    pub const BUFFER_SIZE: usize = 32 * 1024 * 1024;
    /// How long a batch is retried before its messages are reported undeliverable.
    pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(120);
    /// Batches per topic sent before the first is answered (at most
    /// `myqueue_wire::PRODUCER_WINDOW`, the batches the broker recognises when resent), as
    /// Kafka's idempotent producer allows.
    pub const MAX_IN_FLIGHT: usize = 5;
    /// Largest message `send()` accepts: the broker's default limit.
    pub const MAX_MESSAGE_BYTES: usize = myqueue_wire::DEFAULT_MAX_MESSAGE_BYTES;
}

/// `MyConsumer`'s options.
pub mod consumer {
    use std::time::Duration;

    /// Messages per fetch request at most (more than the broker's default of 1000: fewer
    /// round trips for a consumer that is behind).
    pub const FETCH_MAX_MESSAGES: u32 = 5000;
    /// Payload bytes per fetch request at most (past its first message).
    pub const FETCH_MAX_BYTES: u64 = myqueue_wire::DEFAULT_FETCH_BYTES;
    /// How long one fetch waits on the broker for a message; under the broker's limit
    /// (`myqueue_wire::MAX_FETCH_WAIT_MS`).
    pub const LONG_POLL: Duration = Duration::from_secs(20);
    /// Messages prefetched per topic at most.
    pub const BUFFER_MESSAGES: usize = 10_000;
    /// Payload bytes prefetched per topic at most.
    pub const BUFFER_BYTES: usize = 16 * 1024 * 1024;
    /// How often consumed positions are committed.
    pub const AUTO_COMMIT_INTERVAL: Duration = Duration::from_millis(500);
    /// How long `stop()` waits to store the final positions.
    pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_broker_is_on_the_default_port() {
        assert!(BROKER.ends_with(&format!(":{}", myqueue_wire::DEFAULT_PORT)));
    }

    #[test]
    fn the_consumer_defaults_are_within_the_fetch_limits() {
        let wait = consumer::LONG_POLL.as_millis() as u64;
        let limits = myqueue_wire::FetchLimits::new(
            Some(consumer::FETCH_MAX_MESSAGES.into()),
            Some(consumer::FETCH_MAX_BYTES),
            Some(wait),
        );
        assert!(limits.is_ok());
    }
}
