//! The arithmetic of a group commit, kept apart from SQL so that every store runs the same
//! rules: which batches are new, duplicate or refused (sequence numbers), which offsets each
//! new batch gets, and where each consumer's position moves.

use super::retention::batch_bytes;
use super::sequence::{ProducerSequence, Verdict};
use super::{Appended, Result, SeekTo, StoreError, StoredMessage};
use std::collections::HashMap;
use std::sync::Arc;

/// One validated append in a group.
#[derive(Clone)]
pub struct AppendJob {
    pub topic_id: i64,
    /// The topic's name, to wake its long polls after the commit.
    pub topic: Arc<str>,
    pub producer_id: u64,
    pub messages: Vec<String>,
    pub sequence: Option<u64>,
    /// A chunk of the topic's size limit, when it has one: how much of the topic one append
    /// group may carry (see `sql::group_share`).
    pub chunk_bytes: Option<u64>,
}

/// Messages to insert: `messages[i]` gets offset `base_offset + i`.
pub struct Segment {
    pub topic_id: i64,
    pub producer_id: u64,
    pub base_offset: u64,
    pub messages: Vec<String>,
}

/// A topic's new end after a group, the bytes the group added to it (see
/// [`super::retention::message_bytes`]) and its largest payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicEnd {
    pub topic_id: i64,
    pub end: u64,
    pub added_bytes: u64,
    /// PostgreSQL raises the topic's `largest_payload` to it, which its fetches rely on.
    pub largest_payload: u64,
}

pub struct AppendPlan {
    /// One answer per job, in the order of the jobs.
    pub outcomes: Vec<Result<Appended>>,
    /// What to insert, in offset order per topic.
    pub segments: Vec<Segment>,
    /// Every topic that got messages.
    pub topic_ends: Vec<TopicEnd>,
    /// The new state of every producer that appended with a sequence number.
    pub producers: Vec<(u64, ProducerSequence)>,
}

/// Where the topics of a group end, as the store knows them.
pub enum TopicEnds {
    /// Read under lock. A topic missing here was deleted after the producer was checked: its
    /// jobs are answered `producer_not_found` (the producer went with its topic).
    Locked(HashMap<i64, u64>),
    /// Not read: every topic is planned from offset 0, and the store adds the real end when it
    /// writes (and finds then whether the topic still exists).
    FromZero,
}

/// What a group of appends does, decided without touching its messages: the answers, where
/// each new batch goes, and the state the group leaves behind. [`plan_appends`] moves the
/// messages into place; PostgreSQL's guessed groups ([`super::guess`]) decide first and keep
/// their jobs, to start again should the guess prove wrong.
pub struct Decisions {
    /// One answer per job, in the order of the jobs.
    pub outcomes: Vec<Result<Appended>>,
    /// The jobs whose messages are stored, in planning order (offset order per topic).
    pub stored: Vec<usize>,
    /// Every topic that got messages.
    pub topic_ends: Vec<TopicEnd>,
    /// The new state of every producer that appended with a sequence number.
    pub producers: Vec<(u64, ProducerSequence)>,
}

