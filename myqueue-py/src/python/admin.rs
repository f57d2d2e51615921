//! `Admin`: looking after topics (create with retention, describe, change retention, delete),
//! and the `TopicInfo` / `ConsumerInfo` it answers with.

use super::defaults;
use super::errors::IntoPyResult;
use super::wait;
use crate::client::{BrokerClient, ClientError, ConnectOptions};
use myqueue_wire::{ConsumerDescription, RetentionValue, TopicResponse, UpdateTopicRequest};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyInt};
use std::path::PathBuf;
use std::time::Duration;

/// Looks after a broker's topics. See the `.pyi` stub for the full documentation.
#[pyclass(name = "Admin", module = "myqueue", frozen)]
pub struct PyAdmin {
    /// A client is built for each call: admin calls are rare, and a client made in the
    /// process that uses it is fork-safe without more ado.
    base: String,
    request_timeout: Duration,
    options: ConnectOptions,
}

impl PyAdmin {
    fn call<T, F, Fut>(&self, py: Python<'_>, call: F) -> PyResult<T>
    where
        T: Send + 'static,
        F: FnOnce(BrokerClient) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>> + Send + 'static,
    {
        let http = BrokerClient::new(&self.base, self.request_timeout, &self.options).py(py)?;
        wait::run(py, call(http))?.py(py)
    }
}

/// A retention limit from Python: a positive int, or None (the broker's default).
fn limit(name: &str, value: &Bound<'_, PyAny>) -> PyResult<Option<u64>> {
    if value.is_none() {
        return Ok(None);
    }
    let refuse = || {
        PyValueError::new_err(format!(
            "{name} must be a positive int (or None for the broker's default), not {value}"
        ))
    };
    if value.is_instance_of::<PyBool>() {
        return Err(refuse());
    }
    if !value.is_instance_of::<PyInt>() {
        return Err(PyTypeError::new_err(format!(
            "{name} must be an int or None, not {}",
            value.get_type().name()?
        )));
    }
    match value.extract::<i64>() {
        Ok(n) if n > 0 => Ok(Some(n as u64)),
        Ok(_) => Err(refuse()),
        Err(_) => Err(PyValueError::new_err(format!(
            "{name} is out of range: a positive int up to {}",
            i64::MAX
        ))),
    }
}

#[pymethods]
impl PyAdmin {
    #[new]
    #[pyo3(signature = (
        broker = defaults::BROKER,
        *,
        request_timeout = defaults::REQUEST_TIMEOUT,
        token = None,
        ca_file = None,
    ))]
    fn new(
        py: Python<'_>,
        broker: &str,
        request_timeout: f64,
        token: Option<String>,
        ca_file: Option<PathBuf>,
    ) -> PyResult<Self> {
        if !(request_timeout.is_finite() && request_timeout > 0.0) {
            return Err(PyValueError::new_err(
                "request_timeout must be a positive number of seconds",
            ));
        }
        let request_timeout = Duration::from_secs_f64(request_timeout);
        let http = BrokerClient::new(broker, request_timeout, &ConnectOptions { token, ca_file })
            .py(py)?;
        Ok(PyAdmin {
            base: http.base().to_owned(),
            request_timeout,
            options: http.options().clone(),
        })
    }

    /// Creates a topic, with retention settings of its own (None: the broker's default).
    #[pyo3(signature = (name, retention_ms = None, retention_bytes = None))]
    fn create_topic(
        &self,
        py: Python<'_>,
        name: String,
        retention_ms: Option<&Bound<'_, PyAny>>,
        retention_bytes: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        myqueue_wire::check_topic_name(&name).map_err(PyValueError::new_err)?;
        let none = py.None().into_bound(py);
        let ms = limit("retention_ms", retention_ms.unwrap_or(&none))?;
        let bytes = limit("retention_bytes", retention_bytes.unwrap_or(&none))?;
        self.call(py, move |http| async move {
            http.create_topic(&name, ms, bytes).await
        })
    }

    /// What the topic holds, its retention and its consumers.
    fn describe(&self, py: Python<'_>, name: String) -> PyResult<PyTopicInfo> {
        let info = self.call(
            py,
            move |http| async move { http.describe_topic(&name).await },
        )?;
        Ok(PyTopicInfo(info))
    }

    /// Changes the retention settings given as keywords (`retention_ms`, `retention_bytes`):
    /// an int sets one, None returns it to the broker's default, one left out stays.
    #[pyo3(signature = (name, **settings))]
    fn set_retention(
        &self,
        py: Python<'_>,
        name: String,
        settings: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyTopicInfo> {
        let mut change = UpdateTopicRequest::default();
        for (key, value) in settings.into_iter().flatten() {
            let key: String = key.extract()?;
            let value = RetentionValue::from_option(limit(&key, &value)?);
            match key.as_str() {
                "retention_ms" => change.retention_ms = Some(value),
                "retention_bytes" => change.retention_bytes = Some(value),
                _ => {
                    return Err(PyTypeError::new_err(format!(
                        "set_retention() got an unexpected keyword argument '{key}'"
                    )));
                }
            }
        }
        if change.retention_ms.is_none() && change.retention_bytes.is_none() {
            return Err(PyTypeError::new_err(
                "set_retention() needs retention_ms= and/or retention_bytes=",
            ));
        }
        let info = self.call(py, move |http| async move {
            http.update_topic(&name, &change).await
        })?;
        Ok(PyTopicInfo(info))
    }

    /// Deletes the topic with its messages, producers and consumers.
    fn delete_topic(&self, py: Python<'_>, name: String) -> PyResult<()> {
        self.call(
            py,
            move |http| async move { http.delete_topic(&name).await },
        )
    }

    /// Every topic's name, sorted.
    fn list_topics(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        self.call(py, |http| async move { http.list_topics().await })
    }

    #[getter]
    fn broker(&self) -> &str {
        &self.base
    }

    fn __repr__(&self) -> String {
        format!("Admin(broker='{}')", self.base)
    }
}

