//! What the next append group will find under lock, as this broker's own groups left it: a
//! guess that lets PostgreSQL write a group's messages *before* it waits for the group in
//! flight ahead of it, so that two groups' writes run at once on two server processes.
//!
//! A guess is only ever a guess: the group that used one checks it against the rows it then
//! locks, and starts again the ordinary way if they differ (another broker appended, a group
//! before it failed). So nothing here needs to be right, only usually right: groups are
//! guessed in the order the batcher forms them, each from what the one before it will leave
//! (before that one has committed), and whatever a group finds or leaves is recorded unless a
//! later group already recorded something newer.

use super::plan::{AppendJob, TopicEnd, TopicEnds, decide};
use super::sequence::ProducerSequence;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Past this many topics and producers the guesses are all forgotten (they grow with every
/// producer registered; the next groups start over from what they lock).
const MAX_REMEMBERED: usize = 10_000;
/// How long a topic is not guessed after another broker appended to it, or a guess of it
/// proved wrong: guesses are then mostly wrong, each a `COPY` thrown away, and a guessed
/// group may hold rows that another broker's group waits for (see [`Turn::wait_at_most`]).
const SHARED_TOPIC_PAUSE: Duration = Duration::from_secs(5);

/// The rows an append group locks: its topics' ends and its sequenced producers' states.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupState {
    pub ends: HashMap<i64, u64>,
    pub producers: HashMap<u64, ProducerSequence>,
}

impl GroupState {
    /// The state a group planned from this state leaves: its topics' new ends and its
    /// producers' new states.
    pub fn after(&self, ends: &[TopicEnd], producers: &[(u64, ProducerSequence)]) -> GroupState {
        let mut after = self.clone();
        for ended in ends {
            after.ends.insert(ended.topic_id, ended.end);
        }
        for (id, sequence) in producers {
            after.producers.insert(*id, *sequence);
        }
        after
    }
}

/// One group's guess: its place in the order groups were formed, its rows, and what it
/// expects to lock, if this broker knew all of it.
pub struct Guess {
    pub generation: u64,
    topics: Vec<i64>,
    producers: Vec<u64>,
    pub found: Option<GroupState>,
    pub turn: Turn,
}

impl Guess {
    /// No guess (stores that do not guess).
    pub fn none() -> Self {
        Guess {
            generation: 0,
            topics: Vec::new(),
            producers: Vec::new(),
            found: None,
            turn: Turn::default(),
        }
    }
}

/// A group's turn to lock its rows: once the group formed before it has ended. Groups in
/// flight at once would otherwise lock in any order, and a group that locked before the one
/// ahead of it would find the rows as they were before that one: its guess wrong. (A guessed
/// group does not wait for that lock inside PostgreSQL, where it would wait holding rows
/// that another broker's group may wait for: see `postgres::PgBackend::append_guessed`.)
#[derive(Default)]
pub struct Turn {
    after: Option<oneshot::Receiver<()>>,
    done: Option<oneshot::Sender<()>>,
}

impl Turn {
    /// Waits until the group ahead has ended.
    pub async fn wait(&mut self) {
        if let Some(ahead) = self.after.take() {
            // An error means the group ahead ended without saying so (it failed): go on.
            let _ = ahead.await;
        }
    }

    /// Like [`Turn::wait`], for at most `limit`: whether the turn came. A guessed group waits
    /// holding the rows it wrote; another broker's group may wait for those rows while the
    /// group ahead waits for that broker's lock, a deadlock PostgreSQL cannot see (one side
    /// of it is in this broker). The guessed group gives up and lets its rows go.
    pub async fn wait_at_most(&mut self, limit: Duration) -> bool {
        let Some(ahead) = self.after.as_mut() else {
            return true;
        };
        let came = tokio::time::timeout(limit, ahead).await.is_ok();
        if came {
            self.after = None;
        }
        came
    }

    /// Lets the next group lock (also done when the group's turn is dropped).
    pub fn done(&mut self) {
        if let Some(next) = self.done.take() {
            let _ = next.send(());
        }
    }
}

/// A remembered value, and the generation of the group that left it; `None` while a group
/// that will change it without a guess is in flight.
type Entry<T> = (u64, Option<T>);

