//! The embedded SQLite store, the default: a file under `--data-dir`, nothing to set up.
//!
//! Durability: WAL journal with `synchronous=FULL`, so a commit returns only after the WAL is
//! fsynced; an acknowledged message survives `kill -9` and power loss. SQLite has one writer:
//! all writes go through a single connection, and concurrent appends (and concurrent position
//! changes) are grouped into one transaction each, so one fsync serves many requests. Reads
//! run on a separate pool of read-only connections, concurrently with the writer (WAL).

use super::catalog::{Owner, Role};
use super::plan::{
    AppendJob, AppendPlan, Cursor, PositionOp, Positioned, Segment, plan_appends, plan_positions,
};
use super::sequence::ProducerSequence;
use super::sql::{Backend, SqlStore};
use super::{
    Appended, FetchLimit, Fetched, Result, StoreError, StoredMessage, TopicSignals, now_ms,
};
use async_trait::async_trait;
use futures_util::TryStreamExt;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::SqliteConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, Sqlite};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The database file inside `--data-dir`.
pub const DATABASE_FILE: &str = "myqueue.sqlite3";
const READERS: u32 = 4;
/// A batch this large gets an INSERT of its own (offsets counted by SQLite); smaller ones
/// share one INSERT per group with a row per message.
const LARGE_SEGMENT: usize = 64;

/// The SQLite store: [`SqliteBackend`] with group commit.
pub type SqliteStore = SqlStore<SqliteBackend>;

/// SQLite's statements: one writer connection, a pool of read-only ones, and a task that
/// checkpoints the WAL beside the writer.
pub struct SqliteBackend {
    writer: SqlitePool,
    readers: SqlitePool,
    /// Set by every write, cleared by the checkpoint task: an idle broker does no work.
    written: Arc<AtomicBool>,
    checkpointer: tokio::task::JoinHandle<()>,
}

