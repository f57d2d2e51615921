//! SQLite's segment tables: each topic's messages live in tables of consecutive offset
//! ranges, `messages_{topic id}_{first offset}`, so that retention frees a range of messages by
//! dropping its table instead of deleting its rows.
//!
//! Why: a DELETE removes rows one at a time. Each removal rewrites its page, the b-tree is
//! rebalanced as pages empty, and every page touched goes through the WAL and back into the
//! database file at the checkpoint: with retention enforcing a size limit, the writer spent
//! about 1.3 times the CPU per message of an unlimited topic. A DROP frees the table's pages
//! whole, without rewriting them (SQLite's `secure_delete` is off): 200,000 rows of 100 bytes
//! took 0.34 µs per row to DELETE by range and 0.026 µs to DROP, with 23.5 MB of WAL written
//! against 0.1 MB (docs/BENCHMARKS.md).
//!
//! A segment holds the offsets from its first up to the next segment's first; appends go to
//! the newest. Segments are closed by the retention pass (a new one is made at the topic's
//! end) once the newest holds about as many messages as the topic's last closed retention
//! chunk, or [`SEGMENT_BYTES`]: so a segment is about a chunk, and a topic whose retention
//! drops whole chunks drops whole segments, at most one segment behind. A segment is dropped
//! once the next one begins at or below the start: it holds nothing readable.
//!
//! Rows are never deleted from a segment, so a reader needs no snapshot across segments: a
//! segment it reads either holds every message of its range written so far, or is gone (and
//! the start has moved past it). Statements name the tables (a table's name cannot be a bound
//! parameter), so the broker keeps the list of each topic's segments in memory
//! ([`SegmentTables`]), read from the schema at start and changed by the writer alone, under
//! the writer connection: a segment made is listed before any message goes into it, and a
//! segment is unlisted just before its DROP (no reader needs it: the start has moved past it,
//! and a reader that had looked it up finds it gone, looks again and finds the next).

use super::retention::{Chunk, Log};
use std::collections::HashMap;
use std::sync::Mutex;

/// A segment is closed, whatever the chunks say, once this many bytes were appended to it
/// (as retention counts them): dropping one then walks 16,384 pages at most, a few
/// milliseconds of the writer's time.
pub const SEGMENT_BYTES: u64 = 64 << 20;

/// A segment is never closed with fewer messages than this (tiny retention limits).
const MIN_SEGMENT_MESSAGES: u64 = 16;

const PREFIX: &str = "messages_";

/// The table of topic `topic_id`'s messages from offset `first` on. (Made of numbers only:
/// statements name it.)
pub fn segment_table(topic_id: i64, first: u64) -> String {
    format!("{PREFIX}{topic_id}_{first}")
}

/// The topic and first offset of a segment table's name; `None` for any other name.
pub fn parse_segment_table(name: &str) -> Option<(i64, u64)> {
    let (topic, first) = name.strip_prefix(PREFIX)?.split_once('_')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(topic) || !digits(first) {
        return None;
    }
    Some((topic.parse().ok()?, first.parse().ok()?))
}

/// One segment: its first offset, and the topic's byte count when it was made (0 when not
/// known: made before the broker started).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentTable {
    pub first: u64,
    pub opened_bytes: u64,
}

/// A topic's first segment, made with the topic.
const FIRST_SEGMENT: SegmentTable = SegmentTable {
    first: 0,
    opened_bytes: 0,
};

/// Every topic's segments, oldest first. A topic not listed has one segment, from offset 0:
/// a topic made since the list was read.
#[derive(Debug, Default)]
pub struct SegmentTables(Mutex<HashMap<i64, Vec<SegmentTable>>>);

impl SegmentTables {
    /// The segments of the tables named `names` (other names are ignored).
    pub fn from_table_names<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> Self {
        let mut by_topic: HashMap<i64, Vec<SegmentTable>> = HashMap::new();
        for (topic_id, first) in names
            .into_iter()
            .filter_map(|name| parse_segment_table(name.as_ref()))
        {
            by_topic.entry(topic_id).or_default().push(SegmentTable {
                first,
                opened_bytes: 0,
            });
        }
        for segments in by_topic.values_mut() {
            segments.sort_by_key(|s| s.first);
        }
        SegmentTables(Mutex::new(by_topic))
    }

    fn with<T>(&self, topic_id: i64, read: impl FnOnce(&[SegmentTable]) -> T) -> T {
        let map = self.0.lock().expect("segment list lock");
        read(
            map.get(&topic_id)
                .map_or(&[FIRST_SEGMENT][..], Vec::as_slice),
        )
    }

    /// The first offsets of topic `topic_id`'s segments, oldest first.
    pub fn firsts(&self, topic_id: i64) -> Vec<u64> {
        self.with(topic_id, |segments| {
            segments.iter().map(|s| s.first).collect()
        })
    }

    /// The segment that holds `offset`, if any is listed at or below it.
    pub fn containing(&self, topic_id: i64, offset: u64) -> Option<u64> {
        self.with(topic_id, |segments| {
            segments
                .iter()
                .rev()
                .find(|s| s.first <= offset)
                .map(|s| s.first)
        })
    }

    /// The segment appends go to. (The first, for a topic whose segments are all being
    /// dropped with it: readers then find no table and answer that the topic is gone.)
    pub fn newest(&self, topic_id: i64) -> SegmentTable {
        self.with(topic_id, |segments| {
            segments.last().copied().unwrap_or(FIRST_SEGMENT)
        })
    }