/// Decides a group of appends. `ends` holds the current end offset of every topic the jobs
/// name, `producers` the state of every producer that sent a sequence number; the store must
/// hold both locked until it commits.
pub fn decide(
    jobs: &[AppendJob],
    ends: TopicEnds,
    mut producers: HashMap<u64, ProducerSequence>,
) -> Decisions {
    let (mut topic_ends, known) = match ends {
        TopicEnds::Locked(ends) => (ends, true),
        TopicEnds::FromZero => (HashMap::new(), false),
    };
    let mut outcomes: Vec<Option<Result<Appended>>> = (0..jobs.len()).map(|_| None).collect();
    let mut stored = Vec::with_capacity(jobs.len());
    let mut touched_topics: Vec<(i64, u64, u64)> = Vec::new();
    let mut touched_producers = Vec::new();
    for index in planning_order(jobs) {
        let job = &jobs[index];
        let outcome = &mut outcomes[index];
        let count = job.messages.len() as u64;
        if known && !topic_ends.contains_key(&job.topic_id) {
            *outcome = Some(Err(StoreError::ProducerNotFound(job.producer_id)));
            continue;
        }
        if let Some(sequence) = job.sequence {
            let state = producers.entry(job.producer_id).or_default();
            match state.judge(sequence, count) {
                Verdict::Append => {}
                Verdict::Duplicate(appended) => {
                    *outcome = Some(Ok(appended));
                    continue;
                }
                Verdict::Mismatch { expected } => {
                    *outcome = Some(Err(StoreError::SequenceMismatch {
                        producer_id: job.producer_id,
                        expected,
                        got: sequence,
                    }));
                    continue;
                }
            }
        }
        let end = topic_ends.entry(job.topic_id).or_default();
        let base_offset = *end;
        *end += count;
        let bytes = batch_bytes(&job.messages);
        let largest = job
            .messages
            .iter()
            .map(|m| m.len() as u64)
            .max()
            .unwrap_or(0);
        match touched_topics
            .iter_mut()
            .find(|(id, _, _)| *id == job.topic_id)
        {
            Some((_, added, topic_largest)) => {
                *added += bytes;
                *topic_largest = largest.max(*topic_largest);
            }
            None => touched_topics.push((job.topic_id, bytes, largest)),
        }
        if job.sequence.is_some() {
            if let Some(state) = producers.get_mut(&job.producer_id) {
                state.record(count, base_offset);
            }
            if !touched_producers.contains(&job.producer_id) {
                touched_producers.push(job.producer_id);
            }
        }
        *outcome = Some(Ok(Appended {
            base_offset,
            count,
            duplicate: false,
        }));
        if count > 0 {
            stored.push(index);
        }
    }
    Decisions {
        outcomes: outcomes
            .into_iter()
            .map(|outcome| outcome.expect("every job is answered"))
            .collect(),
        stored,
        topic_ends: touched_topics
            .into_iter()
            .map(|(topic_id, added_bytes, largest_payload)| TopicEnd {
                topic_id,
                end: topic_ends[&topic_id],
                added_bytes,
                largest_payload,
            })
            .collect(),
        producers: touched_producers
            .into_iter()
            .map(|id| (id, producers[&id]))
            .collect(),
    }
}

/// Plans a group of appends ([`decide`]), moving each new batch's messages into place.
pub fn plan_appends(
    jobs: Vec<AppendJob>,
    ends: TopicEnds,
    producers: HashMap<u64, ProducerSequence>,
) -> AppendPlan {
    let decisions = decide(&jobs, ends, producers);
    let mut jobs: Vec<Option<AppendJob>> = jobs.into_iter().map(Some).collect();
    let segments = decisions
        .stored
        .iter()
        .map(|&index| {
            let job = jobs[index].take().expect("each job is stored once");
            let base_offset = decisions.outcomes[index]
                .as_ref()
                .map(|appended| appended.base_offset)
                .expect("a stored job was appended");
            Segment {
                topic_id: job.topic_id,
                producer_id: job.producer_id,
                base_offset,
                messages: job.messages,
            }
        })
        .collect();
    AppendPlan {
        outcomes: decisions.outcomes,
        segments,
        topic_ends: decisions.topic_ends,
        producers: decisions.producers,
    }
}

/// The order to plan `jobs` in: as they came, except that each producer's sequenced batches
/// take that producer's places in sequence order. A client with several batches in flight may
/// have them arrive in any order; when they arrive together, all of them are stored, in its
/// order.
fn planning_order(jobs: &[AppendJob]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    let mut places: HashMap<u64, Vec<usize>> = HashMap::new();
    for (index, job) in jobs.iter().enumerate() {
        if job.sequence.is_some() {
            places.entry(job.producer_id).or_default().push(index);
        }
    }
    for places in places.values().filter(|places| places.len() > 1) {
        let mut sorted = places.clone();
        sorted.sort_by_key(|&index| jobs[index].sequence);
        for (&place, &index) in places.iter().zip(&sorted) {
            order[place] = index;
        }
    }
    order
}

