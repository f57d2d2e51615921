//! The HTTP API: the route table, and one module per group of endpoints.
//!
//! Routes match the path first and the method second, so an unknown path answers 404 and a
//! known path with the wrong method 405, both as JSON (see [`error::recover`]).

mod consumer;
pub mod error;
mod health;
mod input;
mod producer;
mod topics;
mod validate;

use crate::app::App;
use std::convert::Infallible;
use warp::Filter;

/// Every endpoint, with errors mapped to JSON and one debug log line per request.
pub fn routes(app: App) -> impl Filter<Extract = (impl warp::Reply,), Error = Infallible> + Clone {
    let max_body = app.limits.max_body_bytes;
    let with_app = warp::any().map(move || app.clone());
    let input = move || input::input(max_body);

    let get = |path: warp::filters::BoxedFilter<()>| path.and(warp::get());
    let post = |path: warp::filters::BoxedFilter<()>| path.and(warp::post());

    let topics = warp::path!("topics").boxed();
    let create_topic = post(topics.clone())
        .and(with_app.clone())
        .and(input())
        .then(topics::create);
    let list_topics = get(topics).and(with_app.clone()).then(topics::list);

    let register_producer = post(warp::path!("producer" / "register").boxed())
        .and(with_app.clone())
        .and(input())
        .then(producer::register);
    let produce = post(warp::path!("producer" / "produce").boxed())
        .and(with_app.clone())
        .and(input())
        .then(producer::produce);
    let produce_batch = post(warp::path!("producer" / "produce_batch").boxed())
        .and(with_app.clone())
        .and(input())
        .then(producer::produce_batch);

    let register_consumer = post(warp::path!("consumer" / "register").boxed())
        .and(with_app.clone())
        .and(input())
        .then(consumer::register);
    let consume = get(warp::path!("consumer" / "consume").boxed())
        .and(with_app.clone())
        .and(input())
        .then(consumer::consume);
    let size = get(warp::path!("size").boxed())
        .and(with_app.clone())
        .and(input())
        .then(consumer::size);
    let fetch = get(warp::path!("consumer" / "fetch").boxed())
        .and(with_app.clone())
        .and(input())
        .then(consumer::fetch);
    let commit = post(warp::path!("consumer" / "commit").boxed())
        .and(with_app.clone())
        .and(input())
        .then(consumer::commit);

    let healthz = get(warp::path!("healthz").boxed())
        .and(with_app.clone())
        .then(health::healthz);
    let noop = post(warp::path!("noop").boxed())
        .and(with_app)
        .and(input())
        .then(health::noop);

    create_topic
        .or(list_topics)
        .unify()
        .or(register_producer)
        .unify()
        .or(produce)
        .unify()
        .or(produce_batch)
        .unify()
        .or(register_consumer)
        .unify()
        .or(consume)
        .unify()
        .or(size)
        .unify()
        .or(fetch)
        .unify()
        .or(commit)
        .unify()
        .or(healthz)
        .unify()
        .or(noop)
        .unify()
        .recover(error::recover)
        .unify()
        .with(warp::log::custom(|info| {
            tracing::debug!(
                method = %info.method(),
                path = info.path(),
                status = info.status().as_u16(),
                micros = info.elapsed().as_micros() as u64,
                "request"
            );
        }))
}
