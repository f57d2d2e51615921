//! The wire of myqueue: every request and response body of the broker's HTTP API, the error
//! codes, and the limits both sides agree on. The broker and the client both use these types,
//! so a field renamed here is renamed everywhere at once.
//!
//! Requests are deserialised liberally (clients of the assignment's API were written many
//! ways): ids and offsets may be JSON numbers or numeric strings, and `POST /topics` takes
//! `name` or `topic_name`. Responses are strict: exactly the fields the assignment names, plus
//! the documented additions of the batch endpoints.

mod error;
mod fetch;
mod number;
#[cfg(feature = "openapi")]
mod openapi;
mod retention;

pub use error::{ErrorCode, ErrorResponse};
pub use fetch::{
    DEFAULT_FETCH_BYTES, DEFAULT_FETCH_MESSAGES, FetchLimitError, FetchLimits, MAX_FETCH_BYTES,
    MAX_FETCH_MESSAGES, MAX_FETCH_WAIT_MS,
};
pub use number::Num;
pub use retention::RetentionValue;

use serde::{Deserialize, Serialize};

/// The port the assignment's examples talk to (`localhost:9092`).
pub const DEFAULT_PORT: u16 = 9092;
/// Kafka's limit on topic names; longer names are rejected with `invalid_topic_name`.
pub const MAX_TOPIC_NAME_CHARS: usize = 249;
/// Longest consumer group name.
pub const MAX_GROUP_NAME_CHARS: usize = 249;
/// Default limit on one message's UTF-8 size (the broker's `--max-message-bytes`).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// Most messages one `produce_batch` request may carry.
pub const MAX_BATCH_MESSAGES: usize = 100_000;
/// How many of a producer's most recent batches the broker recognises when they are sent
/// again: the most batches a producer may have in flight per topic (`max_in_flight`).
pub const PRODUCER_WINDOW: usize = 5;

/// The `status` field of every response.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Success,
    Failure,
}

/// Checks a topic name against Kafka's rule: 1 to 249 characters of `[A-Za-z0-9._-]`.
/// Returns the reason it is refused.
pub fn check_topic_name(name: &str) -> Result<(), String> {
    check_name("topic", name, MAX_TOPIC_NAME_CHARS)
}

/// Checks a consumer group name by the same rule as topic names.
pub fn check_group_name(name: &str) -> Result<(), String> {
    check_name("group", name, MAX_GROUP_NAME_CHARS)
}

fn check_name(what: &str, name: &str, max_chars: usize) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{what} name must not be empty"));
    }
    if name.len() > max_chars {
        return Err(format!(
            "{what} name is {} characters long; the limit is {max_chars}",
            name.chars().count()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "{what} name '{name}' contains {bad:?}; only letters, digits, '.', '_' and '-' are allowed"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The assignment's endpoints
// ---------------------------------------------------------------------------------------------

/// `POST /topics`
#[derive(Serialize, Deserialize, Clone, Debug)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateTopicRequest {
    /// The assignment's parameter list says `name`, its example body says `topic_name`.
    #[serde(alias = "topic_name")]
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[A-Za-z0-9._-]{1,249}$"))]
    pub name: String,
    /// Addition: how long the topic keeps messages, in milliseconds; absent or `null`: the
    /// broker's `--retention`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<RetentionValue>,
    /// Addition: how many bytes the topic keeps (payload plus 64 per message); absent or
    /// `null`: the broker's `--retention-bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_bytes: Option<RetentionValue>,
}

/// `POST /topics` on success.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateTopicResponse {
    pub status: Status,
    pub message: String,
}

/// `PATCH /topics/{name}`: changes a topic's retention. An absent field stays as it is;
/// `null` returns it to the broker's default.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UpdateTopicRequest {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "retention::present"
    )]
    pub retention_ms: Option<RetentionValue>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "retention::present"
    )]
    pub retention_bytes: Option<RetentionValue>,
}

/// A retention limit in force: `null` is unlimited.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RetentionInForce {
    pub ms: Option<u64>,
    pub bytes: Option<u64>,
}

/// A consumer of a topic, as `GET /topics/{name}` lists it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsumerDescription {
    pub consumer_id: u64,
    /// `null` for an anonymous consumer.
    pub group: Option<String>,
    /// The next offset it consumes, as stored (before the start, it continues at the start).
    pub position: u64,
    /// Messages after its position: `end_offset − max(position, start_offset)`.
    pub lag: u64,
}

