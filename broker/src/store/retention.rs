//! Retention, decided apart from storage so that every store follows the same rules (and the
//! rules are unit-tested once, here): which of a topic's oldest messages go, how a topic's log
//! is cut into chunks, and how large PostgreSQL's partitions are.
//!
//! A topic's log runs from its *start* (the oldest offset kept) to its *end* (the offset the
//! next message gets). Offsets never restart: retention only moves the start forward.
//!
//! Sizes: a message counts as its payload plus [`MESSAGE_OVERHEAD_BYTES`], about what a row
//! costs a database beyond its payload, so that a size limit bounds the files, not only the
//! payloads. Each topic counts the bytes ever appended to it (`end_bytes`) and the count at
//! its start (`start_bytes`); the bytes it holds are the difference, known without counting.
//!
//! Chunks: each retention pass closes what was appended since the last pass into the topic's
//! newest chunk (or a new one, once the newest has reached a chunk's size: an eighth of the
//! retention, by bytes or by time). A chunk knows its offsets, its byte counts and when its
//! newest message was stored, exactly. Retention moves the start forward by whole chunks,
//! oldest first; the store then frees what lies below the start (SQLite deletes the rows in
//! batches, PostgreSQL drops the partitions that lie wholly below it, memory drops them).

use super::signals::TopicSignals;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// What a message costs beyond its payload, for size limits and `bytes` held: its offset,
/// producer, timestamp and index entry take about this much in either database.
pub const MESSAGE_OVERHEAD_BYTES: u64 = 64;

/// A retention window is cut into about this many chunks: the start moves in steps of about
/// an eighth of the retention, and at most that much is held beyond it.
pub const CHUNKS_PER_RETENTION: u64 = 8;

/// The size of a chunk when no byte limit is in force.
pub const UNLIMITED_CHUNK_BYTES: u64 = 1 << 30;

/// Fewest offsets in a PostgreSQL partition made ahead of the appends.
pub const MIN_PARTITION_SPAN: u64 = 16;

/// The broker's default retention by age: 7 days, as Kafka's.
pub const DEFAULT_RETENTION_MS: u64 = 7 * 24 * 3600 * 1000;

/// Largest retention value a store can keep (a BIGINT column).
pub const MAX_RETENTION: u64 = i64::MAX as u64;

/// How often the background pass runs by default.
pub const DEFAULT_PASS_EVERY: Duration = Duration::from_millis(250);

/// How a store applies retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionConfig {
    /// What topics without settings of their own keep (`--retention`, `--retention-bytes`).
    pub defaults: Retention,
    /// How often the background pass runs; `None`: never (tests run passes themselves).
    pub every: Option<Duration>,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            defaults: Retention::default(),
            every: Some(DEFAULT_PASS_EVERY),
        }
    }
}

/// How much sooner the next pass runs while passes are busy.
const BUSY_PASS_SPEEDUP: u32 = 4;
/// How many ordinary intervals the sooner passes go on after the last busy one.
const BUSY_PASS_HOLD: u32 = 4;
/// How many times less often passes run while nothing is appended (every 2 s at the
/// default). A pass reads every topic's row and chunks: an idle broker with 100 topics spent
/// about 0.4 % of a core on four passes a second (docs/BENCHMARKS.md, "idle passes"). Time
/// limits then act up to that much later, as Kafka's retention checks every 5 minutes.
const IDLE_PASS_SLOWDOWN: u32 = 8;

