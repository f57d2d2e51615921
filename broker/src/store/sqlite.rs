//! The embedded SQLite store, the default: a file under `--data-dir`, nothing to set up.
//!
//! Durability: WAL journal with `synchronous=FULL`, so a commit returns only after the WAL is
//! fsynced; an acknowledged message survives `kill -9` and power loss. SQLite has one writer:
//! all writes go through a single connection, and concurrent appends (and concurrent position
//! changes) are grouped into one transaction each, so one fsync serves many requests. Reads
//! run on a separate pool of read-only connections, concurrently with the writer (WAL).
//!
//! Lists of ids and rows travel as JSON arrays that SQLite unpacks (`json_each`), so each
//! statement's text is fixed, prepared once, whatever the size of the group.
//!
//! Retention frees messages by DELETE, in bounded steps so that appends are never held up for
//! long: each append group also deletes, in its own transaction, up to twice as many of its
//! topics' messages below their start as it inserts (so the one writer frees at least as fast
//! as it appends, whatever the rate), and each retention pass deletes up to
//! [`DELETES_PER_PASS`] batches of [`DELETE_BATCH`] rows, each its own transaction (for topics
//! no longer written to). Freed pages are reused by later appends; beyond a slack, incremental
//! auto-vacuum gives them back to the file system, and the WAL is truncated after checkpoints:
//! the files stop growing under steady load.

use super::catalog::Owner;
use super::dir_lock::DirLock;
use super::plan::{AppendJob, AppendPlan, Segment, TopicEnds, plan_appends};
use super::retention::RetentionConfig;
use super::sql::{
    Backend, CursorRow, FetchRow, LockedRow, MessageRow, SqlStore, db_id, db_int, distinct_ids,
    locked_state, pool_stats,
};
use super::{
    Appended, FetchLimit, Fetched, OpenError, PoolStats, Result, StoreError, TopicSignals, now_ms,
    within_end,
};
use async_trait::async_trait;
use futures_util::TryStreamExt;
use sqlx::sqlite::SqliteConnection;
use sqlx::sqlite::{
    SqliteAutoVacuum, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Connection, Sqlite, Transaction};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The database file inside `--data-dir`.
pub const DATABASE_FILE: &str = "myqueue.sqlite3";
const READERS: u32 = 4;
/// A batch this large gets an INSERT of its own over a JSON array of its payloads.
const LARGE_SEGMENT: usize = 64;
/// WAL pages after which the writer itself checkpoints (a safety net: normally the
/// checkpoint task keeps the WAL far below this).
const WAL_AUTOCHECKPOINT_PAGES: &str = "10000";
/// How often the checkpoint task copies the WAL into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);
/// The WAL is truncated to this size when a checkpoint lets it start over.
const WAL_SIZE_LIMIT: &str = "67108864";
/// Rows one retention DELETE removes at most: a few milliseconds of the writer's time.
const DELETE_BATCH: i64 = 20_000;
/// DELETEs one retention pass runs at most per topic; the rest waits for the next pass (and
/// the topic's appends), so passes stay frequent.
const DELETES_PER_PASS: usize = 5;
/// An append group deletes this many times the messages it inserts (below the start).
const DELETES_PER_APPEND: u64 = 2;
/// Free pages kept for reuse, at least (16 MiB of 4 KiB pages), beyond which incremental
/// vacuum gives them back; also a quarter of the file.
const FREE_PAGES_KEPT: i64 = 4096;
/// Pages one incremental vacuum step gives back.
const VACUUM_STEP: &str = "PRAGMA incremental_vacuum(2048)";
const VACUUM_STEP_PAGES: i64 = 2048;

/// The SQLite store: [`SqliteBackend`] with group commit.
pub type SqliteStore = SqlStore<SqliteBackend>;

