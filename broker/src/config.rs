//! The command line: every option also reads an environment variable.

use crate::api::error::FailureStatus;
use crate::app::Policy;
use crate::network::NetworkOptions;
use crate::store::ConsumerStart;
use crate::store::Retention;
use crate::store::retention::{MAX_RETENTION, RetentionConfig};
use clap::{Parser, ValueEnum};
use std::path::PathBuf;

/// Where the broker keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// In memory: fast, and everything is lost when the broker stops.
    Memory,
    /// Embedded SQLite in --data-dir: durable, nothing to set up.
    Sqlite,
    /// PostgreSQL at --database-url: durable, many brokers may share one database.
    Postgres,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One line of text per event, coloured only when stderr is a terminal.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "myqueue-broker",
    version,
    about = "A durable logging queue: producers append messages to topics over HTTP, \
             consumers read each topic in order, each at its own position.",
    after_help = "Examples:\n  \
        myqueue-broker                                   # SQLite in ./myqueue-data, port 9092\n  \
        myqueue-broker --store memory                    # nothing is kept across restarts\n  \
        myqueue-broker --database-url postgres://user:pw@127.0.0.1/myqueue\n  \
        myqueue-broker --listen 127.0.0.1:0              # a free port, printed at start\n  \
        myqueue-broker --retention 12h --retention-bytes 2GiB   # keep less\n  \
        myqueue-broker --listen 0.0.0.0:9092 --auth-file auth.toml --tls-cert c.pem --tls-key k.pem\n  \
        myqueue-broker hash-token                        # a new token and its auth file entry"
)]
pub struct Config {
    /// Address to listen on. Port 0 picks a free port; the address is printed at start as
    /// `myqueue-broker listening on http://ADDR`.
    #[arg(long, env = "MYQUEUE_LISTEN", default_value = "127.0.0.1:9092")]
    pub listen: String,

    /// Storage: `sqlite` (the default), `memory`, or `postgres` (the default when a
    /// database URL is given).
    #[arg(long, env = "MYQUEUE_STORE", value_enum)]
    pub store: Option<StoreKind>,

    /// Directory of the SQLite database (created if missing).
    #[arg(long, env = "MYQUEUE_DATA_DIR", default_value = "myqueue-data")]
    pub data_dir: PathBuf,

    /// PostgreSQL connection URL; selects the PostgreSQL store. The schema is created or
    /// migrated at start.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Most connections this broker opens to PostgreSQL.
    #[arg(long, env = "MYQUEUE_DB_CONNECTIONS", default_value_t = 16)]
    pub db_connections: u32,

    /// Largest message accepted, in bytes of UTF-8.
    #[arg(long, env = "MYQUEUE_MAX_MESSAGE_BYTES", default_value_t = myqueue_wire::DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,

    /// Largest request body accepted, in bytes (a batch of messages travels in one body).
    #[arg(long, env = "MYQUEUE_MAX_BODY_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// How long topics keep messages, unless a topic says otherwise: a duration such as `7d`,
    /// `12h`, `30m` or `1h 30m`, or `unlimited`.
    #[arg(long, env = "MYQUEUE_RETENTION", default_value = "7d", value_parser = parse_duration)]
    pub retention: Limit,

    /// How many bytes each topic keeps (payload plus 64 per message), unless a topic says
    /// otherwise: a size such as `500MB`, `2GiB` or `1000000`, or `unlimited`. The oldest
    /// messages go first, an eighth of the limit at a time.
    #[arg(long, env = "MYQUEUE_RETENTION_BYTES", default_value = "unlimited", value_parser = parse_size)]
    pub retention_bytes: Limit,

    /// Log filter, e.g. `info`, `debug` (one line per request), `broker=debug,sqlx=warn`.
    #[arg(long, env = "MYQUEUE_LOG", default_value = "info")]
    pub log: String,

    /// Log lines as `text` or `json` (one JSON object per line, for log shippers).
    #[arg(long, env = "MYQUEUE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Where a consumer starts when its registration does not say (`start`): `beginning`
    /// (everything the topic holds) or `end` (only what is produced after it registered). A
    /// group that already has a position keeps it.
    #[arg(long, env = "MYQUEUE_CONSUMER_START", value_enum, default_value_t = ConsumerStart::Beginning)]
    pub consumer_start: ConsumerStart,