/// `GET /topics/{name}` and `PATCH /topics/{name}` on success: what the topic holds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TopicResponse {
    pub status: Status,
    pub name: String,
    /// The oldest offset kept: retention removed everything before it.
    pub start_offset: u64,
    /// The offset the next message gets.
    pub end_offset: u64,
    /// Messages held: `end_offset − start_offset`.
    pub messages: u64,
    /// Bytes held: payload plus 64 per message.
    pub bytes: u64,
    /// As set on the topic; `null`: the broker's default.
    pub retention_ms: Option<u64>,
    pub retention_bytes: Option<u64>,
    /// What is in force.
    pub retention: RetentionInForce,
    /// When the topic was created, in milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// Every consumer registered to the topic, by id.
    pub consumers: Vec<ConsumerDescription>,
}

/// `DELETE /topics/{name}` on success.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeleteTopicResponse {
    pub status: Status,
    pub message: String,
}

/// `GET /topics` on success.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ListTopicsResponse {
    pub status: Status,
    pub topics: Vec<String>,
}

/// `POST /producer/register`
#[derive(Serialize, Deserialize, Clone, Debug)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterProducerRequest {
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[A-Za-z0-9._-]{1,249}$"))]
    pub topic: String,
}

/// `POST /producer/register` on success.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterProducerResponse {
    pub status: Status,
    pub producer_id: u64,
}

/// `POST /consumer/register`
#[derive(Serialize, Deserialize, Clone, Debug)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterConsumerRequest {
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[A-Za-z0-9._-]{1,249}$"))]
    pub topic: String,
    /// Addition: a durable name. Registering the same `(topic, group)` again returns the same
    /// consumer id, so a restarted consumer continues from its committed position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[A-Za-z0-9._-]{1,249}$"))]
    pub group: Option<String>,
    /// Addition: where a consumer this registration creates starts, `"beginning"` or `"end"`
    /// (only what is produced after it registered); the broker's `--consumer-start` when
    /// absent. A group that already exists keeps its position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<NamedOffset>,
}

/// `POST /consumer/register` on success.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterConsumerResponse {
    pub status: Status,
    pub consumer_id: u64,
}

/// `POST /producer/produce`
#[derive(Serialize, Deserialize, Clone, Debug)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProduceRequest {
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[A-Za-z0-9._-]{1,249}$"))]
    pub topic: String,
    pub producer_id: Num,
    pub message: String,
}

/// A response that carries nothing but `"status": "success"` (produce).
#[derive(Serialize, Deserialize, Clone, Debug)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatusResponse {
    pub status: Status,
}

/// `GET /consumer/consume` and `GET /size` (query string, or a JSON body).
#[derive(Serialize, Deserialize, Clone, Debug)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema, utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct ConsumerRequest {
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[A-Za-z0-9._-]{1,249}$"))]
    #[cfg_attr(feature = "openapi", param(pattern = r"^[A-Za-z0-9._-]{1,249}$"))]
    pub topic: String,
    pub consumer_id: Num,
}

/// `GET /consumer/consume` on success.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsumeResponse {
    pub status: Status,
    pub message: String,
}

/// `GET /size` on success.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SizeResponse {
    pub status: Status,
    pub size: u64,
}

// ---------------------------------------------------------------------------------------------
// Additions for the client library: batches, read-only fetch with long polling, commits
// ---------------------------------------------------------------------------------------------

/// `POST /producer/produce_batch`: many messages in one request, stored in one transaction.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProduceBatchRequest {
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[A-Za-z0-9._-]{1,249}$"))]
    pub topic: String,
    pub producer_id: Num,
    pub messages: Vec<String>,
    /// Idempotence: the producer's sequence number of the batch's first message. The broker
    /// stores a batch once even when it is retried after a lost response. Omit it to append
    /// without the check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<Num>,
}

/// `POST /producer/produce_batch` on success.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProduceBatchResponse {
    pub status: Status,
    /// Offset of the batch's first message; the others follow without gaps.
    pub base_offset: u64,
    pub count: u64,
    /// True when this batch had been stored before (a retry) and was not stored again.
    pub duplicate: bool,
}