    /// Lists a segment made (its CREATE committed, or about to).
    pub fn made(&self, topic_id: i64, segment: SegmentTable) {
        let mut map = self.0.lock().expect("segment list lock");
        let segments = map.entry(topic_id).or_insert_with(|| vec![FIRST_SEGMENT]);
        if let Err(at) = segments.binary_search_by_key(&segment.first, |s| s.first) {
            segments.insert(at, segment);
        }
    }

    /// Unlists a segment about to be dropped.
    pub fn dropped(&self, topic_id: i64, first: u64) {
        let mut map = self.0.lock().expect("segment list lock");
        if let Some(segments) = map.get_mut(&topic_id) {
            segments.retain(|s| s.first != first);
        }
    }

    /// Forgets a topic whose tables are all dropped.
    pub fn forget(&self, topic_id: i64) {
        self.0.lock().expect("segment list lock").remove(&topic_id);
    }
}

/// Whether a topic's newest segment should be closed now, and a new one begun at its end:
/// once it holds as many messages as the topic's last closed chunk (so that a segment is
/// about a chunk) or [`SEGMENT_BYTES`]. Never an empty one.
pub fn should_close(newest: SegmentTable, log: &Log, chunks: &[Chunk]) -> bool {
    if log.end <= newest.first {
        return false;
    }
    let held = log.end - newest.first;
    let closed_chunk = chunks.len().checked_sub(2).map(|i| chunks[i]);
    let as_long_as_a_chunk =
        closed_chunk.is_some_and(|c| held >= (c.end - c.first).max(MIN_SEGMENT_MESSAGES));
    as_long_as_a_chunk || log.end_bytes.saturating_sub(newest.opened_bytes) >= SEGMENT_BYTES
}

/// The segments that hold nothing at or past `start` (the next one begins at or below it),
/// oldest first. Never the newest.
pub fn wholly_below(firsts: &[u64], start: u64) -> Vec<u64> {
    firsts
        .windows(2)
        .take_while(|pair| pair[1] <= start)
        .map(|pair| pair[0])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(first: u64, end: u64) -> Chunk {
        Chunk {
            first,
            end,
            first_bytes: 0,
            end_bytes: 0,
            opened_ms: 0,
            newest_ms: 0,
        }
    }

    fn log(end: u64, end_bytes: u64) -> Log {
        Log {
            start: 0,
            end,
            start_bytes: 0,
            end_bytes,
            newest_ms: 0,
        }
    }

    fn segment(first: u64) -> SegmentTable {
        SegmentTable {
            first,
            opened_bytes: 0,
        }
    }

    #[test]
    fn names_are_made_of_numbers_and_read_back() {
        assert_eq!(segment_table(7, 4096), "messages_7_4096");
        assert_eq!(parse_segment_table("messages_7_4096"), Some((7, 4096)));
        for other in [
            "messages",
            "messages_7",
            "messages_7_",
            "messages__1",
            "messages_7_1_2",
            "messages_x_1",
            "topics",
        ] {
            assert_eq!(parse_segment_table(other), None, "{other}");
        }
    }

    #[test]
    fn the_list_is_read_from_table_names_and_kept_in_order() {
        let tables = SegmentTables::from_table_names([
            "messages_1_300",
            "messages_1_0",
            "topics",
            "messages_2_50",
        ]);
        assert_eq!(tables.firsts(1), [0, 300]);
        assert_eq!(tables.firsts(2), [50]);
        // A topic made since: one segment from 0.
        assert_eq!(tables.firsts(3), [0]);
        assert_eq!(tables.containing(1, 299), Some(0));
        assert_eq!(tables.containing(1, 300), Some(300));
        assert_eq!(tables.containing(2, 49), None);
        tables.made(1, segment(900));
        tables.made(3, segment(10));
        assert_eq!(tables.newest(1), segment(900));
        assert_eq!(tables.firsts(3), [0, 10]);
        tables.dropped(1, 0);
        assert_eq!(tables.firsts(1), [300, 900]);
        tables.forget(1);
        assert_eq!(tables.firsts(1), [0]);
    }

    #[test]
    fn a_segment_closes_at_about_a_chunk_or_its_byte_cap() {
        let closed = [chunk(0, 100), chunk(100, 130)];
        // No closed chunk yet: only the byte cap closes it.
        assert!(!should_close(segment(0), &log(500, 1000), &closed[1..]));
        assert!(should_close(
            segment(0),
            &log(500, SEGMENT_BYTES),
            &closed[1..]
        ));
        // As many messages as the last closed chunk.
        assert!(!should_close(segment(100), &log(199, 0), &closed));
        assert!(should_close(segment(100), &log(200, 0), &closed));
        // Never an empty segment, never a tiny one.
        assert!(!should_close(
            segment(500),
            &log(500, SEGMENT_BYTES * 2),
            &closed
        ));
        let tiny = [chunk(0, 2), chunk(2, 3)];
        assert!(!should_close(segment(10), &log(25, 0), &tiny));
        assert!(should_close(segment(10), &log(26, 0), &tiny));
        // The byte cap counts from the segment's opening.
        let opened = SegmentTable {
            first: 0,
            opened_bytes: 10,
        };
        assert!(!should_close(opened, &log(5, SEGMENT_BYTES + 9), &[]));
    }

    #[test]
    fn only_segments_wholly_below_the_start_go() {
        assert_eq!(wholly_below(&[0, 100, 200], 99), Vec::<u64>::new());
        assert_eq!(wholly_below(&[0, 100, 200], 100), [0]);
        assert_eq!(wholly_below(&[0, 100, 200], 250), [0, 100]);
        // The newest stays, even below the start (an emptied topic).
        assert_eq!(wholly_below(&[0], 5), Vec::<u64>::new());
    }
}
