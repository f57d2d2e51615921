//! How far each topic's PostgreSQL partitions reach, as this broker knows it, and the
//! partitions made ahead of a fast topic's appends in the background.
//!
//! An append group whose rows find no partition makes one first (`cover_guessed`, or the
//! savepoint path of `store_group`), and that DDL transaction (create, attach, commit: 5 to 30
//! ms on the benchmark machine) holds up the topic's appends queued behind the group. The
//! retention pass keeps partitions a few chunks ahead of every topic, but only every 62 to
//! 250 ms, and a young topic, without chunks yet, gets one partition ahead: a producer at full
//! speed outran it several times in its first half second, and `MyProducer`'s 200,000
//! messages ran about a fifth slower on a fresh topic than with its partitions made
//! beforehand (docs/BENCHMARKS.md). So after each append group, a topic whose partitions reach
//! less than half a look-ahead ([`LOOKAHEAD_GROUPS`] groups like it) past its end gets
//! partitions made in the background, while its appends go on.

use super::Result;
use super::retention::{MESSAGE_OVERHEAD_BYTES, MIN_PARTITION_SPAN};
use super::sql::db_int;
use sqlx::postgres::PgPool;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How far past its end a topic's partitions should reach after a group: this many groups
/// like it (one topic's groups vary several-fold in size, and a background cover takes 5 to
/// 30 ms)...
const LOOKAHEAD_GROUPS: u64 = 8;

/// ...but no more than this many offsets, nor more than a chunk of the topic's size limit can
/// hold (of messages no smaller than [`MESSAGE_OVERHEAD_BYTES`]): a young topic's partitions
/// are made as long as the look-ahead, and a partition is freed only once it lies wholly
/// below the start (65,536 rows of 100 bytes: about 10 MB).
const MAX_LOOKAHEAD: u64 = 1 << 16;

/// A young topic's partitions are never shorter than its first, made with the topic
/// (`myqueue_topic_created`, migration 0002), nor made ahead later than half of that before
/// its end: a topic sending a message at a time asks for a look-ahead of a few offsets, which
/// a background cover would not make in time.
const FIRST_PARTITION_SPAN: u64 = 4096;

/// What this broker knows of a topic's partitions.
#[derive(Debug, Default, Clone, Copy)]
struct Known {
    /// How far they reach (offsets below are covered from the topic's start on). A reach
    /// only grows while its topic lives (partitions are dropped only below the start, and
    /// topic ids are never reused), so this is never more than the truth.
    reached: u64,
    /// The span retention gives the topic's partitions (about a chunk), once the topic has
    /// chunks; until then the topic is young.
    span: Option<u64>,
}

/// What this broker knows of its topics' partitions, and which are being made ahead.
#[derive(Default)]
pub struct Reaches {
    known: Mutex<HashMap<i64, Known>>,
    /// Topics with partitions being made ahead: one cover at a time per topic.
    covering: Mutex<HashSet<i64>>,
}

/// A topic after a stored append group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grown {
    pub topic_id: i64,
    /// The topic's end after the group.
    pub end: u64,
    /// The group's rows in the topic.
    pub rows: u64,
    /// A chunk of the topic's size limit, when it has one.
    pub chunk_bytes: Option<u64>,
}

impl Grown {
    /// How far past the topic's end its partitions should reach.
    fn lookahead(&self) -> u64 {
        let chunk_rows = self
            .chunk_bytes
            .map_or(u64::MAX, |bytes| bytes / MESSAGE_OVERHEAD_BYTES);
        self.rows
            .saturating_mul(LOOKAHEAD_GROUPS)
            .min(MAX_LOOKAHEAD)
            .min(chunk_rows)
            .max(MIN_PARTITION_SPAN)
    }
}

/// Partitions to make ahead of a topic's appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ahead {
    topic_id: i64,
    /// How far they should reach.
    up_to: u64,
    /// How long each is.
    span: u64,
    /// At least as long as the topic's newest partition.
    young: bool,
}

impl Reaches {
    /// Whether the topic's partitions are known to cover offsets up to `end`.
    pub fn covers(&self, topic_id: i64, end: u64) -> bool {
        self.known()
            .get(&topic_id)
            .is_some_and(|known| end <= known.reached)
    }