/// `GET /consumer/fetch`: read messages without moving the consumer's position.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema, utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct FetchRequest {
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[A-Za-z0-9._-]{1,249}$"))]
    #[cfg_attr(feature = "openapi", param(pattern = r"^[A-Za-z0-9._-]{1,249}$"))]
    pub topic: String,
    pub consumer_id: Num,
    /// First offset to read; the consumer's committed position when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<Num>,
    /// At most this many messages (default [`DEFAULT_FETCH_MESSAGES`], at most
    /// [`MAX_FETCH_MESSAGES`]). [`FetchRequest::limits`] checks it and the two below.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_messages: Option<Num>,
    /// At most this many payload bytes, past the first message (default
    /// [`DEFAULT_FETCH_BYTES`], at most [`MAX_FETCH_BYTES`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<Num>,
    /// When nothing is there yet, wait up to this long for a message (long poll).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<Num>,
}

/// One message as `fetch` returns it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FetchedMessage {
    pub offset: u64,
    pub message: String,
    /// Milliseconds since the Unix epoch, when the broker stored the message.
    pub timestamp: u64,
}

/// `GET /consumer/fetch` on success.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FetchResponse {
    pub status: Status,
    pub messages: Vec<FetchedMessage>,
    /// The offset to fetch from next.
    pub next_offset: u64,
    /// The topic's end: the offset the next produced message will get.
    pub end_offset: u64,
    /// How many of the messages asked for (from the requested offset, or the consumer's
    /// position) retention had removed: the messages begin that much later, at the topic's
    /// start. Present only when it is not 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Where to move a consumer's position: an offset, or `"beginning"` / `"end"`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum OffsetSpec {
    At(Num),
    Named(NamedOffset),
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum NamedOffset {
    Beginning,
    End,
}

/// `POST /consumer/commit`: set the consumer's position (the next offset it will consume).
/// Used to acknowledge what was taken, and to seek.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommitRequest {
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[A-Za-z0-9._-]{1,249}$"))]
    pub topic: String,
    pub consumer_id: Num,
    pub offset: OffsetSpec,
}

/// `POST /consumer/commit` on success.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommitResponse {
    pub status: Status,
    pub position: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafkas_rule() {
        assert!(check_topic_name("user_signup-v1.2").is_ok());
        assert!(check_topic_name(&"a".repeat(249)).is_ok());
        assert!(check_topic_name(&"a".repeat(250)).is_err());
        assert!(check_topic_name("").is_err());
        assert!(check_topic_name("has space").is_err());
        assert!(check_topic_name("slash/").is_err());
        assert!(check_topic_name("é").is_err());
    }

    #[test]
    fn create_topic_takes_name_or_topic_name() {
        let a: CreateTopicRequest = serde_json::from_str(r#"{"name":"t"}"#).unwrap();
        let b: CreateTopicRequest = serde_json::from_str(r#"{"topic_name":"t"}"#).unwrap();
        assert_eq!(a.name, "t");
        assert_eq!(b.name, "t");
    }

    #[test]
    fn patch_tells_absent_from_null() {
        let r: UpdateTopicRequest =
            serde_json::from_str(r#"{"retention_ms": null, "retention_bytes": 5}"#).unwrap();
        assert_eq!(r.retention_ms, Some(RetentionValue::Default));
        assert_eq!(r.retention_bytes, Some(RetentionValue::Set(5)));
        let r: UpdateTopicRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(r.retention_ms, None);
        let r: CreateTopicRequest =
            serde_json::from_str(r#"{"name": "t", "retention_ms": "abc"}"#).unwrap();
        assert_eq!(
            r.retention_ms,
            Some(RetentionValue::Invalid("\"abc\"".into()))
        );
    }

    #[test]
    fn fetch_says_skipped_only_when_something_was() {
        let none = FetchResponse {
            status: Status::Success,
            messages: vec![],
            next_offset: 3,
            end_offset: 3,
            skipped: 0,
        };
        assert!(!serde_json::to_string(&none).unwrap().contains("skipped"));
        let some = FetchResponse { skipped: 2, ..none };
        assert!(
            serde_json::to_string(&some)
                .unwrap()
                .contains(r#""skipped":2"#)
        );
    }

    #[test]
    fn offsets_are_numbers_or_names() {
        let r: CommitRequest =
            serde_json::from_str(r#"{"topic":"t","consumer_id":"3","offset":"end"}"#).unwrap();
        assert_eq!(r.consumer_id, Num(3));
        assert_eq!(r.offset, OffsetSpec::Named(NamedOffset::End));
        let r: CommitRequest =
            serde_json::from_str(r#"{"topic":"t","consumer_id":3,"offset":"17"}"#).unwrap();
        assert_eq!(r.offset, OffsetSpec::At(Num(17)));
    }
}
