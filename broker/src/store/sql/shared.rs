//! The statements both databases run unchanged: sqlx binds `$N` on SQLite as on PostgreSQL,
//! and these use no syntax the two disagree on. What differs (appends, position moves,
//! fetch, locking) stays in each backend.

use super::super::catalog::{Owner, Role};
use super::super::retention::{Chunk, RetentionChange, RetentionSettings};
use super::super::{ConsumerStart, Result, StoreError, now_ms};
use super::rows::{
    ChunkRow, ConsumerRow, CursorRow, OwnerRow, TopicEndRow, TopicRow, db_id, db_int, db_setting,
    stored_setting, topics_with_starts,
};
use async_trait::async_trait;
use sqlx::{Database, Decode, Encode, Executor, FromRow, IntoArguments, Pool, Type};

/// Statements every supported database runs as written; implemented once, below, for any
/// sqlx database that can bind and read the types they use.
#[async_trait]
pub trait SharedSql: Database {
    async fn ping(pool: &Pool<Self>) -> Result<()>;

    /// The topic `id` is registered to, if the id exists.
    async fn find_owner(pool: &Pool<Self>, role: Role, id: u64) -> Result<Option<Owner>>;

    async fn list_topics(pool: &Pool<Self>) -> Result<Vec<String>>;

    /// The consumer's position and its topic's start and end.
    async fn cursor(pool: &Pool<Self>, consumer_id: u64) -> Result<CursorRow>;

    /// Creates the topic; its id.
    async fn create_topic(
        conn: &mut Self::Connection,
        name: &str,
        settings: RetentionSettings,
    ) -> Result<i64>;

    /// The topic named `name`, if it exists.
    async fn topic(pool: &Pool<Self>, name: &str) -> Result<Option<TopicRow>>;

    /// Every topic (for a retention pass).
    async fn topics(pool: &Pool<Self>) -> Result<Vec<TopicRow>>;

    /// The consumers of a topic, by id.
    async fn consumers_of(pool: &Pool<Self>, topic_id: i64) -> Result<Vec<ConsumerRow>>;

    /// Changes a topic's retention settings; false if there is no such topic.
    async fn set_retention(
        conn: &mut Self::Connection,
        name: &str,
        change: RetentionChange,
    ) -> Result<bool>;

    /// Deletes a topic's rows (its messages are freed later: the topic is remembered in
    /// `dropped_topics` until they are). The topic row must be locked.
    async fn delete_topic_rows(conn: &mut Self::Connection, topic_id: i64) -> Result<()>;

    /// Topics deleted whose messages are not freed yet.
    async fn dropped_topics(pool: &Pool<Self>) -> Result<Vec<i64>>;

    /// A deleted topic's messages are freed.
    async fn forget_dropped(conn: &mut Self::Connection, topic_id: i64) -> Result<()>;

    /// Every topic's chunks, by topic and offset.
    async fn chunks(pool: &Pool<Self>) -> Result<Vec<ChunkRow>>;

    /// Writes a topic's chunk (a new one, or its newest one extended), if the topic exists.
    async fn write_chunk(conn: &mut Self::Connection, topic_id: i64, chunk: &Chunk) -> Result<()>;

    /// Moves a topic's start forward (never back), and forgets the chunks below it.
    async fn advance_start(
        conn: &mut Self::Connection,
        topic_id: i64,
        start: u64,
        start_bytes: u64,
    ) -> Result<()>;

    /// Registers a producer, creating its topic if missing: the producer's id and the topic's.
    async fn register_producer(conn: &mut Self::Connection, topic: &str) -> Result<(u64, i64)>;

    /// Registers a consumer at `start` of `topic`; a known `(topic, group)` keeps its id and
    /// position.
    async fn register_consumer(
        conn: &mut Self::Connection,
        topic: &str,
        group: Option<&str>,
        start: ConsumerStart,
    ) -> Result<u64>;
}

