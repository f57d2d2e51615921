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

use super::catalog::Owner;
use super::plan::{AppendJob, AppendPlan, plan_appends};
use super::sql::{
    Backend, CursorRow, LockedRow, MessageRow, Payload, SqlStore, db_id, db_int, distinct_ids,
    locked_state, stored_u64,
};
use super::{
    Appended, FetchLimit, Fetched, OpenError, Result, StoreError, StoredMessage, TopicSignals,
    now_ms, within_end,
};
use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The NOTIFY channel that carries the names of topics with new messages.
const APPENDS_CHANNEL: &str = "myqueue_appends";
/// How long a request waits for a connection before it answers 503: a down database must
/// not make requests hang.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// PostgreSQL's `statement_timeout` for the broker's connections.
const STATEMENT_TIMEOUT: &str = "30s";

/// The PostgreSQL store: [`PgBackend`] with group commit.
pub type PostgresStore = SqlStore<PgBackend>;

/// PostgreSQL's statements.
pub struct PgBackend {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects, applies migrations (under PostgreSQL's advisory lock, so brokers starting
    /// together do not race) and starts listening for other brokers' appends.
    pub async fn open(options: PgConnectOptions, max_connections: u32) -> Result<Self, OpenError> {
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
            .await
            .map_err(OpenError::Connect)?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(OpenError::Migrate)?;
        let signals = Arc::new(TopicSignals::default());
        // LISTEN holds its connection for good: it gets a pool of its own, so requests keep
        // every connection of --db-connections.
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with(options);
        let (tasks, stop) = (TaskTracker::new(), CancellationToken::new());
        let listening = listen_for_appends(listen_pool.clone(), signals.clone());
        let stopped = stop.clone();
        tasks.spawn(async move {
            stopped.run_until_cancelled(listening).await;
            listen_pool.close().await;
        });
        Ok(SqlStore::new(PgBackend { pool }, signals, tasks, stop))
    }
}

/// Wakes this broker's long polls when any broker appends. Runs until stopped.
async fn listen_for_appends(pool: PgPool, signals: Arc<TopicSignals>) {
    let retry = || tokio::time::sleep(Duration::from_secs(1));
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(err) => {
                tracing::warn!(error = %err, "cannot LISTEN for appends; retrying in 1s");
                retry().await;
                continue;
            }
        };
        if let Err(err) = listener.listen(APPENDS_CHANNEL).await {
            tracing::warn!(error = %err, "cannot LISTEN for appends; retrying in 1s");
            retry().await;
            continue;
        }
        // Appends made while we were not listening were not announced: wake every waiter so
        // that it reads again.
        signals.notify_all();
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => signals.notify(notification.payload()),
                Ok(None) => signals.notify_all(), // reconnects on the next call
                Err(err) => {
                    tracing::warn!(error = %err, "lost the LISTEN connection; reconnecting");
                    retry().await;
                    break;
                }
            }
        }
    }
}

/// A fetch's answer row: the topic's end and the consumer's position, with one message, or
/// with none (the LEFT JOIN found no message).
#[derive(sqlx::FromRow)]
struct FetchRow {
    #[sqlx(try_from = "i64")]
    end_offset: u64,
    #[sqlx(try_from = "i64")]
    position: u64,
    log_offset: Option<i64>,
    payload: Option<Payload>,
    stored_ms: Option<i64>,
}

impl FetchRow {
    fn into_message(self) -> Result<Option<StoredMessage>> {
        let (Some(offset), Some(payload), Some(stored_ms)) =
            (self.log_offset, self.payload, self.stored_ms)
        else {
            return Ok(None);
        };
        Ok(Some(StoredMessage {
            offset: stored_u64(offset)?,
            payload: payload.0,
            timestamp_ms: stored_u64(stored_ms)?,
        }))
    }
}

/// Where a topic's messages of an append group begin.
#[derive(sqlx::FromRow)]
struct TopicBase {
    id: i64,
    #[sqlx(try_from = "i64")]
    base: u64,
}

#[async_trait]
impl Backend for PgBackend {
    type Db = Postgres;

    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn readers(&self) -> &PgPool {
        &self.pool
    }

