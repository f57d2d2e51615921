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
use super::plan::{
    AppendJob, AppendPlan, Cursor, PositionOp, Positioned, plan_appends, plan_positions,
};
use super::sequence::ProducerSequence;
use super::sql::{Backend, SqlStore};
use super::{
    Appended, FetchLimit, Fetched, Result, StoreError, StoredMessage, TopicSignals, now_ms,
};
use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::PgConnection;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The NOTIFY channel that carries the names of topics with new messages.
const APPENDS_CHANNEL: &str = "myqueue_appends";
/// How long a request waits for a connection before it answers 503: a down database must
/// not make requests hang.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// PostgreSQL's `statement_timeout` for the broker's connections.
const STATEMENT_TIMEOUT: &str = "30s";

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
        // A statement that hangs (the database stalls without closing the connection) fails
        // after this long with a 503, instead of holding its requests forever.
        let options = options.options([("statement_timeout", STATEMENT_TIMEOUT)]);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // A broken connection (database restarted) fails one request with a 503 and is
            // dropped; pinging before every use would cost a round trip per request.
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        let signals = Arc::new(TopicSignals::default());
        // LISTEN holds its connection for good: it gets a pool of its own, so requests keep
        // every connection of --db-connections.
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with(options);
        let listener = tokio::spawn(listen_for_appends(listen_pool, signals.clone()));
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

    /// One commit for a whole group of appends, in as few round trips as possible: a group of
    /// plain appends to one topic is a single statement (its own transaction). Producers with
    /// sequence numbers, or several topics, first lock their rows in id order (so brokers
    /// never deadlock) inside a transaction.
    async fn append_group(&self, jobs: Vec<AppendJob>) -> sqlx::Result<Vec<Result<Appended>>> {
        let owners = GroupOwners::of(&jobs);
        let sequenced = ids(jobs
            .iter()
            .filter(|j| j.sequence.is_some())
            .map(|j| j.producer_id));
        let topics = ids(jobs.iter().map(|j| j.topic_id as u64));
        if sequenced.is_empty() && topics.len() == 1 {
            // Offsets are planned from 0; the statement adds the topic's end under its lock.
            let plan = plan_appends(jobs, HashMap::new(), HashMap::new());
            let mut conn = self.pool.acquire().await?;
            return write_appends(&mut conn, plan, &HashMap::new(), &owners).await;
        }
        let mut tx = self.pool.begin().await?;
        // One statement locks the producers, then the topics (the UNION's branches run in
        // order), each in id order: every broker takes locks in the same order.
        let rows = sqlx::query(
            "WITH p AS ( \
                 SELECT id, next_sequence, last_base_offset, last_count FROM producers \
                 WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE \
             ), t AS ( \
                 SELECT id, next_offset FROM topics \
                 WHERE id = ANY($2) ORDER BY id FOR NO KEY UPDATE \
             ) \
             SELECT 1, id, next_sequence, last_base_offset, last_count FROM p \
             UNION ALL \
             SELECT 0, id, next_offset, 0, 0 FROM t",
        )
        .bind(&sequenced)
        .bind(&topics)
        .fetch_all(&mut *tx)
        .await?;
        let mut producers = HashMap::new();
        let mut ends = HashMap::new();
        for row in rows {
            let id: i64 = row.get(1);
            let first = row.get::<i64, _>(2) as u64;
            if row.get::<i32, _>(0) == 0 {
                ends.insert(id, first);
            } else {
                let sequence = ProducerSequence {
                    next: first,
                    last_base_offset: row.get::<i64, _>(3) as u64,
                    last_count: row.get::<i64, _>(4) as u64,
                };
                producers.insert(id as u64, sequence);
            }
        }
        let plan = plan_appends(jobs, ends.clone(), producers);
        let outcomes = write_appends(&mut tx, plan, &ends, &owners).await?;
        tx.commit().await?;
        Ok(outcomes)
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
        // Move the positions and read the taken messages (in the same transaction: a failure
        // after the move would otherwise lose them for this consumer), in one statement.
        let (moved, positions): (Vec<i64>, Vec<i64>) = plan
            .positions
            .iter()
            .map(|&(id, position)| (id as i64, position as i64))
            .unzip();
        let (topics, offsets): (Vec<i64>, Vec<i64>) = plan
            .outcomes
            .iter()
            .filter_map(|outcome| outcome.taken())
            .map(|(topic_id, offset)| (topic_id, offset as i64))
            .unzip();
        let rows = sqlx::query(
            "WITH moved AS ( \
                 UPDATE consumers c SET position = u.position \
                 FROM UNNEST($1::bigint[], $2::bigint[]) AS u(id, position) WHERE c.id = u.id \
             ) \
             SELECT m.topic_id, m.log_offset, m.payload, m.stored_ms FROM messages m \
             JOIN UNNEST($3::bigint[], $4::bigint[]) AS k(topic_id, log_offset) \
             ON m.topic_id = k.topic_id AND m.log_offset = k.log_offset",
        )
        .bind(&moved)
        .bind(&positions)
        .bind(&topics)
        .bind(&offsets)
        .fetch_all(&mut *tx)
        .await?;
        let mut messages = HashMap::new();
        for row in rows {
            let offset = row.get::<i64, _>(1) as u64;
            let message = StoredMessage {
                offset,
                payload: payload_text(row.get(2)),
                timestamp_ms: row.get::<i64, _>(3) as u64,
            };
            messages.insert((row.get::<i64, _>(0), offset), message);
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

    async fn register_consumer(
        &self,
        topic: &str,
        group: Option<&str>,
        start: super::ConsumerStart,
    ) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let topic_id: i64 = sqlx::query_scalar("SELECT id FROM topics WHERE name = $1")
            .bind(topic)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::TopicNotFound(topic.to_owned()))?;
        // The end as committed now: an append still in flight is after the registration.
        let inserted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO consumers (topic_id, group_name, created_ms, position) VALUES ($1, $2, $3, \
             CASE WHEN $4 THEN (SELECT next_offset FROM topics WHERE id = $1) ELSE 0 END) \
             ON CONFLICT (topic_id, group_name) DO NOTHING RETURNING id",
        )
        .bind(topic_id)
        .bind(group)
        .bind(now_ms() as i64)
        .bind(start == super::ConsumerStart::End)
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
        limit: FetchLimit,
    ) -> Result<Fetched> {
        // One statement, one snapshot: the end offset and the messages agree. The running sum
        // of payload sizes stops the rows at the byte budget inside PostgreSQL (octet_length
        // reads a stored value's size without fetching it).
        let rows = sqlx::query(
            "SELECT t.next_offset, COALESCE($2, c.position), m.log_offset, m.payload, m.stored_ms \
             FROM consumers c JOIN topics t ON t.id = c.topic_id \
             LEFT JOIN LATERAL ( \
                 SELECT log_offset, payload, stored_ms FROM ( \
                     SELECT log_offset, payload, stored_ms, \
                         sum(octet_length(payload)) OVER (ORDER BY log_offset) AS running, \
                         row_number() OVER (ORDER BY log_offset) AS n \
                     FROM messages \
                     WHERE topic_id = t.id AND log_offset >= COALESCE($2, c.position) \
                     ORDER BY log_offset LIMIT $3 \
                 ) w WHERE w.n = 1 OR w.running <= $4 \
             ) m ON true \
             WHERE c.id = $1 ORDER BY m.log_offset",
        )
        .bind(consumer_id as i64)
        .bind(from.map(|f| f as i64))
        .bind(i64::try_from(limit.messages).unwrap_or(i64::MAX))
        .bind(i64::try_from(limit.bytes).unwrap_or(i64::MAX))
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

/// The topic of each job and of each producer of an append group.
struct GroupOwners {
    job_topics: Vec<i64>,
    producer_topics: HashMap<u64, i64>,
}

impl GroupOwners {
    fn of(jobs: &[AppendJob]) -> Self {
        GroupOwners {
            job_topics: jobs.iter().map(|job| job.topic_id).collect(),
            producer_topics: jobs
                .iter()
                .map(|job| (job.producer_id, job.topic_id))
                .collect(),
        }
    }
}

/// Writes a planned append group in one statement: bumps each topic's end, inserts the
/// messages, records the producers' sequence state and announces the topics to other
/// brokers. `planned_from` holds the topic ends the plan started from (read under lock); a
/// topic missing from it was planned from 0, and the statement adds its real end, which the
/// UPDATE locks.
async fn write_appends(
    conn: &mut PgConnection,
    plan: AppendPlan,
    planned_from: &HashMap<i64, u64>,
    owners: &GroupOwners,
) -> sqlx::Result<Vec<Result<Appended>>> {
    let start = |topic: i64| planned_from.get(&topic).copied().unwrap_or(0);
    let (topic_ids, counts): (Vec<i64>, Vec<i64>) = plan
        .topic_ends
        .iter()
        .map(|&(id, end)| (id, (end - start(id)) as i64))
        .unzip();
    let rows: usize = plan.segments.iter().map(|s| s.messages.len()).sum();
    let mut row_topics = Vec::with_capacity(rows);
    let mut row_offsets = Vec::with_capacity(rows);
    let mut row_producers = Vec::with_capacity(rows);
    let mut payloads = Vec::with_capacity(rows);
    for segment in plan.segments {
        let count = segment.messages.len() as i64;
        let first = (segment.base_offset - start(segment.topic_id)) as i64;
        row_topics.extend(std::iter::repeat_n(segment.topic_id, count as usize));
        row_offsets.extend(first..first + count);
        row_producers.extend(std::iter::repeat_n(
            segment.producer_id as i64,
            count as usize,
        ));
        payloads.extend(segment.messages.into_iter().map(String::into_bytes));
    }
    let mut sequence_columns: [Vec<i64>; 5] = Default::default();
    for (id, sequence) in &plan.producers {
        let topic = owners.producer_topics[id];
        sequence_columns[0].push(*id as i64);
        sequence_columns[1].push(topic);
        sequence_columns[2].push(sequence.next as i64);
        sequence_columns[3].push((sequence.last_base_offset - start(topic)) as i64);
        sequence_columns[4].push(sequence.last_count as i64);
    }
    let bases: HashMap<i64, u64> = sqlx::query(
        "WITH bumped AS ( \
             UPDATE topics t SET next_offset = t.next_offset + u.count \
             FROM UNNEST($1::bigint[], $2::bigint[]) AS u(id, count) WHERE t.id = u.id \
             RETURNING t.id, t.next_offset - u.count AS base, t.name \
         ), inserted AS ( \
             INSERT INTO messages (topic_id, log_offset, producer_id, stored_ms, payload) \
             SELECT m.topic_id, b.base + m.offset_in_group, m.producer_id, $3, m.payload \
             FROM UNNEST($4::bigint[], $5::bigint[], $6::bigint[], $7::bytea[]) \
                 AS m(topic_id, offset_in_group, producer_id, payload) \
             JOIN bumped b ON b.id = m.topic_id \
         ), sequenced AS ( \
             UPDATE producers p SET next_sequence = s.next_sequence, \
                 last_base_offset = b.base + s.base_in_group, last_count = s.last_count \
             FROM UNNEST($8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[]) \
                 AS s(id, topic_id, next_sequence, base_in_group, last_count) \
             JOIN bumped b ON b.id = s.topic_id \
             WHERE p.id = s.id \
         ) \
         SELECT id, base, pg_notify($13, name)::text FROM bumped",
    )
    .bind(&topic_ids)
    .bind(&counts)
    .bind(now_ms() as i64)
    .bind(&row_topics)
    .bind(&row_offsets)
    .bind(&row_producers)
    .bind(&payloads)
    .bind(&sequence_columns[0])
    .bind(&sequence_columns[1])
    .bind(&sequence_columns[2])
    .bind(&sequence_columns[3])
    .bind(&sequence_columns[4])
    .bind(APPENDS_CHANNEL)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|row| (row.get::<i64, _>(0), row.get::<i64, _>(1) as u64))
    .collect();
    // New batches were planned from `start`: move them to where their topic really was.
    // (Under lock the two agree and nothing moves.) Duplicates keep their stored offsets.
    Ok(plan
        .outcomes
        .into_iter()
        .zip(&owners.job_topics)
        .map(|(outcome, &topic)| {
            outcome.map(|appended| match appended.duplicate {
                true => appended,
                false => Appended {
                    base_offset: appended.base_offset + bases.get(&topic).copied().unwrap_or(0)
                        - start(topic),
                    ..appended
                },
            })
        })
        .collect())
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
