//! The PostgreSQL store, for production: many brokers may share one database.
//!
//! Concurrency rules, which keep every broker correct against the same tables:
//! - Appends lock the rows of the producers (with sequence numbers) and topics they touch,
//!   always in that order and sorted by id, so two brokers' groups never deadlock. The topic
//!   row lock orders appends to one topic: offsets are handed out gap-free and become visible
//!   in offset order.
//! - Position changes lock the consumer rows (sorted), so two consumes with one consumer id
//!   on two brokers take consecutive messages, never the same one.
//! - Locks are `FOR NO KEY UPDATE`, which does not block the foreign-key checks of concurrent
//!   registrations.
//! - Each append transaction sends a NOTIFY per topic; every broker LISTENs and wakes its
//!   long-polling fetches, so a consumer on broker B sees a message produced on broker A at
//!   once.

use super::catalog::{Owner, Role};
use super::plan::{AppendJob, Cursor, PositionOp, Positioned, plan_appends, plan_positions};
use super::sequence::ProducerSequence;
use super::sql::{Backend, SqlStore};
use super::{Appended, Fetched, Result, StoreError, StoredMessage, TopicSignals, now_ms};
use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The NOTIFY channel that carries the names of topics with new messages.
const APPENDS_CHANNEL: &str = "myqueue_appends";
/// How long a request waits for a connection before it answers 503: a down database must
/// not make requests hang.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// The PostgreSQL store: [`PgBackend`] with group commit.
pub type PostgresStore = SqlStore<PgBackend>;

/// PostgreSQL's statements, and the task that listens for other brokers' appends.
pub struct PgBackend {
    pool: PgPool,
    listener: tokio::task::JoinHandle<()>,
}

impl PostgresStore {
    /// Connects, applies migrations (under PostgreSQL's advisory lock, so brokers starting
    /// together do not race) and starts listening for other brokers' appends.
    pub async fn open(
        options: PgConnectOptions,
        max_connections: u32,
    ) -> Result<Self, sqlx::Error> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // A broken connection (database restarted) fails one request with a 503 and is
            // dropped; pinging before every use would cost a round trip per request.
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        let signals = Arc::new(TopicSignals::default());
        let listener = tokio::spawn(listen_for_appends(pool.clone(), signals.clone()));
        Ok(SqlStore::new(PgBackend { pool, listener }, signals))
    }
}

/// Wakes this broker's long polls when any broker appends. Runs until the pool closes.
async fn listen_for_appends(pool: PgPool, signals: Arc<TopicSignals>) {
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(sqlx::Error::PoolClosed) => return,
            Err(err) => {
                tracing::warn!(error = %err, "cannot LISTEN for appends; retrying in 1s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(err) = listener.listen(APPENDS_CHANNEL).await {
            tracing::warn!(error = %err, "cannot LISTEN for appends; retrying in 1s");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        // Appends made while we were not listening were not announced: wake every waiter so
        // that it reads again.
        signals.notify_all();
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => signals.notify(notification.payload()),
                Ok(None) => signals.notify_all(), // reconnects on the next call
                Err(sqlx::Error::PoolClosed) => return,
                Err(err) => {
                    tracing::warn!(error = %err, "lost the LISTEN connection; reconnecting");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
            }
        }
    }
}