/// Runs `pass` (given the clock's time) every `every` until `stop` is cancelled, and every
/// `every / 4` for a second (at the default) after a busy pass: one that removed messages or
/// found a chunk's worth appended since the one before. A failed pass is logged and retried
/// at the next tick: everything a pass does is repeatable. While nothing is appended (the
/// store's [`TopicSignals::activity`] stands still), a pass runs only every
/// `every * IDLE_PASS_SLOWDOWN` ([`pass_due`]); the first tick after an append runs one.
///
/// Sooner when busy because a pass closes into one chunk all that was appended since the last
/// one: under a producer at full speed (tens of MB in 250 ms) the chunks, and with them the
/// steps in which the start moves and PostgreSQL's partitions, would grow past an eighth of
/// the retention. Held for a while, not only for the next pass, because appends land in
/// groups (tens of milliseconds each for `MyProducer`'s): a pass that came between two found
/// nothing new, and in the 250 ms that followed it a store taking 60 MB/s grew by another
/// 15 MB (PostgreSQL's partitions went past `tests/test_retention_load.py`'s bound).
pub async fn run_passes<F, Fut>(
    every: Duration,
    stop: CancellationToken,
    signals: Arc<TopicSignals>,
    mut pass: F,
) where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = super::Result<super::PassReport>>,
{
    let mut wait = every;
    let mut busy_until = Instant::now();
    let mut last_pass: Option<LastPass> = None;
    while stop
        .run_until_cancelled(tokio::time::sleep(wait))
        .await
        .is_some()
    {
        let (activity, began) = (signals.activity(), Instant::now());
        if !pass_due(last_pass, activity, began, busy_until, every) {
            wait = every;
            continue;
        }
        last_pass = Some(LastPass { activity, began });
        let ran = stop.run_until_cancelled(pass(super::now_ms())).await;
        if ran.is_some() {
            crate::metrics::retention_pass(began.elapsed());
        }
        match ran {
            Some(Ok(report)) => {
                crate::metrics::retention_removed(report.removed);
                if report.removed > 0 || report.outpaced {
                    busy_until = Instant::now() + every * BUSY_PASS_HOLD;
                }
            }
            Some(Err(err)) => {
                tracing::warn!(error = %err, "retention pass failed; retrying");
                // At the ordinary pace: a failing database is not asked sixteen times a second.
                busy_until = Instant::now();
                last_pass = None; // retried at the next tick, idle or not
            }
            None => {}
        }
        wait = if Instant::now() < busy_until {
            every / BUSY_PASS_SPEEDUP
        } else {
            every
        };
    }
}

/// When the last pass began, and the store's [`TopicSignals::activity`] then.
#[derive(Debug, Clone, Copy)]
struct LastPass {
    activity: u64,
    began: Instant,
}

/// Whether the tick at `now` runs a pass: the first one, every one while busy, the first
/// after anything was appended (or a limit changed) since the last pass, and otherwise one
/// every `every * IDLE_PASS_SLOWDOWN`.
fn pass_due(
    last: Option<LastPass>,
    activity: u64,
    now: Instant,
    busy_until: Instant,
    every: Duration,
) -> bool {
    last.is_none_or(|last| {
        now < busy_until
            || last.activity != activity
            || now.saturating_duration_since(last.began) >= every * IDLE_PASS_SLOWDOWN
    })
}

/// How many bytes `payload` counts for.
pub fn message_bytes(payload: &str) -> u64 {
    payload.len() as u64 + MESSAGE_OVERHEAD_BYTES
}

/// How many bytes a batch of messages counts for.
pub fn batch_bytes(payloads: &[String]) -> u64 {
    payloads.iter().map(|p| message_bytes(p)).sum()
}

/// A topic's own retention settings. `None`: the broker's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionSettings {
    pub ms: Option<u64>,
    pub bytes: Option<u64>,
}

/// A change to a topic's settings: `None` leaves a setting as it is, `Some(None)` returns it
/// to the broker's default, `Some(Some(n))` sets it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionChange {
    pub ms: Option<Option<u64>>,
    pub bytes: Option<Option<u64>>,
}

impl RetentionChange {
    pub fn apply(self, settings: RetentionSettings) -> RetentionSettings {
        RetentionSettings {
            ms: self.ms.unwrap_or(settings.ms),
            bytes: self.bytes.unwrap_or(settings.bytes),
        }
    }
}

/// The retention in force. `None`: unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub ms: Option<u64>,
    pub bytes: Option<u64>,
}

impl Default for Retention {
    /// The broker's defaults: 7 days, no size limit.
    fn default() -> Self {
        Retention {
            ms: Some(DEFAULT_RETENTION_MS),
            bytes: None,
        }
    }
}

impl Retention {
    /// What is in force for a topic with `settings`, when `self` is the broker's default.
    pub fn for_topic(self, settings: RetentionSettings) -> Retention {
        Retention {
            ms: settings.ms.or(self.ms),
            bytes: settings.bytes.or(self.bytes),
        }
    }

    /// The bytes of a chunk when a size limit is in force (an eighth of it).
    pub fn chunk_bytes(self) -> Option<u64> {
        self.bytes
            .map(|limit| (limit / CHUNKS_PER_RETENTION).max(1))
    }

