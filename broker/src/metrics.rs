//! What the broker exports at `GET /metrics`, in Prometheus' text format.
//!
//! Two kinds of figures:
//! - **events**, counted where they happen through the `metrics` facade into one global
//!   `metrics-exporter-prometheus` recorder: requests, their durations, group commits,
//!   appended messages and bytes, retention's removals and pass durations. Recording is a few
//!   atomic operations on the request's own task: nothing waits for a scrape.
//! - **state**, read at scrape time from the store ([`Metrics::render`]): offsets, sizes,
//!   consumer lag, store availability, connection pools, long polls waiting. It goes into a
//!   recorder made for that one scrape, so a deleted topic's series disappear with it.
//!
//! Label cardinality is bounded by [`Caps`]: at most `topics` topics get series of their own
//! (others are counted under the topic label [`OTHER`]), and at most `groups` consumer groups
//! per topic, the furthest behind first.

use crate::store::{Store, TopicInfo};
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The topic label of appends to topics beyond [`Caps::topics`] (not a valid topic name, so
/// it cannot be mistaken for one).
pub const OTHER: &str = "(other)";

/// Longest a scrape waits for the store; a store that does not answer by then is reported
/// unavailable, and the scrape still answers.
const GATHER_TIMEOUT: Duration = Duration::from_secs(3);

/// How often histogram samples are folded in when nobody scrapes (bounds their memory).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

// Event metrics (the global recorder).
const REQUESTS: &str = "myqueue_http_requests_total";
const REQUEST_SECONDS: &str = "myqueue_http_request_duration_seconds";
const GROUP_REQUESTS: &str = "myqueue_group_commit_requests";
const GROUP_SECONDS: &str = "myqueue_group_commit_duration_seconds";
const APPENDED_MESSAGES: &str = "myqueue_appended_messages_total";
const APPENDED_BYTES: &str = "myqueue_appended_bytes_total";
const RETENTION_REMOVED: &str = "myqueue_retention_removed_messages_total";
const RETENTION_PASS_SECONDS: &str = "myqueue_retention_pass_duration_seconds";
const LIMIT_HITS: &str = "myqueue_limit_hits_total";
const GUESSED_GROUPS: &str = "myqueue_guessed_append_groups_total";
const KNOWN_STATE_GROUPS: &str = "myqueue_known_state_append_groups_total";

// State metrics (read at scrape time).
const STORE_UP: &str = "myqueue_store_up";
const TOPICS: &str = "myqueue_topics";
const TOPIC_START: &str = "myqueue_topic_start_offset";
const TOPIC_END: &str = "myqueue_topic_end_offset";
const TOPIC_MESSAGES: &str = "myqueue_topic_messages";
const TOPIC_BYTES: &str = "myqueue_topic_bytes";
const GROUP_LAG: &str = "myqueue_consumer_lag";
const ANONYMOUS_CONSUMERS: &str = "myqueue_anonymous_consumers";
const ANONYMOUS_LAG: &str = "myqueue_anonymous_consumer_lag";
const OMITTED: &str = "myqueue_metrics_omitted_series";
const POOL: &str = "myqueue_db_pool_connections";
const LONG_POLLS: &str = "myqueue_long_polls_waiting";

/// Seconds: from 100 µs (a memory append) to 30 s (the longest long poll).
const SECONDS_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0, 30.0,
];
/// Requests in one group commit, up to the batcher's limit (1024).
const GROUP_BUCKETS: [f64; 11] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// Limits on label cardinality (`--metrics-max-topics`, `--metrics-max-groups`).
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub topics: usize,
    /// Consumer groups per topic.
    pub groups: usize,
}

/// The broker's metrics: the handle that renders them, and the little state that only they
/// need. Cheap to share (`Arc`).
pub struct Metrics {
    handle: PrometheusHandle,
    caps: Caps,
    /// Topics that have per-topic event series: the first [`Caps::topics`] seen.
    topics: RwLock<HashSet<String>>,
    long_polls: AtomicI64,
    /// One scrape reads the store at a time: many scrapers cost no more than one.
    gathering: tokio::sync::Mutex<()>,
}

