//! The statements that end a PostgreSQL append group: one round trip bumps the topics' ends,
//! inserts the messages, records the producers' sequence state and announces the topics.
//!
//! Two forms serve any group ([`group_statement`]): their columns are arrays, one element per
//! topic or producer. Most groups are plain produces to one topic, or the one-trip group of a
//! producer sending as messages come (one topic, one sequenced producer, checked), and for
//! those the one-topic forms ([`ONE_TOPIC`], [`ONE_TOPIC_CHECKED`]) bind the topic and
//! producer as scalars. A group planned under lock with a sequenced producer keeps the array
//! form. The array forms' joins of `UNNEST`ed columns and, in the checked form, the sorted
//! locking subqueries cost PostgreSQL's backend as much as the rest of the statement: one
//! message's checked group took 325 µs of the backend's CPU in the array form and 200 µs in the
//! one-topic form (docs/BENCHMARKS.md, "one-topic append statements on PostgreSQL").

use std::sync::LazyLock;

/// The statement that ends an append group, with the messages or without them (they went in
/// by `COPY`). Both forms take the same parameters; without the messages, `$4`–`$7` are bound
/// empty and unused (sqlx sends their types, so PostgreSQL need not infer them). `$17` holds
/// each topic's largest payload in the group, which raises the topic's `largest_payload`
/// (the fetch's shortcut past its byte count relies on it).
///
/// `checked`: the group was planned from the state the groups ahead of it left
/// ([`super::postgres::PgBackend::append_known`]), not from rows it locked, and runs as its
/// own transaction. The statement first locks its producers, then its topics (in id order, as
/// `lock_statement` does), each only if its row is as planned (`$18`: the topics' ends
/// before the group, `$19`, `$20`: the producers' states); unless every row is, it changes
/// nothing and answers no rows.
fn group_statement(with_messages: bool, checked: bool) -> String {
    let (held, if_held) = match checked {
        true => (
            "held_producers AS MATERIALIZED ( \
                 SELECT p.id FROM producers p \
                 JOIN UNNEST($8::bigint[], $19::bigint[], $20::text[]) \
                     AS e(id, next_sequence, recent_batches) ON p.id = e.id \
                 WHERE p.next_sequence = e.next_sequence \
                     AND p.recent_batches = e.recent_batches \
                 ORDER BY p.id FOR NO KEY UPDATE OF p \
             ), held_topics AS MATERIALIZED ( \
                 SELECT t.id FROM topics t \
                 JOIN UNNEST($1::bigint[], $18::bigint[]) AS e(id, next_offset) \
                     ON t.id = e.id \
                 WHERE t.next_offset = e.next_offset \
                 ORDER BY t.id FOR NO KEY UPDATE OF t \
             ), held AS ( \
                 SELECT (SELECT count(*) FROM held_producers) = cardinality($8::bigint[]) \
                     AND (SELECT count(*) FROM held_topics) = cardinality($1::bigint[]) AS ok \
             ), ",
            " AND (SELECT ok FROM held)",
        ),
        false => ("", ""),
    };
    let inserted = match with_messages {
        true => {
            "inserted AS ( \
                 INSERT INTO messages (topic_id, log_offset, producer_id, stored_ms, payload) \
                 SELECT m.topic_id, b.base + m.offset_in_group, m.producer_id, $3, m.payload \
                 FROM UNNEST($4::bigint[], $5::bigint[], $6::bigint[], $7::bytea[]) \
                     AS m(topic_id, offset_in_group, producer_id, payload) \
                 JOIN bumped b ON b.id = m.topic_id \
             ), "
        }
        false => "",
    };
    format!(
        "WITH {held}bumped AS ( \
             UPDATE topics t SET next_offset = t.next_offset + u.count, \
                 end_bytes = t.end_bytes + u.bytes, newest_ms = GREATEST(t.newest_ms, $3), \
                 largest_payload = GREATEST(t.largest_payload, u.largest) \
             FROM UNNEST($1::bigint[], $2::bigint[], $14::bigint[], $17::bigint[]) \
                 AS u(id, count, bytes, largest) \
             WHERE t.id = u.id{if_held} \
             RETURNING t.id, t.next_offset - u.count AS base, t.name \
         ), {inserted}sequenced AS ( \
             UPDATE producers p SET next_sequence = s.next_sequence, \
                 last_base_offset = b.base + s.base_in_group, last_count = s.last_count, \
                 recent_batches = s.recent_batches \
             FROM UNNEST($8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], \
                 $12::bigint[], $15::text[]) \
                 AS s(id, topic_id, next_sequence, base_in_group, last_count, recent_batches) \
             JOIN bumped b ON b.id = s.topic_id \
             WHERE p.id = s.id \
         ) \
         SELECT id, base, pg_notify($13, $16 || name)::text AS notified FROM bumped"
    )
}