/// WAL pages after which the writer itself checkpoints (a safety net: normally the
/// checkpoint task keeps the WAL far below this).
const WAL_AUTOCHECKPOINT_PAGES: &str = "10000";
/// How often the checkpoint task copies the WAL into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Copies committed WAL pages into the database file from a connection of its own, so that
/// the writer's commits do not pay for it. PASSIVE checkpoints never wait for the writer.
async fn checkpoint_periodically(options: SqliteConnectOptions, written: Arc<AtomicBool>) {
    let mut connection = None;
    loop {
        tokio::time::sleep(CHECKPOINT_EVERY).await;
        if !written.swap(false, Ordering::Relaxed) {
            continue;
        }
        if connection.is_none() {
            connection = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options.clone())
                .await
                .ok();
        }
        if let Some(pool) = &connection
            && let Err(err) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(pool)
                .await
        {
            tracing::debug!(error = %err, "WAL checkpoint failed; retrying");
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database in `data_dir` and applies migrations.
    pub async fn open(data_dir: &Path) -> Result<Self, sqlx::Error> {
        std::fs::create_dir_all(data_dir).map_err(sqlx::Error::Io)?;
        let options = SqliteConnectOptions::new()
            .filename(data_dir.join(DATABASE_FILE))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(READERS)
            .connect_with(options.clone().read_only(true))
            .await?;
        let written = Arc::new(AtomicBool::new(true));
        let checkpointer = tokio::spawn(checkpoint_periodically(options, written.clone()));
        Ok(SqlStore::new(
            SqliteBackend {
                writer,
                readers,
                written,
                checkpointer,
            },
            Arc::new(TopicSignals::default()),
        ))
    }
}

#[async_trait]
impl Backend for SqliteBackend {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn find_owner(&self, role: Role, id: u64) -> sqlx::Result<Option<Owner>> {
        let sql = match role {
            Role::Producer => {
                "SELECT p.topic_id, t.name FROM producers p \
                 JOIN topics t ON t.id = p.topic_id WHERE p.id = ?"
            }
            Role::Consumer => {
                "SELECT c.topic_id, t.name FROM consumers c \
                 JOIN topics t ON t.id = c.topic_id WHERE c.id = ?"
            }
        };
        let row = sqlx::query(sql)
            .bind(id as i64)
            .fetch_optional(&self.readers)
            .await?;
        Ok(row.map(|row| Owner {
            topic_id: row.get(0),
            topic: row.get::<String, _>(1).into(),
        }))
    }

    /// One transaction, one fsync, for a whole group of appends, in few round trips to
    /// sqlx's SQLite thread (each round trip is a thread hop, the expensive part when the
    /// CPU is busy): plain appends take one; with sequence numbers, one begins and reads the
    /// producers, one writes and commits. Ids and rows travel as JSON arrays that SQLite
    /// unpacks, so the statements do not grow with the group.
    async fn append_group(&self, jobs: Vec<AppendJob>) -> sqlx::Result<Vec<Result<Appended>>> {
        let mut conn = self.writer.acquire().await?;
        self.written.store(true, Ordering::Relaxed);
        let result = append_group_on(&mut conn, jobs).await;
        if result.is_err() {
            rollback(&mut conn).await;
        }
        result
    }

    /// One transaction, one fsync, for a whole group of position changes, in two round trips
    /// like appends.
    async fn position_group(&self, ops: &[(u64, PositionOp)]) -> sqlx::Result<Vec<Positioned>> {
        let mut conn = self.writer.acquire().await?;
        self.written.store(true, Ordering::Relaxed);
        let result = position_group_on(&mut conn, ops).await;
        if result.is_err() {
            rollback(&mut conn).await;
        }
        result
    }

    async fn ping(&self) -> sqlx::Result<()> {
        sqlx::query("SELECT 1").execute(&self.readers).await?;
        Ok(())
    }

    async fn create_topic(&self, name: &str) -> Result<()> {
        let result = sqlx::query("INSERT INTO topics (name, created_ms) VALUES (?, ?)")
            .bind(name)
            .bind(now_ms() as i64)
            .execute(&self.writer)
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if is_unique_violation(&err) => Err(StoreError::TopicExists(name.to_owned())),
            Err(err) => Err(err.into()),
        }
    }

    async fn list_topics(&self) -> sqlx::Result<Vec<String>> {
        sqlx::query_scalar("SELECT name FROM topics ORDER BY name")
            .fetch_all(&self.readers)
            .await
    }

    async fn register_producer(&self, topic: &str) -> Result<u64> {
        let now = now_ms() as i64;
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "INSERT INTO topics (name, created_ms) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
        )
        .bind(topic)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let topic_id: i64 = sqlx::query_scalar("SELECT id FROM topics WHERE name = ?")
            .bind(topic)
            .fetch_one(&mut *tx)
            .await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO producers (topic_id, created_ms) VALUES (?, ?) RETURNING id",
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
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let topic_id: i64 = sqlx::query_scalar("SELECT id FROM topics WHERE name = ?")
            .bind(topic)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::TopicNotFound(topic.to_owned()))?;
        if let Some(group) = group {
            let existing: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM consumers WHERE topic_id = ? AND group_name = ?",
            )
            .bind(topic_id)
            .bind(group)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(id) = existing {
                return Ok(id as u64);
            }
        }
        // The end is read under this transaction's write lock: no append lands in between.
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO consumers (topic_id, group_name, created_ms, position) VALUES (?1, ?2, ?3, \
             CASE WHEN ?4 THEN (SELECT next_offset FROM topics WHERE id = ?1) ELSE 0 END) RETURNING id",
        )
        .bind(topic_id)
        .bind(group)
        .bind(now_ms() as i64)
        .bind(start == super::ConsumerStart::End)
        .fetch_one(&mut *tx)
        .await?;
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
        // Two statements, no transaction: the messages are read up to the end read first, so
        // a commit in between cannot make the answer disagree with itself.
        let row = sqlx::query(
            "SELECT t.next_offset, COALESCE(?2, c.position) FROM consumers c \
             JOIN topics t ON t.id = c.topic_id WHERE c.id = ?1",
        )
        .bind(consumer_id as i64)
        .bind(from.map(|f| f as i64))
        .fetch_one(&self.readers)
        .await?;
        let (end, from) = (row.get::<i64, _>(0) as u64, row.get::<i64, _>(1) as u64);
        if from > end {
            return Err(StoreError::OffsetOutOfRange {
                topic: owner.topic.to_string(),
                offset: from,
                end,
            });
        }
        // Rows are streamed from SQLite's thread and the stream is dropped once the byte
        // budget is spent: large messages are never all read at once.
        let mut rows = sqlx::query(
            "SELECT log_offset, payload, stored_ms FROM messages \
             WHERE topic_id = ? AND log_offset >= ? AND log_offset < ? \
             ORDER BY log_offset LIMIT ?",
        )
        .bind(owner.topic_id)
        .bind(from as i64)
        .bind(end as i64)
        .bind(i64::try_from(limit.messages).unwrap_or(i64::MAX))
        .fetch(&self.readers);
        let mut messages = Vec::new();
        let mut bytes = 0;
        while let Some(row) = rows.try_next().await? {
            let message = StoredMessage {
                offset: row.get::<i64, _>(0) as u64,
                payload: row.get(1),
                timestamp_ms: row.get::<i64, _>(2) as u64,
            };
            bytes += message.payload.len();
            if !messages.is_empty() && bytes > limit.bytes {
                break;
            }
            messages.push(message);
        }
        Ok(Fetched {
            next_offset: from + messages.len() as u64,
            messages,
            end_offset: end,
        })
    }

    async fn size(&self, consumer_id: u64) -> sqlx::Result<u64> {
        let size: i64 = sqlx::query_scalar(
            "SELECT max(t.next_offset - c.position, 0) FROM consumers c \
             JOIN topics t ON t.id = c.topic_id WHERE c.id = ?",
        )
        .bind(consumer_id as i64)
        .fetch_one(&self.readers)
        .await?;
        Ok(size as u64)
    }

    async fn close(&self) {
        self.checkpointer.abort();
        self.readers.close().await;
        self.writer.close().await;
    }
}