impl Metrics {
    /// Installs the process's recorder, labelling every event series with the store's kind.
    /// A second call in one process (tests) keeps the first recorder.
    pub fn install(store: &'static str, caps: Caps) -> Arc<Self> {
        let recorder = PrometheusBuilder::new()
            .add_global_label("store", store)
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(GROUP_REQUESTS.into()), &GROUP_BUCKETS)
            })
            .expect("bucket lists are not empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::debug!("a metrics recorder was installed before; keeping it");
        }
        describe_events();
        // Every limit's series from the start, at 0: an alert can then watch its rate.
        for limit in crate::network::hits::EVERY_LIMIT {
            counter!(LIMIT_HITS, "limit" => limit.name()).increment(0);
        }
        Arc::new(Metrics {
            handle,
            caps,
            topics: RwLock::default(),
            long_polls: AtomicI64::new(0),
            gathering: tokio::sync::Mutex::new(()),
        })
    }

    /// Folds in histogram samples every few seconds until `stop`, so that they do not pile up
    /// when nobody scrapes.
    pub fn spawn_upkeep(self: &Arc<Self>, stop: CancellationToken) {
        let metrics = self.clone();
        tokio::spawn(async move {
            while stop
                .run_until_cancelled(tokio::time::sleep(UPKEEP_EVERY))
                .await
                .is_some()
            {
                metrics.handle.run_upkeep();
            }
        });
    }

    /// Counts one answered request (called by the route table's log filter).
    pub fn request(&self, method: &warp::http::Method, path: &str, status: u16, took: Duration) {
        let endpoint = endpoint(path);
        counter!(REQUESTS, "endpoint" => endpoint, "method" => method_name(method), "status" => status.to_string())
            .increment(1);
        histogram!(REQUEST_SECONDS, "endpoint" => endpoint).record(took.as_secs_f64());
    }

    /// Counts messages appended to `topic` (not the duplicates of a retried batch).
    pub fn appended(&self, topic: &str, messages: u64, bytes: u64) {
        let topic = self.topic_label(topic);
        counter!(APPENDED_MESSAGES, "topic" => topic.clone()).increment(messages);
        counter!(APPENDED_BYTES, "topic" => topic).increment(bytes);
    }

    /// Marks a long poll as waiting until the returned guard is dropped.
    pub fn long_poll(self: &Arc<Self>) -> LongPoll {
        self.long_polls.fetch_add(1, Ordering::Relaxed);
        LongPoll(self.clone())
    }

    /// The label of `topic`: its name while fewer than [`Caps::topics`] topics have one.
    fn topic_label(&self, topic: &str) -> String {
        let known = self.topics.read().unwrap_or_else(|e| e.into_inner());
        if known.contains(topic) {
            return topic.to_owned();
        }
        drop(known);
        let mut known = self.topics.write().unwrap_or_else(|e| e.into_inner());
        if known.len() < self.caps.topics {
            known.insert(topic.to_owned());
            return topic.to_owned();
        }
        OTHER.to_owned()
    }

    /// Everything, in Prometheus' text format: the events, then the state read from `store`
    /// now. Never fails: a store that does not answer is reported as down.
    pub async fn render(&self, store: &dyn Store) -> String {
        let _one_at_a_time = self.gathering.lock().await;
        let state = tokio::time::timeout(GATHER_TIMEOUT, read_state(store, self.caps))
            .await
            .unwrap_or(State::Down);
        let recorder = PrometheusBuilder::new().build_recorder();
        metrics::with_local_recorder(&recorder, || {
            describe_state();
            self.record_state(store, &state);
        });
        let mut text = self.handle.render();
        text.push_str(&recorder.handle().render());
        text
    }

    fn record_state(&self, store: &dyn Store, state: &State) {
        let kind = store.kind();
        gauge!(LONG_POLLS, "store" => kind).set(self.long_polls.load(Ordering::Relaxed) as f64);
        for pool in store.pools() {
            let in_use = pool.size.saturating_sub(pool.idle);
            gauge!(POOL, "store" => kind, "pool" => pool.name, "state" => "in_use")
                .set(in_use as f64);
            gauge!(POOL, "store" => kind, "pool" => pool.name, "state" => "idle")
                .set(pool.idle as f64);
        }
        let State::Up {
            topics,
            listed,
            groups_omitted,
        } = state
        else {
            gauge!(STORE_UP, "store" => kind).set(0.0);
            return;
        };
        gauge!(STORE_UP, "store" => kind).set(1.0);
        gauge!(TOPICS, "store" => kind).set(*listed as f64);
        gauge!(OMITTED, "store" => kind, "what" => "topics")
            .set(listed.saturating_sub(topics.len()) as f64);
        gauge!(OMITTED, "store" => kind, "what" => "groups").set(*groups_omitted as f64);
        for topic in topics {
            let name = topic.name.clone();
            gauge!(TOPIC_START, "store" => kind, "topic" => name.clone())
                .set(topic.start_offset as f64);
            gauge!(TOPIC_END, "store" => kind, "topic" => name.clone())
                .set(topic.end_offset as f64);
            gauge!(TOPIC_MESSAGES, "store" => kind, "topic" => name.clone())
                .set(topic.messages() as f64);
            gauge!(TOPIC_BYTES, "store" => kind, "topic" => name.clone()).set(topic.bytes as f64);
            let lag = Lag::of(topic, self.caps.groups);
            for (group, lag) in lag.groups {
                gauge!(GROUP_LAG, "store" => kind, "topic" => name.clone(), "group" => group)
                    .set(lag as f64);
            }
            gauge!(ANONYMOUS_CONSUMERS, "store" => kind, "topic" => name.clone())
                .set(lag.anonymous as f64);
            gauge!(ANONYMOUS_LAG, "store" => kind, "topic" => name).set(lag.anonymous_lag as f64);
        }
    }
}

