//! `GET /openapi.json`: the API as an OpenAPI 3.1 document.
//!
//! Request and response bodies are the `myqueue_wire` types' own schemas (derived with
//! utoipa), so a field changed there changes here. Each operation's failures come from one
//! table ([`failures`]) of the error codes it can answer, and their HTTP statuses from
//! [`ErrorCode::http_status`]. `tests/test_openapi.py` checks that
//! every operation documented here is served by the route table.

use super::health::Health;
use myqueue_wire::{ErrorCode, ErrorResponse};
use std::collections::BTreeSet;
use std::sync::OnceLock;
use utoipa::OpenApi;
use utoipa::openapi::{
    ContentBuilder, HttpMethod, OpenApi as Document, Ref, ResponseBuilder, path::Operation,
};

/// The document, built once.
pub fn document() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let mut doc = Api::openapi();
        doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
        add_failures(&mut doc);
        serde_json::to_string_pretty(&doc).expect("the document serialises")
    })
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "myqueue broker",
        description = "A durable logging queue over HTTP. Parameters of GET endpoints may also \
            be sent as a JSON body, and those of POST endpoints as a form body or a query \
            string (see the README). Every failure is `{\"status\": \"failure\", \"message\", \
            \"code\"}`; under `--failure-status 400` every failure a client causes is 400.",
        license(name = "MIT")
    ),
    paths(
        operations::create_topic,
        operations::list_topics,
        operations::describe_topic,
        operations::update_topic,
        operations::delete_topic,
        operations::register_producer,
        operations::produce,
        operations::produce_batch,
        operations::register_consumer,
        operations::consume,
        operations::size,
        operations::fetch,
        operations::commit,
        operations::healthz,
        operations::noop,
        operations::metrics,
        operations::openapi_json,
        operations::ui,
    ),
    components(schemas(ErrorResponse, ErrorCode))
)]
struct Api;

/// What the operation `method path` can fail with, besides `invalid_request` (400) and the
/// store being unavailable or shutting down (503), which every operation can answer.
fn failures(method: &HttpMethod, path: &str) -> &'static [ErrorCode] {
    use ErrorCode::*;
    const CONSUMER: &[ErrorCode] = &[TopicNotFound, ConsumerNotFound, WrongTopic, PayloadTooLarge];
    match (method, path) {
        (HttpMethod::Post, "/topics") => &[
            InvalidTopicName,
            InvalidRetention,
            TopicExists,
            PayloadTooLarge,
        ],
        (HttpMethod::Get, "/topics/{name}") | (HttpMethod::Delete, "/topics/{name}") => {
            &[InvalidTopicName, TopicNotFound]
        }
        (HttpMethod::Patch, "/topics/{name}") => &[
            InvalidTopicName,
            InvalidRetention,
            TopicNotFound,
            PayloadTooLarge,
        ],
        (HttpMethod::Post, "/producer/register") | (HttpMethod::Post, "/consumer/register") => {
            &[InvalidTopicName, TopicNotFound, PayloadTooLarge]
        }
        (HttpMethod::Post, "/producer/produce") => {
            &[TopicNotFound, ProducerNotFound, WrongTopic, PayloadTooLarge]
        }
        (HttpMethod::Post, "/producer/produce_batch") => &[
            TopicNotFound,
            ProducerNotFound,
            WrongTopic,
            SequenceMismatch,
            PayloadTooLarge,
        ],
        (HttpMethod::Get, "/consumer/consume") => &[
            TopicNotFound,
            ConsumerNotFound,
            WrongTopic,
            QueueEmpty,
            PayloadTooLarge,
        ],
        (HttpMethod::Get, "/size") => CONSUMER,
        (HttpMethod::Get, "/consumer/fetch") | (HttpMethod::Post, "/consumer/commit") => &[
            TopicNotFound,
            ConsumerNotFound,
            WrongTopic,
            OffsetOutOfRange,
            PayloadTooLarge,
        ],
        (HttpMethod::Post, "/noop") => &[PayloadTooLarge],
        // /ui answers 404 not_found for a file it does not have.
        (HttpMethod::Get, "/ui") => &[NotFound],
        _ => &[],
    }
}

/// Adds every operation's failures: one response per HTTP status, listing its codes.
fn add_failures(doc: &mut Document) {
    for (path, item) in doc.paths.paths.iter_mut() {
        let operations: [(HttpMethod, &mut Option<Operation>); 4] = [
            (HttpMethod::Get, &mut item.get),
            (HttpMethod::Post, &mut item.post),
            (HttpMethod::Patch, &mut item.patch),
            (HttpMethod::Delete, &mut item.delete),
        ];
        for (method, operation) in operations {
            let Some(operation) = operation else { continue };
            let mut codes: BTreeSet<&str> = BTreeSet::new();
            let mut by_status: std::collections::BTreeMap<u16, Vec<&str>> = Default::default();
            let common = [
                ErrorCode::InvalidRequest,
                ErrorCode::StorageUnavailable,
                ErrorCode::ShuttingDown,
            ];
            for &code in common.iter().chain(failures(&method, path)) {
                if codes.insert(code.as_str()) {
                    by_status
                        .entry(code.http_status())
                        .or_default()
                        .push(code.as_str());
                }
            }
            for (status, codes) in by_status {
                let description = format!(
                    "Failure ({}). Under `--failure-status 400`, every 4xx is 400.",
                    codes.join(", ")
                );
                let response = ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("ErrorResponse")))
                            .build(),
                    )
                    .build();
                operation
                    .responses
                    .responses
                    .entry(status.to_string())
                    .or_insert(response.into());
            }
        }
    }
}

