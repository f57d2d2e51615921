//! What the two SQL stores share: ownership checks through the catalog, group commit through
//! two batchers (appends; position changes), wake-ups after each commit, the retention pass,
//! and the statements both databases run as written ([`shared`]). A [`Backend`] supplies what
//! differs.

mod rows;
mod shared;

pub use rows::{
    CursorRow, FetchArraysRow, FetchRow, LockedRow, MessageRow, Payload, db_id, db_int,
    distinct_ids, locked_state, stored_u64,
};
use rows::{answer_positions, taken_keys};
pub use shared::SharedSql;

use super::batcher::{Batcher, GroupLimits, Handled, Overlap};
use super::catalog::{Catalog, Owner, Role};
use super::guess::Guess;
use super::plan::{AppendJob, PositionOp, Positioned, plan_positions};
use super::retention::{self, Chunk, Log, Retention, RetentionConfig};
use super::signals::GroupTails;
use super::write_health::WriteHealth;
use super::{
    Append, Appended, ConsumerStart, FetchLimit, Fetched, PassReport, PoolStats, Result,
    RetentionChange, RetentionSettings, SeekTo, Store, StoreError, StoredMessage, TopicInfo,
    TopicSignals, now_ms,
};
use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::{Connection, Database, Pool, Transaction};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Attempts of a position group whose taken message vanished under it (see
/// [`position_group`]).
const POSITION_GROUP_ATTEMPTS: usize = 3;

/// Requests per group commit at most.
const MAX_GROUP: usize = 1024;
/// Message bytes per append group at most: one transaction stays far below the databases'
/// limits on a statement's size (1 GB), however many large batches arrive at once.
const MAX_GROUP_BYTES: u64 = 64 * 1024 * 1024;
/// A whole append group, in the units of [`group_share`].
const GROUP_SHARES: usize = 1_000_000;

/// A job's share of an append group, in millionths: its payload against [`MAX_GROUP_BYTES`]
/// and, for a topic with a size limit, its bytes (as retention counts them) against a chunk
/// of that limit, whichever is larger. So a group carries at most about a chunk of any topic
/// with a size limit: retention moves a topic's start in whole chunks, and PostgreSQL's
/// partitions span about one, so a group far larger than a chunk (`MyProducer` with five
/// batches in flight: 16 MB) would set the steps in which the store grows and shrinks, and
/// it would outgrow twice its limit. Topics without a size limit keep groups as large as
/// they come, the fastest.
fn group_share(job: &AppendJob) -> usize {
    let payload: u64 = job.messages.iter().map(|m| m.len() as u64).sum();
    let mut share = payload.saturating_mul(GROUP_SHARES as u64) / MAX_GROUP_BYTES;
    if let Some(chunk) = job.chunk_bytes {
        let counted = retention::batch_bytes(&job.messages);
        share = share.max(counted.saturating_mul(GROUP_SHARES as u64) / chunk.max(1));
    }
    usize::try_from(share).unwrap_or(usize::MAX)
}

/// What one database does its own way. Inputs are validated; ids are known to exist and to
/// belong to the topic named.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    type Db: SharedSql;

    fn kind(&self) -> &'static str;

    /// The connections reads go to.
    fn readers(&self) -> &Pool<Self::Db>;

    /// The occupancy of its connection pools.
    fn pools(&self) -> Vec<PoolStats>;

    /// A transaction that will write.
    async fn begin_write(&self) -> sqlx::Result<Transaction<'static, Self::Db>>;

    /// The statement that opens a write transaction on a [`Backend::write_connection`].
    const BEGIN_WRITE: &'static str;

    /// A connection for write transactions, for hot paths that hand it back with
    /// `release_clean` after a clean end: PostgreSQL's pool would otherwise ping it first, a
    /// round trip and a server wake-up per group.
    async fn write_connection(&self) -> sqlx::Result<PoolConnection<Self::Db>>;

    /// Whether append groups may be in flight at once (each on its own connection).
    fn append_overlap(&self) -> Overlap<AppendJob> {
        Overlap::none()
    }

    /// What a group will find under lock, guessed as the batcher forms it ([`super::guess`]).
    fn guess_group(&self, _jobs: &[AppendJob]) -> Guess {
        Guess::none()
    }

    /// Stores a group of appends in one transaction, each message with the time `stored_ms`;
    /// one answer per job, in order. Announces the appends to other brokers, if the database
    /// is shared.
    async fn append_group(
        &self,
        jobs: Vec<AppendJob>,
        stored_ms: u64,
        guess: Guess,
    ) -> Result<Vec<Result<Appended>>>;

    /// Reads the positions of consumers `ids` and their topics' ends, locked until commit.
    async fn lock_cursors(
        &self,
        tx: &mut <Self::Db as Database>::Connection,
        ids: &[u64],
    ) -> Result<Vec<CursorRow>>;

    /// Sets consumers' positions (consumer id, position) and reads the messages taken by a
    /// group's consumes (topic id, offset).
    async fn move_and_take(
        &self,
        tx: &mut <Self::Db as Database>::Connection,
        positions: &[(u64, u64)],
        taken: &[(i64, u64)],
    ) -> Result<Vec<MessageRow>>;

    /// Reads messages of `owner`'s topic within `limit` from `from` (the consumer's position
    /// when `None`; never before the topic's start), and the topic's start and end,
    /// consistently with each other.
    async fn fetch(
        &self,
        owner: &Owner,
        consumer_id: u64,
        from: Option<u64>,
        limit: FetchLimit,
    ) -> Result<Fetched>;

    /// Makes the storage for topic `topic_id`'s messages, in the transaction that creates the
    /// topic (SQLite: a table per topic); nothing if it exists already.
    async fn create_topic_storage(
        &self,
        _tx: &mut <Self::Db as Database>::Connection,
        _topic_id: i64,
    ) -> Result<()> {
        Ok(())
    }

    /// Reads the id of the topic named `name` and locks its row until the transaction ends,
    /// to delete it; `None` if there is none. Tells other brokers, where there are any.
    async fn lock_topic(
        &self,
        tx: &mut <Self::Db as Database>::Connection,
        name: &str,
    ) -> Result<Option<i64>>;

    /// Whether this broker does the retention work now. With several brokers on one database
    /// one at a time does.
    async fn lead_retention(&self) -> Result<bool> {
        Ok(true)
    }

    /// Frees (some of) the storage of the messages of `topic_id` below `start`, which no reader
    /// can get any more; true once none is left. Repeatable: a pass calls it again while it
    /// answers false, and after a failure or a crash.
    async fn free_below(&self, topic_id: i64, start: u64) -> Result<bool>;

    /// Frees (some of) the storage of a deleted topic's messages; true once all is freed.
    /// Repeatable.
    async fn free_topic(&self, topic_id: i64) -> Result<bool>;

    /// Makes ready for the appends to come, once a pass has seen every topic (id, log as the
    /// pass read it, chunks).
    async fn prepare_appends(&self, _topics: &[(i64, Log, Vec<Chunk>)]) -> Result<()> {
        Ok(())
    }

    /// After a pass that freed messages.
    async fn after_freeing(&self) -> Result<()> {
        Ok(())
    }

    /// Closes the connections (background tasks have ended).
    async fn close(&self);
}