    /// The topic's partitions reach at least `reached`.
    pub fn learn(&self, topic_id: i64, reached: u64) {
        let mut known = self.known();
        let known = known.entry(topic_id).or_default();
        known.reached = known.reached.max(reached);
    }

    /// Retention gives the topic's partitions `span` offsets each from now on.
    pub fn sized(&self, topic_id: i64, span: u64) {
        self.known().entry(topic_id).or_default().span = Some(span);
    }

    /// How far an append group that found no partition for its rows makes its topic's
    /// partitions reach: a group's worth past them once retention sizes the partitions, the
    /// look-ahead while the topic is young (its first partition is small, and a fresh topic at
    /// full speed outgrows it and each next one at once).
    pub fn cover_to(&self, grown: &Grown) -> u64 {
        let known = self.known().get(&grown.topic_id).copied();
        let young = known.is_none_or(|k| k.span.is_none());
        let ahead = if young { grown.lookahead() } else { grown.rows };
        grown.end.saturating_add(ahead)
    }

    /// Forgets every reach: one was more than the truth (an append found no partition where
    /// one was known), which should not happen.
    pub fn forget_all(&self) {
        self.known().clear();
    }

    /// The partitions to make ahead after a stored group: where a topic's known reach is less
    /// than the look-ahead past its end (a young topic's: or than half its first partition),
    /// partitions reaching that far, each as long as retention sizes them (a young topic's: the
    /// look-ahead, or its newest partition's span if that is more, so that one is made at a
    /// time). A topic whose reach is unknown is left to its appends; one with partitions being
    /// made waits for them. Each topic returned is marked as being covered until
    /// [`Self::made`].
    pub fn due(&self, grown: impl IntoIterator<Item = Grown>) -> Vec<Ahead> {
        let known = self.known();
        let mut covering = self.covering.lock().expect("covering lock");
        let mut due = Vec::new();
        for grown in grown {
            let Some(known) = known.get(&grown.topic_id) else {
                continue;
            };
            let lookahead = grown.lookahead();
            let headroom = match known.span {
                Some(_) => lookahead,
                None => lookahead.max(FIRST_PARTITION_SPAN / 2),
            };
            if known.reached.saturating_sub(grown.end) >= headroom
                || !covering.insert(grown.topic_id)
            {
                continue;
            }
            due.push(Ahead {
                topic_id: grown.topic_id,
                up_to: grown.end.saturating_add(lookahead),
                span: known.span.unwrap_or(lookahead),
                young: known.span.is_none(),
            });
        }
        due
    }

