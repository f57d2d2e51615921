//! What the two SQL stores share: ownership checks through the catalog, group commit through
//! two batchers (appends; position changes), wake-ups after each commit, and the statements
//! both databases run as written ([`shared`]). A [`Backend`] supplies what differs.

mod rows;
mod shared;

pub use rows::{
    CursorRow, LockedRow, MessageRow, Payload, db_id, db_int, distinct_ids, locked_state,
    stored_u64,
};
use rows::{answer_positions, taken_keys};
pub use shared::SharedSql;

use super::batcher::{Batcher, GroupLimits};
use super::catalog::{Catalog, Owner, Role};
use super::plan::{AppendJob, PositionOp, Positioned, plan_positions};
use super::{
    Append, Appended, ConsumerStart, FetchLimit, Fetched, Result, SeekTo, Store, StoreError,
    StoredMessage, TopicSignals,
};
use async_trait::async_trait;
use sqlx::{Database, Pool, Transaction};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Requests per group commit at most.
const MAX_GROUP: usize = 1024;
/// Message bytes per append group at most: one transaction stays far below the databases'
/// limits on a statement's size (1 GB), however many large batches arrive at once.
const MAX_GROUP_BYTES: usize = 64 * 1024 * 1024;

/// What one database does its own way. Inputs are validated; ids are known to exist and to
/// belong to the topic named.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    type Db: SharedSql;

    fn kind(&self) -> &'static str;

    /// The connections reads go to.
    fn readers(&self) -> &Pool<Self::Db>;

    /// A transaction that will write.
    async fn begin_write(&self) -> sqlx::Result<Transaction<'static, Self::Db>>;

    /// Stores a group of appends in one transaction; one answer per job, in order. Announces
    /// the appends to other brokers, if the database is shared.
    async fn append_group(&self, jobs: Vec<AppendJob>) -> Result<Vec<Result<Appended>>>;

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
    /// when `None`), and the topic's end, consistently with each other.
    async fn fetch(
        &self,
        owner: &Owner,
        consumer_id: u64,
        from: Option<u64>,
        limit: FetchLimit,
    ) -> Result<Fetched>;

    /// Closes the connections (background tasks have ended).
    async fn close(&self);
}

/// A durable store: a [`Backend`] with group commit.
pub struct SqlStore<B> {
    backend: Arc<B>,
    catalog: Catalog,
    signals: Arc<TopicSignals>,
    appends: Batcher<AppendJob, Appended>,
    positions: Batcher<(u64, PositionOp), Positioned>,
    /// The batchers and the backend's own background work; `close` waits for them.
    tasks: TaskTracker,
    stop: CancellationToken,
}

/// Answers every request of a failed group with the same error.
fn fail_all<T>(n: usize, err: StoreError) -> Vec<Result<T>> {
    (0..n).map(|_| Err(err.clone())).collect()
}

