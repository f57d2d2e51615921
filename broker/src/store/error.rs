//! What a store can refuse or fail with, and the wire code each maps to.

use myqueue_wire::ErrorCode;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    #[error("topic '{0}' does not exist")]
    TopicNotFound(String),
    #[error("producer {0} does not exist")]
    ProducerNotFound(u64),
    #[error("consumer {0} does not exist")]
    ConsumerNotFound(u64),
    #[error("{role} {id} is registered to topic '{registered}', not '{requested}'")]
    WrongTopic {
        role: &'static str,
        id: u64,
        registered: String,
        requested: String,
    },
    #[error(
        "producer {producer_id} sent sequence {got}, but the broker expects {expected} \
         (or a retry of the last batch); register the producer again"
    )]
    SequenceMismatch {
        producer_id: u64,
        expected: u64,
        got: u64,
    },
    #[error("offset {offset} is past the end of topic '{topic}' (its end is {end})")]
    OffsetOutOfRange {
        topic: String,
        offset: u64,
        end: u64,
    },
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("the broker is shutting down")]
    ShuttingDown,
}

impl StoreError {
    pub fn code(&self) -> ErrorCode {
        match self {
            StoreError::TopicExists(_) => ErrorCode::TopicExists,
            StoreError::TopicNotFound(_) => ErrorCode::TopicNotFound,
            StoreError::ProducerNotFound(_) => ErrorCode::ProducerNotFound,
            StoreError::ConsumerNotFound(_) => ErrorCode::ConsumerNotFound,
            StoreError::WrongTopic { .. } => ErrorCode::WrongTopic,
            StoreError::SequenceMismatch { .. } => ErrorCode::SequenceMismatch,
            StoreError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            StoreError::Unavailable(_) => ErrorCode::StorageUnavailable,
            StoreError::ShuttingDown => ErrorCode::ShuttingDown,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        // Every database error the stores do not handle themselves (constraint violations
        // are) means the database is down, overloaded or broken: the request may succeed
        // later, so it is a 503, never a 500.
        tracing::warn!(error = %err, "storage error");
        StoreError::Unavailable(err.to_string())
    }
}