/// The occupancy of `pool`, named `name`.
pub fn pool_stats<Db: Database>(name: &'static str, pool: &Pool<Db>) -> PoolStats {
    PoolStats {
        name,
        size: pool.size() as usize,
        idle: pool.num_idle(),
    }
}

/// Runs retention passes one at a time.
struct Passes {
    defaults: Retention,
    backlog: tokio::sync::Mutex<Backlog>,
}

/// Topics with storage below their start still to free, as far as this store knows.
#[derive(Default)]
struct Backlog {
    /// Whether a pass has looked below every topic's start since the store opened (a crash
    /// may have left messages there that were not freed yet).
    swept: bool,
    topics: HashSet<i64>,
}

impl Passes {
    async fn run<B: Backend>(&self, backend: &B, now_ms: u64) -> Result<PassReport> {
        let mut backlog = self.backlog.lock().await;
        let report = retention_pass(backend, self.defaults, now_ms, &mut backlog).await?;
        backlog.swept |= report.led;
        Ok(report)
    }
}

/// One retention pass over every topic (see [`retention`]): close what was appended into
/// chunks, move starts forward, free (some of) what lies below them, free deleted topics, and
/// make ready for the appends to come. Freeing continues at the next pass for the topics in
/// `backlog` (and, before its first sweep, for every topic).
async fn retention_pass<B: Backend>(
    backend: &B,
    defaults: Retention,
    now_ms: u64,
    backlog: &mut Backlog,
) -> Result<PassReport> {
    if !backend.lead_retention().await? {
        return Ok(PassReport::default());
    }
    let topics = B::Db::topics(backend.readers()).await?;
    let mut chunks: HashMap<i64, Vec<Chunk>> = HashMap::new();
    for row in B::Db::chunks(backend.readers()).await? {
        chunks.entry(row.topic_id).or_default().push(row.chunk());
    }
    let mut report = PassReport {
        led: true,
        ..PassReport::default()
    };
    let mut prepared = Vec::with_capacity(topics.len());
    for topic in &topics {
        let log = topic.log();
        let retention = defaults.for_topic(topic.settings()?);
        let mut topic_chunks = chunks.remove(&topic.id).unwrap_or_default();
        let plan = retention::plan_pass(&log, &topic_chunks, retention, now_ms);
        report.outpaced |= plan.outpaced;
        if plan.chunk.is_some() || plan.new_start.is_some() {
            let mut tx = backend.begin_write().await?;
            if let Some(chunk) = &plan.chunk {
                B::Db::write_chunk(&mut tx, topic.id, chunk).await?;
            }
            if let Some((start, start_bytes)) = plan.new_start {
                B::Db::advance_start(&mut tx, topic.id, start, start_bytes).await?;
            }
            tx.commit().await?;
        }
        plan.apply(&mut topic_chunks);
        let start = match plan.new_start {
            Some((start, _)) => {
                report.removed += start - log.start;
                start
            }
            None => log.start,
        };
        let pending = plan.new_start.is_some()
            || backlog.topics.contains(&topic.id)
            || (!backlog.swept && start > 0);
        if pending {
            match backend.free_below(topic.id, start).await {
                Ok(true) => backlog.topics.remove(&topic.id),
                Ok(false) => backlog.topics.insert(topic.id),
                Err(err) => {
                    // The messages are unreadable already; a later pass frees them.
                    tracing::warn!(topic = %topic.name, error = %err, "cannot free retained-out messages yet");
                    backlog.topics.insert(topic.id)
                }
            };
        }
        prepared.push((topic.id, log, topic_chunks));
    }
    backend.prepare_appends(&prepared).await?;
    let mut freed = report.removed > 0;
    for topic_id in B::Db::dropped_topics(backend.readers()).await? {
        freed = true;
        if !backend.free_topic(topic_id).await? {
            continue;
        }
        let mut tx = backend.begin_write().await?;
        B::Db::forget_dropped(&mut tx, topic_id).await?;
        tx.commit().await?;
    }
    if freed {
        backend.after_freeing().await?;
    }
    Ok(report)
}