impl<B: Backend> SqlStore<B> {
    /// Starts the group-commit tasks on `tasks` (where the backend may have started its own
    /// background work, stopped by `stop`). `signals` is shared with whatever else wakes long
    /// polls (PostgreSQL's LISTEN task).
    pub fn new(
        backend: B,
        signals: Arc<TopicSignals>,
        tasks: TaskTracker,
        stop: CancellationToken,
    ) -> Self {
        let backend = Arc::new(backend);
        let append_limits = GroupLimits {
            requests: MAX_GROUP,
            weight: MAX_GROUP_BYTES,
            weigh: |job: &AppendJob| job.messages.iter().map(String::len).sum(),
        };
        let appends = Batcher::spawn(append_limits, &tasks, stop.clone(), {
            let backend = backend.clone();
            let signals = signals.clone();
            move |jobs: Vec<AppendJob>| commit_appends(backend.clone(), signals.clone(), jobs)
        });
        let position_limits = GroupLimits {
            requests: MAX_GROUP,
            weight: MAX_GROUP,
            weigh: |_: &(u64, PositionOp)| 1,
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
        SqlStore {
            backend,
            catalog: Catalog::default(),
            signals,
            appends,
            positions,
            tasks,
            stop,
        }
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
async fn position_group<B: Backend>(
    backend: &B,
    ops: &[(u64, PositionOp)],
) -> Result<Vec<Positioned>> {
    let ids: Vec<u64> = ops.iter().map(|&(id, _)| id).collect();
    let mut tx = backend.begin_write().await?;
    let cursors = backend.lock_cursors(&mut tx, &ids).await?;
    let plan = plan_positions(ops, cursors.into_iter().map(CursorRow::into_pair).collect());
    let taken = backend
        .move_and_take(&mut tx, &plan.positions, &taken_keys(&plan.outcomes))
        .await?;
    tx.commit().await?;
    Ok(answer_positions(plan.outcomes, taken))
}

/// One append group: commit, then wake the long polls of the topics that got messages.
async fn commit_appends<B: Backend>(
    backend: Arc<B>,
    signals: Arc<TopicSignals>,
    jobs: Vec<AppendJob>,
) -> Vec<Result<Appended>> {
    let n = jobs.len();
    let topics: Vec<Arc<str>> = jobs.iter().map(|job| job.topic.clone()).collect();
    let started = std::time::Instant::now();
    let result = backend.append_group(jobs).await;
    tracing::trace!(requests = n, elapsed = ?started.elapsed(), "append group");
    match result {
        Ok(outcomes) => {
            let appended = outcomes
                .iter()
                .zip(&topics)
                .filter(|(outcome, _)| matches!(outcome, Ok(a) if !a.duplicate && a.count > 0));
            for (_, topic) in appended {
                signals.notify(topic);
            }
            outcomes
        }
        Err(err) => fail_all(n, err),
    }
}

#[async_trait]
impl<B: Backend> Store for SqlStore<B> {
    fn kind(&self) -> &'static str {
        self.backend.kind()
    }

    async fn ping(&self) -> Result<()> {
        B::Db::ping(self.backend.readers()).await
    }

    async fn create_topic(&self, name: &str) -> Result<()> {
        let mut tx = self.backend.begin_write().await?;
        B::Db::create_topic(&mut *tx, name).await?;
        Ok(tx.commit().await?)
    }

    async fn list_topics(&self) -> Result<Vec<String>> {
        B::Db::list_topics(self.backend.readers()).await
    }

    async fn register_producer(&self, topic: &str) -> Result<u64> {
        let mut tx = self.backend.begin_write().await?;
        let id = B::Db::register_producer(&mut *tx, topic).await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn register_consumer(
        &self,
        topic: &str,
        group: Option<&str>,
        start: ConsumerStart,
    ) -> Result<u64> {
        let mut tx = self.backend.begin_write().await?;
        let id = B::Db::register_consumer(&mut *tx, topic, group, start).await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn append(&self, append: Append) -> Result<Appended> {
        let owner = self
            .owner(Role::Producer, append.producer_id, &append.topic)
            .await?;
        let job = AppendJob {
            topic_id: owner.topic_id,
            topic: owner.topic,
            producer_id: append.producer_id,
            messages: append.messages,
            sequence: append.sequence,
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

    async fn commit(&self, consumer_id: u64, topic: &str, to: SeekTo) -> Result<u64> {
        self.move_position(consumer_id, topic, PositionOp::Seek(to))
            .await?
            .into_position(topic)
    }

    async fn size(&self, consumer_id: u64, topic: &str) -> Result<u64> {
        self.owner(Role::Consumer, consumer_id, topic).await?;
        let cursor = B::Db::cursor(self.backend.readers(), consumer_id).await?;
        Ok(cursor.end_offset.saturating_sub(cursor.position))
    }

    fn signals(&self) -> &TopicSignals {
        &self.signals
    }

    /// Commits what the batchers hold, ends the background tasks, closes the connections.
    async fn close(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        self.backend.close().await;
    }
}
