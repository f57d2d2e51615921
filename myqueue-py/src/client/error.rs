//! What the client can fail with. The Python layer maps each kind to an exception class.

use myqueue_wire::ErrorCode;
use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ClientError {
    /// The broker cannot be reached, or answered that it cannot serve now (503).
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The broker refused the request; retrying the same request will not help.
    #[error("{message} ({code})")]
    Rejected { code: ErrorCode, message: String },
    /// Messages accepted by `send()` that could not be delivered.
    #[error("{0}")]
    Delivery(String),
    /// The producer or consumer was stopped.
    #[error("{0}")]
    Closed(String),
    /// A wait ran out of time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// TLS failed: the broker's certificate is expired, untrusted or for another host, or the
    /// broker does not speak TLS. Retrying cannot help.
    #[error("{0}")]
    Tls(String),
    /// Bad input caught before any request (e.g. a topic name the broker would refuse).
    #[error("{0}")]
    Invalid(String),
}

impl ClientError {
    /// Whether sending the same request again later may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Unavailable(_) => true,
            ClientError::Rejected { code, .. } => code.is_retriable(),
            _ => false,
        }
    }

    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Rejected { code, .. } => Some(*code),
            _ => None,
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;
