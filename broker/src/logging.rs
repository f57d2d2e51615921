//! The broker's log: tracing to stderr, filtered by `--log`.

use std::fmt;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, fmt as log_fmt};

/// Installs the global subscriber for the `--log` filter `spec`.
pub fn init(spec: &str) {
    let filter = EnvFilter::try_new(spec).unwrap_or_else(|err| {
        eprintln!("invalid --log filter {spec:?} ({err}); logging at info");
        EnvFilter::new("info")
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(QuietClientHangups)
        .with(log_fmt::layer().with_writer(std::io::stderr))
        .init();
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
