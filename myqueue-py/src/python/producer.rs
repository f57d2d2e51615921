//! `MyProducer` and the future-like handle its `send()` returns.

use super::defaults;
use super::errors::{DeliveryFailed, IntoPyResult, MyQueueTimeout};
use super::wait::{self, wait_for};
use crate::client::producer::FlushMark;
use crate::client::runtime::Forkable;
use crate::client::{
    BrokerClient, ClientError, ConnectOptions, ProducerConfig, ProducerCore, SendError, SendHandle,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Publishes messages to topics. See the `.pyi` stub for the full documentation.
#[pyclass(name = "MyProducer", module = "myqueue", frozen, subclass)]
pub struct PyProducer {
    core: Forkable<ProducerCore>,
    broker: String,
}

/// `topics` as a list of names; a single string is one topic.
pub fn topic_list(topics: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<String>> {
    let Some(topics) = topics else {
        return Ok(Vec::new());
    };
    if let Ok(one) = topics.cast::<PyString>() {
        return Ok(vec![one.to_cow()?.into_owned()]);
    }
    topics
        .extract::<Vec<String>>()
        .map_err(|_| PyTypeError::new_err("topics must be a list of topic names (str)"))
}

fn seconds(name: &str, value: f64) -> PyResult<Duration> {
    if value.is_finite() && value >= 0.0 {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(PyValueError::new_err(format!(
            "{name} must be a non-negative number of seconds, not {value}"
        )))
    }
}

impl PyProducer {
    fn core(&self) -> Arc<ProducerCore> {
        self.core.get(|parent| parent.for_child())
    }
}

#[pymethods]
impl PyProducer {
    #[new]
    #[pyo3(signature = (
        topics = None,
        broker = defaults::BROKER,
        *,
        linger_ms = defaults::LINGER_MS,
        batch_size = defaults::BATCH_SIZE,
        buffer_size = defaults::BUFFER_SIZE,
        delivery_timeout = defaults::DELIVERY_TIMEOUT,
        request_timeout = defaults::REQUEST_TIMEOUT,
        max_message_bytes = defaults::MAX_MESSAGE_BYTES,
        max_in_flight = defaults::MAX_IN_FLIGHT,
        token = None,
        ca_file = None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        topics: Option<&Bound<'_, PyAny>>,
        broker: &str,
        linger_ms: f64,
        batch_size: usize,
        buffer_size: usize,
        delivery_timeout: f64,
        request_timeout: f64,
        max_message_bytes: usize,
        max_in_flight: usize,
        token: Option<String>,
        ca_file: Option<PathBuf>,
    ) -> PyResult<Self> {
        if batch_size == 0 || buffer_size == 0 {
            return Err(PyValueError::new_err(
                "batch_size and buffer_size must be positive",
            ));
        }
        if !(1..=myqueue_wire::PRODUCER_WINDOW).contains(&max_in_flight) {
            return Err(PyValueError::new_err(format!(
                "max_in_flight must be 1 to {} (the batches the broker recognises when \
                 resent), not {max_in_flight}",
                myqueue_wire::PRODUCER_WINDOW
            )));
        }
        let config = ProducerConfig {
            linger: seconds("linger_ms", linger_ms)? / 1000,
            batch_size,
            buffer_size,
            delivery_timeout: seconds("delivery_timeout", delivery_timeout)?,
            request_timeout: seconds("request_timeout", request_timeout)?,
            max_message_bytes,
            max_in_flight,
        };
        let topics = topic_list(topics)?;
        for topic in &topics {
            myqueue_wire::check_topic_name(topic).map_err(PyValueError::new_err)?;
        }
        let options = ConnectOptions { token, ca_file };
        let http = BrokerClient::new(broker, config.request_timeout, &options).py(py)?;
        // Register every topic now: an unreachable broker or a refused topic fails here,
        // not at the first send.
        let registrar = http.clone();
        let registered = wait::run(py, async move {
            let mut ids = HashMap::new();
            for topic in topics {
                let id = registrar.register_producer(&topic).await?;
                ids.insert(topic, id);
            }
            Ok::<_, ClientError>(ids)
        })?
        .py(py)?;
        let base = http.base().to_owned();
        Ok(PyProducer {
            core: Forkable::new(ProducerCore::new(http, config, registered)),
            broker: base,
        })
    }

    /// Queues `value` for `topic` and returns at once with a handle to its delivery. While
    /// the buffer is full it waits, for at most `timeout` seconds if given (then raises
    /// `MyQueueTimeout`; 0 never waits).
    #[pyo3(signature = (topic, value, *, timeout = None))]
    fn send(
        &self,
        py: Python<'_>,
        topic: &str,
        value: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<PySendFuture> {
        let text = if let Ok(bytes) = value.cast::<PyBytes>() {
            std::str::from_utf8(bytes.as_bytes())
                .map_err(|err| {
                    PyValueError::new_err(format!(
                        "the message is not valid UTF-8 ({err}); myqueue messages are text"
                    ))
                })?
                .to_owned()
        } else if let Ok(text) = value.cast::<PyString>() {
            text.to_cow()?.into_owned()
        } else {
            return Err(PyTypeError::new_err(format!(
                "the message must be bytes or str, not {}",
                value.get_type().name()?
            )));
        };
        let deadline = wait::deadline(timeout)?;
        let core = self.core();
        let mut pending = Some(text);
        let handle = wait_for(
            py,
            deadline,
            |py| match core.try_send(topic, pending.take().expect("a message to send")) {
                Ok(handle) => Ok(Some(handle)),
                Err(SendError::Full(text)) => {
                    pending = Some(text);
                    Ok(None)
                }
                Err(SendError::Failed(err)) => Err(err).py(py),
            },
            |slice| core.wait_changed(slice),
        )?
        .ok_or_else(|| {
            MyQueueTimeout::new_err(format!(
                "the producer's buffer stayed full for {:.3}s; the message was not accepted",
                timeout.unwrap_or_default()
            ))
        })?;
        Ok(PySendFuture { handle })
    }

    /// True while the producer is open and healthy; waits while the buffer is full.
    fn can_send(&self, py: Python<'_>) -> PyResult<bool> {
        let core = self.core();
        let room = wait_for(
            py,
            None,
            |_| {
                Ok(match core.has_room() {
                    None => Some(false),
                    Some(true) => Some(true),
                    Some(false) => None,
                })
            },
            |slice| core.wait_changed(slice),
        )?;
        Ok(room.unwrap_or(false))
    }

    /// Sends everything accepted so far now and waits until it is delivered or given up.
    #[pyo3(signature = (timeout = None))]
    fn flush(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        let core = self.core();
        let mark = core.begin_flush();
        let result = self.wait_finished(py, &core, &mark, timeout);
        core.end_flush();
        let failed = result?;
        if failed > 0 {
            return Err(delivery_failed(failed, core.undelivered().1));
        }
        Ok(())
    }

    /// Delivers every accepted message, then closes. Raises `DeliveryFailed` if any message
    /// could not be delivered.
    #[pyo3(signature = (timeout = None))]
    fn stop(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        let core = self.core();
        core.close();
        let mark = core.begin_flush();
        let result = self.wait_finished(py, &core, &mark, timeout);
        core.end_flush();
        result?;
        let (failed, reason) = core.undelivered();
        if failed > 0 {
            return Err(delivery_failed(failed, reason));
        }
        Ok(())
    }

    /// Alias of `stop()`, as in kafka-python.
    #[pyo3(signature = (timeout = None))]
    fn close(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        self.stop(py, timeout)
    }

    /// True once `stop()` was called or a delivery failed.
    #[getter]
    fn closed(&self) -> bool {
        !self.core().is_healthy()
    }

    #[getter]
    fn broker(&self) -> &str {
        &self.broker
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.stop(py, None)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!("MyProducer(broker='{}')", self.broker)
    }
}

impl PyProducer {
    /// Waits until the messages marked by `mark` are finished; returns how many of the
    /// messages given up meanwhile.
    fn wait_finished(
        &self,
        py: Python<'_>,
        core: &ProducerCore,
        mark: &FlushMark,
        timeout: Option<f64>,
    ) -> PyResult<u64> {
        let deadline = wait::deadline(timeout)?;
        let done = wait_for(
            py,
            deadline,
            |_| {
                Ok(Some(core.is_flushed(mark))
                    .filter(|(done, _)| *done)
                    .map(|(_, failed)| failed))
            },
            |slice| core.wait_changed(slice),
        )?;
        done.ok_or_else(|| {
            MyQueueTimeout::new_err(format!(
                "{} message(s) still undelivered after {:.1}s",
                core.unfinished(),
                timeout.unwrap_or_default()
            ))
        })
    }
}

fn delivery_failed(count: u64, reason: Option<ClientError>) -> PyErr {
    let reason = reason.map(|r| r.to_string()).unwrap_or_default();
    DeliveryFailed::new_err(format!(
        "{count} message(s) could not be delivered: {reason}"
    ))
}

impl Drop for PyProducer {
    fn drop(&mut self) {
        // Dropped without stop(): deliver what was accepted in the background. Not in a
        // forked child, whose copy of the parent's state must not be touched.
        if let Some(core) = self.core.current() {
            core.close();
        }
    }
}

/// The delivery of one message, like kafka-python's FutureRecordMetadata.
#[pyclass(name = "SendFuture", module = "myqueue", frozen)]
pub struct PySendFuture {
    handle: SendHandle,
}

#[pymethods]
impl PySendFuture {
    /// Waits for the delivery and returns the message's offset in its topic; raises the
    /// delivery error, or `MyQueueTimeout` after `timeout` seconds.
    #[pyo3(signature = (timeout = None))]
    fn get(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<u64> {
        let deadline = wait::deadline(timeout)?;
        let handle = &self.handle;
        let result = wait_for(
            py,
            deadline,
            |_| Ok(handle.try_get()),
            |slice| {
                handle.wait(slice);
            },
        )?;
        match result {
            Some(result) => result.py(py),
            None => Err(MyQueueTimeout::new_err(format!(
                "the message was not delivered within {:.1}s",
                timeout.unwrap_or_default()
            ))),
        }
    }

    /// True once the message was delivered or given up.
    fn done(&self) -> bool {
        self.handle.try_get().is_some()
    }

    /// True once the message was delivered.
    fn succeeded(&self) -> bool {
        matches!(self.handle.try_get(), Some(Ok(_)))
    }

    /// True once the message was given up.
    fn failed(&self) -> bool {
        matches!(self.handle.try_get(), Some(Err(_)))
    }

    fn __repr__(&self) -> String {
        match self.handle.try_get() {
            None => "SendFuture(pending)".into(),
            Some(Ok(offset)) => format!("SendFuture(offset={offset})"),
            Some(Err(err)) => format!("SendFuture(failed: {err})"),
        }
    }
}
