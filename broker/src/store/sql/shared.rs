//! The statements both databases run unchanged: sqlx binds `$N` on SQLite as on PostgreSQL,
//! and these use no syntax the two disagree on. What differs (appends, position moves,
//! fetch, locking) stays in each backend.

use super::super::catalog::{Owner, Role};
use super::super::{ConsumerStart, Result, StoreError, now_ms};
use super::rows::{CursorRow, OwnerRow, TopicEndRow, db_id, db_int};
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

    /// The consumer's position and its topic's end.
    async fn cursor(pool: &Pool<Self>, consumer_id: u64) -> Result<CursorRow>;

    async fn create_topic(conn: &mut Self::Connection, name: &str) -> Result<()>;

    /// Registers a producer, creating its topic if missing.
    async fn register_producer(conn: &mut Self::Connection, topic: &str) -> Result<u64>;

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
    String: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB>,
    Option<String>: Type<DB> + for<'q> Encode<'q, DB>,
    for<'r> OwnerRow: FromRow<'r, DB::Row>,
    for<'r> CursorRow: FromRow<'r, DB::Row>,
    for<'r> TopicEndRow: FromRow<'r, DB::Row>,
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
                "SELECT p.topic_id, t.name AS topic FROM producers p \
                 JOIN topics t ON t.id = p.topic_id WHERE p.id = $1"
            }
            Role::Consumer => {
                "SELECT c.topic_id, t.name AS topic FROM consumers c \
                 JOIN topics t ON t.id = c.topic_id WHERE c.id = $1"
            }
        };
        let row: Option<OwnerRow> = sqlx::query_as(sql).bind(id).fetch_optional(pool).await?;
        Ok(row.map(|row| Owner {
            topic_id: row.topic_id,
            topic: row.topic.into(),
        }))
    }

    async fn list_topics(pool: &Pool<Self>) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT name FROM topics ORDER BY name")
            .fetch_all(pool)
            .await?)
    }

    async fn cursor(pool: &Pool<Self>, consumer_id: u64) -> Result<CursorRow> {
        let id = db_id(consumer_id).ok_or(StoreError::ConsumerNotFound(consumer_id))?;
        sqlx::query_as(
            "SELECT c.id AS consumer_id, c.topic_id, c.position, t.next_offset AS end_offset \
             FROM consumers c JOIN topics t ON t.id = c.topic_id WHERE c.id = $1",
        )
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or(StoreError::ConsumerNotFound(consumer_id))
    }

    async fn create_topic(conn: &mut Self::Connection, name: &str) -> Result<()> {
        let inserted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO topics (name, created_ms) VALUES ($1, $2) \
             ON CONFLICT (name) DO NOTHING RETURNING id",
        )
        .bind(name.to_owned())
        .bind(db_int(now_ms())?)
        .fetch_optional(&mut *conn)
        .await?;
        match inserted {
            Some(_) => Ok(()),
            None => Err(StoreError::TopicExists(name.to_owned())),
        }
    }

    async fn register_producer(conn: &mut Self::Connection, topic: &str) -> Result<u64> {
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
        stored_id(id)
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
