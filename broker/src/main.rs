//! `myqueue-broker`: see `--help`.

use broker::app::Limits;
use broker::config::{Command, Config, LogFormat};
use broker::{server, shutdown};
use clap::{Parser, ValueEnum};
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    if let Some(Command::HashToken { token }) = config.command {
        return broker::auth::hash_command::run(token);
    }
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

    // Protected mode is settled before anything listens on an address it refuses.
    if let Err(err) = config.network.check_exposure(&config.listen).await {
        return fail(&config, &err);
    }
    // Bind first: a taken port is reported at once, before any database work.
    let (listener, addr) = match server::bind(&config.listen).await {
        Ok(bound) => bound,
        Err(err) => return fail(&config, &err),
    };
    let network = match config.network.load() {
        Ok(network) => network,
        Err(err) => return fail(&config, &err),
    };
    let store = match server::open_store(&config, &stop).await {
        Ok(store) => store,
        Err(err) => return fail(&config, &err),
    };
    // Tests and scripts read this line to learn the port when --listen ends in :0.
    let scheme = if network.tls.is_some() {
        "https"
    } else {
        "http"
    };
    println!("myqueue-broker listening on {scheme}://{addr}");
    tracing::info!(
        %addr,
        store = store.kind(),
        tokens = network.auth.as_ref().map(|auth| auth.token_count()),
        tls = network.tls.is_some(),
        max_connections = config.network.max_connections,
        "ready"
    );
    network.reload_on_sighup();

    let limits = Limits {
        max_message_bytes: config.max_message_bytes,
        max_body_bytes: config.max_body_bytes,
        body_read_timeout: config.network.body_read_timeout,
    };
    let metrics = broker::metrics::Metrics::install(store.kind(), config.metrics_caps());
    server::serve(
        listener,
        store,
        limits,
        config.policy(),
        metrics,
        &config.network,
        network,
        stop,
    )
    .await;
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

fn fail(config: &Config, message: &dyn std::fmt::Display) -> ExitCode {
    tracing::error!("{message}");
    // The usual last line for a person; a JSON log has said it already, as JSON.
    if config.log_format == LogFormat::Text {
        eprintln!("myqueue-broker: {message}");
    }
    ExitCode::FAILURE
}
