//! [`App`]: what every request handler needs, cheap to clone.

use crate::api::error::FailureStatus;
use crate::auth::{Access, Auth};
use crate::metrics::Metrics;
use crate::network::long_polls::LongPolls;
use crate::store::{ConsumerStart, FetchLimit, Fetched, Store, StoreError};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Limits checked before anything reaches the store.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_message_bytes: usize,
    pub max_body_bytes: usize,
    /// How long a request body may take to arrive (`--body-read-timeout`).
    pub body_read_timeout: Duration,
}

/// The broker's choices where the assignment allows more than one reading (see the README).
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    /// Where a consumer starts when its registration does not say (`--consumer-start`).
    pub consumer_start: ConsumerStart,
    /// The HTTP status of failures a client causes (`--failure-status`).
    pub failure_status: FailureStatus,
}

#[derive(Clone)]
pub struct App {
    pub store: Arc<dyn Store>,
    pub limits: Limits,
    pub policy: Policy,
    /// What `GET /metrics` exports.
    pub metrics: Arc<Metrics>,
    /// Cancelled at shutdown: long polls return at once instead of holding it up.
    pub shutdown: CancellationToken,
    /// The tokens (`--auth-file`); `None`: every caller may do everything.
    pub auth: Option<Arc<Auth>>,
    /// The long polls open per client address (`--max-long-polls-per-client`).
    pub long_polls: LongPolls,
    /// Who sent the request being handled: set for each request by `api::access`.
    pub caller: Caller,
}

/// The sender of one request.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub access: Access,
    pub addr: Option<IpAddr>,
}

impl App {
    /// Reads like [`Store::fetch`]; when nothing is there, waits up to `wait` for an append
    /// to the topic (long poll) and reads again. Waiting costs no CPU: it sleeps on the
    /// topic's signal.
    pub async fn fetch_waiting(
        &self,
        consumer_id: u64,
        topic: &str,
        from: Option<u64>,
        limit: FetchLimit,
        wait: Duration,
    ) -> Result<Fetched, StoreError> {
        let fetched = self.store.fetch(consumer_id, topic, from, limit).await?;
        if !fetched.messages.is_empty() || wait.is_zero() {
            return Ok(fetched);
        }
        // Subscribe only now that the consumer and topic are known to exist, then read again:
        // an append between the first read and the subscription is not missed.
        let mut appended = self.store.signals().subscribe(topic);
        let _waiting = self.metrics.long_poll();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let fetched = self.store.fetch(consumer_id, topic, from, limit).await?;
            if !fetched.messages.is_empty() {
                return Ok(fetched);
            }
            tokio::select! {
                changed = appended.changed() => {
                    if changed.is_err() {
                        return Ok(fetched);
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return Ok(fetched),
                _ = self.shutdown.cancelled() => return Ok(fetched),
            }
        }
    }
}
