//! The error shape every failure answers with, and the stable machine-readable codes.

use crate::Status;
use serde::{Deserialize, Serialize};

/// A failure's stable, machine-readable reason. The HTTP status follows from it, so a code
/// always comes with the same status.
///
/// The wire name (`"topic_not_found"`) is serde's for JSON and strum's for `Display` and
/// [`ErrorCode::as_str`]: both are `snake_case` of the variant, and a test holds them equal.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    strum::Display,
    strum::IntoStaticStr,
    strum::EnumIter,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ErrorCode {
    /// Malformed JSON, a missing or mistyped field, a bad query string.
    InvalidRequest,
    /// A topic (or group) name outside 1..=249 characters of `[A-Za-z0-9._-]`.
    InvalidTopicName,
    /// A retention value that is not a positive integer (or `null`).
    InvalidRetention,
    /// `POST /topics` for a name that exists.
    TopicExists,
    TopicNotFound,
    ProducerNotFound,
    ConsumerNotFound,
    /// A producer or consumer id used with a topic it is not registered to.
    WrongTopic,
    /// `consume` found no message after the consumer's position (404, see the README).
    QueueEmpty,
    /// A message, batch or request body over its limit.
    PayloadTooLarge,
    /// A `produce_batch` whose `sequence` is neither the next one expected nor a retry of the
    /// last stored batch: the producer lost track, and should register again.
    SequenceMismatch,
    /// A commit to an offset past the topic's end.
    OffsetOutOfRange,
    /// No token, or one the broker does not know (`Authorization: Bearer TOKEN`).
    Unauthorized,
    /// The token is known but not allowed to do this (to this topic).
    Forbidden,
    /// The request body did not arrive within the broker's body-read timeout.
    RequestTimeout,
    /// A per-client limit was reached (open long polls); retry shortly.
    TooManyRequests,
    /// No such endpoint.
    NotFound,
    /// The endpoint exists but not with this HTTP method.
    MethodNotAllowed,
    /// A JSON endpoint called without a JSON content type.
    UnsupportedMediaType,
    /// The database cannot be reached or failed; retry later.
    StorageUnavailable,
    /// `GET /healthz` only: the store answers, but its last append failed because the disk
    /// is full or failing, and none has succeeded since; writes get 503 until space is freed.
    StoreUnwritable,
    /// The broker is shutting down; retry against it (or another broker) shortly.
    ShuttingDown,
    /// A bug in the broker. Never expected; reported so that nothing answers with HTML.
    Internal,
    /// A code this client does not know (a newer broker).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The HTTP status this code is answered with.
    pub fn http_status(self) -> u16 {
        use ErrorCode::*;
        match self {
            InvalidRequest | InvalidTopicName | InvalidRetention | OffsetOutOfRange => 400,
            Unauthorized => 401,
            WrongTopic | Forbidden => 403,
            TopicNotFound | ProducerNotFound | ConsumerNotFound | QueueEmpty | NotFound => 404,
            MethodNotAllowed => 405,
            RequestTimeout => 408,
            TopicExists | SequenceMismatch => 409,
            PayloadTooLarge => 413,
            UnsupportedMediaType => 415,
            TooManyRequests => 429,
            Internal | Unknown => 500,
            StorageUnavailable | StoreUnwritable | ShuttingDown => 503,
        }
    }

    /// The code as it appears on the wire, e.g. `"topic_not_found"`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Whether the same request may succeed if sent again later.
    pub fn is_retriable(self) -> bool {
        matches!(
            self,
            ErrorCode::StorageUnavailable
                | ErrorCode::StoreUnwritable
                | ErrorCode::ShuttingDown
                | ErrorCode::TooManyRequests
        )
    }
}

/// The body of every failure: `{"status": "failure", "message": ..., "code": ...}`.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorResponse {
    pub status: Status,
    /// For people: says what was wrong and names the topic or id.
    pub message: String,
    /// For programs: stable across versions.
    pub code: ErrorCode,
}

impl ErrorResponse {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorResponse {
            status: Status::Failure,
            message: message.into(),
            code,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_one_wire_name_for_serde_and_strum() {
        use strum::IntoEnumIterator;
        let mut names = std::collections::HashSet::new();
        for code in ErrorCode::iter() {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(code.to_string(), code.as_str());
            assert!(names.insert(code.as_str()), "{code} twice");
        }
        // The names the README documents, spelled out so that a renamed variant cannot
        // silently rename a code on the wire.
        let documented = [
            "invalid_request",
            "invalid_topic_name",
            "invalid_retention",
            "topic_exists",
            "topic_not_found",
            "producer_not_found",
            "consumer_not_found",
            "wrong_topic",
            "queue_empty",
            "payload_too_large",
            "sequence_mismatch",
            "offset_out_of_range",
            "unauthorized",
            "forbidden",
            "request_timeout",
            "too_many_requests",
            "not_found",
            "method_not_allowed",
            "unsupported_media_type",
            "storage_unavailable",
            "store_unwritable",
            "shutting_down",
            "internal",
            "unknown",
        ];
        assert_eq!(names, documented.into_iter().collect());
    }

    #[test]
    fn codes_serialise_as_their_names() {
        for code in [
            ErrorCode::InvalidRequest,
            ErrorCode::QueueEmpty,
            ErrorCode::StorageUnavailable,
            ErrorCode::SequenceMismatch,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
        }
        assert_eq!(
            serde_json::from_str::<ErrorCode>("\"from_the_future\"").unwrap(),
            ErrorCode::Unknown
        );
    }

    #[test]
    fn bad_input_is_never_a_server_error() {
        use ErrorCode::*;
        for code in [
            InvalidRequest,
            InvalidTopicName,
            InvalidRetention,
            TopicExists,
            TopicNotFound,
            ProducerNotFound,
            ConsumerNotFound,
            WrongTopic,
            QueueEmpty,
            PayloadTooLarge,
            SequenceMismatch,
            OffsetOutOfRange,
            NotFound,
            MethodNotAllowed,
            UnsupportedMediaType,
            Unauthorized,
            Forbidden,
            RequestTimeout,
            TooManyRequests,
        ] {
            assert!((400..500).contains(&code.http_status()), "{code}");
        }
    }
}
