//! What the next append group will find under lock, as this broker's groups ahead of it will
//! leave it: a guess that lets PostgreSQL write a group's messages *before* the group ahead
//! has committed, so that two groups' writes run at once on two server processes.
//!
//! A guess is only ever a guess: the group that used one checks it against the rows it then
//! locks, and starts again the ordinary way if they differ (another broker appended, a group
//! ahead failed). So nothing here needs to be right, only usually right. Each group, as the
//! batcher forms it, takes the place of the last group formed on each of its rows (a topic's
//! end, a sequenced producer's state) and tells the groups formed after it what it will leave
//! ([`Published`]): a guessed group as soon as it has guessed (tentatively), every group once
//! it holds its rows locked (for certain). A group that finds a guess wrong, or fails, starts a
//! new epoch: tentative word from before it is not taken, so a wrong guess does not pass down
//! the line of groups guessed from one another; they wait for certain word instead.

use super::plan::{AppendJob, TopicEnd};
use super::sequence::ProducerSequence;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// Past this many topics and producers the rows remembered are all forgotten (they grow with
/// every producer registered; the next groups start over from what they lock).
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

/// What a group says it will leave its rows at, for the groups formed after it.
#[derive(Clone, Default)]
enum Published {
    /// Nothing yet.
    #[default]
    Nothing,
    /// Guessed, in `epoch`: right if the groups ahead of it do what they said.
    Tentative { epoch: u64, state: Arc<GroupState> },
    /// Planned from its rows locked.
    Certain(Arc<GroupState>),
    /// It failed: what it leaves is not known.
    Failed,
}

type Word = watch::Receiver<Published>;

/// One group's place in the line: the word of the group ahead of it on each of its rows, its
/// own word for the groups after it, and its turn to lock.
pub struct Guess {
    ends: Vec<(i64, Option<Word>)>,
    producers: Vec<(u64, Option<Word>)>,
    word: Option<watch::Sender<Published>>,
    /// A topic of the group is appended to by another broker ([`Guesses::shared`]).
    paused: bool,
    epoch: Arc<AtomicU64>,
    /// The epoch this group's guess was made in.
    guessed_in: u64,
    pub turn: Turn,
}

impl Guess {
    /// No guess (stores that do not guess).
    pub fn none() -> Self {
        Guess {
            ends: Vec::new(),
            producers: Vec::new(),
            word: None,
            paused: true,
            epoch: Arc::default(),
            guessed_in: 0,
            turn: Turn::default(),
        }
    }

    /// What this group will find under lock, as the groups ahead of it said they will leave
    /// it; waits for their word. `None` when a row was never touched by this broker, a group
    /// ahead failed or ended without a word, or the topic is paused.
    pub async fn found(&mut self) -> Option<GroupState> {
        if self.paused {
            return None;
        }
        self.guessed_in = self.epoch.load(Ordering::SeqCst);
        let mut found = GroupState::default();
        for (topic, ahead) in &mut self.ends {
            let state = word_of(ahead.as_mut()?, self.guessed_in).await?;
            found.ends.insert(*topic, *state.ends.get(topic)?);
        }
        for (producer, ahead) in &mut self.producers {
            let state = word_of(ahead.as_mut()?, self.guessed_in).await?;
            found
                .producers
                .insert(*producer, *state.producers.get(producer)?);
        }
        Some(found)
    }

    /// Says what this group will leave, as guessed by [`Guess::found`].
    pub fn tentative(&self, state: GroupState) {
        self.say(Published::Tentative {
            epoch: self.guessed_in,
            state: Arc::new(state),
        });
    }

    /// Says what this group leaves, planned from its rows locked.
    pub fn certain(&self, state: GroupState) {
        self.say(Published::Certain(Arc::new(state)));
    }

