//! `GET /healthz` (the store answers) and `POST /noop` (the HTTP ceiling, for benchmarks).

use super::error::{ApiError, respond};
use super::input::Input;
use crate::app::App;
use myqueue_wire::{Status, StatusResponse};
use serde::Serialize;
use warp::reply::Response;

/// The `GET /healthz` answer.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Health {
    status: Status,
    /// `memory`, `sqlite` or `postgres`.
    store: &'static str,
}

/// 200 when the store can serve requests; 503 `storage_unavailable` when it cannot answer,
/// `store_unwritable` when it answers but its appends fail for the disk (full or failing).
pub async fn healthz(app: App) -> Response {
    respond(
        async {
            app.store.ping().await?;
            Ok::<_, ApiError>(Health {
                status: Status::Success,
                store: app.store.kind(),
            })
        }
        .await,
    )
}

/// Reads the request like any endpoint and answers success without touching the store: the
/// ceiling that benchmarks compare the real endpoints against.
pub async fn noop(_app: App, _input: Input) -> Response {
    respond(Ok::<_, ApiError>(StatusResponse {
        status: Status::Success,
    }))
}
