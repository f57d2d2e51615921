//! How far each topic's PostgreSQL partitions reach, as this broker knows it, and the
//! partitions made ahead of a growing topic's appends in the background.
//!
//! An append group whose rows find no partition makes one first (`cover_guessed`, or the
//! savepoint path of `store_group`), and that DDL transaction (create, attach, commit: 5 to 30
//! ms on the benchmark machine) holds up the topic's appends queued behind the group. The
//! retention pass keeps partitions a few chunks ahead of every topic, but only every 62 to
//! 250 ms, and a young topic, without chunks yet, gets one partition ahead: a producer at full
//! speed outran it several times in its first half second, and `MyProducer`'s 200,000
//! messages ran about a fifth slower on a fresh topic than with its partitions made
//! beforehand (docs/BENCHMARKS.md). So after each append group, a topic whose partitions reach
//! less than a look-ahead ([`LOOKAHEAD_GROUPS`] groups like it) past its end gets partitions
//! made in the background, while its appends go on.
//!
//! One cover runs per topic at a time. A group that asks while one runs leaves its request in
//! the topic's pending slot (the farthest asked for wins), and the running cover's task makes
//! it next, unless the partitions learnt reach that far already: a producer whose last large
//! group asked behind a running cover, and that then sends a message at a time (which asks
//! for little), still gets what the large group needed.

use super::Result;
use super::retention::{MIN_PARTITION_SPAN, PARTITIONS_AHEAD};
use super::sql::db_int;
use sqlx::postgres::PgPool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How far past its end a topic's partitions should reach after a group: this many groups
/// like it (one topic's groups vary several-fold in size, and a background cover takes 5 to
/// 30 ms)...
const LOOKAHEAD_GROUPS: u64 = 8;

/// ...but no more than this many offsets, nor more than a chunk of the topic's size limit
/// holds of messages like the group's: a young topic's partitions are made as long as the
/// look-ahead, and a partition is freed only once it lies wholly below the start (65,536
/// rows of 100 bytes: about 10 MB).
const MAX_LOOKAHEAD: u64 = 1 << 16;

/// A young topic's partitions are made ahead once fewer than half its first partition's
/// offsets remain (made with the topic: `myqueue_topic_created`, migration 0002), whatever
/// the look-ahead: a topic sending a message at a time asks for a look-ahead of a few
/// offsets, which a background cover would not make in time.
const FIRST_PARTITION_SPAN: u64 = 4096;

/// Covers running at once, on the pool that serves reads: after a restart, the first group of
/// every topic asks for one.
const COVERS_AT_ONCE: usize = 2;

/// What this broker knows of a topic's partitions.
#[derive(Debug, Default, Clone, Copy)]
struct Reach {
    /// How far they reach (offsets below are covered from the topic's start on). A reach
    /// only grows while its topic lives (partitions are dropped only below the start, and
    /// topic ids are never reused), so this is never more than the truth.
    reached: u64,
    /// Whether retention sizes its partitions (the topic has chunks); until then it is young.
    sized: bool,
}

/// What this broker knows of its topics' partitions, and which are being made ahead.
pub struct Reaches {
    known: Mutex<HashMap<i64, Reach>>,
    /// Topics with partitions being made ahead (one cover at a time per topic), each with the
    /// request that came while its cover ran, if any: its task makes that one next.
    covering: Mutex<HashMap<i64, Option<Ahead>>>,
    covers: Semaphore,
}

impl Default for Reaches {
    fn default() -> Self {
        Reaches {
            known: Mutex::default(),
            covering: Mutex::default(),
            covers: Semaphore::new(COVERS_AT_ONCE),
        }
    }
}

/// A topic after a stored append group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grown {
    pub topic_id: i64,
    /// The topic's end after the group.
    pub end: u64,
    /// The group's rows in the topic.
    pub rows: u64,
    /// Their bytes as retention counts them (`retention::batch_bytes`).
    pub bytes: u64,
    /// A chunk of the topic's size limit, when it has one.
    pub chunk_bytes: Option<u64>,
}

impl Grown {
    /// How far past the topic's end its partitions should reach.
    fn lookahead(&self) -> u64 {
        let chunk_rows = match self.chunk_bytes {
            Some(chunk) => {
                u128::from(chunk) * u128::from(self.rows) / u128::from(self.bytes.max(1))
            }
            None => u128::MAX,
        };
        let chunk_rows = u64::try_from(chunk_rows).unwrap_or(u64::MAX);
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
    /// How long a young topic's are, at least.
    lookahead: u64,
}

impl Ahead {
    /// One request for both: as far, and partitions as long, as either asks.
    fn merge(self, other: Ahead) -> Ahead {
        Ahead {
            up_to: self.up_to.max(other.up_to),
            lookahead: self.lookahead.max(other.lookahead),
            ..self
        }
    }
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

