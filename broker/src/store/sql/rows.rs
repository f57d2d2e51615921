//! Rows as the SQL stores read them, decoded by column name, and the checked conversions
//! between the databases' signed BIGINTs and the API's unsigned numbers.

use super::super::plan::{Cursor, PositionOutcome, Positioned};
use super::super::retention::{Chunk, Log, RetentionSettings};
use super::super::sequence::ProducerSequence;
use super::super::{ConsumerInfo, Result, StoreError, StoredMessage};
use sqlx::error::BoxDynError;
use sqlx::postgres::PgHasArrayType;
use sqlx::{Decode, Postgres, Sqlite, Type};
use std::collections::HashMap;

/// A number for a BIGINT column. Offsets, counts and sequence numbers the broker computed
/// never come near 2^63; one that did would be a bug, refused rather than wrapped.
pub fn db_int(value: u64) -> Result<i64> {
    i64::try_from(value)
        .map_err(|_| StoreError::Internal(format!("{value} does not fit a BIGINT column")))
}

/// A stored BIGINT that must not be negative (an offset, a time).
pub fn stored_u64(value: i64) -> Result<u64> {
    u64::try_from(value).map_err(|_| StoreError::Internal(format!("stored value {value} < 0")))
}

/// A nullable stored BIGINT that must not be negative (a retention setting).
pub fn stored_setting(value: Option<i64>) -> Result<Option<u64>> {
    value.map(stored_u64).transpose()
}

/// A setting for a nullable BIGINT column.
pub fn db_setting(value: Option<u64>) -> Result<Option<i64>> {
    value.map(db_int).transpose()
}

/// An id from a client as a BIGINT: an id past 2^63 cannot exist.
pub fn db_id(id: u64) -> Option<i64> {
    i64::try_from(id).ok()
}

