//! The embedded SQLite store, the default: a file under `--data-dir`, nothing to set up.
//!
//! Durability: WAL journal with `synchronous=FULL`, so a commit returns only after the WAL is
//! fsynced; an acknowledged message survives `kill -9` and power loss. SQLite has one writer:
//! all writes go through a single connection, and concurrent appends (and concurrent position
//! changes) are grouped into one transaction each, so one fsync serves many requests. Reads
//! run on a separate pool of read-only connections, concurrently with the writer (WAL).
//!
//! Lists of ids and rows travel as JSON arrays that SQLite unpacks (`json_each`), so each
//! statement's text is fixed (per topic, for those that name a topic's table), prepared once,
//! whatever the size of the group.
//!
//! Each topic's messages live in tables of their own, one per range of offsets
//! (`messages_{topic id}_{first offset}`, see [`super::sqlite_segments`]), keyed by offset as
//! their `INTEGER PRIMARY KEY`: the offset is the row id, so a message is one entry of one
//! b-tree (no separate index to keep). The first segment is made in the transaction that
//! makes the topic; the retention pass makes the next ones. (One `messages` table for all
//! topics, keyed by (topic, offset), cost an index entry per message on every insert and every
//! delete: retention then took a third of the writer's time. An older data directory is moved
//! to tables per topic once, at start: [`split_messages_by_topic`], and a table per topic
//! becomes that topic's first segment: [`name_tables_as_segments`].)
//!
//! Retention frees messages by dropping the segments that lie wholly below a topic's start,
//! each in a write of its own. A deleted topic's segments are dropped the same way. Freed
//! pages are reused by later appends; beyond a slack, incremental auto-vacuum gives them back
//! to the file system, and the WAL is truncated after checkpoints: the files stop growing under
//! steady load.

use super::catalog::Owner;
use super::dir_lock::DirLock;
use super::guess::{GroupState, Guess, Guesses, KnownStateGroups};
use super::plan::{AppendJob, AppendPlan, Segment, TopicEnds, plan_appends};
use super::retention::{Chunk, Log, RetentionConfig};
use super::sql::{
    Backend, CursorRow, FetchRow, LockedRow, MessageRow, SqlStore, db_id, db_int, distinct_ids,
    locked_state, pool_stats, stored_u64,
};
use super::sqlite_check::{self, CHECK_SETUP, Expected};
use super::sqlite_segments::{
    SegmentTable, SegmentTables, parse_segment_table, segment_table, should_close, wholly_below,
};
use super::{
    Appended, FetchLimit, Fetched, OpenError, PoolStats, Result, StoreError, StoredMessage,
    TopicSignals, within_end,
};
use async_trait::async_trait;
use futures_util::TryStreamExt;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteArguments, SqliteConnection};
use sqlx::sqlite::{
    SqliteAutoVacuum, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Arguments, AssertSqlSafe, Connection, Sqlite, Transaction};
