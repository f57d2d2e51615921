//! The client core, free of Python: HTTP calls, batching, retries, prefetching, commits.
//! The bindings in `crate::python` are a thin layer over it, and Rust code (tests,
//! benchmarks) can use it directly.

pub mod consumer;
pub mod defaults;
pub mod error;
pub mod http;
pub mod producer;
pub mod retry;
pub mod runtime;

pub use consumer::{ConsumerConfig, ConsumerCore, Message, Polled};
pub use error::{ClientError, Result};
pub use http::{BrokerClient, ConnectOptions};
pub use producer::{Core as ProducerCore, ProducerConfig, SendError, SendHandle};
