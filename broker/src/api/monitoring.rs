//! The monitoring routes, in one group so that a rule for them (who may see them) applies in
//! one place: `GET /metrics`, `GET /openapi.json`, and the dashboard under `GET /ui`.
//!
//! None of them needs the store to answer: with the database down, `/metrics` says so
//! (`myqueue_store_up 0`) and `/ui` is served and shows it.

use super::Route;
use super::error::ApiError;
use super::{openapi, ui};
use crate::app::App;
use myqueue_wire::ErrorCode;
use warp::Filter;
use warp::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use warp::reply::{Reply, Response};

/// `with_app` is the API's token check (`api::access::authorized`): with `--auth-file`,
/// `/metrics` and `/ui` need the monitoring permission, `/openapi.json` any known token.
pub(super) fn routes<F>(with_app: F) -> Vec<Route>
where
    F: Filter<Extract = (App,), Error = warp::Rejection> + Clone + Send + Sync + 'static,
{
    vec![
        warp::path!("metrics")
            .and(warp::get())
            .and(with_app.clone())
            .then(metrics)
            .boxed(),
        warp::path!("openapi.json")
            .and(warp::get())
            .and(with_app.clone())
            .map(|_: App| text(openapi::document(), "application/json"))
            .boxed(),
        warp::path("ui")
            .and(warp::path::tail())
            .and(warp::get())
            .and(with_app)
            .map(
                |tail: warp::path::Tail, _: App| match ui::asset(tail.as_str()) {
                    Some(asset) => text(asset.body, asset.content_type),
                    None => ApiError::new(
                        ErrorCode::NotFound,
                        format!("the dashboard has no page /ui/{}", tail.as_str()),
                    )
                    .into_response(),
                },
            )
            .boxed(),
    ]
}

async fn metrics(app: App) -> Response {
    let body = app.metrics.render(&*app.store).await;
    text(body, "text/plain; version=0.0.4; charset=utf-8")
}

/// A 200 answer with `content_type`, never cached (it is live, or changes with the binary).
fn text(body: impl Reply, content_type: &'static str) -> Response {
    let reply = warp::reply::with_header(body, CONTENT_TYPE, content_type);
    warp::reply::with_header(reply, CACHE_CONTROL, "no-cache").into_response()
}
