//! Opening the configured store and serving the API until shutdown.

use crate::api;
use crate::app::{App, Limits, Policy};
use crate::config::{Config, StoreKind};
use crate::metrics::Metrics;
use crate::network::long_polls::LongPolls;
use crate::network::{Network, NetworkOptions, serve as serving};
use crate::store::dir_lock::LockError;
use crate::store::memory::MemoryStore;
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{OpenError, Store};
use sqlx::postgres::PgConnectOptions;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the SQLite database in {}: {source}", dir.display())]
    Sqlite {
        dir: PathBuf,
        #[source]
        source: OpenError,
    },
    /// Another broker runs on this data directory (see `store::dir_lock`).
    #[error(
        "the data directory {} is in use by another myqueue-broker ({}); \
         stop that one first, or give this one another --data-dir",
        dir.display(),
        pid.map_or("PID not written yet".to_owned(), |pid| format!("PID {pid}"))
    )]
    DataDirInUse { dir: PathBuf, pid: Option<u32> },
    #[error("--store postgres needs --database-url or DATABASE_URL")]
    NoDatabaseUrl,
    #[error("invalid database URL {url}: {source}")]
    DatabaseUrl {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("stopped before PostgreSQL was reachable")]
    Stopped,
}

/// Opens the store the configuration names. PostgreSQL may not be up yet when the broker
/// starts (both started by one script): it is retried until `shutdown`.
pub async fn open_store(
    config: &Config,
    shutdown: &CancellationToken,
) -> Result<Arc<dyn Store>, StartError> {
    match config.store_kind() {
        StoreKind::Memory => {
            tracing::warn!("store: memory; NOTHING IS KEPT when the broker stops");
            Ok(Arc::new(MemoryStore::new(config.retention())))
        }
        StoreKind::Sqlite => {
            let dir = &config.data_dir;
            tracing::info!(data_dir = %dir.display(), "store: sqlite");
            SqliteStore::open(dir, config.retention())
                .await
                .map(|store| Arc::new(store) as Arc<dyn Store>)
                .map_err(|source| match source {
                    OpenError::Lock(LockError::Held { dir, pid }) => {
                        StartError::DataDirInUse { dir, pid }
                    }
                    source => StartError::Sqlite {
                        dir: dir.clone(),
                        source,
                    },
                })
        }
        StoreKind::Postgres => {
            let url = config
                .database_url
                .as_deref()
                .ok_or(StartError::NoDatabaseUrl)?;
            tracing::info!(url = %redact(url), "store: postgres");
            let options =
                PgConnectOptions::from_str(url).map_err(|source| StartError::DatabaseUrl {
                    url: redact(url),
                    source,
                })?;
            let mut delay = Duration::from_millis(200);
            loop {
                match PostgresStore::open(
                    options.clone(),
                    config.db_connections,
                    config.retention(),
                )
                .await
                {
                    Ok(store) => return Ok(Arc::new(store)),
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot open PostgreSQL yet; retrying in {delay:?}");
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return Err(StartError::Stopped),
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// The URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &credentials[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Serves `store` on `listener` until `shutdown` is cancelled, then closes the store.
// Each argument is one part that main() has built; grouping them would only rename the list.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Arc<dyn Store>,
    limits: Limits,
    policy: Policy,
    metrics: Arc<Metrics>,
    options: &NetworkOptions,
    network: Network,
    shutdown: CancellationToken,
) {
    metrics.spawn_upkeep(shutdown.clone());
    let app = App {
        store: store.clone(),
        limits,
        policy,
        metrics,
        shutdown: shutdown.clone(),
        auth: network.auth,
        long_polls: LongPolls::new(options.max_long_polls_per_client),
        caller: Default::default(),
    };
    let settings = serving::Settings {
        tls: network.tls,
        max_connections: options.max_connections,
        timeouts: options.timeouts(),
    };
    serving::serve(listener, api::routes(app), settings, shutdown).await;
    store.close().await;
}

/// Resolves `--listen` (e.g. `127.0.0.1:9092`, `localhost:9092`) and binds it.
pub async fn bind(listen: &str) -> Result<(tokio::net::TcpListener, SocketAddr), StartError> {
    let failed = |source| StartError::Listen {
        address: listen.to_owned(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(failed)?;
    let addr = listener.local_addr().map_err(failed)?;
    Ok((listener, addr))
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_not_logged() {
        assert_eq!(
            super::redact("postgres://me:secret@127.0.0.1:5432/db"),
            "postgres://me:***@127.0.0.1:5432/db"
        );
        assert_eq!(
            super::redact("postgres://127.0.0.1/db"),
            "postgres://127.0.0.1/db"
        );
    }
}