/// Ends a failed group: the connection is closed (SQLite rolls back what it had begun) and
/// the pool opens a clean one for the next group.
async fn rollback(conn: &mut PoolConnection<Sqlite>) {
    conn.close_on_drop();
}

async fn append_group_on(
    conn: &mut SqliteConnection,
    jobs: Vec<AppendJob>,
) -> sqlx::Result<Vec<Result<Appended>>> {
    if jobs.iter().all(|job| job.sequence.is_none()) {
        return append_plain_on(conn, jobs).await;
    }
    let topic_ids = json_ids(jobs.iter().map(|job| job.topic_id));
    let sequenced = json_ids(
        jobs.iter()
            .filter(|job| job.sequence.is_some())
            .map(|job| job.producer_id as i64),
    );
    // Round trip 1: begin (taking the write lock) and read the state the sequence check and
    // the plan need.
    let rows = sqlx::query(
        "BEGIN IMMEDIATE; \
         SELECT 0, id, next_offset, 0, 0 FROM topics \
             WHERE id IN (SELECT value FROM json_each(?)) \
         UNION ALL \
         SELECT 1, id, next_sequence, last_base_offset, last_count FROM producers \
             WHERE id IN (SELECT value FROM json_each(?))",
    )
    .bind(topic_ids)
    .bind(sequenced)
    .fetch_all(&mut *conn)
    .await?;
    let mut topic_ends = HashMap::new();
    let mut producers = HashMap::new();
    for row in &rows {
        let id: i64 = row.get(1);
        let first = row.get::<i64, _>(2) as u64;
        if row.get::<i64, _>(0) == 0 {
            topic_ends.insert(id, first);
        } else {
            let sequence = ProducerSequence {
                next: first,
                last_base_offset: row.get::<i64, _>(3) as u64,
                last_count: row.get::<i64, _>(4) as u64,
            };
            producers.insert(id as u64, sequence);
        }
    }
    let plan = plan_appends(jobs, topic_ends, producers);
    // Round trip 2: write everything and commit.
    let writes = Writes::of(&plan, Offsets::Absolute);
    let query = sqlx::query(sqlx::AssertSqlSafe(writes.sql.clone()));
    writes.bind(&plan, query).execute(&mut *conn).await?;
    Ok(plan.outcomes)
}

