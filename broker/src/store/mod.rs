//! Storage: the one [`Store`] trait and its three implementations.
//!
//! A topic is an append-only log with offsets 0, 1, 2, … Each consumer has a position (the
//! next offset it will consume), each producer a sequence number for idempotent batches.
//! Every store gives the same guarantees, checked by the conformance suite in
//! `broker/tests/store_conformance.rs`:
//! - offsets are gap-free and become visible in order (a reader never sees offset k+1
//!   before k);
//! - an append is acknowledged only once it is durable (for the durable stores);
//! - `consume` reads and advances a position in one atomic step;
//! - a producer or consumer id works only with the topic it was registered to;
//! - retention removes a topic's oldest messages in whole chunks and only moves its start
//!   forward; a position before the start continues from the start (see [`retention`]);
//! - a deleted topic's ids are never valid again, also for a topic created again under its
//!   name (ids are never reused, and the stores check that the topic still exists).

mod batcher;
mod catalog;
pub mod dir_lock;
mod error;
mod guess;
pub mod memory;
mod pg_copy;
mod pg_fetch_sql;
mod pg_group_sql;
mod pg_partitions;
mod pg_reach;
mod plan;
pub mod postgres;
pub mod retention;
mod sequence;
mod signals;
pub mod sql;
pub mod sqlite;
mod sqlite_check;
pub mod sqlite_config;
mod sqlite_segments;
mod write_health;

pub use error::{OpenError, StoreError};
pub use retention::{Retention, RetentionChange, RetentionSettings};
pub use signals::{Tail, TopicSignals};

use async_trait::async_trait;
use myqueue_wire::NamedOffset;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A batch of messages for one topic from one producer.
#[derive(Debug, Clone)]
pub struct Append {
    pub producer_id: u64,
    pub topic: String,
    pub messages: Vec<String>,
    /// The producer's sequence number of the first message, for idempotent retries.
    pub sequence: Option<u64>,
}

/// Where an [`Append`] landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: u64,
    pub count: u64,
    /// The batch had been stored before (a retry): nothing was stored this time.
    pub duplicate: bool,
}

/// A message as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub offset: u64,
    pub payload: String,
    /// Milliseconds since the Unix epoch, set by the broker when it stored the message.
    pub timestamp_ms: u64,
}

/// What a read-only fetch found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub messages: Vec<StoredMessage>,
    /// Where the next fetch should start.
    pub next_offset: u64,
    /// The topic's end: the offset the next appended message will get.
    pub end_offset: u64,
    /// How many of the messages asked for (from the requested offset on) had already been
    /// removed by retention: the read began this much later, at the topic's start.
    pub skipped: u64,
}

impl Fetched {
    /// What a fetch asked to read from `from` got, in a topic that keeps `start..end`: the
    /// messages from `max(from, start)` on.
    pub fn new(from: u64, start: u64, messages: Vec<StoredMessage>, end: u64) -> Self {
        // Where the read began, from the rows themselves when there are any.
        let begun = messages
            .first()
            .map_or(from.max(start), |m| m.offset.max(from));
        Fetched {
            next_offset: messages.last().map_or(begun, |m| m.offset + 1),
            messages,
            end_offset: end,
            skipped: begun - from,
        }
    }
}

/// A consumer as `describe_topic` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerInfo {
    pub id: u64,
    pub group: Option<String>,
    /// As stored: the next offset it consumes (before the start, it continues at the start).
    pub position: u64,
    /// Messages after its position: `end − max(position, start)`.
    pub lag: u64,
}

/// What a topic holds: `describe_topic`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    /// The oldest offset kept.
    pub start_offset: u64,
    /// The offset the next message gets.
    pub end_offset: u64,
    /// Bytes held, by [`retention::message_bytes`].
    pub bytes: u64,
    /// The topic's own settings (`None`: the broker's default).
    pub settings: RetentionSettings,
    /// What is in force (`None`: unlimited).
    pub retention: Retention,
    /// When the topic was created, in milliseconds since the epoch.
    pub created_ms: u64,
    /// Every consumer registered to the topic, by id.
    pub consumers: Vec<ConsumerInfo>,
}

impl TopicInfo {
    /// Messages held.
    pub fn messages(&self) -> u64 {
        self.end_offset - self.start_offset
    }
}

/// What one retention pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PassReport {
    /// This store did the work (with several brokers on one database, one at a time does).
    pub led: bool,
    /// Messages whose topics' starts moved past them.
    pub removed: u64,
    /// Some topic had a chunk's worth or more appended since the last pass
    /// ([`retention::PassPlan::outpaced`]).
    pub outpaced: bool,
}

/// A database connection pool's occupancy, for `GET /metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Which pool: `main`, `readers`, `writer`.
    pub name: &'static str,
    /// Connections open.
    pub size: usize,
    /// Connections open and not in use.
    pub idle: usize,
}

/// Refuses a read from past the end of `topic`: the offset a client asked for, if it is not.
pub(crate) fn within_end(topic: &str, offset: u64, end: u64) -> Result<u64> {
    if offset > end {
        return Err(StoreError::OffsetOutOfRange {
            topic: topic.to_owned(),
            offset,
            end,
        });
    }
    Ok(offset)
}

