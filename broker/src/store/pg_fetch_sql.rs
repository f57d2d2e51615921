//! The statement behind a PostgreSQL fetch: the topic's start and end, the consumer's
//! position and the messages in range, in one snapshot and one row.
//!
//! The messages come as three arrays (offsets, payloads, stored times), one element per
//! message, instead of a row each: a drain of 200,000 messages spent half of the broker's CPU
//! decoding rows (each column looked up by name, each row a message of the protocol), and
//! the arrays halved it (docs/BENCHMARKS.md, "a fetch in one row").
//!
//! The byte budget is counted row by row only when it could run out: when the topic's
//! largest payload ever (`topics.largest_payload`, raised by every append) times the message
//! limit fits the budget, every row in range fits, and the plain index scan is read. Counting
//! (a window's running sum, which copies every row it passes through) took half of the
//! server's CPU in a drain. Each branch is gated by a one-time filter on the topic's row, so
//! only one is ever run.

use std::sync::LazyLock;

/// `$1` the consumer, `$2` where to read from (or NULL: the consumer's position), `$3` at
/// most this many messages, `$4` at most this many payload bytes (the first message counts,
/// and comes even when it alone is over), `$5` the consumer's topic (so that the planner
/// keeps only that topic's partitions). Answers one row ([`super::sql::FetchArraysRow`]), or
/// none when the consumer is not of that topic. An offset past 2^63 is past the end: it reads
/// nothing and is refused by the caller.
pub(super) static FETCH: LazyLock<String> = LazyLock::new(fetch_statement);

fn fetch_statement() -> String {
    // Offsets are dense (retention removes only from the start), so at most `$3` rows lie in
    // `[from, from + $3)`: the upper bound keeps the planner from reading and sorting
    // everything after `from` when its statistics of a young partition are stale (a drain of
    // 200,000 messages read the whole rest of the topic on every fetch: 180 ms each, 10 ms
    // with the bound). LEAST keeps `from + $3` within bigint.
    let in_range = "topic_id = $5 \
         AND log_offset >= GREATEST(COALESCE($2, c.position), s.start_offset) \
         AND log_offset < LEAST(GREATEST(COALESCE($2, c.position), s.start_offset), \
             9223372036854775807 - $3) + $3";
    // `$3` is at least 1 from the API; GREATEST keeps a 0 from dividing by zero.
    let budget_holds = "t.largest_payload <= $4 / GREATEST($3, 1)";
    // The window's frame is ROWS, not the default RANGE, which looks for rows of equal
    // offset. The first message comes even when it alone is over the budget.
    format!(
        "SELECT s.start_offset, t.next_offset AS end_offset, c.position, \
             m.offsets, m.payloads, m.stored \
         FROM consumers c JOIN topics t ON t.id = c.topic_id \
             JOIN topic_starts s ON s.topic_id = t.id \
         CROSS JOIN LATERAL ( \
             SELECT array_agg(log_offset) AS offsets, array_agg(payload) AS payloads, \
                 array_agg(stored_ms) AS stored \
             FROM ( \
                 (SELECT log_offset, payload, stored_ms FROM messages \
                  WHERE {in_range} AND {budget_holds} \
                  ORDER BY log_offset LIMIT $3) \
                 UNION ALL \
                 (SELECT log_offset, payload, stored_ms FROM ( \
                     SELECT log_offset, payload, stored_ms, \
                         sum(octet_length(payload)) OVER offsets AS running, \
                         row_number() OVER offsets AS n \
                     FROM messages \
                     WHERE {in_range} AND NOT ({budget_holds}) \
                     WINDOW offsets AS (ORDER BY log_offset ROWS UNBOUNDED PRECEDING) \
                     ORDER BY log_offset LIMIT $3 \
                  ) w WHERE w.n = 1 OR w.running <= $4) \
             ) m \
         ) m \
         WHERE c.id = $1 AND t.id = $5"
    )
}
