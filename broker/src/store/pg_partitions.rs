//! How PostgreSQL frees the partitions that retention left below a topic's start, without
//! stalling the topic's appends.
//!
//! `DROP TABLE` of an attached partition locks its parent, the topic's table, in ACCESS
//! EXCLUSIVE mode: it waits for the append group in flight (up to hundreds of milliseconds for
//! a large one), and every append to the topic queues behind it. With several batches in
//! flight a topic has a group in flight nearly all the time, so each drop stalled the topic,
//! and the store outgrew its bound. So freeing takes two steps:
//!
//! 1. [`empty_below`], in the retention pass: `TRUNCATE`, which locks only the partitions it
//!    empties (no append writes below the start), gives their disk space back at commit, and
//!    marks them `emptied`.
//! 2. [`Reaper`], in the background: `DETACH PARTITION … CONCURRENTLY`, which waits for the
//!    transactions that may use the topic's table without holding up new ones, then `DROP
//!    TABLE` of the detached table, which locks only that table. A detach cut off between its
//!    two transactions (the broker was killed, or it gave up waiting) leaves the partition
//!    "pending detach": the next try finishes it with `FINALIZE`. (PostgreSQL 14 or later.)
//!
//! While a detach waits it holds the topic's table in SHARE UPDATE EXCLUSIVE mode, which
//! making a partition (`ATTACH`) needs too; so a detach gives up after [`DETACH_LOCK_TIMEOUT`]
//! rather than hold up the next pass (or an append that makes its own partition: that one
//! holds its topic's appends meanwhile, and waits at most this long, or until PostgreSQL's
//! deadlock detector ends the detach).
//!
//! Table names are made here from numbers only (a topic id and an offset): DDL cannot take
//! bind parameters.

use super::Result;
use super::sql::db_int;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool};
use sqlx::{AssertSqlSafe, Connection};
use std::sync::Arc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How long a detach waits for the transactions using its topic's table before it gives up
/// (and leaves the partition pending detach, finished by a later round).
const DETACH_LOCK_TIMEOUT: &str = "2s";

/// The topic's own table, a partition of `messages` (see migration 0002).
fn topic_table(topic_id: i64) -> String {
    format!("messages_t{topic_id}")
}

/// The topic's partition for the offsets from `first_offset`.
fn partition_table(topic_id: i64, first_offset: i64) -> String {
    format!("messages_t{topic_id}_{first_offset}")
}

/// Empties the topic's partitions that lie wholly below `start`, in one transaction, and
/// marks them for the [`Reaper`]. The newest partition is never taken, even when the start has
/// reached its end: partitions are made after it.
pub async fn empty_below(pool: &PgPool, topic_id: i64, start: u64) -> Result<()> {
    let mut tx = pool.begin().await?;
    // Serialised with the partitions made for the topic (migration 0002).
    sqlx::query("SELECT myqueue_lock_partitions($1)")
        .bind(topic_id)
        .execute(&mut *tx)
        .await?;
    let below: Vec<i64> = sqlx::query_scalar(
        "SELECT first_offset FROM message_partitions \
         WHERE topic_id = $1 AND end_offset <= $2 AND NOT emptied AND first_offset < \
             (SELECT max(first_offset) FROM message_partitions WHERE topic_id = $1) \
         ORDER BY first_offset",
    )
    .bind(topic_id)
    .bind(db_int(start)?)
    .fetch_all(&mut *tx)
    .await?;
    if below.is_empty() {
        return Ok(());
    }
    // TRUNCATE waits for the statements reading these partitions and holds up those that come
    // after it: it gives up rather than wait long, and the next pass tries again.
    sqlx::query("SET LOCAL lock_timeout = '2s'")
        .execute(&mut *tx)
        .await?;
    let tables: Vec<String> = below
        .iter()
        .map(|&first| partition_table(topic_id, first))
        .collect();
    sqlx::query(AssertSqlSafe(format!("TRUNCATE {}", tables.join(", "))))
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE message_partitions SET emptied = true \
         WHERE topic_id = $1 AND first_offset = ANY($2)",
    )
    .bind(topic_id)
    .bind(&below)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Detaches and drops emptied partitions in a task of its own, woken after each retention