    /// How large a chunk grows, in bytes and in time, before the next one begins.
    fn chunk_limits(self) -> (u64, u64) {
        (
            self.chunk_bytes().unwrap_or(UNLIMITED_CHUNK_BYTES),
            self.ms
                .map_or(u64::MAX, |limit| (limit / CHUNKS_PER_RETENTION).max(1)),
        )
    }
}

/// A topic's log as a retention pass reads it (its row, read at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Log {
    pub start: u64,
    pub end: u64,
    /// Bytes appended before the start, and before the end.
    pub start_bytes: u64,
    pub end_bytes: u64,
    /// When the newest message was stored (milliseconds since the epoch; 0: never).
    pub newest_ms: u64,
}

impl Log {
    /// An empty topic.
    pub fn empty() -> Self {
        Log {
            start: 0,
            end: 0,
            start_bytes: 0,
            end_bytes: 0,
            newest_ms: 0,
        }
    }

    /// Bytes held: from the start to the end.
    pub fn bytes(&self) -> u64 {
        self.end_bytes.saturating_sub(self.start_bytes)
    }

    /// Messages held.
    pub fn messages(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Where a reader that asked for `offset` begins: nothing before the start is kept.
    pub fn clamp(&self, offset: u64) -> u64 {
        offset.max(self.start)
    }

    /// Messages after `position`: `end − max(position, start)`.
    pub fn after(&self, position: u64) -> u64 {
        self.end.saturating_sub(self.clamp(position))
    }
}

/// A chunk of a topic's log: offsets `first..end`, bytes `first_bytes..end_bytes` of the
/// topic's count, begun after `opened_ms` and holding messages up to `newest_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    pub first: u64,
    pub end: u64,
    pub first_bytes: u64,
    pub end_bytes: u64,
    pub opened_ms: u64,
    pub newest_ms: u64,
}

/// What a pass does to one topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PassPlan {
    /// The chunk to write (keyed by topic and `first`: an extended newest chunk, or a new one)
    /// so that the chunks reach the end.
    pub chunk: Option<Chunk>,
    /// The new start and its byte count, when the start moves.
    pub new_start: Option<(u64, u64)>,
    /// A chunk's worth of bytes or more arrived since the last pass: appends outpace the
    /// passes, and the next one should come sooner.
    pub outpaced: bool,
}

impl PassPlan {
    /// `chunks` as they are after the plan is carried out.
    pub fn apply(&self, chunks: &mut Vec<Chunk>) {
        if let Some(written) = self.chunk {
            match chunks.last_mut() {
                Some(last) if last.first == written.first => *last = written,
                _ => chunks.push(written),
            }
        }
        if let Some((start, _)) = self.new_start {
            chunks.retain(|c| c.end > start);
        }
    }
}

/// Plans one pass over a topic at time `now_ms`: close what was appended since the last pass
/// into a chunk, then move the start past the oldest chunks that retention no longer keeps.
/// `chunks` are the topic's chunks in order, all at or after its start.
///
/// - By age: every chunk whose newest message is older than `retention.ms` goes (the newest
///   chunk too: an idle topic empties once all of it has expired).
/// - By size: the oldest chunk goes while what remains after it is still at least
///   `retention.bytes` (Kafka's rule): the newest `retention.bytes` are always kept, and at
///   most one chunk (an eighth of the limit) more, plus what arrives between two passes.
pub fn plan_pass(log: &Log, chunks: &[Chunk], retention: Retention, now_ms: u64) -> PassPlan {
    let chunk = close_chunk(log, chunks, retention);
    let covered_bytes = chunks
        .last()
        .map_or(log.start_bytes, |c| c.end_bytes.max(log.start_bytes));
    let outpaced = retention
        .chunk_bytes()
        .is_some_and(|chunk_bytes| log.end_bytes.saturating_sub(covered_bytes) >= chunk_bytes);
    let mut chunks = chunks.to_vec();
    PassPlan {
        chunk,
        ..PassPlan::default()
    }
    .apply(&mut chunks);
    let mut keep_from = 0;
    if let Some(ms) = retention.ms {
        let cutoff = now_ms.saturating_sub(ms);
        keep_from = chunks.iter().take_while(|c| c.newest_ms < cutoff).count();
    }
    if let Some(limit) = retention.bytes {
        // The last chunk whose removal still leaves `limit` bytes or more.
        let removable = chunks
            .iter()
            .take_while(|c| log.end_bytes.saturating_sub(c.end_bytes) >= limit)
            .count();
        keep_from = keep_from.max(removable);
    }
    let new_start = match keep_from {
        0 => None,
        n if n < chunks.len() => Some((chunks[n].first, chunks[n].first_bytes)),
        _ => chunks.last().map(|c| (c.end, c.end_bytes)),
    }
    .filter(|&(start, _)| start > log.start);
    PassPlan {
        chunk,
        new_start,
        outpaced,
    }
}

