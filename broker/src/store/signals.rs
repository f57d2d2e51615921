//! Wake-ups for long-polling fetches: one `watch` channel per topic whose value changes
//! whenever messages are appended to the topic (by this broker, or by another broker sharing
//! the PostgreSQL database, through LISTEN/NOTIFY).
//!
//! An append group committed by this broker also hands its messages to the fetches it wakes
//! (the topic's [`Tail`]): a consumer that waits at the end of the topic gets them without
//! reading them back from the database, which was most of the time between a commit and the
//! consumer's answer (a read per wake-up; on PostgreSQL, planned for each execution). Only
//! what is committed is handed over: the tail is set after the commit.

use super::plan::AppendJob;
use super::{Appended, FetchLimit, Fetched, Result, StoredMessage};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// A batch larger than this is not copied for the waiters: they read it from the store. (A
/// consumer waiting at the end of a topic is one that keeps up; its batches are small.)
const TAIL_BATCH_BYTES: usize = 256 * 1024;

/// How long after its commit a tail answers a fetch that was not woken by it
/// ([`Tail::answer_recent`]): long enough for a consumer answered as the group committed to
/// come back for the rest, short enough that what retention or a topic's deletion did since
/// is not hidden (the tail stays in the topic's signal until the next append).
const RECENT_TAIL: Duration = Duration::from_millis(100);

/// What the last append to a topic woke its waiters with.
#[derive(Clone, Default)]
pub struct Wake {
    /// The messages appended, when this broker committed them and kept a copy.
    pub tail: Option<Arc<Tail>>,
}

/// Messages just committed to a topic: `messages[i]` has offset `base + i`, and the topic
/// ended after them when they were committed.
pub struct Tail {
    pub base: u64,
    pub messages: Vec<StoredMessage>,
    /// When the tail was kept, just after the commit.
    kept: Instant,
}

impl Tail {
    /// The batches (first offset, messages) as one run, if each was copied and they follow
    /// each other once in offset order.
    fn joined(mut batches: Vec<CopiedBatch>, stored_ms: u64) -> Option<Tail> {
        batches.sort_unstable_by_key(|(base, _)| *base);
        let mut tail = Tail {
            base: batches.first()?.0,
            messages: Vec::new(),
            kept: Instant::now(),
        };
        for (base, copy) in batches {
            if base != tail.end() {
                return None;
            }
            let stored = (base..).zip(copy?).map(|(offset, payload)| StoredMessage {
                offset,
                payload,
                timestamp_ms: stored_ms,
            });
            tail.messages.extend(stored);
        }
        Some(tail)
    }

    /// The offset after the last message.
    pub fn end(&self) -> u64 {
        self.base + self.messages.len() as u64
    }

    /// What a fetch from `from` within `limit` gets from these messages alone, or `None` when
    /// `from` is not among them (the fetch reads the store instead). Like a read of the store,
    /// it answers at least one message, then stops before the byte budget is passed.
    pub fn answer(&self, from: u64, limit: FetchLimit) -> Option<Fetched> {
        if from < self.base || from >= self.end() {
            return None;
        }
        let unread = &self.messages[(from - self.base) as usize..];
        let messages = limit.apply(unread.iter().cloned());
        Some(Fetched::new(from, from, messages, self.end()))
    }

    /// [`Tail::answer`] for a fetch that was not woken by this tail, while the tail is recent
    /// ([`RECENT_TAIL`]); `None` after, when the fetch reads the store.
    pub fn answer_recent(&self, from: u64, limit: FetchLimit) -> Option<Fetched> {
        self.answer_recent_at(from, limit, Instant::now())
    }

    fn answer_recent_at(&self, from: u64, limit: FetchLimit, now: Instant) -> Option<Fetched> {
        if now.saturating_duration_since(self.kept) > RECENT_TAIL {
            return None;
        }
        self.answer(from, limit)
    }
}