/// A consumer's state as a position group reads it (locked until commit).
#[derive(Debug, Clone, Copy)]
pub struct Cursor {
    pub topic_id: i64,
    pub position: u64,
    /// The topic's start: the oldest offset retention kept.
    pub start: u64,
    pub end: u64,
}

/// A change to one consumer's position.
#[derive(Debug, Clone, Copy)]
pub enum PositionOp {
    /// The assignment's dequeue: take the message at the position and move past it.
    Take,
    /// Move the position (commit or seek).
    Seek(SeekTo),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PositionOutcome {
    /// `Take` got the message at this (topic id, offset), or nothing was left.
    Took(Option<(i64, u64)>),
    /// `Seek` moved the position here.
    Moved(u64),
    /// `Seek` named an offset past the topic's end.
    OutOfRange { offset: u64, end: u64 },
    /// The consumer was not in the database (it vanished after this broker cached it, e.g.
    /// the database was restored from an older backup).
    Gone(u64),
}

/// A [`PositionOutcome`] with the taken message read: what a store answers per op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Positioned {
    Took(Option<StoredMessage>),
    Moved(u64),
    OutOfRange { offset: u64, end: u64 },
    Gone(u64),
}

impl Positioned {
    /// The answer to an op: its outcome, with the message it took (read by the store).
    pub fn new(outcome: PositionOutcome, taken: Option<StoredMessage>) -> Self {
        match outcome {
            PositionOutcome::Took(_) => Positioned::Took(taken),
            PositionOutcome::Moved(position) => Positioned::Moved(position),
            PositionOutcome::OutOfRange { offset, end } => Positioned::OutOfRange { offset, end },
            PositionOutcome::Gone(id) => Positioned::Gone(id),
        }
    }

    /// The answer to a `Take`.
    pub fn into_taken(self) -> Result<Option<StoredMessage>> {
        match self {
            Positioned::Took(message) => Ok(message),
            Positioned::Gone(id) => Err(StoreError::ConsumerNotFound(id)),
            Positioned::Moved(_) | Positioned::OutOfRange { .. } => {
                unreachable!("a take takes, it does not seek")
            }
        }
    }

    /// The answer to a `Seek` on `topic`.
    pub fn into_position(self, topic: &str) -> Result<u64> {
        match self {
            Positioned::Moved(position) => Ok(position),
            Positioned::OutOfRange { offset, end } => Err(StoreError::OffsetOutOfRange {
                topic: topic.to_owned(),
                offset,
                end,
            }),
            Positioned::Gone(id) => Err(StoreError::ConsumerNotFound(id)),
            Positioned::Took(_) => unreachable!("a seek moves, it does not take"),
        }
    }
}

impl PositionOutcome {
    /// The (topic id, offset) a `Take` got.
    pub fn taken(&self) -> Option<(i64, u64)> {
        match self {
            PositionOutcome::Took(taken) => *taken,
            _ => None,
        }
    }
}

pub struct PositionPlan {
    /// One outcome per op, in the order of the ops.
    pub outcomes: Vec<PositionOutcome>,
    /// New positions of the consumers that moved.
    pub positions: Vec<(u64, u64)>,
}

