//! `MyConsumer`, the iterator `get_next()` returns, and `Message`.

use super::defaults;
use super::errors::IntoPyResult;
use super::producer::topic_list;
use super::wait::{self, wait_for};
use crate::client::consumer::fetch_limits;
use crate::client::runtime::Forkable;
use crate::client::{BrokerClient, ConnectOptions, ConsumerConfig, ConsumerCore, Message, Polled};
use myqueue_wire::{NamedOffset, Num, OffsetSpec};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// `start="beginning"` or `"end"`.
fn start_at(start: &str) -> PyResult<NamedOffset> {
    match start {
        "beginning" => Ok(NamedOffset::Beginning),
        "end" => Ok(NamedOffset::End),
        other => Err(PyValueError::new_err(format!(
            "start must be 'beginning' or 'end', not {other:?}"
        ))),
    }
}

/// Reads topics in order. See the `.pyi` stub for the full documentation.
#[pyclass(name = "MyConsumer", module = "myqueue", frozen, subclass)]
pub struct PyConsumer {
    core: Forkable<ConsumerCore>,
    broker: String,
    group: Option<String>,
}

impl PyConsumer {
    fn stop_and_commit(
        &self,
        py: Python<'_>,
        timeout: Option<f64>,
        taken_is_consumed: bool,
    ) -> PyResult<()> {
        let core = self.core();
        core.stop(taken_is_consumed);
        let limit = wait::deadline(timeout)?
            .map(|at| at.saturating_duration_since(std::time::Instant::now()));
        let result = wait::run(py, async move {
            match limit {
                Some(limit) => tokio::time::timeout(limit, core.commit())
                    .await
                    .unwrap_or(Err(crate::client::ClientError::Timeout(limit))),
                None => core.commit().await,
            }
        })?;
        if let Err(err) = result {
            let message = format!(
                "MyConsumer.stop() could not store the consumed positions ({err}); \
                 messages taken since the last commit will be delivered again"
            );
            let message = std::ffi::CString::new(message).unwrap_or_default();
            let category = py.get_type::<pyo3::exceptions::PyRuntimeWarning>();
            PyErr::warn(py, category.as_any(), &message, 1)?;
        }
        Ok(())
    }

    fn core(&self) -> Arc<ConsumerCore> {
        self.core.get(|parent| parent.for_child())
    }