impl Wake {
    /// Whether this wake-up says the topic ends at `from`: its tail, the last append, ended
    /// there. (A plain notification says nothing of where the topic ends.)
    pub fn ends_at(&self, from: u64) -> bool {
        self.tail.as_ref().is_some_and(|tail| tail.end() == from)
    }
}

/// A batch as stored: its first offset, and a copy of its messages when one was kept.
type CopiedBatch = (u64, Option<Vec<String>>);

/// Copies of an append group's batches, for the topics that have waiters, kept across the
/// commit (the batches themselves go to the store).
pub struct GroupTails {
    /// Per job, in order: its topic, and its messages when copied.
    jobs: Vec<(Arc<str>, Option<Vec<String>>)>,
}

impl GroupTails {
    pub fn keep(signals: &TopicSignals, jobs: &[AppendJob]) -> Self {
        let jobs = jobs
            .iter()
            .map(|job| {
                let small = job.messages.iter().map(String::len).sum::<usize>() <= TAIL_BATCH_BYTES;
                let copy = (small && signals.has_waiters(&job.topic)).then(|| job.messages.clone());
                (job.topic.clone(), copy)
            })
            .collect();
        GroupTails { jobs }
    }

    /// After the commit: what wakes the waiters of each topic that got messages, with them
    /// when every batch stored in the topic was copied and together they run without a gap (a
    /// producer's batches that arrived out of order are stored in sequence order: the
    /// group's jobs are not), else to read the store.
    pub fn wakes(self, outcomes: &[Result<Appended>], stored_ms: u64) -> Wakes {
        // Per topic, in the order first stored: its batches (first offset, copy).
        let mut topics: Vec<(Arc<str>, Vec<CopiedBatch>)> = Vec::new();
        for ((topic, copy), outcome) in self.jobs.into_iter().zip(outcomes) {
            let Ok(appended) = outcome else { continue };
            if appended.duplicate || appended.count == 0 {
                continue;
            }
            let batch = (appended.base_offset, copy);
            match topics.iter_mut().find(|(t, _)| *t == topic) {
                Some((_, batches)) => batches.push(batch),
                None => topics.push((topic, vec![batch])),
            }
        }
        Wakes(
            topics
                .into_iter()
                .map(|(topic, batches)| (topic, Tail::joined(batches, stored_ms)))
                .collect(),
        )
    }
}

/// The wake-ups of an append group's topics, each with the group's messages where it has
/// them ([`GroupTails::wakes`]). They are sent in the order groups commit in, so that a
/// topic's last wake-up says where it ends ([`Wake::ends_at`]).
pub struct Wakes(Vec<(Arc<str>, Option<Tail>)>);

impl Wakes {
    pub fn send(self, signals: &TopicSignals) {
        for (topic, tail) in self.0 {
            match tail {
                Some(tail) => signals.appended(&topic, tail),
                None => signals.notify(&topic),
            }
        }
    }
}

/// A fetch that waited on a topic this recently still counts as waiting: it is on its way
/// back with its next fetch (the answer travels, the program takes the messages), and the
/// group committed meanwhile should be handed to it.
const RECENTLY_WAITING: Duration = Duration::from_secs(1);

/// One topic's channel, how many fetches wait on it now, and when the last one stopped.
struct Signal {
    sender: watch::Sender<Wake>,
    parked: usize,
    unparked: Option<Instant>,
}

#[derive(Default)]
pub struct TopicSignals {
    topics: Mutex<HashMap<String, Signal>>,
    /// Wake-ups sent to any topic, and changes touched ([`TopicSignals::activity`]).
    activity: AtomicU64,
}

/// A fetch waiting on a topic ([`TopicSignals::park`]); it stops counting when dropped.
pub struct Parked<'a> {
    signals: &'a TopicSignals,
    topic: String,
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        if let Some(signal) = self.signals.lock().get_mut(&self.topic) {
            signal.parked = signal.parked.saturating_sub(1);
            signal.unparked = Some(Instant::now());
        }
    }
}

