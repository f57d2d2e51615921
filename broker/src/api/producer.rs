//! `POST /producer/register`, `POST /producer/produce` and the batch addition
//! `POST /producer/produce_batch`. Single messages take the batch path: one mechanism, one
//! set of rules.

use super::access;
use super::error::{ApiError, respond};
use super::input::Input;
use super::validate;
use crate::app::App;
use crate::store::{Append, Appended};
use myqueue_wire::{
    ProduceBatchRequest, ProduceBatchResponse, ProduceRequest, RegisterProducerRequest,
    RegisterProducerResponse, Status, StatusResponse,
};
use warp::reply::Response;

pub async fn register(app: App, input: Input) -> Response {
    respond(
        async {
            let request: RegisterProducerRequest = input.parse()?;
            validate::topic(&request.topic)?;
            access::produce(&app, &request.topic)?;
            let producer_id = app.store.register_producer(&request.topic).await?;
            Ok::<_, ApiError>(RegisterProducerResponse {
                status: Status::Success,
                producer_id,
            })
        }
        .await,
    )
}

pub async fn produce(app: App, input: Input) -> Response {
    respond(
        async {
            let request: ProduceRequest = input.parse()?;
            access::produce(&app, &request.topic)?;
            validate::message(&request.message, &app.limits)?;
            let bytes = request.message.len() as u64;
            let appended = app
                .store
                .append(Append {
                    producer_id: request.producer_id.0,
                    topic: request.topic.clone(),
                    messages: vec![request.message],
                    sequence: None,
                })
                .await?;
            count(&app, &request.topic, appended, bytes);
            Ok::<_, ApiError>(StatusResponse {
                status: Status::Success,
            })
        }
        .await,
    )
}

pub async fn produce_batch(app: App, input: Input) -> Response {
    respond(
        async {
            let request: ProduceBatchRequest = input.parse()?;
            access::produce(&app, &request.topic)?;
            validate::batch(&request.messages, &app.limits)?;
            let bytes = request.messages.iter().map(|m| m.len() as u64).sum();
            let appended = app
                .store
                .append(Append {
                    producer_id: request.producer_id.0,
                    topic: request.topic.clone(),
                    messages: request.messages,
                    sequence: request.sequence.map(|s| s.0),
                })
                .await?;
            count(&app, &request.topic, appended, bytes);
            Ok::<_, ApiError>(ProduceBatchResponse {
                status: Status::Success,
                base_offset: appended.base_offset,
                count: appended.count,
                duplicate: appended.duplicate,
            })
        }
        .await,
    )
}

/// Counts what an append stored in the metrics (a retried duplicate stored nothing).
fn count(app: &App, topic: &str, appended: Appended, bytes: u64) {
    if !appended.duplicate {
        app.metrics.appended(topic, appended.count, bytes);
    }
}
