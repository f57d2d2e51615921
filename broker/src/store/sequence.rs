//! Idempotent appends: each producer numbers its messages 0, 1, 2, … and sends a batch with
//! the number of its first message. The broker remembers where the producer's last
//! [`RECENT_BATCHES`] batches went, so a client may keep that many batches in flight and a
//! retry of any of them (after a lost response) is recognised and not stored again. A batch
//! that starts past the next expected number (a gap: an earlier batch has not arrived) is
//! refused, so a producer's messages are stored in its order.

use super::Appended;

/// How many of a producer's most recent batches the broker can recognise as retries: the
/// largest `max_in_flight` a client may use (Kafka's idempotent producer allows 5 too).
pub const RECENT_BATCHES: usize = myqueue_wire::PRODUCER_WINDOW;

/// One stored batch, as its retries are answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoredBatch {
    /// The producer's sequence number of its first message.
    pub sequence: u64,
    pub count: u64,
    pub base_offset: u64,
}

/// What a store keeps per producer (columns of the `producers` table).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProducerSequence {
    /// The sequence number the next new batch must start with.
    pub next: u64,
    /// The most recent batches, oldest first; `len` of them are set.
    recent: [StoredBatch; RECENT_BATCHES],
    len: usize,
}

/// What to do with a batch that carries `sequence`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A new batch: store it.
    Append,
    /// A retry of a recent stored batch: answer as before, store nothing.
    Duplicate(Appended),
    /// Neither: a gap (an earlier batch is missing), a batch older than the broker
    /// remembers, or one that does not match the stored batch at its number.
    Mismatch { expected: u64 },
}

impl ProducerSequence {
    /// The state as stored: `next`, and the recent batches (oldest first; only the newest
    /// [`RECENT_BATCHES`] are kept).
    pub fn new(next: u64, recent: impl IntoIterator<Item = StoredBatch>) -> Self {
        let mut state = ProducerSequence {
            next,
            ..Default::default()
        };
        for batch in recent {
            state.remember(batch);
        }
        state
    }

    pub fn judge(&self, sequence: u64, count: u64) -> Verdict {
        if sequence == self.next {
            return Verdict::Append;
        }
        match self.recent().iter().find(|b| b.sequence == sequence) {
            Some(batch) if batch.count == count && count > 0 => Verdict::Duplicate(Appended {
                base_offset: batch.base_offset,
                count,
                duplicate: true,
            }),
            _ => Verdict::Mismatch {
                expected: self.next,
            },
        }
    }

    /// Records a stored batch of `count` messages starting at `base_offset`.
    pub fn record(&mut self, count: u64, base_offset: u64) {
        let batch = StoredBatch {
            sequence: self.next,
            count,
            base_offset,
        };
        self.next += count;
        // An empty batch cannot be told from its successor (same number): not remembered.
        if count > 0 {
            self.remember(batch);
        }
    }

    /// The recent batches, oldest first.
    pub fn recent(&self) -> &[StoredBatch] {
        &self.recent[..self.len]
    }

    /// The newest stored batch (the `last_base_offset`, `last_count` columns).
    pub fn last(&self) -> StoredBatch {
        self.recent().last().copied().unwrap_or_default()
    }

    fn remember(&mut self, batch: StoredBatch) {
        if self.len == RECENT_BATCHES {
            self.recent.copy_within(1.., 0);
            self.len -= 1;
        }
        self.recent[self.len] = batch;
        self.len += 1;
    }

    /// The recent batches as stored in the `recent_batches` column: a JSON array of
    /// `[sequence, count, base_offset]`, oldest first.
    pub fn recent_json(&self) -> String {
        let rows: Vec<[u64; 3]> = self
            .recent()
            .iter()
            .map(|b| [b.sequence, b.count, b.base_offset])
            .collect();
        serde_json::to_string(&rows).expect("numbers serialise")
    }