/// Sorted, distinct ids as PostgreSQL bigints: locks are always taken in id order.
fn ids(ids: impl IntoIterator<Item = u64>) -> Vec<i64> {
    let mut ids: Vec<i64> = ids.into_iter().map(|id| id as i64).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

#[async_trait]
impl Backend for PgBackend {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn find_owner(&self, role: Role, id: u64) -> sqlx::Result<Option<Owner>> {
        let sql = match role {
            Role::Producer => {
                "SELECT p.topic_id, t.name FROM producers p \
                 JOIN topics t ON t.id = p.topic_id WHERE p.id = $1"
            }
            Role::Consumer => {
                "SELECT c.topic_id, t.name FROM consumers c \
                 JOIN topics t ON t.id = c.topic_id WHERE c.id = $1"
            }
        };
        let row = sqlx::query(sql)
            .bind(id as i64)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| Owner {
            topic_id: row.get(0),
            topic: row.get::<String, _>(1).into(),
        }))
    }

    /// One transaction, one commit, for a whole group of appends.
    async fn append_group(&self, jobs: Vec<AppendJob>) -> sqlx::Result<Vec<Result<Appended>>> {
        let names: HashMap<i64, Arc<str>> = jobs
            .iter()
            .map(|job| (job.topic_id, job.topic.clone()))
            .collect();
        let mut tx = self.pool.begin().await?;
        let sequenced = ids(jobs
            .iter()
            .filter(|j| j.sequence.is_some())
            .map(|j| j.producer_id));
        let mut producers = HashMap::new();
        if !sequenced.is_empty() {
            let rows = sqlx::query(
                "SELECT id, next_sequence, last_base_offset, last_count FROM producers \
                 WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE",
            )
            .bind(&sequenced)
            .fetch_all(&mut *tx)
            .await?;
            for row in rows {
                let sequence = ProducerSequence {
                    next: row.get::<i64, _>(1) as u64,
                    last_base_offset: row.get::<i64, _>(2) as u64,
                    last_count: row.get::<i64, _>(3) as u64,
                };
                producers.insert(row.get::<i64, _>(0) as u64, sequence);
            }
        }
        let topic_ids = ids(jobs.iter().map(|j| j.topic_id as u64));
        let rows = sqlx::query(
            "SELECT id, next_offset FROM topics WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE",
        )
        .bind(&topic_ids)
        .fetch_all(&mut *tx)
        .await?;
        let topic_ends: HashMap<i64, u64> = rows
            .iter()
            .map(|row| (row.get::<i64, _>(0), row.get::<i64, _>(1) as u64))
            .collect();

        let plan = plan_appends(jobs, topic_ends, producers);

        if !plan.segments.is_empty() {
            insert_segments(&mut tx, plan.segments).await?;
        }
        if !plan.topic_ends.is_empty() {
            let (topics, ends): (Vec<i64>, Vec<i64>) = plan
                .topic_ends
                .iter()
                .map(|&(id, end)| (id, end as i64))
                .unzip();
            sqlx::query(
                "UPDATE topics t SET next_offset = u.next_offset \
                 FROM UNNEST($1::bigint[], $2::bigint[]) AS u(id, next_offset) WHERE t.id = u.id",
            )
            .bind(&topics)
            .bind(&ends)
            .execute(&mut *tx)
            .await?;
            let channels: Vec<&str> = plan.topic_ends.iter().map(|(id, _)| &*names[id]).collect();
            sqlx::query("SELECT pg_notify($1, name) FROM UNNEST($2::text[]) AS name")
                .bind(APPENDS_CHANNEL)
                .bind(&channels)
                .execute(&mut *tx)
                .await?;
        }
        if !plan.producers.is_empty() {
            let mut columns: [Vec<i64>; 4] = Default::default();
            for (id, sequence) in &plan.producers {
                columns[0].push(*id as i64);
                columns[1].push(sequence.next as i64);
                columns[2].push(sequence.last_base_offset as i64);
                columns[3].push(sequence.last_count as i64);
            }
            sqlx::query(
                "UPDATE producers p SET next_sequence = u.next_sequence, \
                 last_base_offset = u.last_base_offset, last_count = u.last_count \
                 FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[]) \
                 AS u(id, next_sequence, last_base_offset, last_count) WHERE p.id = u.id",
            )
            .bind(&columns[0])
            .bind(&columns[1])
            .bind(&columns[2])
            .bind(&columns[3])
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(plan.outcomes)
    }

    /// One transaction, one commit, for a whole group of position changes.
    async fn position_group(&self, ops: &[(u64, PositionOp)]) -> sqlx::Result<Vec<Positioned>> {
        let mut tx = self.pool.begin().await?;
        let consumers = ids(ops.iter().map(|&(id, _)| id));
        let rows = sqlx::query(
            "SELECT c.id, c.topic_id, c.position, t.next_offset FROM consumers c \
             JOIN topics t ON t.id = c.topic_id \
             WHERE c.id = ANY($1) ORDER BY c.id FOR NO KEY UPDATE OF c",
        )
        .bind(&consumers)
        .fetch_all(&mut *tx)
        .await?;
        let cursors: HashMap<u64, Cursor> = rows
            .iter()
            .map(|row| {
                let cursor = Cursor {
                    topic_id: row.get(1),
                    position: row.get::<i64, _>(2) as u64,
                    end: row.get::<i64, _>(3) as u64,
                };
                (row.get::<i64, _>(0) as u64, cursor)
            })
            .collect();
        let plan = plan_positions(ops, cursors);
        if !plan.positions.is_empty() {
            let (ids, positions): (Vec<i64>, Vec<i64>) = plan
                .positions
                .iter()
                .map(|&(id, position)| (id as i64, position as i64))
                .unzip();
            sqlx::query(
                "UPDATE consumers c SET position = u.position \
                 FROM UNNEST($1::bigint[], $2::bigint[]) AS u(id, position) WHERE c.id = u.id",
            )
            .bind(&ids)
            .bind(&positions)
            .execute(&mut *tx)
            .await?;
        }
        // Taken messages are read in the same transaction: a failure after the position
        // moved would otherwise lose them for this consumer.
        let taken: Vec<(i64, i64)> = plan
            .outcomes
            .iter()
            .filter_map(|outcome| outcome.taken())
            .map(|(topic_id, offset)| (topic_id, offset as i64))
            .collect();
        let mut messages = HashMap::new();
        if !taken.is_empty() {
            let (topics, offsets): (Vec<i64>, Vec<i64>) = taken.into_iter().unzip();
            let rows = sqlx::query(
                "SELECT m.topic_id, m.log_offset, m.payload, m.stored_ms FROM messages m \
                 JOIN UNNEST($1::bigint[], $2::bigint[]) AS u(topic_id, log_offset) \
                 ON m.topic_id = u.topic_id AND m.log_offset = u.log_offset",
            )
            .bind(&topics)
            .bind(&offsets)
            .fetch_all(&mut *tx)
            .await?;
            for row in rows {
                let offset = row.get::<i64, _>(1) as u64;
                let message = StoredMessage {
                    offset,
                    payload: payload_text(row.get(2)),
                    timestamp_ms: row.get::<i64, _>(3) as u64,
                };
                messages.insert((row.get::<i64, _>(0), offset), message);
            }
        }
        tx.commit().await?;
        Ok(plan
            .outcomes
            .into_iter()
            .map(|outcome| {
                let taken = outcome.taken().and_then(|key| messages.get(&key).cloned());
                Positioned::new(outcome, taken)
            })
            .collect())
    }

    async fn ping(&self) -> sqlx::Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn create_topic(&self, name: &str) -> Result<()> {
        let result = sqlx::query("INSERT INTO topics (name, created_ms) VALUES ($1, $2)")
            .bind(name)
            .bind(now_ms() as i64)
            .execute(&self.pool)
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if is_unique_violation(&err) => Err(StoreError::TopicExists(name.to_owned())),
            Err(err) => Err(err.into()),
        }
    }

    async fn list_topics(&self) -> sqlx::Result<Vec<String>> {
        sqlx::query_scalar("SELECT name FROM topics ORDER BY name")
            .fetch_all(&self.pool)
            .await
    }

    async fn register_producer(&self, topic: &str) -> Result<u64> {
        let now = now_ms() as i64;
        let mut tx = self.pool.begin().await?;
        // Two statements, not one: under READ COMMITTED the SELECT sees a topic that a
        // concurrent registration (maybe on another broker) committed while we waited.
        sqlx::query(
            "INSERT INTO topics (name, created_ms) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(topic)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let topic_id: i64 = sqlx::query_scalar("SELECT id FROM topics WHERE name = $1")
            .bind(topic)
            .fetch_one(&mut *tx)
            .await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO producers (topic_id, created_ms) VALUES ($1, $2) RETURNING id",
        )
        .bind(topic_id)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id as u64)
    }

    async fn register_consumer(&self, topic: &str, group: Option<&str>) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let topic_id: i64 = sqlx::query_scalar("SELECT id FROM topics WHERE name = $1")
            .bind(topic)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::TopicNotFound(topic.to_owned()))?;
        let inserted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO consumers (topic_id, group_name, created_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (topic_id, group_name) DO NOTHING RETURNING id",
        )
        .bind(topic_id)
        .bind(group)
        .bind(now_ms() as i64)
        .fetch_optional(&mut *tx)
        .await?;
        let id = match inserted {
            Some(id) => id,
            None => {
                sqlx::query_scalar(
                    "SELECT id FROM consumers WHERE topic_id = $1 AND group_name = $2",
                )
                .bind(topic_id)
                .bind(group)
                .fetch_one(&mut *tx)
                .await?
            }
        };
        tx.commit().await?;
        Ok(id as u64)
    }

    async fn fetch(
        &self,
        owner: &Owner,
        consumer_id: u64,
        from: Option<u64>,
        max: usize,
    ) -> Result<Fetched> {
        // One statement, one snapshot: the end offset and the messages agree.
        let rows = sqlx::query(
            "SELECT t.next_offset, COALESCE($2, c.position), m.log_offset, m.payload, m.stored_ms \
             FROM consumers c JOIN topics t ON t.id = c.topic_id \
             LEFT JOIN LATERAL ( \
                 SELECT log_offset, payload, stored_ms FROM messages \
                 WHERE topic_id = t.id AND log_offset >= COALESCE($2, c.position) \
                 ORDER BY log_offset LIMIT $3 \
             ) m ON true \
             WHERE c.id = $1",
        )
        .bind(consumer_id as i64)
        .bind(from.map(|f| f as i64))
        .bind(max as i64)
        .fetch_all(&self.pool)
        .await?;
        let first = rows
            .first()
            .ok_or(StoreError::ConsumerNotFound(consumer_id))?;
        let end = first.get::<i64, _>(0) as u64;
        let from = first.get::<i64, _>(1) as u64;
        if from > end {
            return Err(StoreError::OffsetOutOfRange {
                topic: owner.topic.to_string(),
                offset: from,
                end,
            });
        }
        let messages: Vec<StoredMessage> = rows
            .iter()
            .filter_map(|row| {
                Some(StoredMessage {
                    offset: row.get::<Option<i64>, _>(2)? as u64,
                    payload: payload_text(row.get::<Option<Vec<u8>>, _>(3)?),
                    timestamp_ms: row.get::<Option<i64>, _>(4)? as u64,
                })
            })
            .collect();
        Ok(Fetched {
            next_offset: from + messages.len() as u64,
            messages,
            end_offset: end,
        })
    }

    async fn size(&self, consumer_id: u64) -> sqlx::Result<u64> {
        let size: i64 = sqlx::query_scalar(
            "SELECT GREATEST(t.next_offset - c.position, 0) FROM consumers c \
             JOIN topics t ON t.id = c.topic_id WHERE c.id = $1",
        )
        .bind(consumer_id as i64)
        .fetch_one(&self.pool)
        .await?;
        Ok(size as u64)
    }

    async fn close(&self) {
        self.listener.abort();
        self.pool.close().await;
    }
}