use std::collections::BTreeMap;
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
/// WAL pages after which the writer itself checkpoints. The checkpoint task copies pages in
/// between, so the writer finds little left to copy; but SQLite starts the WAL file over only
/// when a writer begins after a checkpoint that caught up with every commit, which under
/// steady writes is this one: the file grows to about this size (41 MB) and is reused.
const WAL_AUTOCHECKPOINT_PAGES: &str = "10000";
/// Rows a reader's SQLite thread sends ahead of the fetch consuming them.
const READER_ROW_BUFFER: usize = 1024;
/// The writer's page cache, in KiB (SQLite's negative `cache_size`).
const WRITER_CACHE_KIB: &str = "-65536";
/// Prepared statements kept per connection: a few per topic, as each topic has its table.
const STATEMENT_CACHE: usize = 1024;
/// How often the checkpoint task copies the WAL into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);
/// The WAL is truncated to this size when a checkpoint lets it start over.
const WAL_SIZE_LIMIT: &str = "67108864";
/// Tries of a fetch whose segments are dropped under it (retention moved the start past
/// them, or the topic was deleted) before it answers that the consumer is gone.
const FETCH_TRIES: usize = 5;
/// The pause before a fetch's second try, growing by as much before each next one.
const FETCH_RETRY_PAUSE: Duration = Duration::from_millis(1);
/// Free pages kept for reuse, at least (16 MiB of 4 KiB pages), beyond which incremental
/// vacuum gives them back; also a quarter of the file.
const FREE_PAGES_KEPT: i64 = 4096;
/// Groups of up to this many messages are planned from the state the groups ahead of them left
/// ([`sqlite_check`]): they are copied first, to be planned again should the check fail. A
/// larger group is planned from what it reads; one more hand-over is little beside its writes.
const KNOWN_STATE_ROWS: usize = 256;
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
    /// Every topic's segment tables, changed only while holding the writer connection.
    segments: SegmentTables,
    /// What the append groups ahead of each one leave ([`sqlite_check`]).
    guesses: Guesses,
    /// Groups planned from known state and stored in one script, and those whose rows were
    /// not as planned.
    known: KnownStateGroups,
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
        super::sqlite_config::configure_once();
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
            .pragma("journal_size_limit", WAL_SIZE_LIMIT)
            .statement_cache_capacity(STATEMENT_CACHE);
        // Migrations run on a connection of their own, without the writer's in-memory
        // temporary storage: migration 0003's VACUUM builds its copy of the database there.
        // A new database is made with incremental auto-vacuum from its first table on. Only
        // this connection says so: setting it is a write, which others would wait for.
        let started = std::time::Instant::now();
        let migrating = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone().auto_vacuum(SqliteAutoVacuum::Incremental))
            .await
            .map_err(OpenError::Connect)?;
        let migrator = sqlx::migrate!("./migrations/sqlite");
        migrator.run(&migrating).await.map_err(OpenError::Migrate)?;
        name_tables_as_segments(&migrating)
            .await
            .map_err(OpenError::SplitByTopic)?;
        split_messages_by_topic(&migrating)
            .await
            .map_err(OpenError::SplitByTopic)?;
        let segments = list_segments(&migrating)
            .await
            .map_err(OpenError::SplitByTopic)?;
        migrating.close().await;
        if started.elapsed() > Duration::from_secs(1) {
            tracing::info!(elapsed = ?started.elapsed(), "SQLite schema brought up to date");
        }
        // Neither pool pings a connection before handing it out: a local file does not go
        // away as a server connection may, and the ping is a hand-over to SQLite's thread and
        // back on every group commit and every read.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .test_before_acquire(false)
            .idle_timeout(None)
            .max_lifetime(None)
            .after_release(|conn, _| Box::pin(replace_if_stuck_in_transaction(conn)))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::raw_sql(CHECK_SETUP).execute(conn).await?;
                    Ok(())
                })
            })
            .connect_with(
                options
                    .clone()
                    // 64 MiB of pages (2 MiB by default): retention's deletes find more of
                    // the oldest pages still in memory instead of reading them back.
                    .pragma("cache_size", WRITER_CACHE_KIB)
                    // Statement journals (a statement's undo within a group's transaction)
                    // stay in memory instead of spilling to temporary files.
                    .pragma("temp_store", "memory"),
            )
            .await
            .map_err(OpenError::Connect)?;
        let readers = SqlitePoolOptions::new()
            .max_connections(READERS)
            .test_before_acquire(false)
            // Back to the pool at once: a reader opens no transaction, and SQLite's thread
            // runs whatever a dropped read left queued before the next one.
            .after_release(|_, _| Box::pin(async { Ok(true) }))
            .connect_with(
                options
                    .clone()
                    .read_only(true)
                    // Rows cross from SQLite's thread to the broker's in batches this large
                    // (sqlx's default is 50): a fetch of thousands of messages then takes a
                    // few hand-overs instead of one per 50 rows.
                    .row_buffer_size(READER_ROW_BUFFER),
            )
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
            segments,
            guesses: Guesses::default(),
            known: Default::default(),
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

/// Makes topic `topic_id`'s segment from offset `first` on, unless it exists.
async fn create_segment_table(
    conn: &mut SqliteConnection,
    topic_id: i64,
    first: u64,
) -> sqlx::Result<()> {
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS {} (\
             log_offset  INTEGER PRIMARY KEY, \
             producer_id INTEGER NOT NULL, \
             stored_ms   INTEGER NOT NULL, \
             payload     TEXT    NOT NULL)",
        segment_table(topic_id, first)
    );
    sqlx::query(AssertSqlSafe(sql))
        .persistent(false)
        .execute(conn)
        .await?;
    Ok(())
}