/// The operations. The functions only carry the documentation; the route table
/// (`api::routes`) serves them.
#[allow(dead_code)]
mod operations {
    use super::Health;
    use myqueue_wire::*;

    #[utoipa::path(post, path = "/topics", tag = "topics", request_body = CreateTopicRequest,
        responses((status = 200, description = "The topic was created.", body = CreateTopicResponse)))]
    fn create_topic() {}

    #[utoipa::path(get, path = "/topics", tag = "topics",
        responses((status = 200, description = "Every topic's name, sorted.", body = ListTopicsResponse)))]
    fn list_topics() {}

    #[utoipa::path(get, path = "/topics/{name}", tag = "topics",
        params(("name" = String, Path, description = "The topic's name.", pattern = r"^[A-Za-z0-9._-]{1,249}$")),
        responses((status = 200, description = "What the topic holds, its retention and its consumers.", body = TopicResponse)))]
    fn describe_topic() {}

    #[utoipa::path(patch, path = "/topics/{name}", tag = "topics",
        params(("name" = String, Path, description = "The topic's name.", pattern = r"^[A-Za-z0-9._-]{1,249}$")),
        request_body = UpdateTopicRequest,
        responses((status = 200, description = "The topic after the change.", body = TopicResponse)))]
    fn update_topic() {}

    #[utoipa::path(delete, path = "/topics/{name}", tag = "topics",
        params(("name" = String, Path, description = "The topic's name.", pattern = r"^[A-Za-z0-9._-]{1,249}$")),
        responses((status = 200, description = "The topic and its messages were deleted.", body = DeleteTopicResponse)))]
    fn delete_topic() {}

    #[utoipa::path(post, path = "/producer/register", tag = "producer", request_body = RegisterProducerRequest,
        responses((status = 200, description = "A new producer id (the topic is created if missing).", body = RegisterProducerResponse)))]
    fn register_producer() {}

    #[utoipa::path(post, path = "/producer/produce", tag = "producer", request_body = ProduceRequest,
        responses((status = 200, description = "The message is stored durably.", body = StatusResponse)))]
    fn produce() {}

    #[utoipa::path(post, path = "/producer/produce_batch", tag = "producer", request_body = ProduceBatchRequest,
        responses((status = 200, description = "The messages are stored durably, at consecutive offsets.", body = ProduceBatchResponse)))]
    fn produce_batch() {}

    #[utoipa::path(post, path = "/consumer/register", tag = "consumer", request_body = RegisterConsumerRequest,
        responses((status = 200, description = "The consumer's id (the same id for the same topic and group).", body = RegisterConsumerResponse)))]
    fn register_consumer() {}

    #[utoipa::path(get, path = "/consumer/consume", tag = "consumer", params(ConsumerRequest),
        responses((status = 200, description = "The next message; the consumer's position moved past it.", body = ConsumeResponse)))]
    fn consume() {}

    #[utoipa::path(get, path = "/size", tag = "consumer", params(ConsumerRequest),
        responses((status = 200, description = "Messages after the consumer's position.", body = SizeResponse)))]
    fn size() {}

    #[utoipa::path(get, path = "/consumer/fetch", tag = "consumer", params(FetchRequest),
        responses((status = 200, description = "Messages from the offset asked for; the position does not move.", body = FetchResponse)))]
    fn fetch() {}

    #[utoipa::path(post, path = "/consumer/commit", tag = "consumer", request_body = CommitRequest,
        responses((status = 200, description = "The consumer's new position.", body = CommitResponse)))]
    fn commit() {}

    #[utoipa::path(get, path = "/healthz", tag = "operations",
        responses((status = 200, description = "The store answers.", body = Health)))]
    fn healthz() {}

    #[utoipa::path(post, path = "/noop", tag = "operations",
        responses((status = 200, description = "Reads the request and touches nothing (a benchmark's ceiling).", body = StatusResponse)))]
    fn noop() {}

    #[utoipa::path(get, path = "/metrics", tag = "operations",
        responses((status = 200, description = "Prometheus' text format (see the README for the series).",
            content_type = "text/plain; version=0.0.4; charset=utf-8", body = String)))]
    fn metrics() {}

    #[utoipa::path(get, path = "/openapi.json", tag = "operations",
        responses((status = 200, description = "This document.", content_type = "application/json", body = Object)))]
    fn openapi_json() {}

    #[utoipa::path(get, path = "/ui", tag = "operations",
        responses((status = 200, description = "The dashboard.", content_type = "text/html; charset=utf-8", body = String)))]
    fn ui() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_with_every_operation_and_its_failures() {
        let doc: serde_json::Value = serde_json::from_str(document()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        let paths = doc["paths"].as_object().unwrap();
        assert_eq!(paths.len(), 15, "{:?}", paths.keys().collect::<Vec<_>>());
        let produce = &paths["/producer/produce_batch"]["post"]["responses"];
        for status in ["200", "400", "403", "404", "409", "413", "503"] {
            assert!(
                produce.get(status).is_some(),
                "produce_batch lacks {status}"
            );
        }
        assert!(
            produce["409"]["description"]
                .as_str()
                .unwrap()
                .contains("sequence_mismatch")
        );
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for name in [
            "ErrorResponse",
            "FetchResponse",
            "TopicResponse",
            "Num",
            "OffsetSpec",
        ] {
            assert!(schemas.contains_key(name), "no schema {name}");
        }
    }
}