    /// HTTP status of failures a client causes: `precise` (404 queue_empty, 409 topic_exists,
    /// ...) or `400` (all of them, for clients that only recognise 400 and 500 as failures).
    /// The JSON body, `code` included, is the same; 503 and 500 stay.
    #[arg(long, env = "MYQUEUE_FAILURE_STATUS", value_enum, default_value_t = FailureStatus::Precise)]
    pub failure_status: FailureStatus,

    /// `GET /metrics`: at most this many topics get series of their own (offsets, lag,
    /// appends); the rest are counted together.
    #[arg(long, env = "MYQUEUE_METRICS_MAX_TOPICS", default_value_t = 100)]
    pub metrics_max_topics: usize,

    /// `GET /metrics`: at most this many consumer groups per topic get a lag series (the
    /// furthest behind).
    #[arg(long, env = "MYQUEUE_METRICS_MAX_GROUPS", default_value_t = 20)]
    pub metrics_max_groups: usize,

    #[command(flatten)]
    pub network: NetworkOptions,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Print the auth file entry (the SHA-256) for TOKEN; without TOKEN, make a new one from
    /// the system's randomness and print it too; `-` reads TOKEN from stdin.
    HashToken { token: Option<String> },
}

/// A retention limit from the command line: `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(pub Option<u64>);

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(n) => write!(f, "{n}"),
            None => f.write_str("unlimited"),
        }
    }
}

const UNLIMITED: &str = "unlimited";

/// A positive limit a store can keep.
fn positive(value: u64, what: &str, text: &str) -> Result<Limit, String> {
    match value {
        0 => Err(format!(
            "{text:?} is {what} zero; give a positive {what} or `unlimited`"
        )),
        n if n > MAX_RETENTION => Err(format!("{text:?} is too large")),
        n => Ok(Limit(Some(n))),
    }
}

/// `7d`, `12h`, `30m`, `1h 30m` (as milliseconds), or `unlimited`.
fn parse_duration(text: &str) -> Result<Limit, String> {
    if text.trim().eq_ignore_ascii_case(UNLIMITED) {
        return Ok(Limit(None));
    }
    let duration = humantime::parse_duration(text.trim()).map_err(|err| {
        format!("{text:?} is not a duration such as 7d, 12h or 30m ({err}), nor `unlimited`")
    })?;
    let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    positive(ms, "a duration of", text)
}

/// `500MB`, `2GiB`, `1000000` (bytes), or `unlimited`.
fn parse_size(text: &str) -> Result<Limit, String> {
    if text.trim().eq_ignore_ascii_case(UNLIMITED) {
        return Ok(Limit(None));
    }
    let size: bytesize::ByteSize = text.trim().parse().map_err(|err| {
        format!("{text:?} is not a size such as 500MB, 2GiB or 1000000 ({err}), nor `unlimited`")
    })?;
    positive(size.as_u64(), "a size of", text)
}

impl Config {
    /// Retention for the stores: the defaults, and the background pass.
    pub fn retention(&self) -> RetentionConfig {
        RetentionConfig {
            defaults: Retention {
                ms: self.retention.0,
                bytes: self.retention_bytes.0,
            },
            ..RetentionConfig::default()
        }
    }

    /// The store to open: `--store` if given, else PostgreSQL when a database URL is set,
    /// else SQLite.
    pub fn store_kind(&self) -> StoreKind {
        match (self.store, &self.database_url) {
            (Some(kind), _) => kind,
            (None, Some(_)) => StoreKind::Postgres,
            (None, None) => StoreKind::Sqlite,
        }
    }

    pub fn metrics_caps(&self) -> crate::metrics::Caps {
        crate::metrics::Caps {
            topics: self.metrics_max_topics,
            groups: self.metrics_max_groups,
        }
    }

