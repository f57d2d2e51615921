//! The broker's log: tracing to stderr, filtered by `--log`, written as `--log-format` says.

use crate::config::LogFormat;
use std::fmt;
use std::io::IsTerminal;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, fmt as log_fmt};

/// Installs the global subscriber for the `--log` filter `spec`, writing `format`.
pub fn init(spec: &str, format: LogFormat) {
    let (filter, invalid) = match EnvFilter::try_new(spec) {
        Ok(filter) => (filter, None),
        Err(err) => (EnvFilter::new("info"), Some(err)),
    };
    let output = match format {
        // Colour codes only for a person at a terminal: in a file they are noise.
        LogFormat::Text => log_fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => log_fmt::layer().json().with_writer(std::io::stderr).boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(QuietClientHangups)
        .with(output)
        .init();
    if format == LogFormat::Json {
        log_panics();
    }
    // Reported through the log itself, so that a JSON log stays JSON.
    if let Some(err) = invalid {
        tracing::warn!("invalid --log filter {spec:?} ({err}); logging at info");
    }
}

/// A panic's default report is plain text on stderr; in a JSON log it becomes an event.
fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        tracing::error!(panic = %info, "panic");
    }));
}

/// warp logs, at ERROR, every connection that ends mid-request: a client that hangs up
/// during a long poll (a consumer stopped with Ctrl-C), a malformed request, a timeout. That
/// is the client's business, not a broker failure, so those lines are dropped unless the
/// filter enables `debug` (for any target). warp's other errors (`accept error`, e.g. out of
/// file descriptors) stay.
struct QuietClientHangups;

const CONNECTION_ERROR: &str = "server connection error";

impl<S: Subscriber> Layer<S> for QuietClientHangups {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        let metadata = event.metadata();
        if !metadata.target().starts_with("warp::server") {
            return true;
        }
        let mut message = MessageStart::default();
        event.record(&mut message);
        !message.0.starts_with(CONNECTION_ERROR)
            || tracing::level_filters::LevelFilter::current() >= tracing::Level::DEBUG
    }
}

/// The first characters of an event's message, enough to recognise it.
#[derive(Default)]
struct MessageStart(String);

impl Visit for MessageStart {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let text = format!("{value:?}");
            self.0 = text.chars().take(CONNECTION_ERROR.len()).collect();
        }
    }
}
