//! `myqueue-broker`: see `--help`.

use broker::app::Limits;
use broker::config::{Config, LogFormat};
use broker::{server, shutdown};
use clap::{Parser, ValueEnum};
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    broker::logging::init(&config.log, config.log_format);
    tracing::info!(
        listen = %config.listen,
        store = ?config.store_kind(),
        max_message_bytes = config.max_message_bytes,
        max_body_bytes = config.max_body_bytes,
        db_connections = config.db_connections,
        log_format = as_written(config.log_format),
        consumer_start = as_written(config.consumer_start),
        failure_status = as_written(config.failure_status),
        retention_ms = %config.retention,
        retention_bytes = %config.retention_bytes,
        "starting myqueue-broker {}",
        env!("CARGO_PKG_VERSION")
    );

    let stop = CancellationToken::new();
    shutdown::cancel_on_signal(stop.clone());

    // Bind first: a taken port is reported at once, before any database work.
    let (listener, addr) = match server::bind(&config.listen).await {
        Ok(bound) => bound,
        Err(err) => return fail(&config, &err),
    };
    let store = match server::open_store(&config, &stop).await {
        Ok(store) => store,
        Err(err) => return fail(&config, &err),
    };
    // Tests and scripts read this line to learn the port when --listen ends in :0.
    println!("myqueue-broker listening on http://{addr}");
    tracing::info!(%addr, store = store.kind(), "ready");

    let limits = Limits {
        max_message_bytes: config.max_message_bytes,
        max_body_bytes: config.max_body_bytes,
    };
    let metrics = broker::metrics::Metrics::install(store.kind(), config.metrics_caps());
    server::serve(listener, store, limits, config.policy(), metrics, stop).await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// An option's value as it is written on the command line (`400`, not `BadRequest`).
fn as_written(value: impl ValueEnum) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default()
}

fn fail(config: &Config, message: &server::StartError) -> ExitCode {
    tracing::error!("{message}");
    // The usual last line for a person; a JSON log has said it already, as JSON.
    if config.log_format == LogFormat::Text {
        eprintln!("myqueue-broker: {message}");
    }
    ExitCode::FAILURE
}