/// SQLite's statements: one writer connection and a pool of read-only ones.
pub struct SqliteBackend {
    writer: SqlitePool,
    readers: SqlitePool,
    /// Set by every write, cleared by the checkpoint task: an idle broker does no work.
    written: Arc<AtomicBool>,
    /// Held until the store closes: no second broker opens this directory meanwhile.
    lock: std::sync::Mutex<Option<DirLock>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database in `data_dir` and applies migrations.
    /// Migrating a database made before retention rewrites it once (a VACUUM, see
    /// `migrations/sqlite/0003_incremental_vacuum.sql`).
    pub async fn open(data_dir: &Path, retention: RetentionConfig) -> Result<Self, OpenError> {
        std::fs::create_dir_all(data_dir).map_err(|source| OpenError::DataDir {
            path: data_dir.to_owned(),
            source,
        })?;
        // Before the database is touched: a second broker must not even run migrations.
        let lock = DirLock::acquire(data_dir)?;
        let options = SqliteConnectOptions::new()
            .filename(data_dir.join(DATABASE_FILE))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)
            .pragma("journal_size_limit", WAL_SIZE_LIMIT);
        // A new database is made with incremental auto-vacuum from its first table on. Only
        // the writer says so: setting it is a write, which other connections would wait for.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .after_release(|conn, _| Box::pin(replace_if_stuck_in_transaction(conn)))
            .connect_with(options.clone().auto_vacuum(SqliteAutoVacuum::Incremental))
            .await
            .map_err(OpenError::Connect)?;
        let migrator = sqlx::migrate!("./migrations/sqlite");
        let started = std::time::Instant::now();
        migrator.run(&writer).await.map_err(OpenError::Migrate)?;
        if started.elapsed() > Duration::from_secs(1) {
            tracing::info!(elapsed = ?started.elapsed(), "SQLite schema brought up to date");
        }
        let readers = SqlitePoolOptions::new()
            .max_connections(READERS)
            .connect_with(options.clone().read_only(true))
            .await
            .map_err(OpenError::Connect)?;
        let (tasks, stop) = (TaskTracker::new(), CancellationToken::new());
        let written = Arc::new(AtomicBool::new(true));
        tasks.spawn(checkpoint_periodically(
            options,
            written.clone(),
            stop.clone(),
        ));
        let backend = SqliteBackend {
            writer,
            readers,
            written,
            lock: std::sync::Mutex::new(Some(lock)),
        };
        Ok(SqlStore::new(
            backend,
            Arc::new(TopicSignals::default()),
            tasks,
            stop,
            retention,
        ))
    }
}

/// Whether the writer connection may go back to its pool (`false` closes it, and the pool
/// opens a fresh one). sqlx counts the transactions it opened, and its count can be wrong
/// after a failed COMMIT: SQLite rolls a transaction back by itself when a write fails for a
/// full disk or an I/O error, the ROLLBACK that sqlx then sends fails ("no transaction is
/// active"), and sqlx still counts the transaction as open, refusing every later BEGIN on the
/// connection: the broker would never write again, even once space is freed.
async fn replace_if_stuck_in_transaction(conn: &mut SqliteConnection) -> sqlx::Result<bool> {
    // A round trip, so that the ROLLBACK queued by the dropped transaction has run.
    conn.ping().await?;
    if conn.is_in_transaction() {
        tracing::warn!("replacing the SQLite writer connection after a failed transaction");
        return Ok(false);
    }
    Ok(true)
}

/// Copies committed WAL pages into the database file from a connection of its own, so that
/// the writer's commits do not pay for it. PASSIVE checkpoints never wait for the writer.
async fn checkpoint_periodically(
    options: SqliteConnectOptions,
    written: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    let mut connection = None;
    while stop
        .run_until_cancelled(tokio::time::sleep(CHECKPOINT_EVERY))
        .await
        .is_some()
    {
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
    if let Some(pool) = connection {
        pool.close().await;
    }
}

/// Free pages to give back when the file has `free` of `pages` free: all beyond what is kept
/// for reuse (a quarter of the file, at least [`FREE_PAGES_KEPT`]).
fn pages_to_vacuum(free: i64, pages: i64) -> i64 {
    free.saturating_sub(FREE_PAGES_KEPT.max(pages / 4)).max(0)
}

fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("numbers and strings serialise")
}