/// Inserts every message of a group with one statement: the columns travel as arrays.
async fn insert_segments(
    tx: &mut Transaction<'static, Postgres>,
    segments: Vec<super::plan::Segment>,
) -> sqlx::Result<()> {
    let rows: usize = segments.iter().map(|s| s.messages.len()).sum();
    let mut topic_ids = Vec::with_capacity(rows);
    let mut offsets = Vec::with_capacity(rows);
    let mut producer_ids = Vec::with_capacity(rows);
    let mut payloads = Vec::with_capacity(rows);
    for segment in segments {
        let count = segment.messages.len();
        topic_ids.extend(std::iter::repeat_n(segment.topic_id, count));
        offsets.extend((0..count as i64).map(|i| segment.base_offset as i64 + i));
        producer_ids.extend(std::iter::repeat_n(segment.producer_id as i64, count));
        payloads.extend(segment.messages.into_iter().map(String::into_bytes));
    }
    sqlx::query(
        "INSERT INTO messages (topic_id, log_offset, producer_id, stored_ms, payload) \
         SELECT u.topic_id, u.log_offset, u.producer_id, $4, u.payload \
         FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $5::bytea[]) \
         AS u(topic_id, log_offset, producer_id, payload)",
    )
    .bind(&topic_ids)
    .bind(&offsets)
    .bind(&producer_ids)
    .bind(now_ms() as i64)
    .bind(&payloads)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A stored payload as text. The broker wrote it from a `String`, so it is UTF-8; a row
/// written by hand with invalid bytes is shown with replacement characters, not dropped.
fn payload_text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes)
        .unwrap_or_else(|err| String::from_utf8_lossy(err.as_bytes()).into_owned())
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}