/// Moves the messages of a database made before tables per topic (all in one `messages`
/// table) into each topic's first segment: once, at start. A topic at a time, each in a
/// transaction of its own (its table made, its messages from its start on copied, its rows in
/// the old table deleted), so that the extra disk space is one topic's at most and a start
/// that is interrupted goes on where it stopped. The old table goes last, with what no topic
/// keeps (messages below a start, and those of topics deleted before).
async fn split_messages_by_topic(pool: &SqlitePool) -> sqlx::Result<()> {
    let shared_table: bool = sqlx::query_scalar(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'messages'",
    )
    .fetch_one(pool)
    .await?;
    if !shared_table {
        return Ok(());
    }
    let topics: Vec<(i64, i64)> =
        sqlx::query_as("SELECT topic_id, start_offset FROM topic_starts ORDER BY topic_id")
            .fetch_all(pool)
            .await?;
    let started = std::time::Instant::now();
    for &(topic_id, start) in &topics {
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        create_segment_table(&mut tx, topic_id, 0).await?;
        let copy = format!(
            "INSERT INTO {} (log_offset, producer_id, stored_ms, payload) \
             SELECT log_offset, producer_id, stored_ms, payload FROM messages \
             WHERE topic_id = $1 AND log_offset >= $2 ORDER BY log_offset",
            segment_table(topic_id, 0)
        );
        sqlx::query(AssertSqlSafe(copy))
            .persistent(false)
            .bind(topic_id)
            .bind(start)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM messages WHERE topic_id = $1")
            .persistent(false)
            .bind(topic_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    sqlx::query("DROP TABLE messages").execute(pool).await?;
    if !topics.is_empty() {
        tracing::info!(topics = topics.len(), elapsed = ?started.elapsed(),
            "SQLite messages moved into a table per topic");
    }
    Ok(())
}

/// Makes each table per topic of a data directory from before segments (`messages_{topic
/// id}`) that topic's first segment, by its name: once, at start. A rename changes the schema
/// only.
async fn name_tables_as_segments(pool: &SqlitePool) -> sqlx::Result<()> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name GLOB 'messages_[0-9]*'",
    )
    .fetch_all(pool)
    .await?;
    for name in names {
        let Some(topic_id) = name
            .strip_prefix("messages_")
            .filter(|id| id.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|id| id.parse::<i64>().ok())
        else {
            continue;
        };
        let rename = format!(
            "ALTER TABLE {name} RENAME TO {}",
            segment_table(topic_id, 0)
        );
        sqlx::query(AssertSqlSafe(rename))
            .persistent(false)
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// Every topic's segments, from the schema.
async fn list_segments(pool: &SqlitePool) -> sqlx::Result<SegmentTables> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name GLOB 'messages_*_*'",
    )
    .fetch_all(pool)
    .await?;
    Ok(SegmentTables::from_table_names(names))
}

/// Whether `err` says that one of topic `topic_id`'s segment tables is missing: dropped by
/// retention or with its deleted topic. (Any other missing table is a fault, and reported as
/// one.)
fn is_missing_table(err: &sqlx::Error, topic_id: i64) -> bool {
    matches!(err, sqlx::Error::Database(db)
        if db.message().strip_prefix("no such table: ")
            .and_then(parse_segment_table)
            .is_some_and(|(topic, _)| topic == topic_id))
}