/// Sorted, distinct BIGINT ids: locks are always taken in id order (an id past 2^63 cannot
/// exist and is left out).
pub fn distinct_ids(ids: impl IntoIterator<Item = u64>) -> Vec<i64> {
    let mut ids: Vec<i64> = ids.into_iter().filter_map(db_id).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The topic a producer or consumer id is registered to.
#[derive(sqlx::FromRow)]
pub struct OwnerRow {
    pub topic_id: i64,
    pub topic: String,
    pub retention_bytes: Option<i64>,
}

/// A topic's id and end, as a registration reads them.
#[derive(sqlx::FromRow)]
pub struct TopicEndRow {
    pub id: i64,
    pub next_offset: i64,
}

/// A consumer's position and its topic's start and end.
#[derive(sqlx::FromRow)]
pub struct CursorRow {
    #[sqlx(try_from = "i64")]
    pub consumer_id: u64,
    pub topic_id: i64,
    #[sqlx(try_from = "i64")]
    pub position: u64,
    #[sqlx(try_from = "i64")]
    pub start_offset: u64,
    #[sqlx(try_from = "i64")]
    pub end_offset: u64,
}

impl CursorRow {
    pub fn into_pair(self) -> (u64, Cursor) {
        let cursor = Cursor {
            topic_id: self.topic_id,
            position: self.position,
            start: self.start_offset,
            end: self.end_offset,
        };
        (self.consumer_id, cursor)
    }

    /// Messages after the position.
    pub fn size(&self) -> u64 {
        self.end_offset
            .saturating_sub(self.position.max(self.start_offset))
    }
}

/// A topic's row: its log and its retention settings.
#[derive(sqlx::FromRow)]
pub struct TopicRow {
    pub id: i64,
    pub name: String,
    #[sqlx(try_from = "i64")]
    pub start_offset: u64,
    #[sqlx(try_from = "i64")]
    pub next_offset: u64,
    #[sqlx(try_from = "i64")]
    pub start_bytes: u64,
    #[sqlx(try_from = "i64")]
    pub end_bytes: u64,
    #[sqlx(try_from = "i64")]
    pub newest_ms: u64,
    pub retention_ms: Option<i64>,
    pub retention_bytes: Option<i64>,
    #[sqlx(try_from = "i64")]
    pub created_ms: u64,
}

impl TopicRow {
    pub fn log(&self) -> Log {
        Log {
            start: self.start_offset,
            end: self.next_offset,
            start_bytes: self.start_bytes,
            end_bytes: self.end_bytes,
            newest_ms: self.newest_ms,
        }
    }

    pub fn settings(&self) -> Result<RetentionSettings> {
        Ok(RetentionSettings {
            ms: stored_setting(self.retention_ms)?,
            bytes: stored_setting(self.retention_bytes)?,
        })
    }
}

/// The columns of [`TopicRow`] and the tables they come from, for `SELECT` statements built
/// with `concat!` (`t`: the topic, `s`: its start).
macro_rules! topics_with_starts {
    () => {
        "t.id, t.name, s.start_offset, t.next_offset, s.start_bytes, t.end_bytes, t.newest_ms, \
         t.retention_ms, t.retention_bytes, t.created_ms \
         FROM topics t JOIN topic_starts s ON s.topic_id = t.id"
    };
}
pub(crate) use topics_with_starts;

/// A chunk of a topic's log (see [`Chunk`]).
#[derive(sqlx::FromRow)]
pub struct ChunkRow {
    pub topic_id: i64,
    #[sqlx(try_from = "i64")]
    pub first_offset: u64,
    #[sqlx(try_from = "i64")]
    pub end_offset: u64,
    #[sqlx(try_from = "i64")]
    pub first_bytes: u64,
    #[sqlx(try_from = "i64")]
    pub end_bytes: u64,
    #[sqlx(try_from = "i64")]
    pub opened_ms: u64,
    #[sqlx(try_from = "i64")]
    pub newest_ms: u64,
}

impl ChunkRow {
    pub fn chunk(&self) -> Chunk {
        Chunk {
            first: self.first_offset,
            end: self.end_offset,
            first_bytes: self.first_bytes,
            end_bytes: self.end_bytes,
            opened_ms: self.opened_ms,
            newest_ms: self.newest_ms,
        }
    }
}

/// A consumer as `describe_topic` lists it.
#[derive(sqlx::FromRow)]
pub struct ConsumerRow {
    #[sqlx(try_from = "i64")]
    pub id: u64,
    pub group_name: Option<String>,
    #[sqlx(try_from = "i64")]
    pub position: u64,
}

impl ConsumerRow {
    pub fn info(self, log: &Log) -> ConsumerInfo {
        ConsumerInfo {
            id: self.id,
            lag: log.after(self.position),
            group: self.group_name,
            position: self.position,
        }
    }
}

/// A row of what an append group locks before it plans: a topic's end, or a producer's
/// sequence state (`kind` says which; a topic row has zeros in the producer columns).
#[derive(sqlx::FromRow)]
pub struct LockedRow {
    pub kind: String,
    pub id: i64,
    #[sqlx(try_from = "i64")]
    pub next: u64,
    #[sqlx(try_from = "i64")]
    pub last_base_offset: u64,
    #[sqlx(try_from = "i64")]
    pub last_count: u64,
    /// See [`ProducerSequence::recent_json`].
    pub recent_batches: String,
}

/// `kind` of a [`LockedRow`] that holds a topic's end.
pub const TOPIC_ROW: &str = "topic";

/// The topics' ends and the producers' states that an append group planned from.
pub fn locked_state(
    rows: Vec<LockedRow>,
) -> Result<(HashMap<i64, u64>, HashMap<u64, ProducerSequence>)> {
    let mut ends = HashMap::new();
    let mut producers = HashMap::new();
    for row in rows {
        if row.kind == TOPIC_ROW {
            ends.insert(row.id, row.next);
        } else if let Ok(id) = u64::try_from(row.id) {
            let sequence = ProducerSequence::from_row(
                row.next,
                row.last_base_offset,
                row.last_count,
                &row.recent_batches,
            )
            .ok_or_else(|| {
                StoreError::Internal(format!(
                    "producer {id}'s recent_batches cannot be read: {:?}",
                    row.recent_batches
                ))
            })?;
            producers.insert(id, sequence);
        }
    }
    Ok((ends, producers))
}

/// A stored message with its topic.
#[derive(sqlx::FromRow)]
pub struct MessageRow {
    pub topic_id: i64,
    #[sqlx(try_from = "i64")]
    pub log_offset: u64,
    pub payload: Payload,
    #[sqlx(try_from = "i64")]
    pub stored_ms: u64,
}

impl MessageRow {
    pub fn into_message(self) -> StoredMessage {
        StoredMessage {
            offset: self.log_offset,
            payload: self.payload.0,
            timestamp_ms: self.stored_ms,
        }
    }
}

/// A fetch's answer row: the topic's start and end and the consumer's position, with one
/// message, or with none (the LEFT JOIN found no message).
#[derive(sqlx::FromRow)]
pub struct FetchRow {
    #[sqlx(try_from = "i64")]
    pub start_offset: u64,
    #[sqlx(try_from = "i64")]
    pub end_offset: u64,
    #[sqlx(try_from = "i64")]
    pub position: u64,
    pub log_offset: Option<i64>,
    pub payload: Option<Payload>,
    pub stored_ms: Option<i64>,
}

impl FetchRow {
    pub fn into_message(self) -> Result<Option<StoredMessage>> {
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

/// A PostgreSQL fetch's answer (`FETCH` in `store/pg_fetch_sql.rs`): the topic's start and
/// end and the consumer's position, with the messages in range as arrays of one element each
/// (all three NULL when there is none).
#[derive(sqlx::FromRow)]
pub struct FetchArraysRow {
    #[sqlx(try_from = "i64")]
    pub start_offset: u64,
    #[sqlx(try_from = "i64")]
    pub end_offset: u64,
    #[sqlx(try_from = "i64")]
    pub position: u64,
    pub offsets: Option<Vec<i64>>,
    pub payloads: Option<Vec<Payload>>,
    pub stored: Option<Vec<i64>>,
}

impl FetchArraysRow {
    /// The messages, in offset order.
    pub fn messages(&mut self) -> Result<Vec<StoredMessage>> {
        let offsets = self.offsets.take().unwrap_or_default();
        let payloads = self.payloads.take().unwrap_or_default();
        let stored = self.stored.take().unwrap_or_default();
        if offsets.len() != payloads.len() || offsets.len() != stored.len() {
            return Err(StoreError::Internal(format!(
                "a fetch answered {} offsets, {} payloads and {} times",
                offsets.len(),
                payloads.len(),
                stored.len()
            )));
        }
        let mut messages = (offsets.into_iter().zip(payloads).zip(stored))
            .map(|((offset, payload), stored_ms)| {
                Ok(StoredMessage {
                    offset: stored_u64(offset)?,
                    payload: payload.0,
                    timestamp_ms: stored_u64(stored_ms)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // An aggregate keeps the order its input came in, which SQL does not promise.
        messages.sort_by_key(|message| message.offset); // linear when in order already
        Ok(messages)
    }
}

/// A payload as stored: TEXT in SQLite; BYTEA in PostgreSQL, whose TEXT cannot hold U+0000
/// (valid in a message). The broker wrote it from a `String`, so it is UTF-8; a row written
/// by hand with invalid bytes is shown with replacement characters, not dropped.
pub struct Payload(pub String);

impl Type<Sqlite> for Payload {
    fn type_info() -> sqlx::sqlite::SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
}

impl<'r> Decode<'r, Sqlite> for Payload {
    fn decode(value: sqlx::sqlite::SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Payload(<String as Decode<Sqlite>>::decode(value)?))
    }
}

impl Type<Postgres> for Payload {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <Vec<u8> as Type<Postgres>>::type_info()
    }
}

impl<'r> Decode<'r, Postgres> for Payload {
    fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, BoxDynError> {
        let bytes = <&[u8] as Decode<Postgres>>::decode(value)?;
        Ok(Payload(payload_text(bytes)))
    }
}

/// `bytea[]`, for a fetch's payloads as one array.
impl PgHasArrayType for Payload {
    fn array_type_info() -> sqlx::postgres::PgTypeInfo {
        <Vec<u8> as PgHasArrayType>::array_type_info()
    }
}

/// A stored payload's text, invalid bytes replaced. The check alone comes first:
/// `from_utf8_lossy` walks the bytes in chunks at several times its cost, which a drain paid
/// for every message.
fn payload_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// A position group's answers: each outcome with the message it took, if any, found among
/// the rows read in the group's transaction.
pub fn answer_positions(outcomes: Vec<PositionOutcome>, taken: Vec<MessageRow>) -> Vec<Positioned> {
    // Two consumers of one topic may take the same offset in one group: look up, not remove.
    let taken: HashMap<(i64, u64), StoredMessage> = taken
        .into_iter()
        .map(|row| ((row.topic_id, row.log_offset), row.into_message()))
        .collect();
    outcomes
        .into_iter()
        .map(|outcome| {
            let message = outcome.taken().and_then(|key| taken.get(&key).cloned());
            Positioned::new(outcome, message)
        })
        .collect()
}

/// The (topic id, offset) pairs a position group took, to read them back.
pub fn taken_keys(outcomes: &[PositionOutcome]) -> Vec<(i64, u64)> {
    outcomes.iter().filter_map(PositionOutcome::taken).collect()
}

#[cfg(test)]
mod tests {
    use super::payload_text;

    #[test]
    fn a_payload_is_its_text_and_invalid_bytes_are_replaced() {
        assert_eq!(
            payload_text("log line é \u{0}".as_bytes()),
            "log line é \u{0}"
        );
        assert_eq!(payload_text(b"ok \xff end"), "ok \u{FFFD} end");
        assert_eq!(payload_text(b""), "");
    }
}