/// What a topic holds (`Admin.describe`).
#[pyclass(name = "TopicInfo", module = "myqueue", frozen)]
pub struct PyTopicInfo(TopicResponse);

#[pymethods]
impl PyTopicInfo {
    #[getter]
    fn name(&self) -> &str {
        &self.0.name
    }

    #[getter]
    fn start_offset(&self) -> u64 {
        self.0.start_offset
    }

    #[getter]
    fn end_offset(&self) -> u64 {
        self.0.end_offset
    }

    #[getter]
    fn messages(&self) -> u64 {
        self.0.messages
    }

    #[getter]
    fn bytes(&self) -> u64 {
        self.0.bytes
    }

    #[getter]
    fn retention_ms(&self) -> Option<u64> {
        self.0.retention_ms
    }

    #[getter]
    fn retention_bytes(&self) -> Option<u64> {
        self.0.retention_bytes
    }

    #[getter]
    fn effective_retention_ms(&self) -> Option<u64> {
        self.0.retention.ms
    }

    #[getter]
    fn effective_retention_bytes(&self) -> Option<u64> {
        self.0.retention.bytes
    }

    #[getter]
    fn created_ms(&self) -> u64 {
        self.0.created_ms
    }

    #[getter]
    fn consumers(&self) -> Vec<PyConsumerInfo> {
        self.0
            .consumers
            .iter()
            .cloned()
            .map(PyConsumerInfo)
            .collect()
    }

    fn __repr__(&self) -> String {
        format!(
            "TopicInfo(name='{}', start_offset={}, end_offset={}, messages={}, bytes={}, \
             consumers={})",
            self.0.name,
            self.0.start_offset,
            self.0.end_offset,
            self.0.messages,
            self.0.bytes,
            self.0.consumers.len()
        )
    }
}

/// A consumer of a topic, as `TopicInfo.consumers` lists it.
#[pyclass(name = "ConsumerInfo", module = "myqueue", frozen)]
pub struct PyConsumerInfo(ConsumerDescription);

#[pymethods]
impl PyConsumerInfo {
    #[getter]
    fn consumer_id(&self) -> u64 {
        self.0.consumer_id
    }

    #[getter]
    fn group(&self) -> Option<&str> {
        self.0.group.as_deref()
    }

    #[getter]
    fn position(&self) -> u64 {
        self.0.position
    }

    #[getter]
    fn lag(&self) -> u64 {
        self.0.lag
    }

    fn __repr__(&self) -> String {
        let group = match &self.0.group {
            Some(group) => format!("'{group}'"),
            None => "None".into(),
        };
        format!(
            "ConsumerInfo(consumer_id={}, group={group}, position={}, lag={})",
            self.0.consumer_id, self.0.position, self.0.lag
        )
    }
}
