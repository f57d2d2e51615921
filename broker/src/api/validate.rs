//! Checks on input that need no storage: names, sizes, counts. They run before anything is
//! stored, so a bad request never leaves a trace.

use super::error::ApiError;
use crate::app::Limits;
use crate::store::retention::MAX_RETENTION;
use myqueue_wire::{ErrorCode, MAX_BATCH_MESSAGES, RetentionValue};

pub fn topic(name: &str) -> Result<(), ApiError> {
    myqueue_wire::check_topic_name(name)
        .map_err(|why| ApiError::new(ErrorCode::InvalidTopicName, why))
}

pub fn group(name: &str) -> Result<(), ApiError> {
    myqueue_wire::check_group_name(name)
        .map_err(|why| ApiError::new(ErrorCode::InvalidTopicName, why))
}

/// A retention value (`field` names it): `None` for `null` (the broker's default), else a
/// positive integer a store can keep.
pub fn retention(field: &str, value: &RetentionValue) -> Result<Option<u64>, ApiError> {
    let refuse = |got: &str| {
        ApiError::new(
            ErrorCode::InvalidRetention,
            format!(
                "{field} must be a positive integer (or null for the broker's default), not {got}"
            ),
        )
    };
    match value {
        RetentionValue::Default => Ok(None),
        RetentionValue::Set(0) => Err(refuse("0")),
        RetentionValue::Set(n) if *n > MAX_RETENTION => Err(ApiError::new(
            ErrorCode::InvalidRetention,
            format!("{field} must be at most {MAX_RETENTION}, not {n}"),
        )),
        RetentionValue::Set(n) => Ok(Some(*n)),
        RetentionValue::Invalid(got) => Err(refuse(got)),
    }
}

pub fn message(message: &str, limits: &Limits) -> Result<(), ApiError> {
    if message.len() > limits.max_message_bytes {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "the message is {} bytes; the limit is {} bytes",
                message.len(),
                limits.max_message_bytes
            ),
        ));
    }
    Ok(())
}

pub fn batch(messages: &[String], limits: &Limits) -> Result<(), ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid("messages must not be empty"));
    }
    if messages.len() > MAX_BATCH_MESSAGES {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "the batch has {} messages; the limit is {MAX_BATCH_MESSAGES}",
                messages.len()
            ),
        ));
    }
    for (index, text) in messages.iter().enumerate() {
        message(text, limits).map_err(|err| ApiError {
            message: format!("message {index}: {}", err.message),
            ..err
        })?;
    }
    Ok(())
}
