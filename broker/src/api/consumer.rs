//! `POST /consumer/register`, `GET /consumer/consume`, `GET /size`, and the additions
//! `GET /consumer/fetch` (read without moving, long poll) and `POST /consumer/commit`.

use super::error::{ApiError, respond};
use super::input::Input;
use super::validate;
use crate::app::App;
use crate::store::FetchLimit;
use myqueue_wire::{
    CommitRequest, CommitResponse, ConsumeResponse, ConsumerRequest, DEFAULT_FETCH_BYTES,
    ErrorCode, FetchRequest, FetchResponse, FetchedMessage, MAX_FETCH_BYTES, MAX_FETCH_MESSAGES,
    MAX_FETCH_WAIT_MS, RegisterConsumerRequest, RegisterConsumerResponse, SizeResponse, Status,
};
use std::time::Duration;
use warp::reply::Response;

/// Messages per fetch when the request does not say.
const DEFAULT_FETCH_MESSAGES: u64 = 1000;

pub async fn register(app: App, input: Input) -> Response {
    respond(
        async {
            let request: RegisterConsumerRequest = input.parse()?;
            validate::topic(&request.topic)?;
            if let Some(group) = &request.group {
                validate::group(group)?;
            }
            let consumer_id = app
                .store
                .register_consumer(&request.topic, request.group.as_deref())
                .await?;
            Ok::<_, ApiError>(RegisterConsumerResponse {
                status: Status::Success,
                consumer_id,
            })
        }
        .await,
    )
}

pub async fn consume(app: App, input: Input) -> Response {
    respond(
        async {
            let request: ConsumerRequest = input.parse()?;
            match app
                .store
                .consume(request.consumer_id.0, &request.topic)
                .await?
            {
                Some(message) => Ok(ConsumeResponse {
                    status: Status::Success,
                    message: message.payload,
                }),
                None => Err(ApiError::new(
                    ErrorCode::QueueEmpty,
                    format!(
                        "no new message in topic '{}' for consumer {}",
                        request.topic, request.consumer_id.0
                    ),
                )),
            }
        }
        .await,
    )
}

pub async fn size(app: App, input: Input) -> Response {
    respond(
        async {
            let request: ConsumerRequest = input.parse()?;
            let size = app
                .store
                .size(request.consumer_id.0, &request.topic)
                .await?;
            Ok::<_, ApiError>(SizeResponse {
                status: Status::Success,
                size,
            })
        }
        .await,
    )
}

pub async fn fetch(app: App, input: Input) -> Response {
    respond(
        async {
            let request: FetchRequest = input.parse()?;
            let max = request.max_messages.map_or(DEFAULT_FETCH_MESSAGES, |n| n.0);
            if max == 0 || max > MAX_FETCH_MESSAGES as u64 {
                return Err(ApiError::invalid(format!(
                    "max_messages must be between 1 and {MAX_FETCH_MESSAGES}"
                )));
            }
            let max_bytes = request.max_bytes.map_or(DEFAULT_FETCH_BYTES, |n| n.0);
            if max_bytes == 0 || max_bytes > MAX_FETCH_BYTES {
                return Err(ApiError::invalid(format!(
                    "max_bytes must be between 1 and {MAX_FETCH_BYTES}"
                )));
            }
            let wait_ms = request.wait_ms.map_or(0, |n| n.0);
            if wait_ms > MAX_FETCH_WAIT_MS {
                return Err(ApiError::invalid(format!(
                    "wait_ms must be at most {MAX_FETCH_WAIT_MS}"
                )));
            }
            let fetched = app
                .fetch_waiting(
                    request.consumer_id.0,
                    &request.topic,
                    request.offset.map(|n| n.0),
                    FetchLimit {
                        messages: max as usize,
                        bytes: max_bytes as usize,
                    },
                    Duration::from_millis(wait_ms),
                )
                .await?;
            Ok(FetchResponse {
                status: Status::Success,
                messages: fetched
                    .messages
                    .into_iter()
                    .map(|m| FetchedMessage {
                        offset: m.offset,
                        message: m.payload,
                        timestamp: m.timestamp_ms,
                    })
                    .collect(),
                next_offset: fetched.next_offset,
                end_offset: fetched.end_offset,
                skipped: fetched.skipped,
            })
        }
        .await,
    )
}

pub async fn commit(app: App, input: Input) -> Response {
    respond(
        async {
            let request: CommitRequest = input.parse()?;
            let position = app
                .store
                .commit(request.consumer_id.0, &request.topic, request.offset.into())
                .await?;
            Ok::<_, ApiError>(CommitResponse {
                status: Status::Success,
                position,
            })
        }
        .await,
    )
}
