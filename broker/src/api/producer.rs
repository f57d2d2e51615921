//! `POST /producer/register`, `POST /producer/produce` and the batch addition
//! `POST /producer/produce_batch`. Single messages take the batch path: one mechanism, one
//! set of rules.

use super::access;
use super::error::{ApiError, respond};
use super::input::Input;
use super::validate;
use crate::app::App;
use crate::store::{Append, Appended, StoreError};
use myqueue_wire::{
    MAX_BATCH_MESSAGES, PRODUCER_WINDOW, ProduceBatchRequest, ProduceBatchResponse, ProduceRequest,
    RegisterProducerRequest, RegisterProducerResponse, Status, StatusResponse,
};
use std::time::Duration;
use tokio::time::Instant;
use warp::reply::Response;

/// How long a batch that arrived ahead of its producer's earlier batches waits for them.
const REORDER_WAIT: Duration = Duration::from_millis(250);

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
            let topic = request.topic.clone();
            let appended = append_in_order(&app, &input, request).await?;
            count(&app, &topic, appended, bytes);
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

/// Appends a batch; one that arrived ahead of an earlier batch of its producer waits briefly
/// for it. A producer with several batches in flight sends them on several connections, so
/// batch n+1 can reach the store before batch n and be refused as a gap; the client would then
/// fall back to one batch at a time. Such a batch (numbered past the one expected, by at most
/// a window of batches) waits for the topic's next append and tries again, until
/// [`REORDER_WAIT`] has passed; then the store's refusal stands. The request body is parsed
/// again for each new try, so the common path copies nothing.
async fn append_in_order(
    app: &App,
    input: &Input,
    mut request: ProduceBatchRequest,
) -> Result<Appended, ApiError> {
    let deadline = Instant::now() + REORDER_WAIT;
    loop {
        // Subscribed before the try: an append between the refusal and the wait still wakes it.
        let mut appended = app.store.signals().subscribe(&request.topic);
        let outcome = app
            .store
            .append(Append {
                producer_id: request.producer_id.0,
                topic: request.topic,
                messages: request.messages,
                sequence: request.sequence.map(|s| s.0),
            })
            .await;
        match outcome {
            Err(StoreError::SequenceMismatch { expected, got, .. })
                if arrived_early(expected, got) && Instant::now() < deadline =>
            {
                // Woken by the topic's next append (the missing batch's, perhaps), or not.
                let _ = tokio::time::timeout_at(deadline, appended.changed()).await;
                request = input.parse()?;
            }
            outcome => return Ok(outcome?),
        }
    }
}

/// Whether a batch numbered `got` could be one sent after the batch the store expects,
/// still on its way: within a window of in-flight batches.
fn arrived_early(expected: u64, got: u64) -> bool {
    let window = ((PRODUCER_WINDOW - 1) * MAX_BATCH_MESSAGES) as u64;
    got > expected && got - expected <= window
}

/// Counts what an append stored in the metrics (a retried duplicate stored nothing).
fn count(app: &App, topic: &str, appended: Appended, bytes: u64) {
    if !appended.duplicate {
        app.metrics.appended(topic, appended.count, bytes);
    }
}