    /// The next message within `deadline`, `None` when it passes or the consumer stops.
    fn next_message(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<PyMessage>> {
        let message = self.next_polled(py, timeout)?;
        if let Some(message) = &message
            && let Err(err) = warn_of_gap(py, &message.message)
        {
            // The warning became an exception: the message comes with the next call.
            self.core().put_back(message.message.clone());
            return Err(err);
        }
        Ok(message)
    }

    fn next_polled(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<PyMessage>> {
        let core = self.core();
        // Fast path: a prefetched message is handed out without releasing the GIL.
        if let Polled::Message(message) = core.poll().py(py)? {
            return Ok(Some(PyMessage::from(message)));
        }
        let deadline = wait::deadline(timeout)?;
        let polled = wait_for(
            py,
            deadline,
            |py| match core.poll().py(py)? {
                Polled::Message(message) => Ok(Some(Some(message))),
                Polled::Stopped => Ok(Some(None)),
                Polled::Empty => Ok(None),
            },
            |slice| core.wait_arrival(slice),
        )?;
        Ok(polled.flatten().map(PyMessage::from))
    }

    fn seek_to(&self, py: Python<'_>, topic: &str, to: OffsetSpec) -> PyResult<u64> {
        let core = self.core();
        let topic = topic.to_owned();
        wait::run(py, async move { core.seek(&topic, to).await })?.py(py)
    }
}

/// Tells the program, once per gap, that retention removed messages of a topic before this
/// consumer read them (it lagged by more than the topic keeps): a `RuntimeWarning` at the
/// program's call, and the iteration goes on from the message it got.
fn warn_of_gap(py: Python<'_>, message: &Message) -> PyResult<()> {
    if message.missed == 0 {
        return Ok(());
    }
    let text = format!(
        "myqueue: topic '{}': {} message(s) were removed by retention before this consumer \
         read them; it continues from offset {}",
        message.topic, message.missed, message.offset
    );
    let text = std::ffi::CString::new(text).unwrap_or_default();
    let category = py.get_type::<pyo3::exceptions::PyRuntimeWarning>();
    PyErr::warn(py, category.as_any(), &text, 1)
}

#[pymethods]
impl PyConsumer {
    #[new]
    #[pyo3(signature = (
        topics,
        broker = defaults::BROKER,
        *,
        group = None,
        start = None,
        fetch_max_messages = defaults::FETCH_MAX_MESSAGES,
        fetch_max_bytes = defaults::FETCH_MAX_BYTES,
        buffer_messages = defaults::BUFFER_MESSAGES,
        buffer_bytes = defaults::BUFFER_BYTES,
        auto_commit_interval = defaults::AUTO_COMMIT_INTERVAL,
        request_timeout = defaults::REQUEST_TIMEOUT,
        token = None,
        ca_file = None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        topics: &Bound<'_, PyAny>,
        broker: &str,
        group: Option<String>,
        start: Option<&str>,
        fetch_max_messages: u32,
        fetch_max_bytes: u64,
        buffer_messages: usize,
        buffer_bytes: usize,
        auto_commit_interval: f64,
        request_timeout: f64,
        token: Option<String>,
        ca_file: Option<PathBuf>,
    ) -> PyResult<Self> {
        let topics = topic_list(Some(topics))?;
        if topics.is_empty() {
            return Err(PyValueError::new_err("a consumer needs at least one topic"));
        }
        if let Some(group) = &group {
            myqueue_wire::check_group_name(group).map_err(PyValueError::new_err)?;
        }
        let start = start.map(start_at).transpose()?;
        // The broker's own check (myqueue_wire), under this class's parameter names.
        let fetch = fetch_limits(fetch_max_messages, fetch_max_bytes).map_err(|err| {
            PyValueError::new_err(format!("fetch_{} must be {}", err.field(), err.rule()))
        })?;
        if buffer_messages == 0 || buffer_bytes == 0 {
            return Err(PyValueError::new_err(
                "buffer_messages and buffer_bytes must be positive",
            ));
        }
        for (name, value) in [
            ("auto_commit_interval", auto_commit_interval),
            ("request_timeout", request_timeout),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(PyValueError::new_err(format!(
                    "{name} must be a positive number of seconds"
                )));
            }
        }
        let config = ConsumerConfig {
            group: group.clone(),
            start,
            fetch,
            buffer_messages,
            buffer_bytes,
            auto_commit_interval: Duration::from_secs_f64(auto_commit_interval),
            request_timeout: Duration::from_secs_f64(request_timeout),
        };
        let options = ConnectOptions { token, ca_file };
        let http = BrokerClient::new(broker, config.request_timeout, &options).py(py)?;
        let base = http.base().to_owned();
        let core = wait::run(py, async move {
            ConsumerCore::open(http, config, &topics).await
        })?
        .py(py)?;
        Ok(PyConsumer {
            core: Forkable::new(core),
            broker: base,
            group,
        })
    }

    /// An iterator of messages from all topics; it waits for new ones. With `timeout`, it
    /// ends after that many seconds without a message. It ends when the consumer stops.
    #[pyo3(signature = (timeout = None))]
    fn get_next(slf: Py<Self>, timeout: Option<f64>) -> PyResult<PyMessageIterator> {
        wait::deadline(timeout)?;
        Ok(PyMessageIterator {
            consumer: slf,
            timeout,
        })
    }

    fn __iter__(slf: Py<Self>) -> PyMessageIterator {
        PyMessageIterator {
            consumer: slf,
            timeout: None,
        }
    }

