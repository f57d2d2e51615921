//! `POST /topics` and `GET /topics`.

use super::error::{ApiError, respond};
use super::input::Input;
use super::validate;
use crate::app::App;
use myqueue_wire::{CreateTopicRequest, CreateTopicResponse, ListTopicsResponse, Status};
use warp::reply::Response;

pub async fn create(app: App, input: Input) -> Response {
    respond(
        async {
            let request: CreateTopicRequest = input.parse()?;
            validate::topic(&request.name)?;
            app.store
                .create_topic(&request.name, Default::default())
                .await?;
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
                topics: app.store.list_topics().await?,
            })
        }
        .await,
    )
}