#[async_trait]
impl Backend for SqliteBackend {
    type Db = Sqlite;

    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn readers(&self) -> &SqlitePool {
        &self.readers
    }

    fn pools(&self) -> Vec<PoolStats> {
        vec![
            pool_stats("writer", &self.writer),
            pool_stats("readers", &self.readers),
        ]
    }

    /// `BEGIN IMMEDIATE` takes the write lock at once: a transaction that reads before it
    /// writes can never fail to upgrade its lock.
    async fn begin_write(&self) -> sqlx::Result<Transaction<'static, Sqlite>> {
        let tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        self.written.store(true, Ordering::Relaxed);
        Ok(tx)
    }

    /// One transaction, one fsync, for a whole group of appends: read the topics' ends and
    /// the sequenced producers' states, plan, write.
    async fn append_group(&self, jobs: Vec<AppendJob>) -> Result<Vec<Result<Appended>>> {
        // Id lists travel as JSON arrays, for `IN (SELECT value FROM json_each($N))`.
        let topic_ids: Vec<i64> = jobs.iter().map(|job| job.topic_id).collect();
        let producer_ids = distinct_ids(
            jobs.iter()
                .filter(|job| job.sequence.is_some())
                .map(|job| job.producer_id),
        );
        let mut tx = self.begin_write().await?;
        let locked: Vec<LockedRow> = sqlx::query_as(
            "SELECT 'topic' AS kind, id, next_offset AS next, 0 AS last_base_offset, \
                 0 AS last_count, '' AS recent_batches \
                 FROM topics WHERE id IN (SELECT value FROM json_each($1)) \
             UNION ALL \
             SELECT 'producer', id, next_sequence, last_base_offset, last_count, \
                 recent_batches FROM producers \
                 WHERE id IN (SELECT value FROM json_each($2))",
        )
        .bind(to_json(&topic_ids))
        .bind(to_json(&producer_ids))
        .fetch_all(&mut *tx)
        .await?;
        let (ends, producers) = locked_state(locked)?;
        let plan = plan_appends(jobs, TopicEnds::Locked(ends), producers);
        write_appends(&mut tx, &plan).await?;
        tx.commit().await?;
        Ok(plan.outcomes)
    }

    async fn lock_cursors(&self, tx: &mut SqliteConnection, ids: &[u64]) -> Result<Vec<CursorRow>> {
        Ok(sqlx::query_as(
            "SELECT c.id AS consumer_id, c.topic_id, c.position, t.start_offset, \
                 t.next_offset AS end_offset \
             FROM consumers c JOIN topics t ON t.id = c.topic_id \
             WHERE c.id IN (SELECT value FROM json_each($1))",
        )
        .bind(to_json(&distinct_ids(ids.iter().copied())))
        .fetch_all(tx)
        .await?)
    }

    /// CROSS JOIN keeps SQLite from scanning `messages` in the outer loop.
    async fn move_and_take(
        &self,
        tx: &mut SqliteConnection,
        positions: &[(u64, u64)],
        taken: &[(i64, u64)],
    ) -> Result<Vec<MessageRow>> {
        Ok(sqlx::query_as(
            "UPDATE consumers SET position = u.value ->> 1 FROM json_each($1) AS u \
                 WHERE consumers.id = u.value ->> 0; \
             SELECT m.topic_id, m.log_offset, m.payload, m.stored_ms \
                 FROM json_each($2) AS k CROSS JOIN messages AS m \
                 ON m.topic_id = k.value ->> 0 AND m.log_offset = k.value ->> 1",
        )
        .bind(to_json(&positions))
        .bind(to_json(&taken))
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
        // One statement, one snapshot: the start, the end and the messages agree, and a
        // retention pass that deletes meanwhile does not touch what this statement reads.
        // Rows are streamed from SQLite's thread and the stream is dropped once the byte
        // budget is spent: large messages are never all read at once.
        let mut rows = sqlx::query_as::<_, FetchRow>(
            "SELECT t.start_offset, t.next_offset AS end_offset, c.position, \
                 m.log_offset, m.payload, m.stored_ms \
             FROM consumers c JOIN topics t ON t.id = c.topic_id \
             LEFT JOIN messages m ON m.topic_id = t.id \
                 AND m.log_offset >= max(coalesce($2, c.position), t.start_offset) \
             WHERE c.id = $1 ORDER BY m.log_offset LIMIT $3",
        )
        .bind(db_id(consumer_id))
        .bind(from.map(|offset| db_id(offset).unwrap_or(i64::MAX)))
        .bind(i64::try_from(limit.messages).unwrap_or(i64::MAX))
        .fetch(&self.readers);
        let first = rows
            .try_next()
            .await?
            .ok_or(StoreError::ConsumerNotFound(consumer_id))?;
        let (start, end) = (first.start_offset, first.end_offset);
        let from = within_end(&owner.topic, from.unwrap_or(first.position), end)?;
        let mut messages = Vec::new();
        let mut bytes = 0;
        let mut next = Some(first);
        while let Some(row) = next {
            let Some(message) = row.into_message()? else {
                break;
            };
            bytes += message.payload.len();
            if !messages.is_empty() && bytes > limit.bytes {
                break;
            }
            messages.push(message);
            next = rows.try_next().await?;
        }
        Ok(Fetched::new(from, start, messages, end))
    }

    async fn lock_topic(&self, tx: &mut SqliteConnection, name: &str) -> Result<Option<i64>> {
        // The write transaction holds SQLite's one write lock already.
        Ok(sqlx::query_scalar("SELECT id FROM topics WHERE name = $1")
            .bind(name.to_owned())
            .fetch_optional(tx)
            .await?)
    }

    async fn free_below(&self, topic_id: i64, start: u64) -> Result<bool> {
        self.delete_messages(topic_id, db_int(start)?).await
    }

    async fn free_topic(&self, topic_id: i64) -> Result<bool> {
        self.delete_messages(topic_id, i64::MAX).await
    }

    /// Gives free pages beyond the slack back to the file system, a step at a time.
    async fn after_freeing(&self) -> Result<()> {
        loop {
            let (free, pages): (i64, i64) = sqlx::query_as(
                "SELECT f.freelist_count, p.page_count \
                 FROM pragma_freelist_count() AS f, pragma_page_count() AS p",
            )
            .fetch_one(&self.writer)
            .await?;
            if pages_to_vacuum(free, pages) == 0 {
                return Ok(());
            }
            self.written.store(true, Ordering::Relaxed);
            sqlx::query(VACUUM_STEP).execute(&self.writer).await?;
            if pages_to_vacuum(free, pages) <= VACUUM_STEP_PAGES {
                return Ok(());
            }
        }
    }

    async fn close(&self) {
        self.readers.close().await;
        self.writer.close().await;
        // Closed: the directory is free for the next store (a restart within one process).
        drop(self.lock.lock().map(|mut lock| lock.take()));
    }
}