    pub fn policy(&self) -> Policy {
        Policy {
            consumer_start: self.consumer_start,
            failure_status: self.failure_status,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_sqlite_on_port_9092() {
        let config = Config::try_parse_from(["myqueue-broker"]).unwrap();
        assert_eq!(config.listen, "127.0.0.1:9092");
        assert_eq!(config.max_message_bytes, 1024 * 1024);
        // DATABASE_URL may be set in the environment of whoever runs the tests.
        if config.database_url.is_none() {
            assert_eq!(config.store_kind(), StoreKind::Sqlite);
        }
    }

    #[test]
    fn the_log_format_is_text_unless_json_is_asked_for() {
        let config = Config::try_parse_from(["myqueue-broker"]).unwrap();
        if std::env::var_os("MYQUEUE_LOG_FORMAT").is_none() {
            assert_eq!(config.log_format, LogFormat::Text);
        }
        let config = Config::try_parse_from(["myqueue-broker", "--log-format", "json"]).unwrap();
        assert_eq!(config.log_format, LogFormat::Json);
        assert!(Config::try_parse_from(["myqueue-broker", "--log-format", "xml"]).is_err());
    }

    #[test]
    fn consumer_start_and_failure_status_take_their_values() {
        let config = Config::try_parse_from([
            "myqueue-broker",
            "--consumer-start",
            "end",
            "--failure-status",
            "400",
        ])
        .unwrap();
        assert_eq!(config.policy().consumer_start, ConsumerStart::End);
        assert_eq!(config.policy().failure_status, FailureStatus::BadRequest);
        let config = Config::try_parse_from(["myqueue-broker", "--failure-status", "precise"]);
        assert_eq!(config.unwrap().failure_status, FailureStatus::Precise);
        assert!(Config::try_parse_from(["myqueue-broker", "--failure-status", "404"]).is_err());
    }

    #[test]
    fn retention_defaults_to_7_days_and_no_size_limit() {
        let config = Config::try_parse_from(["myqueue-broker"]).unwrap();
        // MYQUEUE_RETENTION may be set in the environment of whoever runs the tests.
        if std::env::var_os("MYQUEUE_RETENTION").is_none() {
            assert_eq!(config.retention, Limit(Some(7 * 24 * 3600 * 1000)));
        }
        if std::env::var_os("MYQUEUE_RETENTION_BYTES").is_none() {
            assert_eq!(config.retention_bytes, Limit(None));
        }
    }

    #[test]
    fn retention_reads_durations_sizes_and_unlimited() {
        assert_eq!(parse_duration("12h"), Ok(Limit(Some(12 * 3600 * 1000))));
        assert_eq!(parse_duration("30m"), Ok(Limit(Some(30 * 60 * 1000))));
        assert_eq!(parse_duration("1h 30m"), Ok(Limit(Some(90 * 60 * 1000))));
        assert_eq!(parse_duration("unlimited"), Ok(Limit(None)));
        assert_eq!(parse_size("500MB"), Ok(Limit(Some(500_000_000))));
        assert_eq!(parse_size("2GiB"), Ok(Limit(Some(2 << 30))));
        assert_eq!(parse_size("20MB"), Ok(Limit(Some(20_000_000))));
        assert_eq!(parse_size("1000"), Ok(Limit(Some(1000))));
        assert_eq!(parse_size("Unlimited"), Ok(Limit(None)));
        for bad in ["0", "0s", "-5m", "abc", "7", "", "1ms0"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        for bad in ["0", "0MB", "-5", "abc", "5 parsecs", ""] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        let config = Config::try_parse_from([
            "myqueue-broker",
            "--retention",
            "30m",
            "--retention-bytes",
            "20MB",
        ])
        .unwrap();
        assert_eq!(
            config.retention().defaults,
            Retention {
                ms: Some(1_800_000),
                bytes: Some(20_000_000)
            }
        );
        assert!(Config::try_parse_from(["myqueue-broker", "--retention", "0"]).is_err());
    }

    #[test]
    fn a_database_url_selects_postgres_unless_a_store_is_named() {
        let config =
            Config::try_parse_from(["myqueue-broker", "--database-url", "postgres://x"]).unwrap();
        assert_eq!(config.store_kind(), StoreKind::Postgres);
        let config = Config::try_parse_from([
            "myqueue-broker",
            "--database-url",
            "postgres://x",
            "--store",
            "memory",
        ])
        .unwrap();
        assert_eq!(config.store_kind(), StoreKind::Memory);
    }
}
