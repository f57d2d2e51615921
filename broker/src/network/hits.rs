//! Limits that hostile (or broken) clients run into: each hit is counted, and logged once per
//! client and limit, so that an attack leaves one warning per attacker, not a flood of lines.
//!
//! The counts are process-wide: [`counts`] gives them here, and each hit is also counted on
//! /metrics as `myqueue_limit_hits_total{limit}`.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// A limit a client can run into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// A request's headers (or a new connection's first request) took over --header-read-timeout.
    HeaderReadTimeout,
    /// A request body took over --body-read-timeout.
    BodyReadTimeout,
    /// A keep-alive connection idle for --idle-timeout was closed.
    IdleTimeout,
    /// A connection over --max-connections was closed at once.
    MaxConnections,
    /// A long poll over --max-long-polls-per-client was refused with 429.
    LongPollsPerClient,
    /// A TLS handshake failed or took over --header-read-timeout.
    TlsHandshake,
}

pub const EVERY_LIMIT: [Limit; 6] = [
    Limit::HeaderReadTimeout,
    Limit::BodyReadTimeout,
    Limit::IdleTimeout,
    Limit::MaxConnections,
    Limit::LongPollsPerClient,
    Limit::TlsHandshake,
];

impl Limit {
    /// The name in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Limit::HeaderReadTimeout => "header_read_timeout",
            Limit::BodyReadTimeout => "body_read_timeout",
            Limit::IdleTimeout => "idle_timeout",
            Limit::MaxConnections => "max_connections",
            Limit::LongPollsPerClient => "max_long_polls_per_client",
            Limit::TlsHandshake => "tls_handshake",
        }
    }

    fn index(self) -> usize {
        EVERY_LIMIT.iter().position(|&l| l == self).unwrap_or(0)
    }
}

static COUNTS: [AtomicU64; 6] = [const { AtomicU64::new(0) }; 6];
/// (limit, client) pairs already logged. Bounded: forgotten as a whole when full, so a flood
/// from many addresses costs at most this much memory and a new line per address afterwards.
static LOGGED: Mutex<Option<HashSet<(Limit, IpAddr)>>> = Mutex::new(None);
const MOST_REMEMBERED: usize = 10_000;

/// Counts a hit of `limit` by `client`, and logs it if this client has not hit it before.
/// An idle timeout is ordinary (a client that went away): it is counted and logged at debug.
pub fn hit(limit: Limit, client: Option<IpAddr>, detail: &str) {
    COUNTS[limit.index()].fetch_add(1, Ordering::Relaxed);
    crate::metrics::limit_hit(limit.name());
    if limit == Limit::IdleTimeout {
        tracing::debug!(limit = limit.name(), client = ?client, "{detail}");
        return;
    }
    let Some(client) = client else {
        return tracing::warn!(limit = limit.name(), "{detail}");
    };
    let first = {
        let mut logged = LOGGED.lock().unwrap_or_else(|e| e.into_inner());
        let set = logged.get_or_insert_with(HashSet::new);
        if set.len() >= MOST_REMEMBERED {
            set.clear();
        }
        set.insert((limit, client))
    };
    if first {
        tracing::warn!(
            limit = limit.name(),
            %client,
            "{detail} (logged once per client; every hit is counted)"
        );
    }
}

/// How many times each limit was hit since the broker started.
pub fn counts() -> Vec<(&'static str, u64)> {
    EVERY_LIMIT
        .iter()
        .map(|&l| (l.name(), COUNTS[l.index()].load(Ordering::Relaxed)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hit_is_counted() {
        let before = counts();
        let client = Some(IpAddr::from([192, 0, 2, 1]));
        hit(Limit::MaxConnections, client, "test");
        hit(Limit::MaxConnections, client, "test");
        let after = counts();
        let of = |list: &[(&str, u64)]| {
            list.iter()
                .find(|(n, _)| *n == "max_connections")
                .unwrap()
                .1
        };
        assert!(of(&after) >= of(&before) + 2);
    }
}
