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
    ///
    /// A consumer that keeps up asks, again and again, from the offset where the topic ends.
    /// When this broker's last append to the topic ended there (the topic's signal says so),
    /// the fetch waits without reading first, and when woken by an append of this broker it
    /// answers with the appended messages themselves ([`crate::store::Tail`]): no read at all.
    /// So does a fetch from among the messages of that last append while they are recent (a
    /// consumer answered just before it committed, coming back for it).
    pub async fn fetch_waiting(
        &self,
        consumer_id: u64,
        topic: &str,
        from: Option<u64>,
        limit: FetchLimit,
        wait: Duration,
    ) -> Result<Fetched, StoreError> {
        if wait.is_zero() {
            return self.store.fetch(consumer_id, topic, from, limit).await;
        }
        let read = || self.store.fetch(consumer_id, topic, from, limit);
        // A topic already waited on has its signal: subscribed before the read, an append
        // after the read still wakes this fetch.
        let known = self.store.signals().subscribe_existing(topic);
        let at_end = from.filter(|&from| known.as_ref().is_some_and(|k| k.borrow().ends_at(from)));
        let (mut appended, mut fetched) = match (known, at_end) {
            (Some(appended), Some(_)) => {
                self.store.check_consumer(consumer_id, topic).await?;
                (appended, None)
            }
            (Some(appended), None) => {
                // A consumer that was answered as a group committed comes back for that
                // group's messages: the topic's last wake-up holds them (committed), so the
                // store is not read, while they are recent (retention or a deletion since
                // would not show in them).
                let tail = appended.borrow().tail.clone();
                let recent = tail
                    .zip(from)
                    .and_then(|(t, from)| t.answer_recent(from, limit));
                if let Some(answer) = recent {
                    self.store.check_consumer(consumer_id, topic).await?;
                    return Ok(answer);
                }
                (appended, Some(read().await?))
            }
            (None, _) => {
                let fetched = read().await?;
                if !fetched.messages.is_empty() {
                    return Ok(fetched);
                }
                // Subscribed only now that the consumer and topic are known to exist (a
                // signal is kept per topic name), then read again: an append between the
                // first read and the subscription is not missed.
                (self.store.signals().subscribe(topic), Some(read().await?))
            }
        };
        if let Some(fetched) = fetched.take_if(|f| !f.messages.is_empty()) {
            return Ok(fetched);
        }
        let _waiting = (self.metrics.long_poll(), self.store.signals().park(topic));
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            tokio::select! {
                changed = appended.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let tail = appended.borrow().tail.clone();
                    if let Some(answer) = tail.zip(from).and_then(|(t, from)| t.answer(from, limit)) {
                        return Ok(answer);
                    }
                    let again = read().await?;
                    if !again.messages.is_empty() {
                        return Ok(again);
                    }
                    fetched = Some(again);
                }
                _ = tokio::time::sleep_until(deadline) => break,
                _ = self.shutdown.cancelled() => break,
            }
        }
        // Nothing came. Without a read, the topic ends at `from`, as its signal said.
        Ok(fetched.unwrap_or_else(|| {
            let from = at_end.expect("no read only at the end");
            Fetched::new(from, from, Vec::new(), from)
        }))
    }
}