    /// The state read from a row: `recent_batches` as [`Self::recent_json`] wrote it, or
    /// empty in a row written before that column existed, whose last batch is then the only
    /// one known (`last_base_offset`, `last_count`).
    pub fn from_row(
        next: u64,
        last_base_offset: u64,
        last_count: u64,
        recent_json: &str,
    ) -> Option<Self> {
        if recent_json.is_empty() {
            let last = next
                .checked_sub(last_count)
                .filter(|_| last_count > 0)
                .map(|sequence| StoredBatch {
                    sequence,
                    count: last_count,
                    base_offset: last_base_offset,
                });
            return Some(ProducerSequence::new(next, last));
        }
        let rows: Vec<[u64; 3]> = serde_json::from_str(recent_json).ok()?;
        Some(ProducerSequence::new(
            next,
            rows.into_iter()
                .map(|[sequence, count, base_offset]| StoredBatch {
                    sequence,
                    count,
                    base_offset,
                }),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn duplicate(base_offset: u64, count: u64) -> Verdict {
        Verdict::Duplicate(Appended {
            base_offset,
            count,
            duplicate: true,
        })
    }

    #[test]
    fn new_batches_append_and_the_last_one_is_recognised_when_retried() {
        let mut seq = ProducerSequence::default();
        assert_eq!(seq.judge(0, 3), Verdict::Append);
        seq.record(3, 10);
        assert_eq!(seq.judge(0, 3), duplicate(10, 3));
        assert_eq!(seq.judge(3, 2), Verdict::Append);
        assert_eq!(seq.judge(4, 2), Verdict::Mismatch { expected: 3 });
        assert_eq!(seq.judge(0, 2), Verdict::Mismatch { expected: 3 });
        seq.record(2, 13);
        assert_eq!(seq.judge(0, 3), duplicate(10, 3));
        assert_eq!(seq.judge(3, 2), duplicate(13, 2));
    }

    #[test]
    fn any_of_the_recent_batches_is_recognised_and_older_ones_and_gaps_are_refused() {
        let mut seq = ProducerSequence::default();
        // Batches of 2 at sequences 0, 2, …, 12 stored at offsets 100, 110, …
        for i in 0..7u64 {
            assert_eq!(seq.judge(2 * i, 2), Verdict::Append);
            seq.record(2, 100 + 10 * i);
        }
        assert_eq!(seq.next, 14);
        for i in 2..7u64 {
            assert_eq!(seq.judge(2 * i, 2), duplicate(100 + 10 * i, 2), "batch {i}");
        }
        // Forgotten (older than the window), misaligned, a wrong count, a gap.
        for (sequence, count) in [(0, 2), (2, 2), (5, 2), (4, 3), (16, 2), (15, 1)] {
            assert_eq!(
                seq.judge(sequence, count),
                Verdict::Mismatch { expected: 14 },
                "{sequence}+{count}"
            );
        }
    }

    #[test]
    fn the_window_survives_its_column_and_a_row_from_before_it() {
        let mut seq = ProducerSequence::default();
        for i in 0..3u64 {
            seq.record(1 + i, 50 * i);
        }
        let json = seq.recent_json();
        assert_eq!(json, "[[0,1,0],[1,2,50],[3,3,100]]");
        let last = seq.last();
        assert_eq!(
            ProducerSequence::from_row(seq.next, last.base_offset, last.count, &json),
            Some(seq)
        );
        // Written before `recent_batches`: only the last batch is known.
        let old = ProducerSequence::from_row(6, 100, 3, "").unwrap();
        assert_eq!(old.judge(3, 3), duplicate(100, 3));
        assert_eq!(old.judge(1, 2), Verdict::Mismatch { expected: 6 });
        assert_eq!(
            ProducerSequence::from_row(0, 0, 0, ""),
            Some(ProducerSequence::default())
        );
        assert_eq!(ProducerSequence::from_row(0, 0, 0, "not json"), None);
    }
}