    /// Its guess was wrong, or the group failed: the groups guessed from its word (or from
    /// theirs) are wrong too, and learn it under lock; groups guessing from now on wait for
    /// certain word.
    pub fn wrong(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// The group failed.
    pub fn failed(&self) {
        self.wrong();
        self.say(Published::Failed);
    }

    fn say(&self, word: Published) {
        if let Some(sender) = &self.word {
            sender.send_replace(word);
        }
    }
}

/// What the group behind `word` will leave: certain word, or tentative word from `epoch`
/// (waited for). `None` if it failed, or ended without a word.
async fn word_of(word: &mut Word, epoch: u64) -> Option<Arc<GroupState>> {
    loop {
        match &*word.borrow_and_update() {
            Published::Certain(state) => return Some(state.clone()),
            Published::Tentative { epoch: said, state } if *said == epoch => {
                return Some(state.clone());
            }
            Published::Failed => return None,
            Published::Nothing | Published::Tentative { .. } => {}
        }
        word.changed().await.ok()?;
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

#[derive(Default)]
struct Remembered {
    /// Topics (by name) not guessed until then: [`SHARED_TOPIC_PAUSE`].
    paused: HashMap<String, Instant>,
    /// The turn of the group formed last, for the next one to wait on.
    last_turn: Option<oneshot::Receiver<()>>,
    /// The word of the last group formed on each row.
    ends: HashMap<i64, Word>,
    producers: HashMap<u64, Word>,
}

/// This broker's line of append groups (one per store).
#[derive(Default)]
pub struct Guesses {
    remembered: Mutex<Remembered>,
    epoch: Arc<AtomicU64>,
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

impl Guesses {
    /// A group's place in the line, called in the order groups are formed: it takes the place
    /// of the last group formed on each of its rows.
    pub fn guess(&self, jobs: &[AppendJob]) -> Guess {
        let (topics, producers) = keys(jobs);
        let (word, heard) = watch::channel(Published::Nothing);
        let mut remembered = self.lock();
        if remembered.ends.len() + remembered.producers.len() > MAX_REMEMBERED {
            remembered.ends.clear();
            remembered.producers.clear();
        }
        let now = Instant::now();
        remembered.paused.retain(|_, until| *until > now);
        let paused = jobs
            .iter()
            .any(|job| remembered.paused.contains_key(&*job.topic));
        let ends = topics
            .into_iter()
            .map(|topic| (topic, remembered.ends.insert(topic, heard.clone())))
            .collect();
        let producers = producers
            .into_iter()
            .map(|id| (id, remembered.producers.insert(id, heard.clone())))
            .collect();
        let (done, next) = oneshot::channel();
        let turn = Turn {
            after: remembered.last_turn.replace(next),
            done: Some(done),
        };
        Guess {
            ends,
            producers,
            word: Some(word),
            paused,
            epoch: self.epoch.clone(),
            guessed_in: 0,
            turn,
        }
    }

    /// Pauses guessing `topic`, which another broker appends to.
    pub fn shared(&self, topic: &str) {
        let until = Instant::now() + SHARED_TOPIC_PAUSE;
        self.lock().paused.insert(topic.to_owned(), until);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Remembered> {
        self.remembered.lock().expect("guesses lock")
    }
}

/// Append groups planned from the state the groups ahead of them left ([`Guess::found`]) and
/// stored by one unit that checks it, by what became of them: counted for `/metrics`
/// (`myqueue_known_state_append_groups_total`) and for the tests.
#[derive(Default)]
pub struct KnownStateGroups {
    stored: AtomicU64,
    changed: AtomicU64,
}

impl KnownStateGroups {
    /// Stored by the one checked unit.
    pub fn stored(&self) {
        crate::metrics::known_state_group("stored");
        self.stored.fetch_add(1, Ordering::Relaxed);
    }

    /// Its rows were not as planned: nothing was written, it goes the ordinary way.
    pub fn changed(&self) {
        crate::metrics::known_state_group("changed");
        self.changed.fetch_add(1, Ordering::Relaxed);
    }

    /// Not a group for one unit: nothing was tried.
    pub fn unsuited(&self) {
        crate::metrics::known_state_group("unsuited");
    }

    /// How many were stored, and how many found their rows changed.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.stored.load(Ordering::Relaxed),
            self.changed.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::plan::{TopicEnds, decide};

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

    /// What `jobs`, planned from `found`, leave.
    fn leaves(jobs: &[AppendJob], found: &GroupState) -> GroupState {
        let decided = decide(
            jobs,
            TopicEnds::Locked(found.ends.clone()),
            found.producers.clone(),
        );
        found.after(&decided.topic_ends, &decided.producers)
    }

    /// Whether `guess` has found its rows without waiting.
    fn found_now(guess: &mut Guess) -> Option<Option<GroupState>> {
        use futures_util::FutureExt;
        guess.found().now_or_never()
    }

    #[test]
    fn rows_no_group_touched_are_not_guessed() {
        let guesses = Guesses::default();
        let mut first = guesses.guess(&[job(1, 7, 0, 3)]);
        assert_eq!(found_now(&mut first), Some(None));
    }

    #[test]
    fn a_group_is_guessed_from_what_the_one_ahead_says_it_will_leave() {
        let guesses = Guesses::default();
        let first = guesses.guess(&[job(1, 7, 0, 3)]);
        let mut second = guesses.guess(&[job(1, 7, 0, 3)]);
        assert_eq!(
            found_now(&mut second),
            None,
            "it waits for the word of the first"
        );
        first.certain(state(&[(1, 10)], &[(7, 0)]));
        let found = found_now(&mut second).unwrap().unwrap();
        assert_eq!(found, state(&[(1, 10)], &[(7, 0)]));
        // The second says, tentatively, what it leaves; the third takes that word.
        second.tentative(leaves(&[job(1, 7, 0, 3)], &found));
        let mut third = guesses.guess(&[job(1, 7, 3, 2)]);
        let found = found_now(&mut third).unwrap().unwrap();
        assert_eq!(found.ends[&1], 13);
        assert_eq!(found.producers[&7].next, 3);
    }

    #[test]
    fn after_a_wrong_guess_tentative_word_waits_to_be_made_certain() {
        let guesses = Guesses::default();
        let first = guesses.guess(&[job(1, 7, 0, 3)]);
        let mut second = guesses.guess(&[job(1, 7, 0, 3)]);
        first.certain(state(&[(1, 10)], &[(7, 0)]));
        let found = found_now(&mut second).unwrap().unwrap();
        second.tentative(leaves(&[job(1, 7, 0, 3)], &found));
        let mut third = guesses.guess(&[job(1, 7, 3, 2)]);
        second.wrong();
        assert_eq!(
            found_now(&mut third),
            None,
            "the second's word is from before"
        );
        second.certain(state(&[(1, 20)], &[(7, 3)]));
        assert_eq!(found_now(&mut third).unwrap().unwrap().ends[&1], 20);
    }

    #[test]
    fn a_failed_group_or_one_that_ended_without_a_word_leaves_nothing_to_guess_from() {
        let guesses = Guesses::default();
        let first = guesses.guess(&[job(1, 7, 0, 3)]);
        let mut second = guesses.guess(&[job(1, 7, 3, 3)]);
        first.failed();
        assert_eq!(found_now(&mut second), Some(None));
        let mut third = guesses.guess(&[job(1, 7, 3, 3)]);
        drop(second);
        assert_eq!(found_now(&mut third), Some(None));
    }

    #[test]
    fn a_topic_another_broker_appends_to_is_not_guessed() {
        let guesses = Guesses::default();
        let first = guesses.guess(&[job(1, 7, 0, 3)]);
        first.certain(state(&[(1, 10)], &[(7, 0)]));
        guesses.shared("t");
        let mut second = guesses.guess(&[job(1, 7, 0, 3)]);
        assert_eq!(found_now(&mut second), Some(None));
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
        // The second ended without saying so (its turn dropped): the third goes on.
        third.turn.wait().await;
    }

    #[tokio::test]
    async fn a_guessed_group_waits_for_its_turn_at_most_so_long() {
        let guesses = Guesses::default();
        let _first = guesses.guess(&[job(1, 7, 0, 3)]);
        let mut second = guesses.guess(&[job(1, 7, 3, 3)]);
        assert!(!second.turn.wait_at_most(Duration::from_millis(10)).await);
    }
}