/// A durable store: a [`Backend`] with group commit.
pub struct SqlStore<B> {
    backend: Arc<B>,
    catalog: Catalog,
    signals: Arc<TopicSignals>,
    appends: Batcher<AppendJob, Appended>,
    positions: Batcher<(u64, PositionOp), Positioned>,
    passes: Arc<Passes>,
    /// Whether the last append group failed for the disk (for `ping`).
    write_health: Arc<WriteHealth>,
    /// The batchers, the retention pass and the backend's own background work; `close` waits
    /// for them.
    tasks: TaskTracker,
    stop: CancellationToken,
}

/// Answers every request of a failed group with the same error.
fn fail_all<T>(n: usize, err: StoreError) -> Vec<Result<T>> {
    (0..n).map(|_| Err(err.clone())).collect()
}

impl<B: Backend> SqlStore<B> {
    /// Starts the group-commit tasks and the retention pass (every `retention.every`) on
    /// `tasks` (where the backend may have started its own background work, stopped by
    /// `stop`). `signals` is shared with whatever else wakes long polls (PostgreSQL's LISTEN
    /// task).
    pub fn new(
        backend: B,
        signals: Arc<TopicSignals>,
        tasks: TaskTracker,
        stop: CancellationToken,
        retention: RetentionConfig,
    ) -> Self {
        let backend = Arc::new(backend);
        let append_limits = GroupLimits {
            name: "appends",
            requests: MAX_GROUP,
            weight: GROUP_SHARES,
            weigh: group_share,
            overlap: backend.append_overlap(),
        };
        let write_health = Arc::new(WriteHealth::default());
        let appends = Batcher::spawn(append_limits, &tasks, stop.clone(), {
            let backend = backend.clone();
            let signals = signals.clone();
            let health = write_health.clone();
            move |jobs: Vec<AppendJob>| {
                let guess = backend.guess_group(&jobs);
                commit_appends(
                    backend.clone(),
                    signals.clone(),
                    health.clone(),
                    jobs,
                    guess,
                )
            }
        });
        let position_limits = GroupLimits {
            name: "positions",
            requests: MAX_GROUP,
            weight: MAX_GROUP,
            weigh: |_: &(u64, PositionOp)| 1,
            overlap: Overlap::none(),
        };
        let positions = Batcher::spawn(position_limits, &tasks, stop.clone(), {
            let backend = backend.clone();
            move |ops: Vec<(u64, PositionOp)>| {
                let backend = backend.clone();
                async move {
                    match position_group(&*backend, &ops).await {
                        Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
                        Err(err) => fail_all(ops.len(), err),
                    }
                }
            }
        });
        let passes = Arc::new(Passes {
            defaults: retention.defaults,
            backlog: tokio::sync::Mutex::new(Backlog::default()),
        });
        if let Some(every) = retention.every {
            let (backend, passes) = (backend.clone(), passes.clone());
            let pass = move |now| {
                let (backend, passes) = (backend.clone(), passes.clone());
                async move { passes.run(&*backend, now).await }
            };
            tasks.spawn(retention::run_passes(
                every,
                stop.clone(),
                signals.clone(),
                pass,
            ));
        }
        SqlStore {
            backend,
            catalog: Catalog::default(),
            signals,
            appends,
            write_health,
            positions,
            passes,
            tasks,
            stop,
        }
    }