/// Whether the writer connection may go back to its pool (`false` closes it, and the pool
/// opens a fresh one). sqlx counts the transactions it opened, and its count can be wrong
/// after a failed COMMIT: SQLite rolls a transaction back by itself when a write fails for a
/// full disk or an I/O error, the ROLLBACK that sqlx then sends fails ("no transaction is
/// active"), and sqlx still counts the transaction as open, refusing every later BEGIN on the
/// connection: the broker would never write again, even once space is freed.
///
/// A committed group leaves the count at zero, and the connection goes back at once. Only
/// after a dropped transaction is a round trip needed, so that the ROLLBACK it queued has run.
async fn replace_if_stuck_in_transaction(conn: &mut SqliteConnection) -> sqlx::Result<bool> {
    if !conn.is_in_transaction() {
        return Ok(true);
    }
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
        let tx = self.writer.begin_with(Self::BEGIN_WRITE).await?;
        self.written.store(true, Ordering::Relaxed);
        Ok(tx)
    }

    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";

    async fn write_connection(&self) -> sqlx::Result<PoolConnection<Sqlite>> {
        let conn = self.writer.acquire().await?;
        self.written.store(true, Ordering::Relaxed);
        Ok(conn)
    }

    /// What the group will find: the groups are formed, and committed, one at a time.
    fn guess_group(&self, jobs: &[AppendJob]) -> Guess {
        self.guesses.guess(jobs)
    }

    /// One transaction, one fsync, for a whole group of appends. A small group whose rows the
    /// groups ahead of it left in a known state goes to SQLite's thread once: it is planned
    /// from that state, and its script opens the transaction and checks it
    /// ([`sqlite_check`]). Any other group reads its topics' ends and sequenced producers'
    /// states first, then plans: its transaction opens with the read and commits with the
    /// last write (two hand-overs, not four: at a message at a time each is a tenth of a
    /// millisecond or more). sqlx tracks neither transaction: [`GroupConnection`] closes the
    /// connection if the group stops before its COMMIT.
    async fn append_group(
        &self,
        jobs: Vec<AppendJob>,
        stored_ms: u64,
        guess: Guess,
    ) -> Result<Vec<Result<Appended>>> {
        let mut guess = guess;
        let result = self.store_group(jobs, stored_ms, &mut guess).await;
        if result.is_err() {
            guess.failed();
        }
        guess.turn.done();
        result
    }

    async fn lock_cursors(&self, tx: &mut SqliteConnection, ids: &[u64]) -> Result<Vec<CursorRow>> {
        Ok(sqlx::query_as(
            "SELECT c.id AS consumer_id, c.topic_id, c.position, s.start_offset, \
                 t.next_offset AS end_offset \
             FROM consumers c JOIN topics t ON t.id = c.topic_id \
                 JOIN topic_starts s ON s.topic_id = t.id \
             WHERE c.id IN (SELECT value FROM json_each($1))",
        )
        .bind(to_json(&distinct_ids(ids.iter().copied())))
        .fetch_all(tx)
        .await?)
    }

    /// One read per segment table. CROSS JOIN keeps SQLite from scanning the table in
    /// the outer loop.
    async fn move_and_take(
        &self,
        tx: &mut SqliteConnection,
        positions: &[(u64, u64)],
        taken: &[(i64, u64)],
    ) -> Result<Vec<MessageRow>> {
        if !positions.is_empty() {
            sqlx::query(
                "UPDATE consumers SET position = u.value ->> 1 FROM json_each($1) AS u \
                 WHERE consumers.id = u.value ->> 0",
            )
            .bind(to_json(&positions))
            .execute(&mut *tx)
            .await?;
        }
        // The writer's list of segments: this transaction holds the writer connection.
        let mut offsets_by_table: BTreeMap<(i64, u64), Vec<u64>> = BTreeMap::new();
        for &(topic_id, offset) in taken {
            if let Some(segment) = self.segments.containing(topic_id, offset) {
                offsets_by_table
                    .entry((topic_id, segment))
                    .or_default()
                    .push(offset);
            }
        }
        let mut rows = Vec::with_capacity(taken.len());
        for ((topic_id, segment), offsets) in offsets_by_table {
            let sql = format!(
                "SELECT $1 AS topic_id, m.log_offset, m.payload, m.stored_ms \
                 FROM json_each($2) AS k CROSS JOIN {} AS m ON m.log_offset = k.value",
                segment_table(topic_id, segment)
            );
            let read = sqlx::query_as(AssertSqlSafe(sql))
                .bind(topic_id)
                .bind(to_json(&offsets))
                .fetch_all(&mut *tx)
                .await;
            match read {
                Ok(taken) => rows.extend(taken),
                // Deleted with its topic: nothing to take (the consume answers no message).
                Err(err) if is_missing_table(&err, topic_id) => {}
                Err(err) => return Err(err.into()),
            }
        }
        Ok(rows)
    }

    /// Reads the segment that holds the first message asked for (when `from` is given;
    /// else the newest) in one statement with the topic's start and end and the consumer's
    /// position, then what is left from the next segments, up to that end. Segments never lose
    /// a row, so the reads need no common snapshot: a segment dropped in between (retention
    /// moved the start past it) fails its read, and the fetch starts over.
    async fn fetch(
        &self,
        owner: &Owner,
        consumer_id: u64,
        from: Option<u64>,
        limit: FetchLimit,
    ) -> Result<Fetched> {
        for attempt in 0..FETCH_TRIES {
            if attempt > 0 {
                // The writer unlists a segment before dropping it; a reader that found it
                // gone lets that land before it looks again.
                tokio::time::sleep(FETCH_RETRY_PAUSE * attempt as u32).await;
            }
            if let Some(fetched) = self.try_fetch(owner, consumer_id, from, limit).await? {
                return Ok(fetched);
            }
        }
        // Every try found a segment gone: the topic was deleted since the id was looked up.
        Err(StoreError::ConsumerNotFound(consumer_id))
    }

    /// Makes a new topic's first segment. Called on every registration that may create the
    /// topic: an existing topic that has moved past its first segment (dropped by retention)
    /// must not get it back. (The caller's transaction holds the writer: the list is current.)
    async fn create_topic_storage(&self, tx: &mut SqliteConnection, topic_id: i64) -> Result<()> {
        if self.segments.firsts(topic_id) != [0] {
            return Ok(());
        }
        Ok(create_segment_table(tx, topic_id, 0).await?)
    }

    async fn lock_topic(&self, tx: &mut SqliteConnection, name: &str) -> Result<Option<i64>> {
        // The write transaction holds SQLite's one write lock already.
        Ok(sqlx::query_scalar("SELECT id FROM topics WHERE name = $1")
            .bind(name.to_owned())
            .fetch_optional(tx)
            .await?)
    }

    /// Drops the segments wholly below `start`, oldest first, each in a write of its own.
    async fn free_below(&self, topic_id: i64, start: u64) -> Result<bool> {
        for first in wholly_below(&self.segments.firsts(topic_id), start) {
            self.drop_segment(topic_id, first).await?;
        }
        Ok(true)
    }

    /// Drops every segment of the deleted topic, as the schema lists them.
    async fn free_topic(&self, topic_id: i64) -> Result<bool> {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name GLOB $1",
        )
        .bind(format!("messages_{topic_id}_*"))
        .fetch_all(&self.writer)
        .await?;
        let mut firsts: Vec<u64> = names
            .iter()
            .filter_map(|name| parse_segment_table(name))
            .filter(|&(topic, _)| topic == topic_id)
            .map(|(_, first)| first)
            .collect();
        firsts.sort_unstable();
        for first in firsts {
            self.drop_segment(topic_id, first).await?;
        }
        self.segments.forget(topic_id);
        Ok(true)
    }

    /// Closes each topic's newest segment once it holds about a chunk (see
    /// [`should_close`]): the next appends go to a new one, from the topic's end.
    async fn prepare_appends(&self, topics: &[(i64, Log, Vec<Chunk>)]) -> Result<()> {
        for (topic_id, log, chunks) in topics {
            if should_close(self.segments.newest(*topic_id), log, chunks) {
                self.open_segment(*topic_id).await?;
            }
        }
        Ok(())
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
    /// Makes topic `topic_id`'s next segment, from its end on, and lists it before the writer
    /// connection goes back: the next append goes to it.
    async fn open_segment(&self, topic_id: i64) -> Result<()> {
        let mut conn = self.writer.acquire().await?;
        self.written.store(true, Ordering::Relaxed);
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let topic: Option<(i64, i64)> =
            sqlx::query_as("SELECT next_offset, end_bytes FROM topics WHERE id = $1")
                .bind(topic_id)
                .fetch_optional(&mut *tx)
                .await?;
        // Deleted meanwhile: its segments go with it.
        let Some((end, end_bytes)) = topic else {
            return Ok(());
        };
        let first = stored_u64(end)?;
        if first <= self.segments.newest(topic_id).first {
            return Ok(());
        }
        create_segment_table(&mut tx, topic_id, first).await?;
        tx.commit().await?;
        self.segments.made(
            topic_id,
            SegmentTable {
                first,
                opened_bytes: stored_u64(end_bytes)?,
            },
        );
        Ok(())
    }

    /// Unlists one segment of topic `topic_id`, then drops it, holding the writer connection
    /// (no consume or append runs in between). Unlisted first, so that readers that find it
    /// gone look for the next segment at once; the start has moved past it, so no reader
    /// needs it. A DROP that fails leaves the table unlisted until the next start lists and
    /// drops it. (SQLite frees the table's pages whole, without writing them: `secure_delete`
    /// is off.)
    async fn drop_segment(&self, topic_id: i64, first: u64) -> Result<()> {
        let mut conn = self.writer.acquire().await?;
        self.written.store(true, Ordering::Relaxed);
        self.segments.dropped(topic_id, first);
        let sql = format!("DROP TABLE IF EXISTS {}", segment_table(topic_id, first));
        sqlx::query(AssertSqlSafe(sql))
            .persistent(false)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// One try of [`Backend::fetch`]; `None` when a segment it read was dropped meanwhile.
    async fn try_fetch(
        &self,
        owner: &Owner,
        consumer_id: u64,
        from: Option<u64>,
        limit: FetchLimit,
    ) -> Result<Option<Fetched>> {
        let topic_id = owner.topic_id;
        let guess = match from {
            Some(offset) => self.segments.containing(topic_id, offset),
            None => Some(self.segments.newest(topic_id).first),
        }
        .unwrap_or_else(|| self.segments.firsts(topic_id).first().copied().unwrap_or(0));
        // One statement, one snapshot: the start, the end and the messages of the guessed
        // segment agree. Rows are streamed from SQLite's thread and the stream is dropped once
        // the byte budget is spent: large messages are never all read at once.
        let sql = format!(
            "SELECT s.start_offset, t.next_offset AS end_offset, c.position, \
                 m.log_offset, m.payload, m.stored_ms \
             FROM consumers c JOIN topics t ON t.id = c.topic_id \
                 JOIN topic_starts s ON s.topic_id = t.id \
             LEFT JOIN {} m \
                 ON m.log_offset >= max(coalesce($2, c.position), s.start_offset) \
             WHERE c.id = $1 AND c.topic_id = $4 ORDER BY m.log_offset LIMIT $3",
            segment_table(topic_id, guess)
        );
        let mut rows = sqlx::query_as::<_, FetchRow>(AssertSqlSafe(sql))
            .bind(db_id(consumer_id))
            .bind(from.map(|offset| db_id(offset).unwrap_or(i64::MAX)))
            .bind(i64::try_from(limit.messages).unwrap_or(i64::MAX))
            .bind(topic_id)
            .fetch(&self.readers);
        let first = match rows.try_next().await {
            Ok(first) => first,
            Err(err) if is_missing_table(&err, topic_id) => return Ok(None),
            Err(err) => return Err(err.into()),
        }
        .ok_or(StoreError::ConsumerNotFound(consumer_id))?;
        let (start, end) = (first.start_offset, first.end_offset);
        let from = within_end(&owner.topic, from.unwrap_or(first.position), end)?;
        let mut gathered = Gathered::new(from.max(start), end, limit);
        let mut next = Some(first);
        while let Some(row) = next {
            if !gathered.take(row)? {
                break;
            }
            next = rows.try_next().await?;
        }
        drop(rows);
        // The rest, from the segments that hold it (the guess was another segment, or the
        // messages asked for run into the next one).
        while gathered.wants_more() {
            let Some(segment) = self.segments.containing(topic_id, gathered.next) else {
                return Ok(None);
            };
            let sql = format!(
                "SELECT $1 AS start_offset, $2 AS end_offset, $3 AS position, \
                     log_offset, payload, stored_ms FROM {} \
                 WHERE log_offset >= $3 AND log_offset < $2 ORDER BY log_offset LIMIT $4",
                segment_table(topic_id, segment)
            );
            let taken_before = gathered.messages.len();
            let mut rows = sqlx::query_as::<_, FetchRow>(AssertSqlSafe(sql))
                .bind(db_int(start)?)
                .bind(db_int(end)?)
                .bind(db_int(gathered.next)?)
                .bind(db_int(gathered.wanted())?)
                .fetch(&self.readers);
            loop {
                match rows.try_next().await {
                    Ok(Some(row)) => {
                        if !gathered.take(row)? {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(err) if is_missing_table(&err, topic_id) => return Ok(None),
                    Err(err) => return Err(err.into()),
                }
            }
            if gathered.messages.len() == taken_before && !gathered.full {
                // The segment that should hold the next message does not: it went since. (A
                // full budget took nothing because the next message did not fit: done.)
                return Ok(None);
            }
        }
        Ok(Some(Fetched::new(from, start, gathered.messages, end)))
    }
}

/// A fetch's messages as they are read: consecutive from its first offset, within its limit,
/// up to the topic's end.
struct Gathered {
    /// The offset of the next message to take.
    next: u64,
    end: u64,
    limit: FetchLimit,
    messages: Vec<StoredMessage>,
    bytes: usize,
    /// The limit is reached.
    full: bool,
}

impl Gathered {
    fn new(first: u64, end: u64, limit: FetchLimit) -> Self {
        Gathered {
            next: first,
            end,
            limit,
            messages: Vec::new(),
            bytes: 0,
            full: limit.messages == 0,
        }
    }

    /// Takes the row's message if it is the next one and within the limit; false once no more
    /// is taken from the rows at hand (the limit is reached, they skip a message, or the
    /// segment holds none from the offset asked for).
    fn take(&mut self, row: FetchRow) -> Result<bool> {
        let Some(message) = row.into_message()? else {
            return Ok(false);
        };
        if self.full || message.offset != self.next {
            return Ok(false);
        }
        let bytes = self.bytes + message.payload.len();
        if !self.messages.is_empty() && bytes > self.limit.bytes {
            self.full = true;
            return Ok(false);
        }
        self.bytes = bytes;
        self.next += 1;
        self.messages.push(message);
        self.full = self.messages.len() >= self.limit.messages;
        Ok(!self.full)
    }

    /// Whether messages are still to be read from the next segments.
    fn wants_more(&self) -> bool {
        !self.full && self.next < self.end
    }

    /// How many messages the limit still allows.
    fn wanted(&self) -> u64 {
        (self.limit.messages - self.messages.len()) as u64
    }
}

impl SqliteBackend {
    /// How many append groups planned from known state one script stored, and how many
    /// found their rows changed and were stored the ordinary way.
    pub fn known_state_groups(&self) -> (u64, u64) {
        self.known.counts()
    }

    /// [`Backend::append_group`]'s work: checked from known state when it can be, else read,
    /// planned and written; `guess` learns what the group left.
    async fn store_group(
        &self,
        jobs: Vec<AppendJob>,
        stored_ms: u64,
        guess: &mut Guess,
    ) -> Result<Vec<Result<Appended>>> {
        let stored_ms = db_int(stored_ms)?;
        let mut group = GroupConnection::acquire(&self.writer).await?;
        self.written.store(true, Ordering::Relaxed);
        let rows: usize = jobs.iter().map(|job| job.messages.len()).sum();
        // `found()` waits for the word of the group ahead while this group holds the one
        // writer connection: safe because SQLite's groups run one at a time (no `Overlap`),
        // so the group ahead has ended. With an overlap, it would wait for this connection.
        if rows <= KNOWN_STATE_ROWS
            && let Some(found) = guess.found().await
            && let Some(expected) = Expected::new(&found)
        {
            let plan = plan_appends(
                jobs.clone(),
                TopicEnds::Locked(found.ends.clone()),
                found.producers.clone(),
            );
            let leaves = found.after(&plan.topic_ends, &plan.producers);
            let opening = checked_opening(&expected)?;
            match write_appends_and_commit(
                group.connection(),
                opening,
                &plan,
                stored_ms,
                &self.segments,
            )
            .await
            {
                Ok(()) => {
                    group.committed();
                    guess.certain(leaves);
                    self.known.stored();
                    return Ok(plan.outcomes);
                }
                Err(err) if sqlite_check::is_refusal(&err) => {
                    tracing::warn!(?found, "an append group's rows were not as planned");
                    self.known.changed();
                    sqlx::query("ROLLBACK").execute(group.connection()).await?;
                    guess.wrong();
                }
                Err(err) => return Err(err),
            }
        }
        // Id lists travel as JSON arrays, for `IN (SELECT value FROM json_each($N))`.
        let topic_ids: Vec<i64> = jobs.iter().map(|job| job.topic_id).collect();
        let producer_ids = distinct_ids(
            jobs.iter()
                .filter(|job| job.sequence.is_some())
                .map(|job| job.producer_id),
        );
        // `BEGIN IMMEDIATE` takes the write lock before the read (see `begin_write`).
        let locked: Vec<LockedRow> = sqlx::query_as(
            "BEGIN IMMEDIATE; \
             SELECT 'topic' AS kind, id, next_offset AS next, 0 AS last_base_offset, \
                 0 AS last_count, '' AS recent_batches \
                 FROM topics WHERE id IN (SELECT value FROM json_each($1)) \
             UNION ALL \
             SELECT 'producer', id, next_sequence, last_base_offset, last_count, \
                 recent_batches FROM producers \
                 WHERE id IN (SELECT value FROM json_each($2))",
        )
        .bind(to_json(&topic_ids))
        .bind(to_json(&producer_ids))
        .fetch_all(group.connection())
        .await?;
        let (ends, producers) = locked_state(locked)?;
        let found = GroupState {
            ends: ends.clone(),
            producers: producers.clone(),
        };
        let plan = plan_appends(jobs, TopicEnds::Locked(ends), producers);
        write_appends_and_commit(
            group.connection(),
            Script::default(),
            &plan,
            stored_ms,
            &self.segments,
        )
        .await?;
        group.committed();
        guess.certain(found.after(&plan.topic_ends, &plan.producers));
        Ok(plan.outcomes)
    }
}

/// The start of a checked group's first script: its transaction, and the check.
fn checked_opening(expected: &Expected) -> Result<Script> {
    let mut opening = Script::default();
    let topics = opening.bind(expected.topics.clone())?;
    let producers = opening.bind(expected.producers.clone())?;
    opening.push("BEGIN IMMEDIATE");
    opening.push(&sqlite_check::check_statement(&topics, &producers));
    Ok(opening)
}

/// Writes a planned append group and commits it. Per topic, into its newest segment table:
/// small segments' messages in one INSERT with a JSON row per message, each large segment in
/// an INSERT of its own over a JSON array of its payloads (parsed once; a row per message
/// would repeat its ids). Then, for all topics at once, their new ends, byte counts and newest
/// times, and the producers' new sequence states; then `COMMIT`.
///
/// Each hand-over to SQLite's thread costs a wake-up on each side, and the writer's commit
/// cycle is serial, so statements travel together: a topic's small INSERT in one script, the
/// last topic's with the updates and the COMMIT (a group of one topic and small batches, the
/// common case, is one script). Each script's text depends only on its segment table and
/// shape, so it is prepared once per segment.
///
/// `opening` goes first, in the first script: a checked group's `BEGIN` and check.
async fn write_appends_and_commit(
    conn: &mut SqliteConnection,
    opening: Script,
    plan: &AppendPlan,
    now: i64,
    tables: &SegmentTables,
) -> Result<()> {
    let mut segments_by_topic: BTreeMap<i64, Vec<&Segment>> = BTreeMap::new();
    for segment in &plan.segments {
        segments_by_topic
            .entry(segment.topic_id)
            .or_default()
            .push(segment);
    }
    let last_topic = segments_by_topic.keys().next_back().copied();
    // The script that the COMMIT can ride with: the last one, unless large INSERTs follow it.
    let mut last = opening;
    for (index, (topic_id, segments)) in segments_by_topic.iter().enumerate() {
        if index > 0 {
            last.execute_if_any(conn).await?;
        }
        let table = segment_table(*topic_id, tables.newest(*topic_id).first);
        let large = topic_appends(&mut last, &table, segments, now)?;
        if Some(*topic_id) == last_topic {
            update_ends(&mut last, plan, now)?;
        }
        if !large.is_empty() {
            std::mem::take(&mut last).execute_if_any(conn).await?;
            insert_large(conn, &table, &large, now).await?;
        }
    }
    if last_topic.is_none() {
        // Nothing stored (every batch a retried duplicate); the producers' states still move.
        update_ends(&mut last, plan, now)?;
    }
    last.push("COMMIT");
    last.execute_if_any(conn).await
}

/// Statements sent to SQLite's thread at once, their arguments numbered in order.
#[derive(Default)]
struct Script {
    sql: String,
    arguments: SqliteArguments,
}

impl Script {
    /// Binds `value`; answers its placeholder.
    fn bind<T>(&mut self, value: T) -> Result<String>
    where
        T: for<'q> sqlx::Encode<'q, Sqlite> + sqlx::Type<Sqlite>,
    {
        self.arguments
            .add(value)
            .map_err(|err| StoreError::from(sqlx::Error::Encode(err)))?;
        Ok(format!("${}", self.arguments.len()))
    }

    fn push(&mut self, statement: &str) {
        self.sql.push_str(statement);
        self.sql.push_str(";\n");
    }

    /// Runs the statements, if there are any, and leaves the script empty.
    async fn execute_if_any(&mut self, conn: &mut SqliteConnection) -> Result<()> {
        let Script { sql, arguments } = std::mem::take(self);
        if !sql.is_empty() {
            sqlx::query_with(AssertSqlSafe(sql), arguments)
                .execute(conn)
                .await?;
        }
        Ok(())
    }
}

/// One topic's part of [`write_appends_and_commit`]: its small segments, into `script`, for
/// its segment table `table`. Answers its large segments, for [`insert_large`].
fn topic_appends<'a>(
    script: &mut Script,
    table: &str,
    segments: &[&'a Segment],
    now: i64,
) -> Result<Vec<&'a Segment>> {
    let (large, small): (Vec<&Segment>, Vec<&Segment>) = segments
        .iter()
        .partition(|segment| segment.messages.len() >= LARGE_SEGMENT);
    if !small.is_empty() {
        let rows: Vec<_> = small
            .iter()
            .flat_map(|s| {
                (s.base_offset..)
                    .zip(&s.messages)
                    .map(|(offset, payload)| (offset, s.producer_id, payload))
            })
            .collect();
        let stored = script.bind(now)?;
        let rows = script.bind(to_json(&rows))?;
        script.push(&format!(
            "INSERT INTO {table} (log_offset, producer_id, stored_ms, payload) \
             SELECT value ->> 0, value ->> 1, {stored}, value ->> 2 FROM json_each({rows})"
        ));
    }
    Ok(large)
}

/// The topics' new ends, byte counts and newest times, and the producers' sequence states.
fn update_ends(script: &mut Script, plan: &AppendPlan, now: i64) -> Result<()> {
    let ends: Vec<_> = plan
        .topic_ends
        .iter()
        .map(|t| (t.topic_id, t.end, t.added_bytes))
        .collect();
    let producers: Vec<_> = plan
        .producers
        .iter()
        .map(|(id, s)| {
            let last = s.last();
            (id, s.next, last.base_offset, last.count, s.recent_json())
        })
        .collect();
    let (now, ends, producers) = (
        script.bind(now)?,
        script.bind(to_json(&ends))?,
        script.bind(to_json(&producers))?,
    );
    script.push(&format!(
        "UPDATE topics SET next_offset = u.value ->> 1, \
             end_bytes = end_bytes + (u.value ->> 2), newest_ms = max(newest_ms, {now}) \
             FROM json_each({ends}) AS u WHERE topics.id = u.value ->> 0"
    ));
    script.push(&format!(
        "UPDATE producers SET next_sequence = u.value ->> 1, \
             last_base_offset = u.value ->> 2, last_count = u.value ->> 3, \
             recent_batches = u.value ->> 4 \
             FROM json_each({producers}) AS u WHERE producers.id = u.value ->> 0"
    ));
    Ok(())
}

/// Each large segment of one topic in an INSERT of its own, into its segment table `table`.
async fn insert_large(
    conn: &mut SqliteConnection,
    table: &str,
    large: &[&Segment],
    now: i64,
) -> Result<()> {
    let insert = format!(
        "INSERT INTO {table} (log_offset, producer_id, stored_ms, payload) \
         SELECT $1 + key, $2, $3, value FROM json_each($4)"
    );
    for segment in large {
        sqlx::query(AssertSqlSafe(insert.as_str()))
            .bind(db_int(segment.base_offset)?)
            .bind(db_int(segment.producer_id)?)
            .bind(now)
            .bind(to_json(&segment.messages))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The writer connection of one append group, whose transaction sqlx does not count (it is
/// opened and committed by the group's own statements). A group that stops before its COMMIT
/// (an error, a panic) closes the connection instead of handing it back with the transaction
/// open: closing rolls it back, and the pool opens a fresh one for the next group.
struct GroupConnection {
    conn: PoolConnection<Sqlite>,
    committed: bool,
}

impl GroupConnection {
    async fn acquire(pool: &SqlitePool) -> sqlx::Result<Self> {
        Ok(GroupConnection {
            conn: pool.acquire().await?,
            committed: false,
        })
    }

    fn connection(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }

    /// The COMMIT ran: the connection goes back to the pool.
    fn committed(mut self) {
        self.committed = true;
    }
}

impl Drop for GroupConnection {
    fn drop(&mut self) {
        if !self.committed {
            self.conn.close_on_drop();
        }
    }
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