    /// The next message, or None after `timeout` seconds without one (or once stopped).
    #[pyo3(signature = (timeout = None))]
    fn poll(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<PyMessage>> {
        self.next_message(py, timeout)
    }

    /// Number of messages in `topic` that this consumer has not taken yet.
    fn size(&self, py: Python<'_>, topic: &str) -> PyResult<u64> {
        let core = self.core();
        let topic = topic.to_owned();
        wait::run(py, async move { core.size(&topic).await })?.py(py)
    }

    /// Stores the consumed positions on the broker now (it is also done every
    /// `auto_commit_interval` seconds, and by `stop()`).
    fn commit(&self, py: Python<'_>) -> PyResult<()> {
        let core = self.core();
        wait::run(py, async move { core.commit().await })?.py(py)
    }

    /// Continues `topic` from `offset` (the next message will be the one at `offset`).
    fn seek(&self, py: Python<'_>, topic: &str, offset: i64) -> PyResult<u64> {
        let offset =
            u64::try_from(offset).map_err(|_| PyValueError::new_err("offset must be >= 0"))?;
        self.seek_to(py, topic, OffsetSpec::At(Num(offset)))
    }

    /// Replays `topic` from its first message.
    fn seek_to_beginning(&self, py: Python<'_>, topic: &str) -> PyResult<u64> {
        self.seek_to(py, topic, OffsetSpec::Named(NamedOffset::Beginning))
    }

    /// Skips what `topic` holds now: only messages produced from here on will come.
    fn seek_to_end(&self, py: Python<'_>, topic: &str) -> PyResult<u64> {
        self.seek_to(py, topic, OffsetSpec::Named(NamedOffset::End))
    }

    /// Ends `get_next()` (also from another thread) and stores the final positions. If they
    /// cannot be stored (the broker is down), a RuntimeWarning says so: the messages taken
    /// since the last commit will be delivered again (at least once), nothing is lost.
    #[pyo3(signature = (timeout = Some(defaults::STOP_TIMEOUT)))]
    fn stop(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        self.stop_and_commit(py, timeout, true)
    }

    /// Alias of `stop()`, as in kafka-python.
    #[pyo3(signature = (timeout = Some(defaults::STOP_TIMEOUT)))]
    fn close(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        self.stop(py, timeout)
    }

    #[getter]
    fn topics(&self) -> Vec<String> {
        self.core().topic_names()
    }

    #[getter]
    fn group(&self) -> Option<String> {
        self.group.clone()
    }

    #[getter]
    fn broker(&self) -> &str {
        &self.broker
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Stops; when the block ends with an exception, the message being handled does not
    /// count as consumed (it will be delivered again).
    #[pyo3(signature = (exc_type, _exc_value, _traceback))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: &Bound<'_, PyAny>,
        _exc_value: &Bound<'_, PyAny>,
        _traceback: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        self.stop_and_commit(py, Some(defaults::STOP_TIMEOUT), exc_type.is_none())?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        let topics: Vec<String> = self
            .core()
            .topic_names()
            .iter()
            .map(|t| format!("'{t}'"))
            .collect();
        let group = match &self.group {
            Some(group) => format!("'{group}'"),
            None => "None".into(),
        };
        format!(
            "MyConsumer(topics=[{}], broker='{}', group={group})",
            topics.join(", "),
            self.broker
        )
    }
}

impl Drop for PyConsumer {
    fn drop(&mut self) {
        if let Some(core) = self.core.current() {
            core.stop(false);
        }
    }
}

/// What `get_next()` returns: `for msg in consumer.get_next(): ...`
#[pyclass(name = "MessageIterator", module = "myqueue")]
pub struct PyMessageIterator {
    consumer: Py<PyConsumer>,
    timeout: Option<f64>,
}

#[pymethods]
impl PyMessageIterator {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<PyMessage>> {
        self.consumer.get().next_message(py, self.timeout)
    }
}

/// A consumed message.
#[pyclass(name = "Message", module = "myqueue", frozen)]
pub struct PyMessage {
    message: Message,
}

impl From<Message> for PyMessage {
    fn from(message: Message) -> Self {
        PyMessage { message }
    }
}

#[pymethods]
impl PyMessage {
    /// The topic it was read from.
    #[getter]
    fn topic(&self) -> &str {
        &self.message.topic
    }

    /// The message as bytes (UTF-8).
    #[getter]
    fn value<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.message.value.as_bytes())
    }

    /// Its offset in the topic: 0 for the first message, then 1, 2, …
    #[getter]
    fn offset(&self) -> u64 {
        self.message.offset
    }

    /// When the broker stored it, in milliseconds since the Unix epoch.
    #[getter]
    fn timestamp(&self) -> u64 {
        self.message.timestamp
    }

    /// The message as text.
    fn __str__(&self) -> &str {
        &self.message.value
    }

    fn __repr__(&self) -> String {
        let mut preview: String = self.message.value.chars().take(60).collect();
        if preview.len() < self.message.value.len() {
            preview.push('…');
        }
        format!(
            "Message(topic='{}', offset={}, value={:?})",
            self.message.topic, self.message.offset, preview
        )
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other.cast::<PyMessage>().is_ok_and(|other| {
            let other = &other.get().message;
            other.topic == self.message.topic
                && other.offset == self.message.offset
                && other.value == self.message.value
        })
    }

    fn __hash__(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.message.topic.hash(&mut hasher);
        self.message.offset.hash(&mut hasher);
        hasher.finish()
    }
}
