//! The check that lets a SQLite append group go to SQLite's thread once instead of twice.
//!
//! A group planned from rows it read (`BEGIN IMMEDIATE` and the read, then the writes and
//! `COMMIT`) hands over to SQLite's thread twice, each a wake-up on both sides. A group whose
//! topics and producers the groups ahead of it left in a known state ([`Guess::found`]) is
//! planned from that state instead, and its one script opens with a check of it: a statement
//! that raises an error, which stops the script before any write, unless every row is as
//! planned. The broker is SQLite's only writer (its directory lock), so the check fails only
//! after a group ahead failed in a way the line of groups did not see; the group is then
//! rolled back and planned again from the rows it reads.
//!
//! SQLite raises errors from triggers only: each writer connection gets a temporary view
//! whose `INSTEAD OF INSERT` trigger refuses a row that says "not as planned".
//!
//! [`Guess::found`]: super::guess::Guess::found

use super::StoreError;
use super::guess::GroupState;

/// Made on every writer connection when it opens (temporary objects are per connection).
pub const CHECK_SETUP: &str = "\
    CREATE TEMP VIEW IF NOT EXISTS group_check (held) AS SELECT 1; \
    CREATE TEMP TRIGGER IF NOT EXISTS group_check_refuses \
        INSTEAD OF INSERT ON group_check WHEN NOT NEW.held \
    BEGIN \
        SELECT RAISE(ABORT, 'myqueue: an append group''s rows are not as planned'); \
    END;";

/// The error message of [`CHECK_SETUP`]'s trigger.
const REFUSAL: &str = "an append group's rows are not as planned";

/// The check, for a script whose placeholders `topics` and `producers` are bound to
/// [`Expected`]'s JSON arrays.
pub fn check_statement(topics: &str, producers: &str) -> String {
    format!(
        "INSERT INTO temp.group_check (held) SELECT \
             (SELECT count(*) FROM topics t JOIN json_each({topics}) e \
                 ON t.id = e.value ->> 0 AND t.next_offset = e.value ->> 1) \
                 = json_array_length({topics}) \
             AND (SELECT count(*) FROM producers p JOIN json_each({producers}) e \
                 ON p.id = e.value ->> 0 AND p.next_sequence = e.value ->> 1 \
                 AND p.recent_batches = e.value ->> 2) \
                 = json_array_length({producers})"
    )
}

/// What a group's rows must hold, as JSON arrays for [`check_statement`]: `[id, end]` per
/// topic and `[id, next sequence, recent batches]` per sequenced producer.
pub struct Expected {
    pub topics: String,
    pub producers: String,
}

impl Expected {
    /// Every row of `found`: all the topics and sequenced producers of the group it was
    /// found for.
    pub fn new(found: &GroupState) -> Option<Expected> {
        let topics: Vec<(i64, i64)> = found
            .ends
            .iter()
            .map(|(&id, &end)| Some((id, i64::try_from(end).ok()?)))
            .collect::<Option<_>>()?;
        let producers: Vec<(i64, i64, String)> = found
            .producers
            .iter()
            .map(|(&id, state)| {
                Some((
                    i64::try_from(id).ok()?,
                    i64::try_from(state.next).ok()?,
                    state.recent_json(),
                ))
            })
            .collect::<Option<_>>()?;
        Some(Expected {
            topics: serde_json::to_string(&topics).ok()?,
            producers: serde_json::to_string(&producers).ok()?,
        })
    }
}

/// Whether `err` is the check's refusal: nothing was written, the transaction is still open.
pub fn is_refusal(err: &StoreError) -> bool {
    match err {
        StoreError::Unavailable(err) => err
            .as_database_error()
            .is_some_and(|db| db.message().contains(REFUSAL)),
        _ => false,
    }
}