    /// The database's own side (for what only one database has, such as PostgreSQL's
    /// guessed groups).
    pub fn backend(&self) -> &B {
        &self.backend
    }

    async fn describe(&self, name: &str) -> Result<TopicInfo> {
        let readers = self.backend.readers();
        let topic = B::Db::topic(readers, name)
            .await?
            .ok_or_else(|| StoreError::TopicNotFound(name.to_owned()))?;
        let log = topic.log();
        let settings = topic.settings()?;
        let consumers = B::Db::consumers_of(readers, topic.id).await?;
        Ok(TopicInfo {
            start_offset: log.start,
            end_offset: log.end,
            bytes: log.bytes(),
            settings,
            retention: self.passes.defaults.for_topic(settings),
            created_ms: topic.created_ms,
            consumers: consumers.into_iter().map(|c| c.info(&log)).collect(),
            name: topic.name,
        })
    }

    /// The topic `id` is registered to, checked against `topic`.
    async fn owner(&self, role: Role, id: u64, topic: &str) -> Result<Owner> {
        let owner = match self.catalog.get(role, id) {
            Some(owner) => owner,
            None => {
                let owner = B::Db::find_owner(self.backend.readers(), role, id)
                    .await?
                    .ok_or(role.not_found(id))?;
                self.catalog.remember(role, id, owner.clone());
                owner
            }
        };
        owner.check(role, id, topic)?;
        Ok(owner)
    }

    async fn move_position(&self, id: u64, topic: &str, op: PositionOp) -> Result<Positioned> {
        self.owner(Role::Consumer, id, topic).await?;
        self.positions.submit((id, op)).await
    }
}

/// One transaction, one commit, for a whole group of position changes. The taken messages
/// are read in the same transaction as the move: a failure after the move would otherwise
/// lose them for their consumer.
///
/// Retention may move a topic's start between the read of the cursors and the read of the
/// messages (PostgreSQL reads each statement at its own snapshot): a message planned to be
/// taken is then gone. The group is rolled back and planned again from the new start, so a
/// consume never moves past a message it did not answer with.
async fn position_group<B: Backend>(
    backend: &B,
    ops: &[(u64, PositionOp)],
) -> Result<Vec<Positioned>> {
    let ids: Vec<u64> = ops.iter().map(|&(id, _)| id).collect();
    let mut conn = backend.write_connection().await?;
    let mut attempt = 1;
    loop {
        let mut tx = conn.begin_with(B::BEGIN_WRITE).await?;
        let cursors = backend.lock_cursors(&mut tx, &ids).await?;
        let plan = plan_positions(ops, cursors.into_iter().map(CursorRow::into_pair).collect());
        let keys = taken_keys(&plan.outcomes);
        let taken = backend
            .move_and_take(&mut tx, &plan.positions, &keys)
            .await?;
        let wanted: HashSet<(i64, u64)> = keys.into_iter().collect();
        if taken.len() < wanted.len() && attempt < POSITION_GROUP_ATTEMPTS {
            tx.rollback().await?;
            attempt += 1;
            continue;
        }
        tx.commit().await?;
        // An error above drops the connection instead, and its release sees the queued ROLLBACK
        // through (PostgreSQL's ping sends it; SQLite's hook waits for it).
        conn.release_clean();
        return Ok(answer_positions(plan.outcomes, taken));
    }
}

