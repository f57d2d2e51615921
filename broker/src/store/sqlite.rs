//! The embedded SQLite store, the default: a file under `--data-dir`, nothing to set up.
//!
//! Durability: WAL journal with `synchronous=FULL`, so a commit returns only after the WAL is
//! fsynced; an acknowledged message survives `kill -9` and power loss. SQLite has one writer:
//! all writes go through a single connection, and concurrent appends (and concurrent position
//! changes) are grouped into one transaction each, so one fsync serves many requests. Reads
//! run on a separate pool of read-only connections, concurrently with the writer (WAL).

use super::catalog::{Owner, Role};
use super::plan::{AppendJob, Cursor, PositionOp, Positioned, plan_appends, plan_positions};
use super::sequence::ProducerSequence;
use super::sql::{Backend, SqlStore};
use super::{Appended, Fetched, Result, StoreError, StoredMessage, TopicSignals, now_ms};
use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The database file inside `--data-dir`.
pub const DATABASE_FILE: &str = "myqueue.sqlite3";
const READERS: u32 = 4;

/// The SQLite store: [`SqliteBackend`] with group commit.
pub type SqliteStore = SqlStore<SqliteBackend>;

/// SQLite's statements: one writer connection, a pool of read-only ones.
pub struct SqliteBackend {
    writer: SqlitePool,
    readers: SqlitePool,
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
            .busy_timeout(Duration::from_secs(10));
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
            .connect_with(options.read_only(true))
            .await?;
        Ok(SqlStore::new(
            SqliteBackend { writer, readers },
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

    /// One transaction, one fsync, for a whole group of appends.
    async fn append_group(&self, jobs: Vec<AppendJob>) -> sqlx::Result<Vec<Result<Appended>>> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let mut topic_ends = HashMap::new();
        let mut producers = HashMap::new();
        for job in &jobs {
            if let Entry::Vacant(slot) = topic_ends.entry(job.topic_id) {
                let end: i64 = sqlx::query_scalar("SELECT next_offset FROM topics WHERE id = ?")
                    .bind(job.topic_id)
                    .fetch_one(&mut *tx)
                    .await?;
                slot.insert(end as u64);
            }
            if job.sequence.is_some()
                && let Entry::Vacant(slot) = producers.entry(job.producer_id)
            {
                let row = sqlx::query(
                    "SELECT next_sequence, last_base_offset, last_count FROM producers WHERE id = ?",
                )
                .bind(job.producer_id as i64)
                .fetch_one(&mut *tx)
                .await?;
                slot.insert(ProducerSequence {
                    next: row.get::<i64, _>(0) as u64,
                    last_base_offset: row.get::<i64, _>(1) as u64,
                    last_count: row.get::<i64, _>(2) as u64,
                });
            }
        }
        let plan = plan_appends(jobs, topic_ends, producers);
        let stored_ms = now_ms() as i64;
        for segment in &plan.segments {
            // One statement per segment whatever its size: the payloads travel as one JSON
            // array and SQLite unpacks them.
            sqlx::query(
                "INSERT INTO messages (topic_id, log_offset, producer_id, stored_ms, payload) \
                 SELECT ?1, ?2 + key, ?3, ?4, value FROM json_each(?5)",
            )
            .bind(segment.topic_id)
            .bind(segment.base_offset as i64)
            .bind(segment.producer_id as i64)
            .bind(stored_ms)
            .bind(serde_json::to_string(&segment.messages).expect("strings serialise"))
            .execute(&mut *tx)
            .await?;
        }
        for &(topic_id, end) in &plan.topic_ends {
            sqlx::query("UPDATE topics SET next_offset = ? WHERE id = ?")
                .bind(end as i64)
                .bind(topic_id)
                .execute(&mut *tx)
                .await?;
        }
        for (producer_id, sequence) in &plan.producers {
            sqlx::query(
                "UPDATE producers SET next_sequence = ?, last_base_offset = ?, last_count = ? \
                 WHERE id = ?",
            )
            .bind(sequence.next as i64)
            .bind(sequence.last_base_offset as i64)
            .bind(sequence.last_count as i64)
            .bind(*producer_id as i64)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(plan.outcomes)
    }

    /// One transaction, one fsync, for a whole group of position changes.
    async fn position_group(&self, ops: &[(u64, PositionOp)]) -> sqlx::Result<Vec<Positioned>> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let mut cursors = HashMap::new();
        for &(id, _) in ops {
            if let Entry::Vacant(slot) = cursors.entry(id) {
                slot.insert(read_cursor(&mut tx, id).await?);
            }
        }
        let plan = plan_positions(ops, cursors);
        for &(id, position) in &plan.positions {
            sqlx::query("UPDATE consumers SET position = ? WHERE id = ?")
                .bind(position as i64)
                .bind(id as i64)
                .execute(&mut *tx)
                .await?;
        }
        // Taken messages are read in the same transaction: a failure after the position moved
        // would otherwise lose them for this consumer.
        let mut answers = Vec::with_capacity(ops.len());
        for outcome in plan.outcomes {
            let taken = match outcome.taken() {
                Some((topic_id, offset)) => Some(read_message(&mut tx, topic_id, offset).await?),
                None => None,
            };
            answers.push(Positioned::new(outcome, taken));
        }
        tx.commit().await?;
        Ok(answers)
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

    async fn register_consumer(&self, topic: &str, group: Option<&str>) -> Result<u64> {
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
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO consumers (topic_id, group_name, created_ms) VALUES (?, ?, ?) RETURNING id",
        )
        .bind(topic_id)
        .bind(group)
        .bind(now_ms() as i64)
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
        max: usize,
    ) -> Result<Fetched> {
        let mut tx = self.readers.begin().await?;
        let from = match from {
            Some(offset) => offset,
            None => {
                sqlx::query_scalar::<_, i64>("SELECT position FROM consumers WHERE id = ?")
                    .bind(consumer_id as i64)
                    .fetch_one(&mut *tx)
                    .await? as u64
            }
        };
        let end = sqlx::query_scalar::<_, i64>("SELECT next_offset FROM topics WHERE id = ?")
            .bind(owner.topic_id)
            .fetch_one(&mut *tx)
            .await? as u64;
        if from > end {
            return Err(StoreError::OffsetOutOfRange {
                topic: owner.topic.to_string(),
                offset: from,
                end,
            });
        }
        let rows = sqlx::query(
            "SELECT log_offset, payload, stored_ms FROM messages \
             WHERE topic_id = ? AND log_offset >= ? AND log_offset < ? \
             ORDER BY log_offset LIMIT ?",
        )
        .bind(owner.topic_id)
        .bind(from as i64)
        .bind(end as i64)
        .bind(max as i64)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let messages: Vec<StoredMessage> = rows
            .iter()
            .map(|row| StoredMessage {
                offset: row.get::<i64, _>(0) as u64,
                payload: row.get(1),
                timestamp_ms: row.get::<i64, _>(2) as u64,
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
            "SELECT max(t.next_offset - c.position, 0) FROM consumers c \
             JOIN topics t ON t.id = c.topic_id WHERE c.id = ?",
        )
        .bind(consumer_id as i64)
        .fetch_one(&self.readers)
        .await?;
        Ok(size as u64)
    }

    async fn close(&self) {
        self.readers.close().await;
        self.writer.close().await;
    }
}

async fn read_message(
    tx: &mut Transaction<'static, Sqlite>,
    topic_id: i64,
    offset: u64,
) -> sqlx::Result<StoredMessage> {
    let row = sqlx::query(
        "SELECT payload, stored_ms FROM messages WHERE topic_id = ? AND log_offset = ?",
    )
    .bind(topic_id)
    .bind(offset as i64)
    .fetch_one(&mut **tx)
    .await?;
    Ok(StoredMessage {
        offset,
        payload: row.get(0),
        timestamp_ms: row.get::<i64, _>(1) as u64,
    })
}

async fn read_cursor(tx: &mut Transaction<'static, Sqlite>, id: u64) -> sqlx::Result<Cursor> {
    let row = sqlx::query(
        "SELECT c.topic_id, c.position, t.next_offset FROM consumers c \
         JOIN topics t ON t.id = c.topic_id WHERE c.id = ?",
    )
    .bind(id as i64)
    .fetch_one(&mut **tx)
    .await?;
    Ok(Cursor {
        topic_id: row.get(0),
        position: row.get::<i64, _>(1) as u64,
        end: row.get::<i64, _>(2) as u64,
    })
}

/// Whether `err` is a UNIQUE constraint violation.
fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}
