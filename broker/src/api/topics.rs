//! `POST /topics`, `GET /topics`, and the additions `GET`, `PATCH` and `DELETE /topics/{name}`:
//! what a topic holds, its retention, and deleting it.

use super::error::{ApiError, respond};
use super::input::Input;
use super::validate;
use crate::app::App;
use crate::store::{RetentionChange, RetentionSettings, TopicInfo};
use myqueue_wire::{
    ConsumerDescription, CreateTopicRequest, CreateTopicResponse, DeleteTopicResponse,
    ListTopicsResponse, RetentionInForce, Status, TopicResponse, UpdateTopicRequest,
};
use warp::reply::Response;

pub async fn create(app: App, input: Input) -> Response {
    respond(
        async {
            let request: CreateTopicRequest = input.parse()?;
            validate::topic(&request.name)?;
            let setting = |field, value: &Option<_>| match value {
                Some(value) => validate::retention(field, value),
                None => Ok(None),
            };
            let settings = RetentionSettings {
                ms: setting("retention_ms", &request.retention_ms)?,
                bytes: setting("retention_bytes", &request.retention_bytes)?,
            };
            app.store.create_topic(&request.name, settings).await?;
            Ok::<_, ApiError>(CreateTopicResponse {
                status: Status::Success,
                message: format!("Topic '{}' created successfully", request.name),
            })
        }
        .await,
    )
}

pub async fn list(app: App) -> Response {
    respond(
        async {
            Ok::<_, ApiError>(ListTopicsResponse {
                status: Status::Success,
                topics: app
                    .store
                    .list_topics()
                    .await?
                    .into_iter()
                    .filter(|topic| app.caller.access.may_see(topic))
                    .collect(),
            })
        }
        .await,
    )
}

pub async fn describe(name: String, app: App) -> Response {
    respond(
        async {
            validate::topic(&name)?;
            Ok::<_, ApiError>(described(app.store.describe_topic(&name).await?))
        }
        .await,
    )
}

/// Changes the retention settings given; answers the topic as `GET` does.
pub async fn update(name: String, app: App, input: Input) -> Response {
    respond(
        async {
            validate::topic(&name)?;
            let request: UpdateTopicRequest = input.parse()?;
            let setting = |field, value: &Option<_>| {
                value
                    .as_ref()
                    .map(|value| validate::retention(field, value))
                    .transpose()
            };
            let change = RetentionChange {
                ms: setting("retention_ms", &request.retention_ms)?,
                bytes: setting("retention_bytes", &request.retention_bytes)?,
            };
            if change == RetentionChange::default() {
                return Err(ApiError::invalid(
                    "nothing to change: send retention_ms and/or retention_bytes \
                     (a positive integer, or null for the broker's default)",
                ));
            }
            Ok(described(app.store.set_retention(&name, change).await?))
        }
        .await,
    )
}

pub async fn delete(name: String, app: App) -> Response {
    respond(
        async {
            validate::topic(&name)?;
            app.store.delete_topic(&name).await?;
            Ok::<_, ApiError>(DeleteTopicResponse {
                status: Status::Success,
                message: format!("Topic '{name}' deleted"),
            })
        }
        .await,
    )
}

fn described(info: TopicInfo) -> TopicResponse {
    TopicResponse {
        status: Status::Success,
        messages: info.messages(),
        start_offset: info.start_offset,
        end_offset: info.end_offset,
        bytes: info.bytes,
        retention_ms: info.settings.ms,
        retention_bytes: info.settings.bytes,
        retention: RetentionInForce {
            ms: info.retention.ms,
            bytes: info.retention.bytes,
        },
        created_ms: info.created_ms,
        consumers: info
            .consumers
            .into_iter()
            .map(|c| ConsumerDescription {
                consumer_id: c.id,
                group: c.group,
                position: c.position,
                lag: c.lag,
            })
            .collect(),
        name: info.name,
    }
}