/// Plans a group of position changes, applied in order: two `Take`s with one consumer id
/// get consecutive offsets, never the same one. `cursors` holds every consumer named.
/// A position before the topic's start continues from the start: a `Take` gets the message
/// at the start, and a seek before it (or to the beginning) moves to the start.
pub fn plan_positions(
    ops: &[(u64, PositionOp)],
    mut cursors: HashMap<u64, Cursor>,
) -> PositionPlan {
    let mut moved = Vec::new();
    let outcomes = ops
        .iter()
        .map(|&(id, op)| {
            let Some(cursor) = cursors.get_mut(&id) else {
                return PositionOutcome::Gone(id);
            };
            let outcome = match op {
                PositionOp::Take if cursor.position.max(cursor.start) < cursor.end => {
                    let taken = cursor.position.max(cursor.start);
                    cursor.position = taken + 1;
                    PositionOutcome::Took(Some((cursor.topic_id, taken)))
                }
                PositionOp::Take => return PositionOutcome::Took(None),
                PositionOp::Seek(to) => {
                    let target = match to {
                        SeekTo::Beginning => cursor.start,
                        SeekTo::End => cursor.end,
                        SeekTo::Offset(offset) if offset <= cursor.end => offset.max(cursor.start),
                        SeekTo::Offset(offset) => {
                            return PositionOutcome::OutOfRange {
                                offset,
                                end: cursor.end,
                            };
                        }
                    };
                    cursor.position = target;
                    PositionOutcome::Moved(target)
                }
            };
            if !moved.contains(&id) {
                moved.push(id);
            }
            outcome
        })
        .collect();
    PositionPlan {
        outcomes,
        positions: moved
            .into_iter()
            .map(|id| (id, cursors[&id].position))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::retention::MESSAGE_OVERHEAD_BYTES;
    use super::*;

    fn job(topic_id: i64, producer_id: u64, n: usize, sequence: Option<u64>) -> AppendJob {
        AppendJob {
            topic_id,
            topic: format!("t{topic_id}").into(),
            producer_id,
            messages: (0..n).map(|i| format!("m{i}")).collect(),
            sequence,
            chunk_bytes: None,
        }
    }

    #[test]
    fn appends_in_one_group_get_consecutive_offsets_per_topic() {
        let plan = plan_appends(
            vec![job(1, 7, 2, None), job(2, 8, 1, None), job(1, 9, 3, None)],
            TopicEnds::Locked(HashMap::from([(1, 10), (2, 0)])),
            HashMap::new(),
        );
        let bases: Vec<u64> = plan
            .outcomes
            .iter()
            .map(|o| o.as_ref().unwrap().base_offset)
            .collect();
        assert_eq!(bases, [10, 0, 12]);
        let ends: Vec<(i64, u64)> = plan
            .topic_ends
            .iter()
            .map(|t| (t.topic_id, t.end))
            .collect();
        assert_eq!(ends, [(1, 15), (2, 1)]);
        // Two messages "m0", "m1" and three "m0", "m1", "m2": 2 bytes and the overhead each.
        assert_eq!(
            plan.topic_ends[0].added_bytes,
            5 * (2 + MESSAGE_OVERHEAD_BYTES)
        );
        assert_eq!(plan.segments.len(), 3);
    }

    #[test]
    fn a_retried_batch_in_the_same_group_is_a_duplicate() {
        let plan = plan_appends(
            vec![
                job(1, 7, 2, Some(0)),
                job(1, 7, 2, Some(0)),
                job(1, 7, 1, Some(5)),
            ],
            TopicEnds::Locked(HashMap::from([(1, 0)])),
            HashMap::from([(7, ProducerSequence::default())]),
        );
        assert!(!plan.outcomes[0].as_ref().unwrap().duplicate);
        assert_eq!(
            plan.outcomes[1].as_ref().unwrap(),
            &Appended {
                base_offset: 0,
                count: 2,
                duplicate: true
            }
        );
        assert!(matches!(
            plan.outcomes[2],
            Err(StoreError::SequenceMismatch { expected: 2, .. })
        ));
        assert_eq!(plan.topic_ends[0].end, 2);
        assert_eq!(plan.producers[0].1.next, 2);
    }

    #[test]
    fn a_producers_batches_arriving_together_out_of_order_are_stored_in_its_order() {
        // Producer 7's batches at sequences 4, 0, 2 (two messages each) with producer 8's
        // plain batch between them.
        let plan = plan_appends(
            vec![
                job(1, 7, 2, Some(4)),
                job(1, 8, 1, None),
                job(1, 7, 2, Some(0)),
                job(1, 7, 2, Some(2)),
            ],
            TopicEnds::Locked(HashMap::from([(1, 10)])),
            HashMap::from([(7, ProducerSequence::default())]),
        );
        let bases: Vec<u64> = plan
            .outcomes
            .iter()
            .map(|o| o.as_ref().unwrap().base_offset)
            .collect();
        // Answers in the jobs' order; producer 7's offsets in its order (sequences 0, 2, 4 at
        // 10, 13, 15), producer 8's batch in its place between them.
        assert_eq!(bases, [15, 12, 10, 13]);
        assert_eq!(plan.producers[0].1.next, 6);
        let firsts: Vec<(u64, u64)> = plan
            .segments
            .iter()
            .map(|s| (s.producer_id, s.base_offset))
            .collect();
        assert_eq!(firsts, [(7, 10), (8, 12), (7, 13), (7, 15)]);
    }

    #[test]
    fn takes_with_one_id_never_get_the_same_offset_and_seeks_apply_in_order() {
        use PositionOp::*;
        use PositionOutcome::*;
        let plan = plan_positions(
            &[
                (1, Take),
                (1, Take),
                (1, Take),
                (2, Take),
                (1, Seek(SeekTo::Offset(9))),
                (1, Seek(SeekTo::Beginning)),
                (1, Take),
            ],
            HashMap::from([
                (
                    1,
                    Cursor {
                        topic_id: 5,
                        position: 3,
                        start: 0,
                        end: 5,
                    },
                ),
                (
                    2,
                    Cursor {
                        topic_id: 6,
                        position: 0,
                        start: 0,
                        end: 0,
                    },
                ),
            ]),
        );
        assert_eq!(
            plan.outcomes,
            [
                Took(Some((5, 3))),
                Took(Some((5, 4))),
                Took(None),
                Took(None),
                OutOfRange { offset: 9, end: 5 },
                Moved(0),
                Took(Some((5, 0)))
            ]
        );
        assert_eq!(plan.positions, [(1, 1)]);
    }

    #[test]
    fn positions_before_the_start_continue_from_it() {
        use PositionOp::*;
        use PositionOutcome::*;
        let cursor = Cursor {
            topic_id: 5,
            position: 2,
            start: 10,
            end: 12,
        };
        let plan = plan_positions(
            &[
                (1, Take),
                (2, Seek(SeekTo::Offset(4))),
                (3, Seek(SeekTo::Beginning)),
            ],
            HashMap::from([(1, cursor), (2, cursor), (3, cursor)]),
        );
        assert_eq!(plan.outcomes, [Took(Some((5, 10))), Moved(10), Moved(10)]);
        assert_eq!(plan.positions, [(1, 11), (2, 10), (3, 10)]);
    }

    #[test]
    fn appends_to_a_deleted_topic_are_refused() {
        let plan = plan_appends(
            vec![job(1, 7, 2, None), job(2, 8, 1, None)],
            TopicEnds::Locked(HashMap::from([(2, 4)])),
            HashMap::new(),
        );
        assert_eq!(plan.outcomes[0], Err(StoreError::ProducerNotFound(7)));
        assert_eq!(plan.outcomes[1].as_ref().unwrap().base_offset, 4);
        assert_eq!(plan.segments.len(), 1);
        let unread = plan_appends(
            vec![job(1, 7, 2, None)],
            TopicEnds::FromZero,
            HashMap::new(),
        );
        assert_eq!(unread.outcomes[0].as_ref().unwrap().base_offset, 0);
    }
}