/// The chunk that makes the chunks reach the log's end: the newest one extended while it is
/// under a chunk's size in bytes and in time, else a new one. `None` when they reach it.
fn close_chunk(log: &Log, chunks: &[Chunk], retention: Retention) -> Option<Chunk> {
    let (max_bytes, max_ms) = retention.chunk_limits();
    let last = chunks.last();
    let covered = last.map_or(log.start, |c| c.end).max(log.start);
    if log.end <= covered {
        return None;
    }
    if let Some(last) = last
        && last.end > log.start
        && log.end_bytes.saturating_sub(last.first_bytes) <= max_bytes
        && log.newest_ms.saturating_sub(last.opened_ms) < max_ms
    {
        return Some(Chunk {
            end: log.end,
            end_bytes: log.end_bytes,
            newest_ms: log.newest_ms.max(last.newest_ms),
            ..*last
        });
    }
    let (first_bytes, opened_ms) = match last {
        Some(last) if last.end >= log.start => (last.end_bytes, last.newest_ms),
        _ => (log.start_bytes, log.newest_ms),
    };
    Some(Chunk {
        first: covered,
        end: log.end,
        first_bytes,
        end_bytes: log.end_bytes,
        opened_ms,
        newest_ms: log.newest_ms,
    })
}

/// How many offsets the next PostgreSQL partition of a topic spans: as many as its last
/// closed chunk holds (so that a partition holds about a chunk), else as many as the chunk
/// still growing holds so far, else as many as its last partition (`last_partition`).
pub fn partition_span(chunks: &[Chunk], last_partition: u64) -> u64 {
    let closed = chunks.len().checked_sub(2).map(|i| chunks[i]);
    closed
        .or(chunks.last().copied())
        .map_or(last_partition, |c| c.end - c.first)
        .max(MIN_PARTITION_SPAN)
}

/// Partitions a pass keeps made ahead of a topic's end.
pub const PARTITIONS_AHEAD: u64 = 4;

