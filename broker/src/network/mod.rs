//! How the broker faces the network: who may connect and what they may do (`--auth-file`,
//! protected mode), HTTPS (`--tls-cert`/`--tls-key`), and the limits that keep hostile
//! clients from holding it (timeouts, `--max-connections`, long polls per client).

pub mod hits;
pub mod long_polls;
pub mod serve;
pub mod tls;
pub mod watch;

use crate::auth::Auth;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The options of this module (flattened into the command line).
#[derive(Debug, Clone, clap::Args)]
pub struct NetworkOptions {
    /// TOML file of bearer tokens and what each may do (see the README, "Tokens"). Requests
    /// then need `Authorization: Bearer TOKEN`. Read again on SIGHUP.
    #[arg(long, env = "MYQUEUE_AUTH_FILE")]
    pub auth_file: Option<PathBuf>,

    /// Without --auth-file, listen on a non-loopback address anyway: anyone who can reach the
    /// port may then read, write and delete everything.
    #[arg(long, env = "MYQUEUE_ALLOW_ANONYMOUS")]
    pub allow_anonymous: bool,

    /// PEM certificate chain: serve HTTPS (with --tls-key). Read again on SIGHUP.
    #[arg(long, env = "MYQUEUE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "MYQUEUE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Most connections open at once; one more is closed as soon as it is accepted.
    #[arg(long, env = "MYQUEUE_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// How long a client may take to send a request's headers (from its first byte, or from
    /// connecting for the first request), and a TLS handshake.
    #[arg(long, env = "MYQUEUE_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,

    /// How long a client may take to send a request's body.
    #[arg(long, env = "MYQUEUE_BODY_READ_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub body_read_timeout: Duration,

    /// How long a keep-alive connection may sit idle between requests (longer than the
    /// client's own pool timeout of 60 s, so that the client is the one that closes).
    #[arg(long, env = "MYQUEUE_IDLE_TIMEOUT", default_value = "75s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,

    /// Most long polls (fetches waiting for messages) one client address may have open; one
    /// more is answered 429 `too_many_requests`.
    #[arg(long, env = "MYQUEUE_MAX_LONG_POLLS_PER_CLIENT", default_value_t = 256)]
    pub max_long_polls_per_client: usize,
}

/// Why the network settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(
        "refusing to listen on {addr} without --auth-file: anyone who can reach it could read, \
         write and delete every topic. Give --auth-file (see `myqueue-broker hash-token`), \
         listen on a loopback address such as 127.0.0.1, or pass --allow-anonymous"
    )]
    Unprotected { addr: SocketAddr },
    #[error("{0}")]
    Auth(String),
    #[error("{0}")]
    Tls(String),
}

/// What the options load: the tokens and the certificate, each reloadable.
pub struct Network {
    pub auth: Option<Arc<Auth>>,
    pub tls: Option<Arc<tls::Tls>>,
}

impl NetworkOptions {
    /// Protected mode: without an auth file only loopback addresses may be served, unless
    /// anonymous access is asked for. `listen` is resolved here, before anything is bound;
    /// one that does not resolve is left for the bind to report.
    pub async fn check_exposure(&self, listen: &str) -> Result<(), NetworkError> {
        if self.auth_file.is_some() || self.allow_anonymous {
            return Ok(());
        }
        let Ok(addrs) = tokio::net::lookup_host(listen).await else {
            return Ok(());
        };
        for addr in addrs {
            exposed(addr)?;
        }
        Ok(())
    }

    pub fn load(&self) -> Result<Network, NetworkError> {
        let auth = match &self.auth_file {
            Some(path) => Some(Arc::new(Auth::load(path).map_err(NetworkError::Auth)?)),
            None => None,
        };
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(Arc::new(
                tls::Tls::load(cert, key).map_err(NetworkError::Tls)?,
            )),
            _ => None,
        };
        Ok(Network { auth, tls })
    }

    pub fn timeouts(&self) -> watch::Timeouts {
        watch::Timeouts {
            header_read: self.header_read_timeout,
            idle: self.idle_timeout,
        }
    }
}

fn exposed(addr: SocketAddr) -> Result<(), NetworkError> {
    match addr.ip().is_loopback() {
        true => Ok(()),
        false => Err(NetworkError::Unprotected { addr }),
    }
}

impl Network {
    /// Reads the auth file and the certificate again at each SIGHUP. A file with a mistake
    /// changes nothing (the old tokens or certificate stay) and the log says why.
    pub fn reload_on_sighup(&self) {
        #[cfg(unix)]
        {
            let (auth, tls) = (self.auth.clone(), self.tls.clone());
            tokio::spawn(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let Ok(mut hangup) = signal(SignalKind::hangup()) else {
                    return tracing::warn!("cannot listen for SIGHUP: no reloading");
                };
                while hangup.recv().await.is_some() {
                    reload(auth.as_deref(), tls.as_deref());
                }
            });
        }
    }
}

fn reload(auth: Option<&Auth>, tls: Option<&tls::Tls>) {
    if let Some(auth) = auth {
        match auth.reload() {
            Ok(count) => {
                tracing::info!(file = %auth.path().display(), tokens = count, "SIGHUP: auth file reloaded")
            }
            Err(err) => tracing::error!("SIGHUP: {err}; the tokens in force stay"),
        }
    }
    if let Some(tls) = tls {
        match tls.reload() {
            Ok(()) => {
                tracing::info!(cert = %tls.cert_path().display(), "SIGHUP: certificate reloaded")
            }
            Err(err) => tracing::error!("SIGHUP: {err}; the certificate in use stays"),
        }
    }
    if auth.is_none() && tls.is_none() {
        tracing::info!("SIGHUP: nothing to reload (no --auth-file, no --tls-cert)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Options {
        #[command(flatten)]
        network: NetworkOptions,
    }

    fn options(args: &[&str]) -> NetworkOptions {
        Options::try_parse_from([&["test"], args].concat())
            .unwrap()
            .network
    }

    #[tokio::test]
    async fn protected_mode_refuses_other_addresses_without_tokens() {
        let none = options(&[]);
        assert!(none.check_exposure("127.0.0.1:0").await.is_ok());
        assert!(none.check_exposure("[::1]:0").await.is_ok());
        let refused = none.check_exposure("0.0.0.0:9092").await.unwrap_err();
        assert!(refused.to_string().contains("--auth-file"), "{refused}");
        assert!(
            refused.to_string().contains("--allow-anonymous"),
            "{refused}"
        );
        let anonymous = options(&["--allow-anonymous"]);
        assert!(anonymous.check_exposure("0.0.0.0:9092").await.is_ok());
        let tokens = options(&["--auth-file", "auth.toml"]);
        assert!(tokens.check_exposure("0.0.0.0:9092").await.is_ok());
    }

    #[test]
    fn the_defaults_are_documented_ones() {
        let defaults = options(&[]);
        assert_eq!(defaults.max_connections, 10_000);
        assert_eq!(defaults.header_read_timeout, Duration::from_secs(10));
        assert_eq!(defaults.body_read_timeout, Duration::from_secs(30));
        assert_eq!(defaults.idle_timeout, Duration::from_secs(75));
        assert_eq!(defaults.max_long_polls_per_client, 256);
        assert!(Options::try_parse_from(["test", "--tls-cert", "c.pem"]).is_err());
    }
}