/// Appends without sequence numbers (the assignment's produce endpoint) in one round trip:
/// planned from offset 0, and SQLite adds each topic's end, read inside the same transaction.
async fn append_plain_on(
    conn: &mut SqliteConnection,
    jobs: Vec<AppendJob>,
) -> sqlx::Result<Vec<Result<Appended>>> {
    let topic_ids = json_ids(jobs.iter().map(|job| job.topic_id));
    let job_topics: Vec<i64> = jobs.iter().map(|job| job.topic_id).collect();
    let plan = plan_appends(jobs, HashMap::new(), HashMap::new());
    let writes = Writes::of(&plan, Offsets::FromTopicEnd);
    let sql = format!(
        "BEGIN IMMEDIATE; \
         SELECT id, next_offset FROM topics WHERE id IN (SELECT value FROM json_each(?)); {}",
        writes.sql
    );
    let ends: HashMap<i64, u64> = writes
        .bind(&plan, sqlx::query(sqlx::AssertSqlSafe(sql)).bind(topic_ids))
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|row| (row.get::<i64, _>(0), row.get::<i64, _>(1) as u64))
        .collect();
    Ok(plan
        .outcomes
        .into_iter()
        .zip(job_topics)
        .map(|(outcome, topic)| {
            outcome.map(|appended| Appended {
                // Every topic has its end here: a missing topic row fails the INSERT (NULL
                // offset), and with it the group.
                base_offset: appended.base_offset + ends.get(&topic).copied().unwrap_or(0),
                ..appended
            })
        })
        .collect())
}

/// Where a plan's offsets count from.
#[derive(Clone, Copy, PartialEq)]
enum Offsets {
    /// The plan started from the topics' ends as read under the write lock.
    Absolute,
    /// The plan started from 0; the statements add each topic's end.
    FromTopicEnd,
}

/// The statements that write a planned append group and commit it. Small batches share one
/// INSERT with a row per message; a large batch gets its own, with offsets counted by SQLite.
struct Writes<'p> {
    offsets: Offsets,
    sql: String,
    small_rows: Vec<(i64, u64, u64, &'p str)>,
    large: Vec<&'p Segment>,
}

impl<'p> Writes<'p> {
    fn of(plan: &'p AppendPlan, offsets: Offsets) -> Self {
        let (large, small): (Vec<&Segment>, Vec<&Segment>) = plan
            .segments
            .iter()
            .partition(|segment| segment.messages.len() >= LARGE_SEGMENT);
        let small_rows = small
            .iter()
            .flat_map(|segment| {
                let ids = (segment.topic_id, segment.producer_id);
                segment
                    .messages
                    .iter()
                    .zip(segment.base_offset..)
                    .map(move |(payload, offset)| (ids.0, offset, ids.1, payload.as_str()))
            })
            .collect();
        // The topic's end that offsets are added to (`topic` is an SQL expression; the INSERTs
        // run before the UPDATE of `topics`, so it is still the old end), and the new ends.
        let end_of = |topic: &str| match offsets {
            Offsets::Absolute => "0".to_owned(),
            Offsets::FromTopicEnd => format!("(SELECT next_offset FROM topics WHERE id = {topic})"),
        };
        let new_end = match offsets {
            Offsets::Absolute => "u.value ->> 1",
            Offsets::FromTopicEnd => "next_offset + u.value ->> 1",
        };
        // Several statements in one query: sqlx binds anonymous `?` parameters in order across
        // them (numbered ones would not do: a statement that skips a number gets the wrong
        // value).
        let mut sql = format!(
            "INSERT INTO messages (topic_id, log_offset, producer_id, stored_ms, payload) \
             SELECT value ->> 0, {} + value ->> 1, value ->> 2, ?, value ->> 3 \
             FROM json_each(?);",
            end_of("value ->> 0")
        );
        for _ in &large {
            sql.push_str(&format!(
                " INSERT INTO messages (topic_id, log_offset, producer_id, stored_ms, payload) \
                 SELECT ?, {} + ? + key, ?, ?, value FROM json_each(?);",
                end_of("?")
            ));
        }
        sql.push_str(&format!(
            " UPDATE topics SET next_offset = {new_end} FROM json_each(?) AS u \
                 WHERE topics.id = u.value ->> 0; \
             UPDATE producers SET next_sequence = u.value ->> 1, \
                 last_base_offset = u.value ->> 2, last_count = u.value ->> 3 \
                 FROM json_each(?) AS u WHERE producers.id = u.value ->> 0; \
             COMMIT"
        ));
        Writes {
            offsets,
            sql,
            small_rows,
            large,
        }
    }