impl SqliteBackend {
    /// Deletes the messages of `topic_id` below `below`, oldest first, [`DELETE_BATCH`] rows
    /// per transaction (appends get the writer in between), at most [`DELETES_PER_PASS`]
    /// times; true once none is left.
    async fn delete_messages(&self, topic_id: i64, below: i64) -> Result<bool> {
        for _ in 0..DELETES_PER_PASS {
            self.written.store(true, Ordering::Relaxed);
            let deleted = sqlx::query(
                "DELETE FROM messages WHERE topic_id = $1 AND log_offset < \
                 min($2, (SELECT min(log_offset) FROM messages WHERE topic_id = $1) + $3)",
            )
            .bind(topic_id)
            .bind(below)
            .bind(DELETE_BATCH)
            .execute(&self.writer)
            .await?;
            if deleted.rows_affected() < DELETE_BATCH as u64 {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Writes a planned append group: small segments' messages in one INSERT with a JSON row per
/// message, each large segment in an INSERT of its own over a JSON array of its payloads
/// (parsed once; a row per message would repeat its ids), then the topics' new ends, byte
/// counts and newest times, the producers' new sequence states, and deletes up to
/// [`DELETES_PER_APPEND`] times as many of its topics' messages below their start as it
/// inserts (`[topic, quota]`). Parameters are numbered (`$N`) across the statements.
async fn write_appends(tx: &mut Transaction<'static, Sqlite>, plan: &AppendPlan) -> Result<()> {
    let ends: Vec<_> = plan
        .topic_ends
        .iter()
        .map(|t| (t.topic_id, t.end, t.added_bytes))
        .collect();
    let (large, small): (Vec<&Segment>, Vec<&Segment>) = plan
        .segments
        .iter()
        .partition(|segment| segment.messages.len() >= LARGE_SEGMENT);
    let small_rows: Vec<_> = small
        .iter()
        .flat_map(|s| {
            (s.base_offset..)
                .zip(&s.messages)
                .map(|(offset, payload)| (s.topic_id, offset, s.producer_id, payload))
        })
        .collect();
    let producers: Vec<_> = plan
        .producers
        .iter()
        .map(|(id, s)| {
            let last = s.last();
            (id, s.next, last.base_offset, last.count, s.recent_json())
        })
        .collect();
    let mut quotas: Vec<(i64, u64)> = Vec::new();
    for segment in &plan.segments {
        let quota = segment.messages.len() as u64 * DELETES_PER_APPEND;
        match quotas.iter_mut().find(|(id, _)| *id == segment.topic_id) {
            Some((_, total)) => *total += quota,
            None => quotas.push((segment.topic_id, quota)),
        }
    }
    let mut sql = String::from(
        "INSERT INTO messages (topic_id, log_offset, producer_id, stored_ms, payload) \
         SELECT value ->> 0, value ->> 1, value ->> 2, $1, value ->> 3 FROM json_each($2); \
         UPDATE topics SET next_offset = u.value ->> 1, \
             end_bytes = end_bytes + (u.value ->> 2), newest_ms = max(newest_ms, $1) \
             FROM json_each($3) AS u WHERE topics.id = u.value ->> 0; \
         UPDATE producers SET next_sequence = u.value ->> 1, \
             last_base_offset = u.value ->> 2, last_count = u.value ->> 3, \
             recent_batches = u.value ->> 4 \
             FROM json_each($4) AS u WHERE producers.id = u.value ->> 0; \
         DELETE FROM messages WHERE rowid IN ( \
             SELECT m.rowid FROM json_each($5) AS d \
             JOIN topics AS t ON t.id = d.value ->> 0 \
             JOIN messages AS m ON m.topic_id = t.id AND m.log_offset < min(t.start_offset, \
                 (SELECT min(log_offset) FROM messages WHERE topic_id = t.id) + (d.value ->> 1)));",
    );
    for i in 0..large.len() {
        let n = 6 + 4 * i;
        sql.push_str(&format!(
            " INSERT INTO messages (topic_id, log_offset, producer_id, stored_ms, payload) \
             SELECT ${n}, ${} + key, ${}, $1, value FROM json_each(${});",
            n + 1,
            n + 2,
            n + 3
        ));
    }
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(db_int(now_ms())?)
        .bind(to_json(&small_rows))
        .bind(to_json(&ends))
        .bind(to_json(&producers))
        .bind(to_json(&quotas));
    for segment in large {
        query = query
            .bind(segment.topic_id)
            .bind(db_int(segment.base_offset)?)
            .bind(db_int(segment.producer_id)?)
            .bind(to_json(&segment.messages));
    }
    query.execute(&mut **tx).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_pages_beyond_the_slack_go_back() {
        assert_eq!(pages_to_vacuum(100, 10_000), 0);
        assert_eq!(pages_to_vacuum(5000, 10_000), 5000 - 4096);
        assert_eq!(pages_to_vacuum(50_000, 100_000), 25_000);
    }
}