#[derive(Default)]
struct Remembered {
    /// Topics (by name) not guessed until then: [`SHARED_TOPIC_PAUSE`].
    paused: HashMap<String, Instant>,
    /// The turn of the group formed last, for the next one to wait on.
    last_turn: Option<oneshot::Receiver<()>>,
    next_generation: u64,
    ends: HashMap<i64, Entry<u64>>,
    producers: HashMap<u64, Entry<ProducerSequence>>,
}

/// This broker's guesses (one per store).
#[derive(Default)]
pub struct Guesses {
    remembered: Mutex<Remembered>,
}

/// The topics and sequenced producers of a group.
fn keys(jobs: &[AppendJob]) -> (Vec<i64>, Vec<u64>) {
    let mut topics: Vec<i64> = jobs.iter().map(|job| job.topic_id).collect();
    let mut producers: Vec<u64> = jobs
        .iter()
        .filter(|job| job.sequence.is_some())
        .map(|job| job.producer_id)
        .collect();
    topics.sort_unstable();
    topics.dedup();
    producers.sort_unstable();
    producers.dedup();
    (topics, producers)
}

/// Records `value` as left by `generation`, unless a later group left or holds it.
fn record<K: std::hash::Hash + Eq, T>(map: &mut HashMap<K, Entry<T>>, key: K, at: Entry<T>) {
    match map.get(&key) {
        Some((generation, _)) if *generation > at.0 => {}
        _ => {
            map.insert(key, at);
        }
    }
}

impl Guesses {
    /// The guess for a group, called in the order groups are formed. When every row the
    /// group locks is known, the guess is what they hold and the group's outcome is
    /// remembered for the next group; otherwise the group's rows are marked unknown until it
    /// is done.
    pub fn guess(&self, jobs: &[AppendJob]) -> Guess {
        let (topics, producers) = keys(jobs);
        let mut remembered = self.lock();
        remembered.next_generation += 1;
        let generation = remembered.next_generation;
        let now = Instant::now();
        remembered.paused.retain(|_, until| *until > now);
        let paused = jobs
            .iter()
            .any(|job| remembered.paused.contains_key(&*job.topic));
        let found = (|| {
            if paused {
                return None;
            }
            let mut found = GroupState::default();
            for topic in &topics {
                found.ends.insert(*topic, remembered.ends.get(topic)?.1?);
            }
            for producer in &producers {
                found
                    .producers
                    .insert(*producer, remembered.producers.get(producer)?.1?);
            }
            Some(found)
        })();
        let after = found.as_ref().map(|found| {
            let decided = decide(
                jobs,
                TopicEnds::Locked(found.ends.clone()),
                found.producers.clone(),
            );
            found.after(&decided.topic_ends, &decided.producers)
        });
        for &topic in &topics {
            let end = after.as_ref().map(|after| after.ends[&topic]);
            remembered.ends.insert(topic, (generation, end));
        }
        for &producer in &producers {
            let state = after.as_ref().map(|after| after.producers[&producer]);
            remembered.producers.insert(producer, (generation, state));
        }
        let (done, next) = oneshot::channel();
        let turn = Turn {
            after: remembered.last_turn.replace(next),
            done: Some(done),
        };
        Guess {
            generation,
            topics,
            producers,
            found,
            turn,
        }
    }

    /// What a group of `generation` leaves, once it knows (it holds its rows locked, or has
    /// committed).
    pub fn left(&self, generation: u64, state: &GroupState) {
        let mut remembered = self.lock();
        if remembered.ends.len() + remembered.producers.len() > MAX_REMEMBERED {
            remembered.ends.clear();
            remembered.producers.clear();
        }
        for (&topic, &end) in &state.ends {
            record(&mut remembered.ends, topic, (generation, Some(end)));
        }
        for (&producer, &sequence) in &state.producers {
            record(
                &mut remembered.producers,
                producer,
                (generation, Some(sequence)),
            );
        }
    }

    /// Pauses guessing `topic`, which another broker appends to.
    pub fn shared(&self, topic: &str) {
        let until = Instant::now() + SHARED_TOPIC_PAUSE;
        self.lock().paused.insert(topic.to_owned(), until);
    }

