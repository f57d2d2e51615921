//! Idempotent appends: each producer numbers its messages 0, 1, 2, … and sends a batch with
//! the number of its first message. The broker remembers where the producer's last batch
//! went, so a batch retried after a lost response is recognised and not stored again.
//! A client keeps one batch in flight per producer, so "the last batch" is the only retry
//! that can arrive.

use super::Appended;

/// What a store keeps per producer (columns of the `producers` table).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProducerSequence {
    /// The sequence number the next new batch must start with.
    pub next: u64,
    /// Where the last stored batch went, to answer its retries.
    pub last_base_offset: u64,
    pub last_count: u64,
}

/// What to do with a batch that carries `sequence`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A new batch: store it.
    Append,
    /// A retry of the last stored batch: answer as before, store nothing.
    Duplicate(Appended),
    /// Neither: the producer lost track of what was stored.
    Mismatch { expected: u64 },
}

impl ProducerSequence {
    pub fn judge(&self, sequence: u64, count: u64) -> Verdict {
        if sequence == self.next {
            Verdict::Append
        } else if self.last_count > 0
            && count == self.last_count
            && sequence.checked_add(count) == Some(self.next)
        {
            Verdict::Duplicate(Appended {
                base_offset: self.last_base_offset,
                count,
                duplicate: true,
            })
        } else {
            Verdict::Mismatch {
                expected: self.next,
            }
        }
    }

    /// Records a stored batch of `count` messages starting at `base_offset`.
    pub fn record(&mut self, count: u64, base_offset: u64) {
        self.next += count;
        self.last_base_offset = base_offset;
        self.last_count = count;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_batches_append_and_the_last_one_is_recognised_when_retried() {
        let mut seq = ProducerSequence::default();
        assert_eq!(seq.judge(0, 3), Verdict::Append);
        seq.record(3, 10);
        assert_eq!(
            seq.judge(0, 3),
            Verdict::Duplicate(Appended {
                base_offset: 10,
                count: 3,
                duplicate: true
            })
        );
        assert_eq!(seq.judge(3, 2), Verdict::Append);
        assert_eq!(seq.judge(4, 2), Verdict::Mismatch { expected: 3 });
        assert_eq!(seq.judge(0, 2), Verdict::Mismatch { expected: 3 });
        seq.record(2, 13);
        assert_eq!(seq.judge(0, 3), Verdict::Mismatch { expected: 5 });
    }
}