/// pass this broker leads: a detach waits for the topic's transactions in flight, which must
/// not delay the next pass.
pub struct Reaper {
    wake: Arc<Notify>,
}

impl Reaper {
    /// The reaper's loop, to spawn; it ends once `stop` is cancelled (a detach cut off then is
    /// finished by a later one). It works on a connection of its own (opened with `options`),
    /// whose `lock_timeout` bounds every wait.
    pub fn new(
        options: PgConnectOptions,
        stop: CancellationToken,
    ) -> (Self, impl Future<Output = ()>) {
        let wake = Arc::new(Notify::new());
        let woken = wake.clone();
        let options = options.options([("lock_timeout", DETACH_LOCK_TIMEOUT)]);
        let run = async move {
            let mut conn: Option<PgConnection> = None;
            while stop.run_until_cancelled(woken.notified()).await.is_some() {
                if let Some(Err(err)) = stop.run_until_cancelled(reap(&options, &mut conn)).await {
                    // The connection may be broken: the next round opens another.
                    conn = None;
                    tracing::warn!(error = %err, "cannot drop emptied partitions yet; retrying after the next pass");
                }
            }
            if let Some(conn) = conn {
                let _ = conn.close().await;
            }
        };
        (Reaper { wake }, run)
    }

    /// Asks for a round (one runs at a time; a request made during a round starts another).
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// Detaches and drops every emptied partition, oldest first (PostgreSQL allows one pending
/// detach per table). A topic whose partition cannot go now is left to the next round; the
/// other topics' go on. A deleted topic's partitions go with its table (`free_topic`).
async fn reap(options: &PgConnectOptions, conn: &mut Option<PgConnection>) -> Result<()> {
    if conn.is_none() {
        *conn = Some(PgConnection::connect_with(options).await?);
    }
    let conn = conn.as_mut().expect("connected above");
    let emptied: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT topic_id, first_offset FROM message_partitions p WHERE emptied \
             AND NOT EXISTS (SELECT 1 FROM dropped_topics d WHERE d.topic_id = p.topic_id) \
         ORDER BY topic_id, first_offset",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut stuck = None;
    for (topic_id, first_offset) in emptied {
        if stuck == Some(topic_id) {
            continue;
        }
        if let Err(err) = detach_and_drop(conn, topic_id, first_offset).await {
            if !err.is_lock_wait_given_up() {
                return Err(err);
            }
            tracing::debug!(topic_id, first_offset, error = %err, "a partition waits for the next round");
            stuck = Some(topic_id);
        }
    }
    Ok(())
}

async fn detach_and_drop(conn: &mut PgConnection, topic_id: i64, first_offset: i64) -> Result<()> {
    let (parent, table) = (
        topic_table(topic_id),
        partition_table(topic_id, first_offset),
    );
    let pending: Option<bool> = sqlx::query_scalar(
        "SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = to_regclass($1)",
    )
    .bind(&table)
    .fetch_optional(&mut *conn)
    .await?;
    // Where the partition stands: attached; pending detach (a detach was cut off before its
    // second transaction); or no longer a partition (detached already, or gone with its topic).
    let detach = match pending {
        Some(false) => Some("CONCURRENTLY"),
        Some(true) => Some("FINALIZE"),
        None => None,
    };
    // Outside a transaction block, as CONCURRENTLY and FINALIZE require.
    if let Some(mode) = detach {
        sqlx::raw_sql(AssertSqlSafe(format!(
            "ALTER TABLE {parent} DETACH PARTITION {table} {mode}"
        )))
        .execute(&mut *conn)
        .await?;
    }
    // Detached, the table is locked by nobody but a reader that began before: short waits.
    let mut tx = conn.begin().await?;
    sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}")))
        .execute(&mut *tx)
        .await?;
    let forgotten = sqlx::query(
        "DELETE FROM message_partitions WHERE topic_id = $1 AND first_offset = $2 AND emptied",
    )
    .bind(topic_id)
    .bind(first_offset)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    if forgotten.rows_affected() != 1 {
        // Another broker's reaper (before a change of leader) got there first: nothing lost.
        tracing::debug!(%table, "emptied partition already forgotten");
    }
    Ok(())
}
