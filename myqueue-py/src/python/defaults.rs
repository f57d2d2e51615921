//! The client's defaults in the units Python sees (milliseconds, seconds as floats), for the
//! `#[pyo3(signature)]`s and for `PRODUCER_DEFAULTS` / `CONSUMER_DEFAULTS`. Derived from
//! `crate::client::defaults`, where each value is written once.

use crate::client::defaults::{self, consumer, producer};
use pyo3::prelude::*;
use pyo3::types::PyDict;

pub use defaults::BROKER;
pub use defaults::consumer::{BUFFER_BYTES, BUFFER_MESSAGES, FETCH_MAX_BYTES, FETCH_MAX_MESSAGES};
pub use defaults::producer::{BATCH_SIZE, BUFFER_SIZE, MAX_IN_FLIGHT, MAX_MESSAGE_BYTES};

pub const LINGER_MS: f64 = producer::LINGER.as_millis() as f64;
pub const DELIVERY_TIMEOUT: f64 = producer::DELIVERY_TIMEOUT.as_secs_f64();
pub const REQUEST_TIMEOUT: f64 = defaults::REQUEST_TIMEOUT.as_secs_f64();
pub const AUTO_COMMIT_INTERVAL: f64 = consumer::AUTO_COMMIT_INTERVAL.as_secs_f64();
pub const STOP_TIMEOUT: f64 = consumer::STOP_TIMEOUT.as_secs_f64();

/// Adds the defaults (keyed by parameter name) and the fetch limits to the module.
pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    let producer = PyDict::new(py);
    producer.set_item("broker", BROKER)?;
    producer.set_item("linger_ms", LINGER_MS)?;
    producer.set_item("batch_size", BATCH_SIZE)?;
    producer.set_item("buffer_size", BUFFER_SIZE)?;
    producer.set_item("delivery_timeout", DELIVERY_TIMEOUT)?;
    producer.set_item("request_timeout", REQUEST_TIMEOUT)?;
    producer.set_item("max_message_bytes", MAX_MESSAGE_BYTES)?;
    producer.set_item("max_in_flight", MAX_IN_FLIGHT)?;
    module.add("PRODUCER_DEFAULTS", producer)?;

    let consumer = PyDict::new(py);
    consumer.set_item("broker", BROKER)?;
    consumer.set_item("fetch_max_messages", FETCH_MAX_MESSAGES)?;
    consumer.set_item("fetch_max_bytes", FETCH_MAX_BYTES)?;
    consumer.set_item("buffer_messages", BUFFER_MESSAGES)?;
    consumer.set_item("buffer_bytes", BUFFER_BYTES)?;
    consumer.set_item("auto_commit_interval", AUTO_COMMIT_INTERVAL)?;
    consumer.set_item("request_timeout", REQUEST_TIMEOUT)?;
    consumer.set_item("stop_timeout", STOP_TIMEOUT)?;
    module.add("CONSUMER_DEFAULTS", consumer)?;

    module.add("MAX_FETCH_MESSAGES", myqueue_wire::MAX_FETCH_MESSAGES)?;
    module.add("MAX_FETCH_BYTES", myqueue_wire::MAX_FETCH_BYTES)?;
    Ok(())
}