    async fn begin_write(&self) -> sqlx::Result<Transaction<'static, Postgres>> {
        self.pool.begin().await
    }

    /// One commit for a whole group of appends, in as few round trips as possible: a group of
    /// plain appends to one topic is a single statement (its own transaction). Producers with
    /// sequence numbers, or several topics, first lock their rows in id order (so brokers
    /// never deadlock) inside a transaction.
    async fn append_group(&self, jobs: Vec<AppendJob>) -> Result<Vec<Result<Appended>>> {
        let job_topics: Vec<i64> = jobs.iter().map(|job| job.topic_id).collect();
        let producer_topics: HashMap<u64, i64> = jobs
            .iter()
            .map(|job| (job.producer_id, job.topic_id))
            .collect();
        let sequenced = distinct_ids(
            jobs.iter()
                .filter(|job| job.sequence.is_some())
                .map(|job| job.producer_id),
        );
        let mut topics: Vec<i64> = job_topics.clone();
        topics.sort_unstable();
        topics.dedup();
        if sequenced.is_empty() && topics.len() == 1 {
            // Offsets are planned from 0; the statement adds the topic's end under its lock.
            let plan = plan_appends(jobs, HashMap::new(), HashMap::new());
            let mut conn = self.pool.acquire().await?;
            let (written, outcomes) = Written::new(plan, HashMap::new(), &producer_topics)?;
            let bases = written.execute(&mut conn).await?;
            return Ok(written.place(outcomes, &bases, &job_topics));
        }
        let mut tx = self.pool.begin().await?;
        // One statement locks the producers, then the topics (the UNION's branches run in
        // order), each in id order: every broker takes locks in the same order.
        let locked: Vec<LockedRow> = sqlx::query_as(
            "WITH p AS ( \
                 SELECT id, next_sequence, last_base_offset, last_count FROM producers \
                 WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE \
             ), t AS ( \
                 SELECT id, next_offset FROM topics \
                 WHERE id = ANY($2) ORDER BY id FOR NO KEY UPDATE \
             ) \
             SELECT 'producer' AS kind, id, next_sequence AS next, last_base_offset, \
                 last_count FROM p \
             UNION ALL \
             SELECT 'topic', id, next_offset, 0, 0 FROM t",
        )
        .bind(&sequenced)
        .bind(&topics)
        .fetch_all(&mut *tx)
        .await?;
        let (ends, producers) = locked_state(locked);
        let plan = plan_appends(jobs, ends.clone(), producers);
        let (written, outcomes) = Written::new(plan, ends, &producer_topics)?;
        let bases = written.execute(&mut tx).await?;
        tx.commit().await?;
        Ok(written.place(outcomes, &bases, &job_topics))
    }

    /// Locked in id order, like appends' rows: brokers never deadlock.
    async fn lock_cursors(&self, tx: &mut PgConnection, ids: &[u64]) -> Result<Vec<CursorRow>> {
        Ok(sqlx::query_as(
            "SELECT c.id AS consumer_id, c.topic_id, c.position, t.next_offset AS end_offset \
             FROM consumers c JOIN topics t ON t.id = c.topic_id \
             WHERE c.id = ANY($1) ORDER BY c.id FOR NO KEY UPDATE OF c",
        )
        .bind(distinct_ids(ids.iter().copied()))
        .fetch_all(tx)
        .await?)
    }

    async fn move_and_take(
        &self,
        tx: &mut PgConnection,
        positions: &[(u64, u64)],
        taken: &[(i64, u64)],
    ) -> Result<Vec<MessageRow>> {
        let (moved, positions) = columns(positions.iter().copied())?;
        let (topics, offsets) =
            columns(taken.iter().map(|&(topic, offset)| (topic as u64, offset)))?;
        Ok(sqlx::query_as(
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
        .fetch_all(tx)
        .await?)
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
        // reads a stored value's size without fetching it). An offset past 2^63 is past the
        // end: it reads nothing and is refused below.
        let rows: Vec<FetchRow> = sqlx::query_as(
            "SELECT t.next_offset AS end_offset, c.position, \
                 m.log_offset, m.payload, m.stored_ms \
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
        .bind(db_id(consumer_id))
        .bind(from.map(|offset| db_id(offset).unwrap_or(i64::MAX)))
        .bind(i64::try_from(limit.messages).unwrap_or(i64::MAX))
        .bind(i64::try_from(limit.bytes).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        let first = rows
            .first()
            .ok_or(StoreError::ConsumerNotFound(consumer_id))?;
        let (from, end) = (from.unwrap_or(first.position), first.end_offset);
        within_end(&owner.topic, from, end)?;
        let messages: Vec<StoredMessage> = rows
            .into_iter()
            .filter_map(|row| row.into_message().transpose())
            .collect::<Result<_>>()?;
        Ok(Fetched::new(from, messages, end))
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

/// Pairs of numbers as two BIGINT columns, for `UNNEST`.
fn columns(pairs: impl Iterator<Item = (u64, u64)>) -> Result<(Vec<i64>, Vec<i64>)> {
    let mut columns = (Vec::new(), Vec::new());
    for (a, b) in pairs {
        columns.0.push(db_int(a)?);
        columns.1.push(db_int(b)?);
    }
    Ok(columns)
}

/// A planned append group as the columns of one statement. `planned_from` holds the topic
/// ends the plan started from (read under lock); a topic missing from it was planned from 0,
/// and the statement adds its real end, which its UPDATE locks.
struct Written {
    planned_from: HashMap<i64, u64>,
    topic_ids: Vec<i64>,
    counts: Vec<i64>,
    rows: [Vec<i64>; 3],
    payloads: Vec<Vec<u8>>,
    sequences: [Vec<i64>; 5],
}

impl Written {
    /// The statement's columns, and the plan's answers for [`Written::place`].
    fn new(
        plan: AppendPlan,
        planned_from: HashMap<i64, u64>,
        producer_topics: &HashMap<u64, i64>,
    ) -> Result<(Self, Vec<Result<Appended>>)> {
        let start = |topic: i64| planned_from.get(&topic).copied().unwrap_or(0);
        let mut written = Written {
            topic_ids: Vec::new(),
            counts: Vec::new(),
            rows: Default::default(),
            payloads: Vec::new(),
            sequences: Default::default(),
            planned_from: HashMap::new(),
        };
        for &(id, end) in &plan.topic_ends {
            written.topic_ids.push(id);
            written.counts.push(db_int(end - start(id))?);
        }
        for segment in plan.segments {
            let first = segment.base_offset - start(segment.topic_id);
            for (offset, payload) in (first..).zip(segment.messages) {
                written.rows[0].push(segment.topic_id);
                written.rows[1].push(db_int(offset)?);
                written.rows[2].push(db_int(segment.producer_id)?);
                written.payloads.push(payload.into_bytes());
            }
        }
        for (id, sequence) in &plan.producers {
            let topic = producer_topics[id];
            let values = [
                db_int(*id)?,
                topic,
                db_int(sequence.next)?,
                db_int(sequence.last_base_offset - start(topic))?,
                db_int(sequence.last_count)?,
            ];
            for (column, value) in written.sequences.iter_mut().zip(values) {
                column.push(value);
            }
        }
        written.planned_from = planned_from;
        Ok((written, plan.outcomes))
    }

    /// Bumps each topic's end, inserts the messages, records the producers' sequence state
    /// and announces the topics to other brokers, in one statement. Answers where each
    /// topic's messages began.
    async fn execute(&self, conn: &mut PgConnection) -> Result<HashMap<i64, u64>> {
        let bases: Vec<TopicBase> = sqlx::query_as(
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
                 FROM UNNEST($8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], \
                     $12::bigint[]) AS s(id, topic_id, next_sequence, base_in_group, last_count) \
                 JOIN bumped b ON b.id = s.topic_id \
                 WHERE p.id = s.id \
             ) \
             SELECT id, base, pg_notify($13, name)::text AS notified FROM bumped",
        )
        .bind(&self.topic_ids)
        .bind(&self.counts)
        .bind(db_int(now_ms())?)
        .bind(&self.rows[0])
        .bind(&self.rows[1])
        .bind(&self.rows[2])
        .bind(&self.payloads)
        .bind(&self.sequences[0])
        .bind(&self.sequences[1])
        .bind(&self.sequences[2])
        .bind(&self.sequences[3])
        .bind(&self.sequences[4])
        .bind(APPENDS_CHANNEL)
        .fetch_all(conn)
        .await?;
        Ok(bases.into_iter().map(|b| (b.id, b.base)).collect())
    }

    /// The answers: new batches were planned from `planned_from` and move to where their
    /// topic really was (under lock the two agree and nothing moves). Duplicates keep their
    /// stored offsets.
    fn place(
        &self,
        outcomes: Vec<Result<Appended>>,
        bases: &HashMap<i64, u64>,
        job_topics: &[i64],
    ) -> Vec<Result<Appended>> {
        let start = |topic: i64| self.planned_from.get(&topic).copied().unwrap_or(0);
        outcomes
            .into_iter()
            .zip(job_topics)
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
            .collect()
    }
}