/// One append group: commit, then wake the long polls of the topics that got messages (with
/// the messages, where they wait for them: [`GroupTails`]), in the order groups were formed.
async fn commit_appends<B: Backend>(
    backend: Arc<B>,
    signals: Arc<TopicSignals>,
    write_health: Arc<WriteHealth>,
    jobs: Vec<AppendJob>,
    guess: Guess,
) -> Handled<Appended> {
    let n = jobs.len();
    let tails = GroupTails::keep(&signals, &jobs);
    let stored_ms = now_ms();
    let started = std::time::Instant::now();
    let result = backend.append_group(jobs, stored_ms, guess).await;
    tracing::trace!(requests = n, elapsed = ?started.elapsed(), "append group");
    write_health.record(result.as_ref().map(|_| ()));
    match result {
        Ok(outcomes) => {
            let wakes = tails.wakes(&outcomes, stored_ms);
            Handled {
                answers: outcomes,
                then: Some(Box::new(move || wakes.send(&signals))),
            }
        }
        Err(err) => fail_all(n, err).into(),
    }
}

#[async_trait]
impl<B: Backend> Store for SqlStore<B> {
    fn kind(&self) -> &'static str {
        self.backend.kind()
    }

    async fn ping(&self) -> Result<()> {
        B::Db::ping(self.backend.readers()).await?;
        self.write_health.check()
    }

    async fn create_topic(&self, name: &str, settings: RetentionSettings) -> Result<()> {
        let mut tx = self.backend.begin_write().await?;
        let topic_id = B::Db::create_topic(&mut *tx, name, settings).await?;
        self.backend.create_topic_storage(&mut tx, topic_id).await?;
        Ok(tx.commit().await?)
    }

    async fn describe_topic(&self, name: &str) -> Result<TopicInfo> {
        self.describe(name).await
    }

    async fn set_retention(&self, name: &str, change: RetentionChange) -> Result<TopicInfo> {
        let mut tx = self.backend.begin_write().await?;
        if !B::Db::set_retention(&mut *tx, name, change).await? {
            return Err(StoreError::TopicNotFound(name.to_owned()));
        }
        tx.commit().await?;
        self.signals.touch(); // the next pass applies the new limits
        // Its ids are read again, with the new limit (see `group_share`).
        if let Some(topic) = B::Db::topic(self.backend.readers(), name).await? {
            self.catalog.forget_topic(topic.id);
        }
        self.describe(name).await
    }

    /// The rows go at once; the messages' storage is freed by the next retention pass.
    async fn delete_topic(&self, name: &str) -> Result<()> {
        let mut tx = self.backend.begin_write().await?;
        let topic_id = self
            .backend
            .lock_topic(&mut tx, name)
            .await?
            .ok_or_else(|| StoreError::TopicNotFound(name.to_owned()))?;
        B::Db::delete_topic_rows(&mut tx, topic_id).await?;
        tx.commit().await?;
        self.catalog.forget_topic(topic_id);
        // Long polls on the topic wake, and find their consumer gone.
        self.signals.notify(name);
        Ok(())
    }

    async fn retention_pass(&self, now_ms: u64) -> Result<PassReport> {
        self.passes.run(&*self.backend, now_ms).await
    }

    async fn list_topics(&self) -> Result<Vec<String>> {
        B::Db::list_topics(self.backend.readers()).await
    }

    /// A topic deleted (by another broker) while its producer is registered: the topic is
    /// created again, once.
    async fn register_producer(&self, topic: &str) -> Result<u64> {
        let register = || async {
            let mut tx = self.backend.begin_write().await?;
            let (id, topic_id) = B::Db::register_producer(&mut *tx, topic).await?;
            self.backend.create_topic_storage(&mut tx, topic_id).await?;
            tx.commit().await?;
            Ok::<_, StoreError>(id)
        };
        match register().await {
            Err(err) if err.is_foreign_key_violation() => register().await,
            result => result,
        }
    }

    async fn register_consumer(
        &self,
        topic: &str,
        group: Option<&str>,
        start: ConsumerStart,
    ) -> Result<u64> {
        let register = async {
            let mut tx = self.backend.begin_write().await?;
            let id = B::Db::register_consumer(&mut *tx, topic, group, start).await?;
            tx.commit().await?;
            Ok(id)
        };
        register.await.map_err(|err: StoreError| {
            if err.is_foreign_key_violation() {
                StoreError::TopicNotFound(topic.to_owned())
            } else {
                err
            }
        })
    }

    async fn append(&self, append: Append) -> Result<Appended> {
        let owner = self
            .owner(Role::Producer, append.producer_id, &append.topic)
            .await?;
        let retention = self.passes.defaults.for_topic(RetentionSettings {
            ms: None,
            bytes: owner.retention_bytes,
        });
        let job = AppendJob {
            topic_id: owner.topic_id,
            topic: owner.topic,
            producer_id: append.producer_id,
            messages: append.messages,
            sequence: append.sequence,
            chunk_bytes: retention.chunk_bytes(),
        };
        self.appends.submit(job).await
    }

    async fn consume(&self, consumer_id: u64, topic: &str) -> Result<Option<StoredMessage>> {
        self.move_position(consumer_id, topic, PositionOp::Take)
            .await?
            .into_taken()
    }

    async fn fetch(
        &self,
        consumer_id: u64,
        topic: &str,
        from: Option<u64>,
        limit: FetchLimit,
    ) -> Result<Fetched> {
        let owner = self.owner(Role::Consumer, consumer_id, topic).await?;
        self.backend.fetch(&owner, consumer_id, from, limit).await
    }

    async fn check_consumer(&self, consumer_id: u64, topic: &str) -> Result<()> {
        self.owner(Role::Consumer, consumer_id, topic)
            .await
            .map(|_| ())
    }

    async fn commit(&self, consumer_id: u64, topic: &str, to: SeekTo) -> Result<u64> {
        self.move_position(consumer_id, topic, PositionOp::Seek(to))
            .await?
            .into_position(topic)
    }

    async fn size(&self, consumer_id: u64, topic: &str) -> Result<u64> {
        self.owner(Role::Consumer, consumer_id, topic).await?;
        let cursor = B::Db::cursor(self.backend.readers(), consumer_id).await?;
        Ok(cursor.size())
    }

    fn signals(&self) -> &TopicSignals {
        &self.signals
    }

    fn pools(&self) -> Vec<PoolStats> {
        self.backend.pools()
    }

    /// Commits what the batchers hold, ends the background tasks, closes the connections.
    async fn close(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        self.backend.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(messages: usize, bytes: usize, chunk_bytes: Option<u64>) -> AppendJob {
        AppendJob {
            topic_id: 1,
            topic: "t".into(),
            producer_id: 1,
            messages: vec!["x".repeat(bytes); messages],
            sequence: None,
            chunk_bytes,
        }
    }

    #[test]
    fn a_group_carries_about_a_chunk_of_a_topic_with_a_size_limit() {
        // A 20 MB limit: chunks of 2.5 MB, as retention counts (payload + 64 per message).
        let chunk = Some(2_500_000);
        // MyProducer's batch of 512 KiB of 18-byte messages counts 29,127 × 82 bytes: about
        // a whole group.
        let batch = job(29_127, 18, chunk);
        assert!((950_000..=GROUP_SHARES).contains(&group_share(&batch)));
        // Without a size limit, the same batch is a small part of a group (64 MiB of payload).
        let unlimited = job(29_127, 18, None);
        assert_eq!(group_share(&unlimited), 524_286 * GROUP_SHARES / (64 << 20));
        // A batch over the chunk still makes a group (of its own).
        assert!(group_share(&job(100_000, 18, chunk)) > GROUP_SHARES);
    }
}
