//! `myqueue-broker`: see `--help`.

use broker::app::Limits;
use broker::config::Config;
use broker::{server, shutdown};
use clap::Parser;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// The `--log` filter. warp logs every connection a client drops mid-request at ERROR (a
/// consumer's long poll ended by Ctrl-C, say): that is the client's business, not a broker
/// failure, so it stays quiet unless the filter names warp itself.
fn log_filter(spec: &str) -> EnvFilter {
    let filter = EnvFilter::try_new(spec).unwrap_or_else(|err| {
        eprintln!("invalid --log filter {spec:?} ({err}); logging at info");
        EnvFilter::new("info")
    });
    if spec.contains("warp") {
        return filter;
    }
    filter.add_directive("warp::server=off".parse().expect("a valid directive"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(log_filter(&config.log))
        .with_writer(std::io::stderr)
        .init();
    tracing::info!(
        listen = %config.listen,
        store = ?config.store_kind(),
        max_message_bytes = config.max_message_bytes,
        max_body_bytes = config.max_body_bytes,
        db_connections = config.db_connections,
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

fn fail(message: &str) -> ExitCode {
    tracing::error!("{message}");
    eprintln!("myqueue-broker: {message}");
    ExitCode::FAILURE
}