    /// Binds the statements' parameters, in the order of [`Writes::of`]'s `?`s.
    fn bind<'q>(
        &'q self,
        plan: &AppendPlan,
        query: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments>,
    ) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments> {
        let stored_ms = now_ms() as i64;
        let states: Vec<(u64, u64, u64, u64)> = plan
            .producers
            .iter()
            .map(|(id, s)| (*id, s.next, s.last_base_offset, s.last_count))
            .collect();
        let mut query = query
            .bind(stored_ms)
            .bind(serde_json::to_string(&self.small_rows).expect("rows serialise"));
        for segment in &self.large {
            query = query.bind(segment.topic_id);
            if self.offsets == Offsets::FromTopicEnd {
                query = query.bind(segment.topic_id);
            }
            query = query
                .bind(segment.base_offset as i64)
                .bind(segment.producer_id as i64)
                .bind(stored_ms)
                .bind(serde_json::to_string(&segment.messages).expect("strings serialise"));
        }
        query
            .bind(serde_json::to_string(&plan.topic_ends).expect("pairs serialise"))
            .bind(serde_json::to_string(&states).expect("states serialise"))
    }
}

async fn position_group_on(
    conn: &mut SqliteConnection,
    ops: &[(u64, PositionOp)],
) -> sqlx::Result<Vec<Positioned>> {
    // Round trip 1: begin (taking the write lock) and read the cursors.
    let cursors: HashMap<u64, Cursor> = sqlx::query(
        "BEGIN IMMEDIATE; \
         SELECT c.id, c.topic_id, c.position, t.next_offset FROM consumers c \
         JOIN topics t ON t.id = c.topic_id WHERE c.id IN (SELECT value FROM json_each(?))",
    )
    .bind(json_ids(ops.iter().map(|&(id, _)| id as i64)))
    .fetch_all(&mut *conn)
    .await?
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
    // Round trip 2: move the positions, read the taken messages (in the same transaction: a
    // failure after the move would otherwise lose them for this consumer), commit.
    let taken: Vec<(i64, u64)> = plan.outcomes.iter().filter_map(|o| o.taken()).collect();
    let rows = sqlx::query(
        "UPDATE consumers SET position = u.value ->> 1 FROM json_each(?) AS u \
             WHERE consumers.id = u.value ->> 0; \
         SELECT m.topic_id, m.log_offset, m.payload, m.stored_ms \
             FROM json_each(?) AS k CROSS JOIN messages AS m \
             ON m.topic_id = k.value ->> 0 AND m.log_offset = k.value ->> 1; \
         COMMIT",
    )
    .bind(serde_json::to_string(&plan.positions).expect("pairs serialise"))
    .bind(serde_json::to_string(&taken).expect("pairs serialise"))
    .fetch_all(&mut *conn)
    .await?;
    let mut messages = HashMap::new();
    for row in rows {
        let offset = row.get::<i64, _>(1) as u64;
        let message = StoredMessage {
            offset,
            payload: row.get(2),
            timestamp_ms: row.get::<i64, _>(3) as u64,
        };
        messages.insert((row.get::<i64, _>(0), offset), message);
    }
    Ok(plan
        .outcomes
        .into_iter()
        .map(|outcome| {
            let taken = outcome.taken().and_then(|key| messages.get(&key).cloned());
            Positioned::new(outcome, taken)
        })
        .collect())
}

/// Distinct ids as a JSON array, for `IN (SELECT value FROM json_each(?))`.
fn json_ids(ids: impl Iterator<Item = i64>) -> String {
    let mut ids: Vec<i64> = ids.collect();
    ids.sort_unstable();
    ids.dedup();
    serde_json::to_string(&ids).expect("ids serialise")
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}
