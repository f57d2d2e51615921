//! The HTTP API: the route table, and one module per group of endpoints.
//!
//! Routes match the path first and the method second, so an unknown path answers 404 and a
//! known path with the wrong method 405, both as JSON (see [`error::recover`]); then
//! `--failure-status` settles every failure's HTTP status ([`error::FailureStatus`]).

mod access;
mod consumer;
pub mod error;
mod health;
mod input;
mod monitoring;
mod openapi;
mod producer;
mod topics;
mod ui;
mod validate;

use crate::app::App;
use std::convert::Infallible;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;

type Route = BoxedFilter<(Response,)>;

/// Every endpoint, with errors mapped to JSON and one debug log line per request.
pub fn routes(app: App) -> impl Filter<Extract = (impl warp::Reply,), Error = Infallible> + Clone {
    let max_body = app.limits.max_body_bytes;
    let metrics = app.metrics.clone();
    let body_timeout = app.limits.body_read_timeout;
    let failure_status = app.policy.failure_status;
    // Every route but /healthz checks the caller's token (when there is an auth file).
    let open_app = access::open(app.clone());
    let with_app = access::authorized(app);
    let monitoring = monitoring::routes(with_app.clone());
    let input = move || input::input(max_body, body_timeout);
    let get = |path: BoxedFilter<()>| path.and(warp::get());
    let post = |path: BoxedFilter<()>| path.and(warp::post());

    // Each route is boxed: a long chain of unboxed filters is a type too deep to compile.
    let routes: Vec<Route> = vec![
        post(warp::path!("topics").boxed())
            .and(with_app.clone())
            .and(input())
            .then(topics::create)
            .boxed(),
        get(warp::path!("topics").boxed())
            .and(with_app.clone())
            .then(topics::list)
            .boxed(),
        warp::path!("topics" / String)
            .and(warp::get())
            .and(with_app.clone())
            .then(topics::describe)
            .boxed(),
        warp::path!("topics" / String)
            .and(warp::patch())
            .and(with_app.clone())
            .and(input())
            .then(topics::update)
            .boxed(),
        warp::path!("topics" / String)
            .and(warp::delete())
            .and(with_app.clone())
            .then(topics::delete)
            .boxed(),
        post(warp::path!("producer" / "register").boxed())
            .and(with_app.clone())
            .and(input())
            .then(producer::register)
            .boxed(),
        post(warp::path!("producer" / "produce").boxed())
            .and(with_app.clone())
            .and(input())
            .then(producer::produce)
            .boxed(),
        post(warp::path!("producer" / "produce_batch").boxed())
            .and(with_app.clone())
            .and(input())
            .then(producer::produce_batch)
            .boxed(),
        post(warp::path!("consumer" / "register").boxed())
            .and(with_app.clone())
            .and(input())
            .then(consumer::register)
            .boxed(),
        get(warp::path!("consumer" / "consume").boxed())
            .and(with_app.clone())
            .and(input())
            .then(consumer::consume)
            .boxed(),
        get(warp::path!("size").boxed())
            .and(with_app.clone())
            .and(input())
            .then(consumer::size)
            .boxed(),
        get(warp::path!("consumer" / "fetch").boxed())
            .and(with_app.clone())
            .and(input())
            .then(consumer::fetch)
            .boxed(),
        post(warp::path!("consumer" / "commit").boxed())
            .and(with_app.clone())
            .and(input())
            .then(consumer::commit)
            .boxed(),
        get(warp::path!("healthz").boxed())
            .and(open_app)
            .then(health::healthz)
            .boxed(),
        post(warp::path!("noop").boxed())
            .and(with_app)
            .and(input())
            .then(health::noop)
            .boxed(),
    ];
    let routes = routes
        .into_iter()
        .chain(monitoring)
        .reduce(|all, route| all.or(route).unify().boxed())
        .expect("at least one route")
        .recover(error::recover)
        .unify();
    warp::path::full()
        .and(routes)
        .map(move |path: warp::path::FullPath, response| {
            error::log_server_failure(path.as_str(), &response);
            failure_status.apply(response)
        })
        .with(warp::log::custom(move |info| {
            metrics.request(
                info.method(),
                info.path(),
                info.status().as_u16(),
                info.elapsed(),
            );
            tracing::debug!(
                method = %info.method(),
                path = info.path(),
                status = info.status().as_u16(),
                micros = info.elapsed().as_micros() as u64,
                "request"
            );
        }))
}