/// A long poll in progress; see [`Metrics::long_poll`].
pub struct LongPoll(Arc<Metrics>);

impl Drop for LongPoll {
    fn drop(&mut self) {
        self.0.long_polls.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts a group commit of `requests` requests that took `took` (the batcher).
pub fn group_commit(batch: &'static str, requests: usize, took: Duration) {
    histogram!(GROUP_REQUESTS, "batch" => batch).record(requests as f64);
    histogram!(GROUP_SECONDS, "batch" => batch).record(took.as_secs_f64());
}

/// Counts a PostgreSQL append group that wrote before it locked (store/guess.rs), by whether
/// its guess held (`right`) or it started again (`wrong`).
pub fn guessed_group(right: bool) {
    let outcome = if right { "right" } else { "wrong" };
    counter!(GUESSED_GROUPS, "outcome" => outcome).increment(1);
}

/// Counts an append group planned from the state the groups ahead of it left, stored by one
/// statement that checks it (`stored`), or not: its rows were not as planned (`changed`), or
/// it was no group for one statement (`unsuited`, a retry among its batches, say).
pub fn known_state_group(outcome: &'static str) {
    counter!(KNOWN_STATE_GROUPS, "outcome" => outcome).increment(1);
}

/// Counts a client's run into `limit` (network/hits.rs).
pub fn limit_hit(limit: &'static str) {
    counter!(LIMIT_HITS, "limit" => limit).increment(1);
}

/// Counts messages that retention removed (the retention task).
pub fn retention_removed(messages: u64) {
    counter!(RETENTION_REMOVED).increment(messages);
}

/// Times one retention pass that ran to its end, failed or not (the retention task).
pub fn retention_pass(took: Duration) {
    histogram!(RETENTION_PASS_SECONDS).record(took.as_secs_f64());
}

/// What the store holds, read at one scrape.
enum State {
    Down,
    Up {
        /// Described topics, at most [`Caps::topics`].
        topics: Vec<TopicInfo>,
        /// How many topics there are.
        listed: usize,
        groups_omitted: usize,
    },
}

async fn read_state(store: &dyn Store, caps: Caps) -> State {
    if store.ping().await.is_err() {
        return State::Down;
    }
    let Ok(names) = store.list_topics().await else {
        return State::Down;
    };
    let mut topics = Vec::new();
    let mut groups_omitted = 0;
    for name in names.iter().take(caps.topics) {
        // A topic deleted since the listing is simply not there any more.
        if let Ok(info) = store.describe_topic(name).await {
            let groups = info.consumers.iter().filter(|c| c.group.is_some()).count();
            groups_omitted += groups.saturating_sub(caps.groups);
            topics.push(info);
        }
    }
    State::Up {
        topics,
        listed: names.len(),
        groups_omitted,
    }
}

/// A topic's consumer lag as exported: the groups furthest behind by name, anonymous
/// consumers together.
#[derive(Debug, PartialEq, Eq)]
struct Lag {
    groups: Vec<(String, u64)>,
    anonymous: u64,
    anonymous_lag: u64,
}

impl Lag {
    fn of(topic: &TopicInfo, max_groups: usize) -> Lag {
        let mut groups: Vec<(String, u64)> = topic
            .consumers
            .iter()
            .filter_map(|c| c.group.clone().map(|g| (g, c.lag)))
            .collect();
        groups.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        groups.truncate(max_groups);
        let anonymous: Vec<u64> = topic
            .consumers
            .iter()
            .filter(|c| c.group.is_none())
            .map(|c| c.lag)
            .collect();
        Lag {
            groups,
            anonymous: anonymous.len() as u64,
            anonymous_lag: anonymous.iter().sum(),
        }
    }
}

/// The endpoint a request path belongs to, as a route template: a bounded set of labels
/// (a topic's name in `/topics/{name}` is not one).
fn endpoint(path: &str) -> &'static str {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    match (parts.next().unwrap_or(""), parts.next()) {
        ("topics", None | Some("")) => "/topics",
        ("topics", Some(rest)) if !rest.contains('/') => "/topics/{name}",
        ("producer", Some("register")) => "/producer/register",
        ("producer", Some("produce")) => "/producer/produce",
        ("producer", Some("produce_batch")) => "/producer/produce_batch",
        ("consumer", Some("register")) => "/consumer/register",
        ("consumer", Some("consume")) => "/consumer/consume",
        ("consumer", Some("fetch")) => "/consumer/fetch",
        ("consumer", Some("commit")) => "/consumer/commit",
        ("size", None) => "/size",
        ("healthz", None) => "/healthz",
        ("noop", None) => "/noop",
        ("metrics", None) => "/metrics",
        ("openapi.json", None) => "/openapi.json",
        ("ui", _) => "/ui",
        _ => "unknown",
    }
}