    /// The cover for `ahead` is done, or could not be: another may be asked for.
    fn made(&self, ahead: &Ahead) {
        self.covering
            .lock()
            .expect("covering lock")
            .remove(&ahead.topic_id);
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Known>> {
        self.known.lock().expect("reach lock")
    }
}

/// Makes each of `due` in a task of its own on `tasks`, which ends early once `stop` is
/// cancelled (a cover cut off makes nothing: its transaction rolls back).
pub fn make_ahead(
    due: Vec<Ahead>,
    pool: &PgPool,
    reaches: &Arc<Reaches>,
    tasks: &TaskTracker,
    stop: &CancellationToken,
) {
    for ahead in due {
        let (pool, reaches, stop) = (pool.clone(), reaches.clone(), stop.clone());
        tasks.spawn(async move {
            match stop.run_until_cancelled(cover(&pool, &ahead)).await {
                Some(Ok(reached)) => reaches.learn(ahead.topic_id, reached),
                Some(Err(err)) => {
                    // An append that finds no partition makes its own: nothing is lost.
                    tracing::debug!(?ahead, error = %err, "cannot make partitions ahead");
                }
                None => {}
            }
            reaches.made(&ahead);
        });
    }
}

/// A young topic's partitions are at least as long as its newest.
/// `myqueue_cover_partitions` takes the topic's partition lock and makes nothing where
/// partitions reach far enough already (a retention pass, another broker or an append made
/// them). Answers how far they reach then (at least `ahead.up_to`, unless the topic was
/// deleted: its id is never used again).
async fn cover(pool: &PgPool, ahead: &Ahead) -> Result<u64> {
    let mut conn = pool.acquire().await?;
    sqlx::query(
        "SELECT myqueue_cover_partitions($1, $2, greatest($3, CASE WHEN $4 THEN ( \
             SELECT end_offset - first_offset FROM message_partitions WHERE topic_id = $1 \
             ORDER BY first_offset DESC LIMIT 1) END))",
    )
    .bind(ahead.topic_id)
    .bind(db_int(ahead.up_to)?)
    .bind(db_int(ahead.span)?)
    .bind(ahead.young)
    .execute(&mut *conn)
    .await?;
    let reached: Option<i64> =
        sqlx::query_scalar("SELECT max(end_offset) FROM message_partitions WHERE topic_id = $1")
            .bind(ahead.topic_id)
            .fetch_one(&mut *conn)
            .await?;
    Ok(reached.map_or(ahead.up_to, |r| u64::try_from(r).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grown(topic_id: i64, end: u64, rows: u64) -> Grown {
        Grown {
            topic_id,
            end,
            rows,
            chunk_bytes: None,
        }
    }

    #[test]
    fn partitions_are_due_once_less_than_the_lookahead_remains() {
        let reaches = Reaches::default();
        reaches.learn(1, 10_000);
        // A look-ahead of 8 groups of 1,000: 8,000 left is enough, 7,000 is not.
        assert_eq!(reaches.due([grown(1, 2_000, 1_000)]), vec![]);
        let due = reaches.due([grown(1, 3_000, 1_000)]);
        let young = Ahead {
            topic_id: 1,
            up_to: 11_000,
            span: 8_000,
            young: true,
        };
        assert_eq!(due, vec![young]);
        // One cover at a time per topic, until made.
        assert_eq!(reaches.due([grown(1, 7_000, 1_000)]), vec![]);
        reaches.made(&due[0]);
        reaches.learn(1, 18_000);
        // Sized by retention, partitions are as long as it says.
        reaches.sized(1, 500);
        let sized = Ahead {
            topic_id: 1,
            up_to: 19_000,
            span: 500,
            young: false,
        };
        assert_eq!(reaches.due([grown(1, 11_000, 1_000)]), vec![sized]);
    }

    #[test]
    fn a_young_topic_sending_one_at_a_time_gets_partitions_half_its_first_before_its_end() {
        let reaches = Reaches::default();
        reaches.learn(1, 4_096);
        assert_eq!(reaches.due([grown(1, 2_048, 1)]), vec![]);
        let due = reaches.due([grown(1, 2_049, 1)]);
        assert_eq!(due.len(), 1);
        assert!(due[0].young, "as long as its newest partition, at least");
        // Sized by retention, the pass keeps partitions ahead: the look-ahead alone counts.
        reaches.made(&due[0]);
        reaches.sized(1, 100);
        assert_eq!(reaches.due([grown(1, 3_000, 1)]), vec![]);
    }

    #[test]
    fn unknown_reaches_are_left_to_the_appends_and_lookaheads_are_bounded() {
        let reaches = Reaches::default();
        assert_eq!(reaches.due([grown(2, 100, 50)]), vec![]);
        reaches.learn(2, 100);
        reaches.learn(3, 100);
        let due = reaches.due([grown(2, 100, 1), grown(3, 100, 1_000_000)]);
        assert_eq!(due[0].span, MIN_PARTITION_SPAN);
        assert_eq!(due[1].span, MAX_LOOKAHEAD);
        // A chunk of 64,000 bytes holds at most 1,000 messages.
        reaches.learn(4, 100);
        let limited = Grown {
            chunk_bytes: Some(64_000),
            ..grown(4, 100, 1_000)
        };
        assert_eq!(reaches.due([limited])[0].span, 1_000);
        assert_eq!(reaches.cover_to(&limited), 1_100);
    }

    #[test]
    fn a_young_topic_that_found_no_partition_covers_the_lookahead() {
        let reaches = Reaches::default();
        assert_eq!(reaches.cover_to(&grown(1, 5_000, 1_000)), 13_000);
        reaches.learn(1, 13_000);
        assert_eq!(reaches.cover_to(&grown(1, 5_000, 1_000)), 13_000);
        reaches.sized(1, 500);
        assert_eq!(reaches.cover_to(&grown(1, 5_000, 1_000)), 6_000);
    }

    #[test]
    fn reaches_only_grow_until_forgotten() {
        let reaches = Reaches::default();
        reaches.learn(1, 500);
        reaches.learn(1, 300);
        assert!(reaches.covers(1, 500));
        assert!(!reaches.covers(1, 501));
        reaches.forget_all();
        assert!(!reaches.covers(1, 1));
    }
}