pub(super) static GROUP_WITH_MESSAGES: LazyLock<String> =
    LazyLock::new(|| group_statement(true, false));
pub(super) static GROUP_WITHOUT_MESSAGES: LazyLock<String> =
    LazyLock::new(|| group_statement(false, false));
pub(super) static GROUP_CHECKED: LazyLock<String> = LazyLock::new(|| group_statement(true, true));

/// [`group_statement`] with messages, for a group of one topic and no sequenced producer.
/// `$1` the topic, `$2` how many messages, `$3` when they are stored, `$4` their bytes; `$5`–`$7`
/// each message's offset in the group, producer and payload; `$8` the NOTIFY channel, `$9`
/// this broker's announcer and `$10` the largest payload. Answers the topic's base offset, or no row if it is gone.
pub(super) static ONE_TOPIC: LazyLock<String> = LazyLock::new(|| one_topic_statement(false));

/// [`group_statement`], checked, for a group of one topic and one sequenced producer: `$1`–`$10`
/// as in [`ONE_TOPIC`]; then the producer (`$11`), its next sequence number (`$12`), its last
/// batch's offset in the group (`$13`) and length (`$14`) and its recent batches (`$15`); and
/// what the rows must hold: the topic's end (`$16`), the producer's next sequence number
/// (`$17`) and recent batches (`$18`). One locking join takes the producer's row, then the
/// topic's (the order of `OF p, t`, as `lock_statement` takes them), only if both are as
/// planned; unless they are, the statement changes nothing and answers no row.
pub(super) static ONE_TOPIC_CHECKED: LazyLock<String> = LazyLock::new(|| one_topic_statement(true));

fn one_topic_statement(checked: bool) -> String {
    let (held, if_held, sequenced) = match checked {
        true => (
            "held AS MATERIALIZED ( \
                 SELECT t.id FROM producers p, topics t \
                 WHERE p.id = $11 AND p.next_sequence = $17 AND p.recent_batches = $18 \
                     AND t.id = $1 AND t.next_offset = $16 \
                 FOR NO KEY UPDATE OF p, t \
             ), ",
            " AND EXISTS (SELECT FROM held)",
            ", sequenced AS ( \
                 UPDATE producers p SET next_sequence = $12, last_base_offset = b.base + $13, \
                     last_count = $14, recent_batches = $15 \
                 FROM bumped b WHERE p.id = $11 \
             )",
        ),
        false => ("", "", ""),
    };
    format!(
        "WITH {held}bumped AS ( \
             UPDATE topics t SET next_offset = t.next_offset + $2, end_bytes = t.end_bytes + $4, \
                 newest_ms = GREATEST(t.newest_ms, $3), \
                 largest_payload = GREATEST(t.largest_payload, $10) \
             WHERE t.id = $1{if_held} \
             RETURNING t.id, t.next_offset - $2 AS base, t.name \
         ), inserted AS ( \
             INSERT INTO messages (topic_id, log_offset, producer_id, stored_ms, payload) \
             SELECT b.id, b.base + m.offset_in_group, m.producer_id, $3, m.payload \
             FROM bumped b, UNNEST($5::bigint[], $6::bigint[], $7::bytea[]) \
                 AS m(offset_in_group, producer_id, payload) \
         ){sequenced} \
         SELECT id, base, pg_notify($8, $9 || name)::text AS notified FROM bumped"
    )
}
