//! What the two SQL stores share: ownership checks through the catalog, group commit through
//! two batchers (appends; position changes), and wake-ups after each commit. A [`Backend`]
//! supplies the SQL of one database.

use super::batcher::{Batcher, GroupLimits};
use super::catalog::{Catalog, Owner, Role};
use super::plan::{AppendJob, PositionOp, Positioned};
use super::{
    Append, Appended, ConsumerStart, FetchLimit, Fetched, Result, SeekTo, Store, StoreError,
    StoredMessage, TopicSignals,
};
use async_trait::async_trait;
use std::sync::Arc;

/// Requests per group commit at most.
const MAX_GROUP: usize = 1024;
/// Message bytes per append group at most: one transaction stays far below the databases'
/// limits on a statement's size (1 GB), however many large batches arrive at once.
const MAX_GROUP_BYTES: usize = 64 * 1024 * 1024;

/// The statements of one database. Inputs are validated; ids are known to exist and to belong
/// to the topic named.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    fn kind(&self) -> &'static str;

    /// The topic `id` is registered to, if the id exists.
    async fn find_owner(&self, role: Role, id: u64) -> sqlx::Result<Option<Owner>>;

    /// Stores a group of appends in one transaction; one answer per job, in order. Announces
    /// the appends to other brokers, if the database is shared.
    async fn append_group(&self, jobs: Vec<AppendJob>) -> sqlx::Result<Vec<Result<Appended>>>;

    /// Applies a group of position changes in one transaction; one answer per op, in order,
    /// with taken messages read in the same transaction.
    async fn position_group(&self, ops: &[(u64, PositionOp)]) -> sqlx::Result<Vec<Positioned>>;

    async fn ping(&self) -> sqlx::Result<()>;
    async fn create_topic(&self, name: &str) -> Result<()>;
    async fn list_topics(&self) -> sqlx::Result<Vec<String>>;
    async fn register_producer(&self, topic: &str) -> Result<u64>;
    async fn register_consumer(
        &self,
        topic: &str,
        group: Option<&str>,
        start: ConsumerStart,
    ) -> Result<u64>;

    /// Reads messages of `owner`'s topic within `limit` from `from` (the consumer's position
    /// when `None`), and the topic's end, consistently with each other.
    async fn fetch(
        &self,
        owner: &Owner,
        consumer_id: u64,
        from: Option<u64>,
        limit: FetchLimit,
    ) -> Result<Fetched>;

    /// The topic's end minus the consumer's position.
    async fn size(&self, consumer_id: u64) -> sqlx::Result<u64>;

    async fn close(&self);
}

/// A durable store: a [`Backend`] with group commit.
pub struct SqlStore<B> {
    backend: Arc<B>,
    catalog: Catalog,
    signals: Arc<TopicSignals>,
    appends: Batcher<AppendJob, Result<Appended>>,
    positions: Batcher<(u64, PositionOp), Result<Positioned>>,
}

/// Answers every request of a failed group with the same error.
fn fail_all<T>(n: usize, err: sqlx::Error) -> Vec<Result<T>> {
    let err = StoreError::from(err);
    (0..n).map(|_| Err(err.clone())).collect()
}

impl<B: Backend> SqlStore<B> {
    /// Starts the group-commit tasks. `signals` is shared with whatever else wakes long polls
    /// (PostgreSQL's LISTEN task).
    pub fn new(backend: B, signals: Arc<TopicSignals>) -> Self {
        let backend = Arc::new(backend);
        let appends = {
            let backend = backend.clone();
            let signals = signals.clone();
            let limits = GroupLimits {
                requests: MAX_GROUP,
                weight: MAX_GROUP_BYTES,
                weigh: |job: &AppendJob| job.messages.iter().map(String::len).sum(),
            };
            Batcher::spawn(limits, move |jobs: Vec<AppendJob>| {
                let backend = backend.clone();
                let signals = signals.clone();
                async move {
                    let n = jobs.len();
                    let topics: Vec<Arc<str>> = jobs.iter().map(|job| job.topic.clone()).collect();
                    let started = std::time::Instant::now();
                    let result = backend.append_group(jobs).await;
                    tracing::trace!(
                        requests = n,
                        micros = started.elapsed().as_micros() as u64,
                        "append group"
                    );
                    match result {
                        Ok(outcomes) => {
                            let appended = outcomes.iter().zip(&topics).filter(|(outcome, _)| {
                                matches!(outcome, Ok(a) if !a.duplicate && a.count > 0)
                            });
                            for (_, topic) in appended {
                                signals.notify(topic);
                            }
                            outcomes
                        }
                        Err(err) => fail_all(n, err),
                    }
                }
            })
        };
        let positions = {
            let backend = backend.clone();
            let limits = GroupLimits {
                requests: MAX_GROUP,
                weight: MAX_GROUP,
                weigh: |_: &(u64, PositionOp)| 1,
            };
            Batcher::spawn(limits, move |ops: Vec<(u64, PositionOp)>| {
                let backend = backend.clone();
                async move {
                    match backend.position_group(&ops).await {
                        Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
                        Err(err) => fail_all(ops.len(), err),
                    }
                }
            })
        };
        SqlStore {
            backend,
            catalog: Catalog::default(),
            signals,
            appends,
            positions,
        }
    }

    /// The topic `id` is registered to, checked against `topic`.
    async fn owner(&self, role: Role, id: u64, topic: &str) -> Result<Owner> {
        let owner = match self.catalog.get(role, id) {
            Some(owner) => owner,
            None => {
                let owner = self
                    .backend
                    .find_owner(role, id)
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
        self.positions
            .submit((id, op))
            .await
            .unwrap_or(Err(StoreError::ShuttingDown))
    }
}

#[async_trait]
impl<B: Backend> Store for SqlStore<B> {
    fn kind(&self) -> &'static str {
        self.backend.kind()
    }

    async fn ping(&self) -> Result<()> {
        Ok(self.backend.ping().await?)
    }

    async fn create_topic(&self, name: &str) -> Result<()> {
        self.backend.create_topic(name).await
    }

    async fn list_topics(&self) -> Result<Vec<String>> {
        Ok(self.backend.list_topics().await?)
    }

    async fn register_producer(&self, topic: &str) -> Result<u64> {
        self.backend.register_producer(topic).await
    }

    async fn register_consumer(
        &self,
        topic: &str,
        group: Option<&str>,
        start: ConsumerStart,
    ) -> Result<u64> {
        self.backend.register_consumer(topic, group, start).await
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
        self.appends
            .submit(job)
            .await
            .unwrap_or(Err(StoreError::ShuttingDown))
    }

    async fn consume(&self, consumer_id: u64, topic: &str) -> Result<Option<StoredMessage>> {
        Ok(self
            .move_position(consumer_id, topic, PositionOp::Take)
            .await?
            .into_taken()?)
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
        Ok(self.backend.size(consumer_id).await?)
    }

    fn signals(&self) -> &TopicSignals {
        &self.signals
    }

    async fn close(&self) {
        self.backend.close().await;
    }
}
