//! `POST /consumer/register`, `GET /consumer/consume`, `GET /size`, and the additions
//! `GET /consumer/fetch` (read without moving, long poll) and `POST /consumer/commit`.

use super::access;
use super::error::{ApiError, respond};
use super::input::Input;
use super::validate;
use crate::app::App;
use crate::network::hits::{self, Limit};
use crate::network::long_polls::Slot;
use crate::store::{ConsumerStart, FetchLimit};
use myqueue_wire::{
    CommitRequest, CommitResponse, ConsumeResponse, ConsumerRequest, ErrorCode, FetchRequest,
    FetchResponse, FetchedMessage, RegisterConsumerRequest, RegisterConsumerResponse, SizeResponse,
    Status,
};
use warp::reply::Response;

pub async fn register(app: App, input: Input) -> Response {
    respond(
        async {
            let request: RegisterConsumerRequest = input.parse()?;
            validate::topic(&request.topic)?;
            access::consume(&app, &request.topic)?;
            if let Some(group) = &request.group {
                validate::group(group)?;
            }
            let start = request
                .start
                .map_or(app.policy.consumer_start, ConsumerStart::from);
            let consumer_id = app
                .store
                .register_consumer(&request.topic, request.group.as_deref(), start)
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
            access::consume(&app, &request.topic)?;
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
            access::consume(&app, &request.topic)?;
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
            access::consume(&app, &request.topic)?;
            let limits = request
                .limits()
                .map_err(|err| ApiError::invalid(err.to_string()))?;
            let _slot = match (limits.wait().is_zero(), app.caller.addr) {
                (false, Some(client)) => Some(long_poll_slot(&app, client)?),
                _ => None,
            };
            let fetched = app
                .fetch_waiting(
                    request.consumer_id.0,
                    &request.topic,
                    request.offset.map(|n| n.0),
                    FetchLimit {
                        messages: limits.max_messages() as usize,
                        bytes: limits.max_bytes() as usize,
                    },
                    limits.wait(),
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
            access::consume(&app, &request.topic)?;
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

/// A long poll's place among its client's (`--max-long-polls-per-client`), or 429.
fn long_poll_slot(app: &App, client: std::net::IpAddr) -> Result<Slot, ApiError> {
    app.long_polls.open(client).ok_or_else(|| {
        let most = app.long_polls.most_per_client();
        hits::hit(
            Limit::LongPollsPerClient,
            Some(client),
            &format!("refused a long poll: {most} are open from this client"),
        );
        ApiError::new(
            ErrorCode::TooManyRequests,
            format!("this client has {most} long polls open (--max-long-polls-per-client); retry shortly"),
        )
    })
}