#[async_trait]
impl<DB> SharedSql for DB
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    i64: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB>,
    bool: Type<DB> + for<'q> Encode<'q, DB>,
    Option<i64>: Type<DB> + for<'q> Encode<'q, DB>,
    String: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB>,
    Option<String>: Type<DB> + for<'q> Encode<'q, DB>,
    for<'r> OwnerRow: FromRow<'r, DB::Row>,
    for<'r> CursorRow: FromRow<'r, DB::Row>,
    for<'r> TopicEndRow: FromRow<'r, DB::Row>,
    for<'r> TopicRow: FromRow<'r, DB::Row>,
    for<'r> ChunkRow: FromRow<'r, DB::Row>,
    for<'r> ConsumerRow: FromRow<'r, DB::Row>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
    for<'r> (String,): FromRow<'r, DB::Row>,
{
    async fn ping(pool: &Pool<Self>) -> Result<()> {
        sqlx::query("SELECT 1").execute(pool).await?;
        Ok(())
    }

    async fn find_owner(pool: &Pool<Self>, role: Role, id: u64) -> Result<Option<Owner>> {
        let Some(id) = db_id(id) else {
            return Ok(None);
        };
        let sql = match role {
            Role::Producer => {
                "SELECT p.topic_id, t.name AS topic, t.retention_bytes FROM producers p \
                 JOIN topics t ON t.id = p.topic_id WHERE p.id = $1"
            }
            Role::Consumer => {
                "SELECT c.topic_id, t.name AS topic, t.retention_bytes FROM consumers c \
                 JOIN topics t ON t.id = c.topic_id WHERE c.id = $1"
            }
        };
        let row: Option<OwnerRow> = sqlx::query_as(sql).bind(id).fetch_optional(pool).await?;
        row.map(|row| {
            Ok(Owner {
                topic_id: row.topic_id,
                topic: row.topic.into(),
                retention_bytes: stored_setting(row.retention_bytes)?,
            })
        })
        .transpose()
    }

    async fn list_topics(pool: &Pool<Self>) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT name FROM topics ORDER BY name")
            .fetch_all(pool)
            .await?)
    }

    async fn cursor(pool: &Pool<Self>, consumer_id: u64) -> Result<CursorRow> {
        let id = db_id(consumer_id).ok_or(StoreError::ConsumerNotFound(consumer_id))?;
        sqlx::query_as(
            "SELECT c.id AS consumer_id, c.topic_id, c.position, s.start_offset, \
                 t.next_offset AS end_offset \
             FROM consumers c JOIN topics t ON t.id = c.topic_id \
                 JOIN topic_starts s ON s.topic_id = t.id \
             WHERE c.id = $1",
        )
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or(StoreError::ConsumerNotFound(consumer_id))
    }

    async fn create_topic(
        conn: &mut Self::Connection,
        name: &str,
        settings: RetentionSettings,
    ) -> Result<i64> {
        let inserted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO topics (name, created_ms, retention_ms, retention_bytes) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING RETURNING id",
        )
        .bind(name.to_owned())
        .bind(db_int(now_ms())?)
        .bind(db_setting(settings.ms)?)
        .bind(db_setting(settings.bytes)?)
        .fetch_optional(&mut *conn)
        .await?;
        inserted.ok_or_else(|| StoreError::TopicExists(name.to_owned()))
    }

    async fn topic(pool: &Pool<Self>, name: &str) -> Result<Option<TopicRow>> {
        let sql = concat!("SELECT ", topics_with_starts!(), " WHERE t.name = $1");
        Ok(sqlx::query_as(sql)
            .bind(name.to_owned())
            .fetch_optional(pool)
            .await?)
    }

    async fn topics(pool: &Pool<Self>) -> Result<Vec<TopicRow>> {
        let sql = concat!("SELECT ", topics_with_starts!(), " ORDER BY t.id");
        Ok(sqlx::query_as(sql).fetch_all(pool).await?)
    }

    async fn consumers_of(pool: &Pool<Self>, topic_id: i64) -> Result<Vec<ConsumerRow>> {
        Ok(sqlx::query_as(
            "SELECT id, group_name, position FROM consumers WHERE topic_id = $1 ORDER BY id",
        )
        .bind(topic_id)
        .fetch_all(pool)
        .await?)
    }

    async fn set_retention(
        conn: &mut Self::Connection,
        name: &str,
        change: RetentionChange,
    ) -> Result<bool> {
        let updated: Option<i64> = sqlx::query_scalar(
            "UPDATE topics SET \
                 retention_ms = CASE WHEN $2 THEN $3 ELSE retention_ms END, \
                 retention_bytes = CASE WHEN $4 THEN $5 ELSE retention_bytes END \
             WHERE name = $1 RETURNING id",
        )
        .bind(name.to_owned())
        .bind(change.ms.is_some())
        .bind(db_setting(change.ms.flatten())?)
        .bind(change.bytes.is_some())
        .bind(db_setting(change.bytes.flatten())?)
        .fetch_optional(&mut *conn)
        .await?;
        Ok(updated.is_some())
    }

    async fn delete_topic_rows(conn: &mut Self::Connection, topic_id: i64) -> Result<()> {
        sqlx::query("INSERT INTO dropped_topics (topic_id, dropped_ms) VALUES ($1, $2)")
            .bind(topic_id)
            .bind(db_int(now_ms())?)
            .execute(&mut *conn)
            .await?;
        for sql in [
            "DELETE FROM consumers WHERE topic_id = $1",
            "DELETE FROM producers WHERE topic_id = $1",
            "DELETE FROM chunks WHERE topic_id = $1",
            "DELETE FROM topics WHERE id = $1",
        ] {
            sqlx::query(sql).bind(topic_id).execute(&mut *conn).await?;
        }
        Ok(())
    }

    async fn dropped_topics(pool: &Pool<Self>) -> Result<Vec<i64>> {
        Ok(
            sqlx::query_scalar("SELECT topic_id FROM dropped_topics ORDER BY topic_id")
                .fetch_all(pool)
                .await?,
        )
    }

    async fn forget_dropped(conn: &mut Self::Connection, topic_id: i64) -> Result<()> {
        sqlx::query("DELETE FROM dropped_topics WHERE topic_id = $1")
            .bind(topic_id)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    async fn chunks(pool: &Pool<Self>) -> Result<Vec<ChunkRow>> {
        Ok(sqlx::query_as(
            "SELECT topic_id, first_offset, end_offset, first_bytes, end_bytes, opened_ms, \
                 newest_ms \
             FROM chunks ORDER BY topic_id, first_offset",
        )
        .fetch_all(pool)
        .await?)
    }

    async fn write_chunk(conn: &mut Self::Connection, topic_id: i64, chunk: &Chunk) -> Result<()> {
        // INSERT … SELECT needs its WHERE before ON CONFLICT for SQLite to parse it.
        sqlx::query(
            "INSERT INTO chunks (topic_id, first_offset, end_offset, first_bytes, end_bytes, \
                 opened_ms, newest_ms) \
             SELECT id, $2, $3, $4, $5, $6, $7 FROM topics WHERE id = $1 \
             ON CONFLICT (topic_id, first_offset) DO UPDATE SET \
                 end_offset = excluded.end_offset, end_bytes = excluded.end_bytes, \
                 newest_ms = excluded.newest_ms",
        )
        .bind(topic_id)
        .bind(db_int(chunk.first)?)
        .bind(db_int(chunk.end)?)
        .bind(db_int(chunk.first_bytes)?)
        .bind(db_int(chunk.end_bytes)?)
        .bind(db_int(chunk.opened_ms)?)
        .bind(db_int(chunk.newest_ms)?)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn advance_start(
        conn: &mut Self::Connection,
        topic_id: i64,
        start: u64,
        start_bytes: u64,
    ) -> Result<()> {
        let start = db_int(start)?;
        sqlx::query(
            "UPDATE topic_starts SET start_offset = $2, start_bytes = $3 \
             WHERE topic_id = $1 AND start_offset < $2",
        )
        .bind(topic_id)
        .bind(start)
        .bind(db_int(start_bytes)?)
        .execute(&mut *conn)
        .await?;
        sqlx::query("DELETE FROM chunks WHERE topic_id = $1 AND end_offset <= $2")
            .bind(topic_id)
            .bind(start)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    async fn register_producer(conn: &mut Self::Connection, topic: &str) -> Result<(u64, i64)> {
        let now = db_int(now_ms())?;
        // Two statements, not one: under READ COMMITTED (PostgreSQL) the SELECT sees a topic
        // that a concurrent registration, maybe on another broker, committed while we waited.
        sqlx::query(
            "INSERT INTO topics (name, created_ms) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(topic.to_owned())
        .bind(now)
        .execute(&mut *conn)
        .await?;
        let topic_id: i64 = sqlx::query_scalar("SELECT id FROM topics WHERE name = $1")
            .bind(topic.to_owned())
            .fetch_one(&mut *conn)
            .await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO producers (topic_id, created_ms) VALUES ($1, $2) RETURNING id",
        )
        .bind(topic_id)
        .bind(now)
        .fetch_one(&mut *conn)
        .await?;
        Ok((stored_id(id)?, topic_id))
    }

    async fn register_consumer(
        conn: &mut Self::Connection,
        topic: &str,
        group: Option<&str>,
        start: ConsumerStart,
    ) -> Result<u64> {
        let topic_row: TopicEndRow =
            sqlx::query_as("SELECT id, next_offset FROM topics WHERE name = $1")
                .bind(topic.to_owned())
                .fetch_optional(&mut *conn)
                .await?
                .ok_or_else(|| StoreError::TopicNotFound(topic.to_owned()))?;
        let topic_id = topic_row.id;
        // The end as this transaction reads it: under SQLite's write lock no append lands in
        // between; on PostgreSQL it is the end as committed when the registration runs.
        let position = match start {
            ConsumerStart::Beginning => 0,
            ConsumerStart::End => topic_row.next_offset,
        };
        // An anonymous consumer (NULL group) never conflicts: each registration is new.
        let inserted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO consumers (topic_id, group_name, created_ms, position) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (topic_id, group_name) DO NOTHING RETURNING id",
        )
        .bind(topic_id)
        .bind(group.map(str::to_owned))
        .bind(db_int(now_ms())?)
        .bind(position)
        .fetch_optional(&mut *conn)
        .await?;
        let id = match inserted {
            Some(id) => id,
            None => {
                sqlx::query_scalar(
                    "SELECT id FROM consumers WHERE topic_id = $1 AND group_name = $2",
                )
                .bind(topic_id)
                .bind(group.map(str::to_owned))
                .fetch_one(&mut *conn)
                .await?
            }
        };
        stored_id(id)
    }
}

/// An id the database handed out (identity / AUTOINCREMENT: always positive).
fn stored_id(id: i64) -> Result<u64> {
    u64::try_from(id).map_err(|_| StoreError::Internal(format!("the database gave id {id}")))
}
