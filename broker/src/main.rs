//! `myqueue-broker`: see `--help`.

use broker::app::Limits;
use broker::config::Config;
use broker::{server, shutdown};
use clap::Parser;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    broker::logging::init(&config.log);
    tracing::info!(
        listen = %config.listen,
        store = ?config.store_kind(),
        max_message_bytes = config.max_message_bytes,
        max_body_bytes = config.max_body_bytes,
        db_connections = config.db_connections,
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
        Err(err) => return fail(&err),
    };
    let store = match server::open_store(&config, &stop).await {
        Ok(store) => store,
        Err(err) => return fail(&err),
    };
    // Tests and scripts read this line to learn the port when --listen ends in :0.
    println!("myqueue-broker listening on http://{addr}");
    tracing::info!(%addr, store = store.kind(), "ready");

    let limits = Limits {
        max_message_bytes: config.max_message_bytes,
        max_body_bytes: config.max_body_bytes,
    };
    server::serve(listener, store, limits, stop).await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

fn fail(err: &server::StartError) -> ExitCode {
    tracing::error!("{err}");
    eprintln!("myqueue-broker: {err}");
    ExitCode::FAILURE
}