    /// Forgets the rows of a group that failed, or found its guess wrong: what it leaves is
    /// not known, nor what the groups guessed after it will (they find out under lock).
    pub fn forget(&self, guess: &Guess) {
        let mut remembered = self.lock();
        for topic in &guess.topics {
            remembered.ends.remove(topic);
        }
        for producer in &guess.producers {
            remembered.producers.remove(producer);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Remembered> {
        self.remembered.lock().expect("guesses lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn job(topic_id: i64, producer_id: u64, sequence: u64, count: usize) -> AppendJob {
        AppendJob {
            topic_id,
            topic: Arc::from("t"),
            producer_id,
            messages: vec!["m".to_owned(); count],
            sequence: Some(sequence),
            chunk_bytes: None,
        }
    }

    fn state(ends: &[(i64, u64)], producers: &[(u64, u64)]) -> GroupState {
        GroupState {
            ends: ends.iter().copied().collect(),
            producers: producers
                .iter()
                .map(|&(id, next)| (id, ProducerSequence::new(next, [])))
                .collect(),
        }
    }

    #[test]
    fn nothing_is_guessed_until_a_group_left_its_rows() {
        let guesses = Guesses::default();
        let first = guesses.guess(&[job(1, 7, 0, 3)]);
        assert_eq!(first.found, None);
        // While that group is in flight its rows are unknown: no guess from older values.
        guesses.left(0, &state(&[(1, 40)], &[(7, 0)]));
        assert_eq!(guesses.guess(&[job(1, 7, 0, 3)]).found, None);
    }

    #[test]
    fn each_group_is_guessed_from_what_the_one_before_will_leave() {
        let guesses = Guesses::default();
        let first = guesses.guess(&[job(1, 7, 0, 3)]);
        guesses.left(first.generation, &state(&[(1, 10)], &[(7, 0)]));
        let second = guesses.guess(&[job(1, 7, 0, 3)]);
        assert_eq!(second.found, Some(state(&[(1, 10)], &[(7, 0)])));
        // The second group is not committed yet; the third expects what it will leave.
        let third = guesses.guess(&[job(1, 7, 3, 2)]).found.expect("a guess");
        assert_eq!(third.ends[&1], 13);
        assert_eq!(third.producers[&7].next, 3);
        // An older group's news does not overwrite a newer guess.
        guesses.left(second.generation - 1, &state(&[(1, 99)], &[(7, 0)]));
        assert_eq!(
            guesses.guess(&[job(1, 7, 5, 1)]).found.unwrap().ends[&1],
            15
        );
    }

    #[tokio::test]
    async fn a_group_locks_once_the_one_formed_before_it_has_ended() {
        let guesses = Guesses::default();
        let mut first = guesses.guess(&[job(1, 7, 0, 3)]);
        let mut second = guesses.guess(&[job(1, 7, 3, 3)]);
        let mut third = guesses.guess(&[job(1, 7, 6, 3)]);
        first.turn.wait().await; // the first waits for nothing
        let waiting = tokio::spawn(async move { second.turn.wait().await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        first.turn.done();
        waiting.await.unwrap();
        // The second ended without locking (its turn dropped): the third goes on.
        third.turn.wait().await;
    }

    #[test]
    fn a_topic_another_broker_appends_to_is_not_guessed() {
        let guesses = Guesses::default();
        let first = guesses.guess(&[job(1, 7, 0, 3)]);
        guesses.left(first.generation, &state(&[(1, 10)], &[(7, 0)]));
        guesses.shared("t");
        assert_eq!(guesses.guess(&[job(1, 7, 0, 3)]).found, None);
    }

    #[tokio::test]
    async fn a_guessed_group_waits_for_its_turn_at_most_so_long() {
        let guesses = Guesses::default();
        let _first = guesses.guess(&[job(1, 7, 0, 3)]);
        let mut second = guesses.guess(&[job(1, 7, 3, 3)]);
        assert!(!second.turn.wait_at_most(Duration::from_millis(10)).await);
    }

    #[test]
    fn a_failed_group_is_forgotten() {
        let guesses = Guesses::default();
        let first = guesses.guess(&[job(1, 7, 0, 3)]);
        guesses.left(first.generation, &state(&[(1, 10)], &[(7, 0)]));
        let second = guesses.guess(&[job(1, 7, 0, 3)]);
        assert!(second.found.is_some());
        guesses.forget(&second);
        assert_eq!(guesses.guess(&[job(1, 7, 0, 3)]).found, None);
    }
}