impl TopicSignals {
    /// A receiver that resolves `changed()` at the next append to `topic`. Subscribe
    /// *before* reading, so that an append between the read and the wait is not missed.
    pub fn subscribe(&self, topic: &str) -> watch::Receiver<Wake> {
        let mut topics = self.lock();
        match topics.get(topic) {
            Some(signal) => signal.sender.subscribe(),
            None => {
                let (sender, receiver) = watch::channel(Wake::default());
                let signal = Signal {
                    sender,
                    parked: 0,
                    unparked: None,
                };
                topics.insert(topic.to_owned(), signal);
                receiver
            }
        }
    }

    /// Like [`TopicSignals::subscribe`], for a topic that has been subscribed to before;
    /// `None` otherwise (nothing is added for a name that may not be a topic).
    pub fn subscribe_existing(&self, topic: &str) -> Option<watch::Receiver<Wake>> {
        self.lock()
            .get(topic)
            .map(|signal| signal.sender.subscribe())
    }

    /// Counts a fetch as waiting on `topic` (subscribed to it) until the guard is dropped.
    pub fn park(&self, topic: &str) -> Parked<'_> {
        if let Some(signal) = self.lock().get_mut(topic) {
            signal.parked += 1;
        }
        Parked {
            signals: self,
            topic: topic.to_owned(),
        }
    }

    /// Whether a fetch waits on `topic` now, or did a moment ago ([`RECENTLY_WAITING`]):
    /// only then is a copy of its appends worth keeping ([`GroupTails`]). (Producers
    /// subscribe too, for batches that arrive out of order; they do not count.)
    pub fn has_waiters(&self, topic: &str) -> bool {
        self.lock().get(topic).is_some_and(|signal| {
            signal.parked > 0
                || signal
                    .unparked
                    .is_some_and(|at| at.elapsed() < RECENTLY_WAITING)
        })
    }

    /// Wakes everything waiting on `topic`; they read the store.
    pub fn notify(&self, topic: &str) {
        self.wake(topic, None);
    }

    /// Wakes everything waiting on `topic` with the messages just committed to it.
    pub fn appended(&self, topic: &str, tail: Tail) {
        self.wake(topic, Some(Arc::new(tail)));
    }

    /// Wakes every waiter, e.g. after the cross-broker notification channel reconnected and
    /// notifications may have been missed.
    pub fn notify_all(&self) {
        self.activity.fetch_add(1, Ordering::Relaxed);
        for signal in self.lock().values() {
            signal.sender.send_replace(Wake::default());
        }
    }

    /// A count of wake-ups sent so far and of changes [`TopicSignals::touch`] counted: it
    /// moves with every append that stored something, this broker's or (PostgreSQL) one
    /// another broker announced, whether or not anything waits on it, with a topic's deletion
    /// and with a limit set. Retention's passes run less often while it stands still.
    pub fn activity(&self) -> u64 {
        self.activity.load(Ordering::Relaxed)
    }

    /// Counts a change that the next retention pass should act on soon (a topic's limits
    /// set), without waking anything.
    pub fn touch(&self) {
        self.activity.fetch_add(1, Ordering::Relaxed);
    }

    fn wake(&self, topic: &str, tail: Option<Arc<Tail>>) {
        self.activity.fetch_add(1, Ordering::Relaxed);
        if let Some(signal) = self.lock().get(topic) {
            signal.sender.send_replace(Wake { tail });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Signal>> {
        self.topics.lock().expect("signals lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_subscriber_wakes_on_its_topic_only() {
        let signals = TopicSignals::default();
        let mut a = signals.subscribe("a");
        let mut b = signals.subscribe("b");
        signals.notify("a");
        assert!(a.has_changed().unwrap());
        assert!(!b.has_changed().unwrap());
        a.changed().await.unwrap();
        signals.notify_all();
        b.changed().await.unwrap();
    }

    fn tail(base: u64, payloads: &[&str]) -> Tail {
        Tail {
            base,
            messages: (base..)
                .zip(payloads)
                .map(|(offset, payload)| StoredMessage {
                    offset,
                    payload: payload.to_string(),
                    timestamp_ms: 7,
                })
                .collect(),
            kept: Instant::now(),
        }
    }

    fn limit(messages: usize, bytes: usize) -> FetchLimit {
        FetchLimit { messages, bytes }
    }

    #[test]
    fn a_tail_answers_a_fetch_from_within_it_only() {
        let tail = tail(10, &["a", "bb", "ccc"]);
        assert!(tail.answer(9, limit(100, 100)).is_none(), "before it");
        assert!(tail.answer(13, limit(100, 100)).is_none(), "at the end");
        let got = tail.answer(11, limit(100, 100)).unwrap();
        let offsets: Vec<u64> = got.messages.iter().map(|m| m.offset).collect();
        assert_eq!(offsets, [11, 12]);
        assert_eq!((got.next_offset, got.end_offset, got.skipped), (13, 13, 0));
    }

    #[test]
    fn a_tail_answers_a_fetch_it_did_not_wake_only_while_recent() {
        let tail = tail(10, &["a", "bb"]);
        let soon = tail.kept + RECENT_TAIL / 2;
        let got = tail.answer_recent_at(11, limit(100, 100), soon).unwrap();
        assert_eq!(got.messages.len(), 1);
        assert!(
            tail.answer_recent_at(12, limit(100, 100), soon).is_none(),
            "at the end"
        );
        let later = tail.kept + RECENT_TAIL * 2;
        assert!(
            tail.answer_recent_at(11, limit(100, 100), later).is_none(),
            "retention may have moved the start since: the store answers"
        );
    }

    fn batch(base: u64, payloads: &[&str]) -> CopiedBatch {
        (base, Some(payloads.iter().map(|p| p.to_string()).collect()))
    }

    #[test]
    fn batches_join_in_offset_order_without_gaps_or_missing_copies() {
        let joined = Tail::joined(vec![batch(12, &["c"]), batch(10, &["a", "b"])], 7).unwrap();
        let got: Vec<(u64, &str)> = joined
            .messages
            .iter()
            .map(|m| (m.offset, m.payload.as_str()))
            .collect();
        assert_eq!(got, [(10, "a"), (11, "b"), (12, "c")]);
        assert!(joined.messages.iter().all(|m| m.timestamp_ms == 7));
        assert!(
            Tail::joined(vec![batch(10, &["a"]), batch(12, &["c"])], 7).is_none(),
            "gap"
        );
        assert!(
            Tail::joined(vec![batch(10, &["a"]), (11, None)], 7).is_none(),
            "not copied"
        );
    }

    #[test]
    fn a_tail_answers_within_the_fetch_limits() {
        let tail = tail(0, &["a", "bb", "ccc"]);
        let by_count = tail.answer(0, limit(2, 100)).unwrap();
        assert_eq!(by_count.messages.len(), 2);
        assert_eq!(by_count.next_offset, 2);
        let by_bytes = tail.answer(0, limit(100, 3)).unwrap();
        assert_eq!(by_bytes.messages.len(), 2, "a + bb fit in 3 bytes");
        let first_always = tail.answer(2, limit(100, 1)).unwrap();
        assert_eq!(
            first_always.messages.len(),
            1,
            "the first message even past the budget"
        );
    }

    #[tokio::test]
    async fn a_waiter_is_handed_the_tail_a_plain_notify_clears() {
        let signals = TopicSignals::default();
        let mut waiting = signals.subscribe("t");
        assert!(!signals.has_waiters("t"), "subscribed, not yet waiting");
        let parked = signals.park("t");
        assert!(signals.has_waiters("t"));
        drop(parked);
        assert!(signals.has_waiters("t"), "it will be back in a moment");
        signals.appended("t", tail(5, &["x"]));
        waiting.changed().await.unwrap();
        assert_eq!(waiting.borrow().tail.as_ref().map(|t| t.base), Some(5));
        signals.notify("t");
        waiting.changed().await.unwrap();
        assert!(waiting.borrow().tail.is_none());
    }
}
