//! The exception classes, and the mapping from client errors to them.

use crate::client::ClientError;
use myqueue_wire::ErrorCode;
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;

create_exception!(
    myqueue,
    MyQueueError,
    PyException,
    "Base class of every myqueue error. `code` is the broker's error code, when the broker answered with one."
);
create_exception!(
    myqueue,
    BrokerUnavailable,
    MyQueueError,
    "The broker cannot be reached, or cannot serve now (it answered 503)."
);
create_exception!(
    myqueue,
    TopicNotFound,
    MyQueueError,
    "The topic does not exist."
);
create_exception!(
    myqueue,
    RequestRejected,
    MyQueueError,
    "The broker refused the request; `code` says why."
);
create_exception!(
    myqueue,
    Unauthorized,
    RequestRejected,
    "The broker needs a token and got none or one it does not know (HTTP 401): pass token= or set MYQUEUE_TOKEN. Never retried."
);
create_exception!(
    myqueue,
    Forbidden,
    RequestRejected,
    "The token may not do this, e.g. produce to or consume from this topic, or administer topics (HTTP 403 forbidden). Never retried."
);
create_exception!(
    myqueue,
    TlsError,
    MyQueueError,
    "TLS failed: the broker's certificate is expired, not signed by a trusted CA (pass ca_file=), or for another host name; or the broker does not serve HTTPS. Never retried."
);
create_exception!(
    myqueue,
    DeliveryFailed,
    MyQueueError,
    "Messages accepted by send() could not be delivered."
);
create_exception!(
    myqueue,
    ClientClosed,
    MyQueueError,
    "The producer or consumer was stopped."
);
create_exception!(
    myqueue,
    MyQueueTimeout,
    MyQueueError,
    "A wait ran out of time."
);

pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    module.add("MyQueueError", py.get_type::<MyQueueError>())?;
    module.add("BrokerUnavailable", py.get_type::<BrokerUnavailable>())?;
    module.add("TopicNotFound", py.get_type::<TopicNotFound>())?;
    module.add("RequestRejected", py.get_type::<RequestRejected>())?;
    module.add("Unauthorized", py.get_type::<Unauthorized>())?;
    module.add("Forbidden", py.get_type::<Forbidden>())?;
    module.add("TlsError", py.get_type::<TlsError>())?;
    module.add("DeliveryFailed", py.get_type::<DeliveryFailed>())?;
    module.add("ClientClosed", py.get_type::<ClientClosed>())?;
    module.add("MyQueueTimeout", py.get_type::<MyQueueTimeout>())?;
    Ok(())
}

/// The Python exception for a client error, with `code` set to the broker's error code.
pub fn to_py(py: Python<'_>, err: ClientError) -> PyErr {
    let message = err.to_string();
    let code = err.code();
    let py_err = match &err {
        ClientError::Unavailable(_) => BrokerUnavailable::new_err(message),
        ClientError::Rejected {
            code: ErrorCode::TopicNotFound,
            ..
        } => TopicNotFound::new_err(message),
        ClientError::Rejected {
            code: ErrorCode::Unauthorized,
            ..
        } => Unauthorized::new_err(message),
        ClientError::Rejected {
            code: ErrorCode::Forbidden,
            ..
        } => Forbidden::new_err(message),
        ClientError::Rejected { .. } => RequestRejected::new_err(message),
        ClientError::Tls(_) => TlsError::new_err(message),
        ClientError::Delivery(_) => DeliveryFailed::new_err(message),
        ClientError::Closed(_) => ClientClosed::new_err(message),
        ClientError::Timeout(_) => MyQueueTimeout::new_err(message),
        ClientError::Invalid(_) => PyValueError::new_err(message),
    };
    if !matches!(err, ClientError::Invalid(_)) {
        let code = code.map(|c| c.as_str());
        let _ = py_err.value(py).setattr("code", code);
    }
    py_err
}

/// `?` for client results inside bindings.
pub trait IntoPyResult<T> {
    fn py(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for Result<T, ClientError> {
    fn py(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|err| to_py(py, err))
    }
}