/// How far ahead of a topic's end its partitions should reach after a pass, given the span of
/// the next partition: [`PARTITIONS_AHEAD`] partitions' worth once the topic's chunks sized it
/// (`sized_by_chunks`), so that appends until the next pass find partitions made for them even
/// at full speed (a partition holds an eighth of the retention, which a fast producer can fill
/// between two passes; an append that finds no partition makes its own, holding up the topic's
/// other appends meanwhile). One partition's worth before that: the span is then the first
/// partition's, which says nothing of the topic's retention, and partitions that long would
/// keep retained-out messages on disk for long.
pub fn partitions_wanted_to(end: u64, span: u64, sized_by_chunks: bool) -> u64 {
    let ahead = if sized_by_chunks { PARTITIONS_AHEAD } else { 1 };
    end.saturating_add(span.saturating_mul(ahead))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_pass_is_due_every_2_s_and_at_the_first_tick_after_an_append() {
        let every = Duration::from_millis(250);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let last = Some(LastPass {
            activity: 7,
            began: at(0),
        });
        let not_busy = t0;
        assert!(pass_due(None, 7, at(250), not_busy, every), "the first");
        assert!(!pass_due(last, 7, at(250), not_busy, every));
        assert!(!pass_due(last, 7, at(1999), not_busy, every));
        assert!(
            pass_due(last, 7, at(2000), not_busy, every),
            "idle: every 2 s"
        );
        assert!(
            pass_due(last, 8, at(250), not_busy, every),
            "after an append"
        );
        assert!(
            pass_due(last, 7, at(250), at(1000), every),
            "busy: every tick"
        );
    }

    const KB: u64 = 1000;

    fn log(start: u64, end: u64, start_bytes: u64, end_bytes: u64, newest_ms: u64) -> Log {
        Log {
            start,
            end,
            start_bytes,
            end_bytes,
            newest_ms,
        }
    }

    fn by_bytes(bytes: u64) -> Retention {
        Retention {
            ms: None,
            bytes: Some(bytes),
        }
    }

    fn by_age(ms: u64) -> Retention {
        Retention {
            ms: Some(ms),
            bytes: None,
        }
    }

    #[test]
    fn the_first_pass_closes_the_whole_log_into_one_chunk() {
        let plan = plan_pass(&log(0, 10, 0, 1000, 50), &[], by_bytes(80 * KB), 60);
        assert_eq!(
            plan.chunk,
            Some(Chunk {
                first: 0,
                end: 10,
                first_bytes: 0,
                end_bytes: 1000,
                opened_ms: 50,
                newest_ms: 50
            })
        );
        assert_eq!(plan.new_start, None);
    }

    #[test]
    fn a_chunk_grows_to_an_eighth_of_the_retention_then_a_new_one_begins() {
        let first = plan_pass(&log(0, 10, 0, 5 * KB, 1), &[], by_bytes(80 * KB), 1)
            .chunk
            .unwrap();
        // 9 KB since the chunk began: under 10 KB, the same chunk grows.
        let grown = plan_pass(&log(0, 18, 0, 9 * KB, 2), &[first], by_bytes(80 * KB), 2)
            .chunk
            .unwrap();
        assert_eq!((grown.first, grown.end, grown.end_bytes), (0, 18, 9 * KB));
        // 12 KB: over, a new chunk begins where the last one ended.
        let next = plan_pass(&log(0, 25, 0, 12 * KB, 3), &[grown], by_bytes(80 * KB), 3)
            .chunk
            .unwrap();
        assert_eq!(
            (next.first, next.end, next.first_bytes, next.end_bytes),
            (18, 25, 9 * KB, 12 * KB)
        );
        assert_eq!(next.opened_ms, 2);
        // Nothing new: nothing to write.
        assert_eq!(
            plan_pass(
                &log(0, 25, 0, 12 * KB, 3),
                &[grown, next],
                by_bytes(80 * KB),
                9
            )
            .chunk,
            None
        );
    }

    #[test]
    fn a_pass_is_outpaced_when_a_chunks_worth_arrived_since_the_last() {
        let first = plan_pass(&log(0, 10, 0, 5 * KB, 1), &[], by_bytes(80 * KB), 1);
        assert!(!first.outpaced, "5 KB of a 10 KB chunk");
        let first = first.chunk.unwrap();
        // 10 KB more since the chunks' end (15 KB in all): a chunk's worth.
        let after = plan_pass(&log(0, 30, 0, 15 * KB, 2), &[first], by_bytes(80 * KB), 2);
        assert!(after.outpaced);
        // Counted from the start when it lies past the chunks (retention removed them all).
        let restarted = log(40, 50, 30 * KB, 39 * KB, 3);
        assert!(!plan_pass(&restarted, &[], by_bytes(80 * KB), 3).outpaced);
        // Without a size limit there is no chunk's worth to outpace.
        assert!(!plan_pass(&log(0, 9, 0, 99 * KB, 1), &[], by_age(800), 1).outpaced);
    }

    #[test]
    fn chunks_also_end_after_an_eighth_of_the_retention_time() {
        let first = plan_pass(&log(0, 1, 0, 100, 1000), &[], by_age(800), 1000)
            .chunk
            .unwrap();
        let grown = plan_pass(&log(0, 2, 0, 200, 1099), &[first], by_age(800), 1099).chunk;
        assert_eq!(grown.unwrap().first, 0);
        let next = plan_pass(&log(0, 2, 0, 200, 1100), &[first], by_age(800), 1100).chunk;
        assert_eq!(next.unwrap().first, 1);
    }

    fn chunk(first: u64, end: u64, first_bytes: u64, end_bytes: u64, newest_ms: u64) -> Chunk {
        Chunk {
            first,
            end,
            first_bytes,
            end_bytes,
            opened_ms: 0,
            newest_ms,
        }
    }

    #[test]
    fn by_size_the_oldest_chunks_go_while_the_limit_is_still_held() {
        // Four chunks of 10 KB; 40 KB held, limit 25 KB: the first goes (30 KB remain), the
        // second would leave 20 KB, under the limit, so it stays.
        let chunks = [
            chunk(0, 10, 0, 10 * KB, 1),
            chunk(10, 20, 10 * KB, 20 * KB, 2),
            chunk(20, 30, 20 * KB, 30 * KB, 3),
            chunk(30, 40, 30 * KB, 40 * KB, 4),
        ];
        let plan = plan_pass(&log(0, 40, 0, 40 * KB, 4), &chunks, by_bytes(25 * KB), 5);
        assert_eq!(plan.new_start, Some((10, 10 * KB)));
        // Exactly the limit after removal: it goes too.
        let plan = plan_pass(&log(0, 40, 0, 40 * KB, 4), &chunks, by_bytes(20 * KB), 5);
        assert_eq!(plan.new_start, Some((20, 20 * KB)));
        // The newest chunk alone over the limit is kept: the newest bytes always are.
        let plan = plan_pass(&log(0, 40, 0, 40 * KB, 4), &chunks, by_bytes(KB), 5);
        assert_eq!(plan.new_start, Some((30, 30 * KB)));
    }

    #[test]
    fn by_age_every_expired_chunk_goes_even_the_newest() {
        let chunks = [chunk(5, 10, 500, 1000, 100), chunk(10, 20, 1000, 2000, 200)];
        let log = log(5, 20, 500, 2000, 200);
        assert_eq!(plan_pass(&log, &chunks, by_age(1000), 1100).new_start, None);
        assert_eq!(
            plan_pass(&log, &chunks, by_age(1000), 1101).new_start,
            Some((10, 1000))
        );
        assert_eq!(
            plan_pass(&log, &chunks, by_age(1000), 1201).new_start,
            Some((20, 2000))
        );
    }

    #[test]
    fn the_stricter_of_age_and_size_wins_and_the_start_never_moves_back() {
        let chunks = [
            chunk(0, 10, 0, 10 * KB, 100),
            chunk(10, 20, 10 * KB, 20 * KB, 200),
            chunk(20, 30, 20 * KB, 30 * KB, 300),
        ];
        let both = Retention {
            ms: Some(1000),
            bytes: Some(20 * KB),
        };
        let log = log(0, 30, 0, 30 * KB, 300);
        assert_eq!(
            plan_pass(&log, &chunks, both, 1150).new_start,
            Some((10, 10 * KB))
        );
        assert_eq!(
            plan_pass(&log, &chunks, both, 1250).new_start,
            Some((20, 20 * KB))
        );
        let moved = Log { start: 20, ..log };
        assert_eq!(plan_pass(&moved, &chunks[2..], both, 1150).new_start, None);
    }

    #[test]
    fn after_everything_expired_the_next_chunk_begins_at_the_start() {
        // Start moved to the end (20), its chunks were dropped; new messages arrive.
        let plan = plan_pass(&log(20, 25, 2000, 2500, 900), &[], by_age(1000), 950);
        let chunk = plan.chunk.unwrap();
        assert_eq!(
            (chunk.first, chunk.end, chunk.first_bytes, chunk.end_bytes),
            (20, 25, 2000, 2500)
        );
    }

    #[test]
    fn settings_fall_back_to_the_broker_default() {
        let default = Retention {
            ms: Some(7),
            bytes: None,
        };
        let settings = RetentionSettings {
            ms: None,
            bytes: Some(9),
        };
        assert_eq!(
            default.for_topic(settings),
            Retention {
                ms: Some(7),
                bytes: Some(9)
            }
        );
        let change = RetentionChange {
            ms: Some(Some(3)),
            bytes: Some(None),
        };
        assert_eq!(
            change.apply(settings),
            RetentionSettings {
                ms: Some(3),
                bytes: None
            }
        );
        assert_eq!(RetentionChange::default().apply(settings), settings);
    }

    #[test]
    fn positions_before_the_start_continue_from_the_start() {
        let log = log(10, 15, 0, 0, 0);
        assert_eq!(log.clamp(3), 10);
        assert_eq!(log.after(3), 5);
        assert_eq!(log.after(12), 3);
        assert_eq!(log.after(20), 0);
    }

    #[test]
    fn partitions_span_about_a_chunk() {
        assert_eq!(partition_span(&[], 4096), 4096);
        let chunks = [chunk(0, 1000, 0, 0, 0), chunk(1000, 1200, 0, 0, 0)];
        assert_eq!(partition_span(&chunks, 4096), 1000);
        assert_eq!(partition_span(&chunks[..1], 4096), 1000);
        assert_eq!(
            partition_span(&[chunk(0, 2, 0, 0, 0), chunk(2, 3, 0, 0, 0)], 9),
            MIN_PARTITION_SPAN
        );
        assert_eq!(
            partitions_wanted_to(100, 50, true),
            100 + 50 * PARTITIONS_AHEAD
        );
        assert_eq!(partitions_wanted_to(100, 4096, false), 100 + 4096);
    }
}