    /// Retention sizes the topic's partitions from now on (it has chunks).
    pub fn sized(&self, topic_id: i64) {
        self.known().entry(topic_id).or_default().sized = true;
    }

    fn young(&self, topic_id: i64) -> bool {
        self.known().get(&topic_id).is_none_or(|k| !k.sized)
    }

    /// How far an append group that found no partition for its rows makes its topic's
    /// partitions reach: a group's worth past them once retention sizes the partitions, the
    /// look-ahead while the topic is young (its first partition is small, and a fresh topic at
    /// full speed outgrows it and each next one at once).
    pub fn cover_to(&self, grown: &Grown) -> u64 {
        let ahead = match self.young(grown.topic_id) {
            true => grown.lookahead(),
            false => grown.rows,
        };
        grown.end.saturating_add(ahead)
    }

    /// Forgets every reach: one was more than the truth (an append found no partition where
    /// one was known), which should not happen.
    pub fn forget_all(&self) {
        self.known().clear();
    }

    /// The partitions to make ahead after a stored group: where a topic's known reach is less
    /// than the look-ahead past its end (a young topic's: or than half its first partition),
    /// partitions reaching that far. Each topic returned is marked as being covered until its
    /// cover's task ends; a topic with a cover running gets the request in its pending slot
    /// instead ([`Reaches::next_for`] hands it to that task).
    pub fn due(&self, grown: impl IntoIterator<Item = Grown>) -> Vec<Ahead> {
        let known = self.known();
        let mut covering = self.covering();
        let mut due = Vec::new();
        for grown in grown {
            let reach = known.get(&grown.topic_id).copied().unwrap_or_default();
            let lookahead = grown.lookahead();
            let wanted = match reach.sized {
                true => lookahead,
                false => lookahead.max(FIRST_PARTITION_SPAN / 2),
            };
            if reach.reached.saturating_sub(grown.end) >= wanted {
                continue;
            }
            let ahead = Ahead {
                topic_id: grown.topic_id,
                up_to: grown.end.saturating_add(wanted),
                lookahead,
            };
            match covering.get_mut(&grown.topic_id) {
                Some(pending) => *pending = Some(pending.map_or(ahead, |p| p.merge(ahead))),
                None => {
                    covering.insert(grown.topic_id, None);
                    due.push(ahead);
                }
            }
        }
        due
    }

    /// For the task covering `topic_id`, once a cover ends: the request that came meanwhile,
    /// unless the partitions are known to reach that far already. `None` ends the topic's
    /// mark, in the same step, so that a request coming after it starts a cover of its own.
    fn next_for(&self, topic_id: i64) -> Option<Ahead> {
        let known = self.known();
        let mut covering = self.covering();
        let reached = known.get(&topic_id).map_or(0, |k| k.reached);
        let pending = covering
            .get_mut(&topic_id)
            .and_then(Option::take)
            .filter(|ahead| ahead.up_to > reached);
        if pending.is_none() {
            covering.remove(&topic_id);
        }
        pending
    }