/// How much one fetch may return: at most `messages` messages and, past the first message,
/// at most `bytes` bytes of payload (the first always comes, so a large message is never
/// stuck).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchLimit {
    pub messages: usize,
    pub bytes: usize,
}

impl FetchLimit {
    /// Keeps the messages within the limit, in order.
    pub fn apply(&self, messages: impl IntoIterator<Item = StoredMessage>) -> Vec<StoredMessage> {
        let mut total = 0;
        let mut kept = Vec::new();
        for message in messages.into_iter().take(self.messages) {
            total += message.payload.len();
            if !kept.is_empty() && total > self.bytes {
                break;
            }
            kept.push(message);
        }
        kept
    }
}

/// Where a consumer starts when its registration creates it (`start` of
/// `POST /consumer/register`, the broker's `--consumer-start`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ConsumerStart {
    /// At the topic's first message: everything the topic holds (the assignment's reading).
    #[default]
    Beginning,
    /// At the topic's end: only messages appended after the registration (Kafka's `latest`).
    End,
}

impl From<NamedOffset> for ConsumerStart {
    fn from(named: NamedOffset) -> Self {
        match named {
            NamedOffset::Beginning => ConsumerStart::Beginning,
            NamedOffset::End => ConsumerStart::End,
        }
    }
}

/// A consumer position to move to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekTo {
    Offset(u64),
    Beginning,
    End,
}

impl From<myqueue_wire::OffsetSpec> for SeekTo {
    fn from(spec: myqueue_wire::OffsetSpec) -> Self {
        match spec {
            myqueue_wire::OffsetSpec::At(n) => SeekTo::Offset(n.0),
            myqueue_wire::OffsetSpec::Named(NamedOffset::Beginning) => SeekTo::Beginning,
            myqueue_wire::OffsetSpec::Named(NamedOffset::End) => SeekTo::End,
        }
    }
}

/// The storage behind the broker. Inputs are validated by the API layer (names, sizes)
/// before they reach a store; a store checks what only it can know (existence, ownership,
/// sequence numbers).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `memory`, `sqlite` or `postgres`, for logs.
    fn kind(&self) -> &'static str;

    /// Succeeds when the store can serve requests now (`GET /healthz`).
    async fn ping(&self) -> Result<()>;

    /// Creates an empty topic with its own retention `settings`; [`StoreError::TopicExists`]
    /// if it exists.
    async fn create_topic(&self, name: &str, settings: RetentionSettings) -> Result<()>;

    /// What `name` holds, its retention and its consumers.
    async fn describe_topic(&self, name: &str) -> Result<TopicInfo>;

    /// Changes the retention settings of `name`; answers its description after the change.
    async fn set_retention(&self, name: &str, change: RetentionChange) -> Result<TopicInfo>;

    /// Deletes `name` with its messages, producers and consumers. Their ids are never valid
    /// again; a topic created again under the name starts empty, at offset 0.
    async fn delete_topic(&self, name: &str) -> Result<()>;

    /// Runs one retention pass as if the time were `now_ms` (the background task passes the
    /// clock's time; tests pass the time they need).
    async fn retention_pass(&self, now_ms: u64) -> Result<PassReport>;

    /// All topic names, sorted.
    async fn list_topics(&self) -> Result<Vec<String>>;

    /// Registers a producer for `topic`, creating the topic if it is missing.
    async fn register_producer(&self, topic: &str) -> Result<u64>;

    /// Registers a consumer of `topic` whose position is the topic's beginning or its end, as
    /// `start` says. With a `group`, the same `(topic, group)` always gets the same id and
    /// keeps its position: `start` applies only when the registration creates the consumer.
    async fn register_consumer(
        &self,
        topic: &str,
        group: Option<&str>,
        start: ConsumerStart,
    ) -> Result<u64>;

    /// Appends messages; answers once they are durable.
    async fn append(&self, append: Append) -> Result<Appended>;

    /// The assignment's dequeue: returns the message at the consumer's position and advances
    /// the position past it, atomically. `None` when there is nothing after the position.
    async fn consume(&self, consumer_id: u64, topic: &str) -> Result<Option<StoredMessage>>;

    /// Reads messages within `limit` from `from` (the consumer's position when `None`)
    /// without moving the position.
    async fn fetch(
        &self,
        consumer_id: u64,
        topic: &str,
        from: Option<u64>,
        limit: FetchLimit,
    ) -> Result<Fetched>;

    /// Fails as [`Store::fetch`] would when `consumer_id` is not a consumer of `topic`.
    async fn check_consumer(&self, consumer_id: u64, topic: &str) -> Result<()>;

    /// Sets the consumer's position; returns it.
    async fn commit(&self, consumer_id: u64, topic: &str, to: SeekTo) -> Result<u64>;

    /// Number of messages after the consumer's position (`end − max(position, start)`), in O(1).
    async fn size(&self, consumer_id: u64, topic: &str) -> Result<u64>;

    /// Wakes long-polling fetches when a topic gets new messages.
    fn signals(&self) -> &TopicSignals;

    /// The occupancy of its connection pools (none for the memory store). Reads counters
    /// only: it never waits for a connection.
    fn pools(&self) -> Vec<PoolStats> {
        Vec::new()
    }

    /// Finishes pending writes and closes connections.
    async fn close(&self);
}

/// Milliseconds since the Unix epoch: the timestamp stored with each message.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