fn method_name(method: &warp::http::Method) -> &'static str {
    use warp::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::PUT => "PUT",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn describe_events() {
    describe_counter!(
        REQUESTS,
        "HTTP requests answered, by endpoint, method and status."
    );
    describe_histogram!(
        REQUEST_SECONDS,
        "Time to answer a request, by endpoint (long polls included)."
    );
    describe_histogram!(
        GROUP_REQUESTS,
        "Requests committed together in one transaction (group commit), by batcher."
    );
    describe_histogram!(GROUP_SECONDS, "Time one group commit took, by batcher.");
    describe_counter!(
        APPENDED_MESSAGES,
        "Messages appended, by topic (retried duplicates not counted)."
    );
    describe_counter!(APPENDED_BYTES, "Payload bytes appended, by topic.");
    describe_counter!(RETENTION_REMOVED, "Messages removed by retention.");
    describe_histogram!(
        RETENTION_PASS_SECONDS,
        "How long retention passes take (a pass frees what lies below the starts and makes \
         room for the appends to come; under load, the store grows by what arrives meanwhile)."
    );
    describe_counter!(
        GUESSED_GROUPS,
        "PostgreSQL append groups written before their rows were locked, by whether the \
         guess of those rows held (right) or the group started again (wrong)."
    );
    describe_counter!(
        KNOWN_STATE_GROUPS,
        "Append groups planned from the state the groups ahead of them left, by whether one \
         statement that checks that state stored them (stored), found it changed (changed), \
         or they were not tried (unsuited)."
    );
    describe_counter!(
        LIMIT_HITS,
        "Times clients ran into a limit (timeouts, connection and long-poll caps, TLS \
         handshakes), by limit."
    );
}

fn describe_state() {
    describe_gauge!(STORE_UP, "1 when the store answers, 0 when it does not.");
    describe_gauge!(TOPICS, "Topics in the store.");
    describe_gauge!(TOPIC_START, "A topic's oldest offset kept.");
    describe_gauge!(TOPIC_END, "The offset a topic's next message gets.");
    describe_gauge!(TOPIC_MESSAGES, "Messages a topic holds.");
    describe_gauge!(
        TOPIC_BYTES,
        "Bytes a topic holds (payload plus 64 per message)."
    );
    describe_gauge!(GROUP_LAG, "Messages after a consumer group's position.");
    describe_gauge!(ANONYMOUS_CONSUMERS, "Consumers without a group, per topic.");
    describe_gauge!(
        ANONYMOUS_LAG,
        "Messages after the positions of a topic's consumers without a group, summed."
    );
    describe_gauge!(
        OMITTED,
        "Topics and groups left out of the per-topic series by the cardinality caps."
    );
    describe_gauge!(POOL, "Database connections, in use or idle, per pool.");
    describe_gauge!(LONG_POLLS, "Fetches waiting for a message (long polls).");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ConsumerInfo, Retention, RetentionSettings};

    #[test]
    fn endpoints_are_route_templates() {
        assert_eq!(endpoint("/topics"), "/topics");
        assert_eq!(endpoint("/topics/orders"), "/topics/{name}");
        assert_eq!(endpoint("/topics/a/b"), "unknown");
        assert_eq!(endpoint("/consumer/fetch"), "/consumer/fetch");
        assert_eq!(endpoint("/ui/app.js"), "/ui");
        assert_eq!(endpoint("/no/such/thing"), "unknown");
        assert_eq!(endpoint("/size/x"), "unknown");
    }

    #[test]
    fn lag_puts_laggards_first_caps_groups_and_sums_anonymous_consumers() {
        let consumer = |id, group: Option<&str>, lag| ConsumerInfo {
            id,
            group: group.map(str::to_owned),
            position: 0,
            lag,
        };
        let topic = TopicInfo {
            name: "t".into(),
            start_offset: 0,
            end_offset: 10,
            bytes: 0,
            settings: RetentionSettings::default(),
            retention: Retention::default(),
            created_ms: 0,
            consumers: vec![
                consumer(1, Some("fast"), 0),
                consumer(2, None, 4),
                consumer(3, Some("slow"), 9),
                consumer(4, None, 3),
                consumer(5, Some("middle"), 5),
            ],
        };
        assert_eq!(
            Lag::of(&topic, 2),
            Lag {
                groups: vec![("slow".into(), 9), ("middle".into(), 5)],
                anonymous: 2,
                anonymous_lag: 7,
            }
        );
    }
}