    fn covering(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Option<Ahead>>> {
        self.covering.lock().expect("covering lock")
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Reach>> {
        self.known.lock().expect("reach lock")
    }
}

/// Ends a topic's mark as being covered (and drops its pending request) however its cover's
/// task ends: a panic, an error or the broker stopping included.
struct Covering {
    reaches: Arc<Reaches>,
    topic_id: i64,
    /// The mark ended already ([`Covering::next`]): it may be another task's by now.
    ended: bool,
}

impl Covering {
    fn new(reaches: &Arc<Reaches>, topic_id: i64) -> Self {
        Covering {
            reaches: reaches.clone(),
            topic_id,
            ended: false,
        }
    }

    /// The topic's request that came while its cover ran ([`Reaches::next_for`]).
    fn next(&mut self) -> Option<Ahead> {
        let next = self.reaches.next_for(self.topic_id);
        self.ended = next.is_none();
        next
    }
}

impl Drop for Covering {
    fn drop(&mut self) {
        if !self.ended {
            self.reaches.covering().remove(&self.topic_id);
        }
    }
}

/// Makes each of `due` in a task of its own on `tasks`, [`COVERS_AT_ONCE`] at a time, then
/// the topic's requests that came meanwhile, one after the other; ending early once `stop` is
/// cancelled (a cover cut off may still run to its end on the server, or roll back: nothing
/// depends on it) or a cover fails. Then the topic's pending request is dropped: a later group
/// asks again, perhaps for less, and an append that finds no partition makes its own.
pub fn make_ahead(
    due: Vec<Ahead>,
    pool: &PgPool,
    reaches: &Arc<Reaches>,
    tasks: &TaskTracker,
    stop: &CancellationToken,
) {
    for ahead in due {
        let (pool, stop) = (pool.clone(), stop.clone());
        let mut covering = Covering::new(reaches, ahead.topic_id);
        tasks.spawn(async move {
            let reaches = covering.reaches.clone();
            let mut next = Some(ahead);
            while let Some(ahead) = next.take() {
                let covered = async {
                    let _turn = reaches.covers.acquire().await;
                    cover(&pool, &ahead).await
                };
                match stop.run_until_cancelled(covered).await {
                    Some(Ok(Some((reached, sized)))) => {
                        reaches.learn(ahead.topic_id, reached);
                        if sized {
                            reaches.sized(ahead.topic_id);
                        }
                        next = covering.next();
                    }
                    Some(Ok(None)) | None => {} // deleted meanwhile, or the broker stops
                    Some(Err(err)) => {
                        // An append that finds no partition makes its own: nothing is lost.
                        tracing::debug!(?ahead, error = %err, "cannot make partitions ahead");
                    }
                }
            }
        });
    }
}

/// Makes the topic's partitions reach `ahead.up_to`, each as long as retention sizes them
/// (as `retention::partition_span` does, from the topic's chunks: the last closed one's
/// offsets, else the growing one's) but at least a [`PARTITIONS_AHEAD`]th of the look-ahead
/// (a chunk closed by time in a quiet hour can hold a few offsets, and a cover of thousands
/// of tiny partitions would outgrow the server's lock table in one transaction), or, on a
/// young topic, as the look-ahead or its newest partition, whichever is longer (partitions
/// never shrink before chunks size them). Answers how far they reach then (at least
/// `ahead.up_to`; `None` when the topic was deleted meanwhile) and whether the topic has
/// chunks. `myqueue_cover_partitions` takes the topic's partition lock and makes nothing where
/// partitions reach far enough already (a retention pass, another broker or an append made
/// them).
async fn cover(pool: &PgPool, ahead: &Ahead) -> Result<Option<(u64, bool)>> {
    let mut conn = pool.acquire().await?;
    sqlx::query(
        "SELECT myqueue_cover_partitions($1, $2, coalesce( \
             (SELECT greatest(end_offset - first_offset, $4, ($3 + $5 - 1) / $5) FROM ( \
                  SELECT first_offset, end_offset FROM chunks WHERE topic_id = $1 \
                  ORDER BY first_offset DESC LIMIT 2) AS newest \
              ORDER BY first_offset LIMIT 1), \
             greatest($3, (SELECT end_offset - first_offset FROM message_partitions \
                           WHERE topic_id = $1 ORDER BY first_offset DESC LIMIT 1))))",
    )
    .bind(ahead.topic_id)
    .bind(db_int(ahead.up_to)?)
    .bind(db_int(ahead.lookahead)?)
    .bind(db_int(MIN_PARTITION_SPAN)?)
    .bind(db_int(PARTITIONS_AHEAD)?)
    .execute(&mut *conn)
    .await?;
    let (reached, sized): (Option<i64>, bool) = sqlx::query_as(
        "SELECT (SELECT max(end_offset) FROM message_partitions WHERE topic_id = $1), \
             EXISTS (SELECT 1 FROM chunks WHERE topic_id = $1)",
    )
    .bind(ahead.topic_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(reached.map(|reached| (u64::try_from(reached).unwrap_or(0), sized)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grown(topic_id: i64, end: u64, rows: u64) -> Grown {
        Grown {
            topic_id,
            end,
            rows,
            bytes: rows * 164,
            chunk_bytes: None,
        }
    }

    fn ended(reaches: &Reaches, ahead: &Ahead) {
        assert_eq!(reaches.next_for(ahead.topic_id), None);
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
            lookahead: 8_000,
        };
        assert_eq!(due, vec![young]);
        // One cover at a time per topic, until it ends (having made what was asked meanwhile).
        assert_eq!(reaches.due([grown(1, 7_000, 1_000)]), vec![]);
        reaches.learn(1, 15_000);
        ended(&reaches, &due[0]);
        assert_eq!(reaches.due([grown(1, 8_000, 1_000)]).len(), 1);
    }

    #[test]
    fn a_request_behind_a_running_cover_is_made_next_by_its_task() {
        let reaches = Reaches::default();
        let first = reaches.due([grown(1, 5_000, 1_000)]);
        assert_eq!(first[0].up_to, 13_000);
        // While it runs: a large group asks for more, then single messages ask for little.
        assert_eq!(reaches.due([grown(1, 9_000, 4_000)]), vec![]);
        assert_eq!(reaches.due([grown(1, 9_001, 1)]), vec![]);
        // The first cover made partitions to 13,000: the task goes on with the farthest ask.
        reaches.learn(1, 13_000);
        let next = reaches.next_for(1);
        assert_eq!(
            next,
            Some(Ahead {
                topic_id: 1,
                up_to: 9_000 + 32_000,
                lookahead: 32_000,
            })
        );
        // The topic is still being covered: a new ask (to 14,048) waits in the slot again.
        assert_eq!(reaches.due([grown(1, 12_000, 1)]), vec![]);
        // Partitions made to 41,000 cover that ask already: the mark ends, and the next ask
        // starts a cover of its own.
        reaches.learn(1, 41_000);
        assert_eq!(reaches.next_for(1), None);
        assert_eq!(reaches.due([grown(1, 39_000, 1)]).len(), 1);
    }

    #[test]
    fn a_task_that_ends_early_drops_its_topics_mark_and_pending_request() {
        let reaches = Arc::new(Reaches::default());
        let due = reaches.due([grown(1, 5_000, 1_000)]);
        assert_eq!(reaches.due([grown(1, 6_000, 1_000)]), vec![]);
        drop(Covering::new(&reaches, due[0].topic_id));
        assert_eq!(reaches.due([grown(1, 6_000, 1_000)]).len(), 1);
        // The new cover's slot is empty: the dropped task's request went with it.
        assert_eq!(reaches.next_for(1), None);
    }

    #[test]
    fn a_task_whose_mark_ended_leaves_the_next_tasks_mark_alone() {
        let reaches = Arc::new(Reaches::default());
        let due = reaches.due([grown(1, 5_000, 1_000)]);
        let mut first = Covering::new(&reaches, due[0].topic_id);
        assert_eq!(first.next(), None);
        // A new cover starts before the first task has ended.
        assert_eq!(reaches.due([grown(1, 6_000, 1_000)]).len(), 1);
        drop(first);
        // Its mark stands: one cover per topic.
        assert_eq!(reaches.due([grown(1, 7_000, 1_000)]), vec![]);
    }

    #[test]
    fn a_young_topic_sending_one_at_a_time_gets_partitions_half_its_first_before_its_end() {
        let reaches = Reaches::default();
        reaches.learn(1, 4_096);
        assert_eq!(reaches.due([grown(1, 2_048, 1)]), vec![]);
        let due = reaches.due([grown(1, 2_049, 1)]);
        // Past the first partition's end: one is made, as long as the first at least.
        let young = Ahead {
            topic_id: 1,
            up_to: 2_049 + 2_048,
            lookahead: MIN_PARTITION_SPAN,
        };
        assert_eq!(due, vec![young]);
        // Sized by retention, the pass keeps partitions ahead: the look-ahead alone counts.
        ended(&reaches, &due[0]);
        reaches.sized(1);
        assert_eq!(reaches.due([grown(1, 3_000, 1)]), vec![]);
        assert_eq!(reaches.due([grown(1, 4_090, 1)]).len(), 1);
    }

    #[test]
    fn lookaheads_are_bounded_by_a_constant_and_by_a_chunk_of_messages_like_the_groups() {
        let reaches = Reaches::default();
        let due = reaches.due([grown(2, 100, 1), grown(3, 100, 1_000_000)]);
        assert_eq!(due[0].lookahead, MIN_PARTITION_SPAN);
        assert_eq!(due[1].lookahead, MAX_LOOKAHEAD);
        // A chunk of 164,000 bytes holds 1,000 messages of 100 bytes (and 64 counted beside).
        let limited = Grown {
            chunk_bytes: Some(164_000),
            ..grown(4, 100, 500)
        };
        assert_eq!(reaches.due([limited])[0].lookahead, 1_000);
        assert_eq!(reaches.cover_to(&limited), 1_100);
    }

    #[test]
    fn an_append_that_found_no_partition_covers_a_group_once_retention_sizes_them() {
        let reaches = Reaches::default();
        assert_eq!(reaches.cover_to(&grown(1, 5_000, 1_000)), 13_000);
        reaches.sized(1);
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
