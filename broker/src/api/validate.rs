//! Checks on input that need no storage: names, sizes, counts. They run before anything is
//! stored, so a bad request never leaves a trace.

use super::error::ApiError;
use crate::app::Limits;
use myqueue_wire::{ErrorCode, MAX_BATCH_MESSAGES};

pub fn topic(name: &str) -> Result<(), ApiError> {
    myqueue_wire::check_topic_name(name)
        .map_err(|why| ApiError::new(ErrorCode::InvalidTopicName, why))
}

pub fn group(name: &str) -> Result<(), ApiError> {
    myqueue_wire::check_group_name(name)
        .map_err(|why| ApiError::new(ErrorCode::InvalidTopicName, why))
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
