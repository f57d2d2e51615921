//! The in-memory store (the assignment's Part A): fast, and nothing survives a restart.

use super::plan::{
    AppendJob, Cursor, PositionOp, Positioned, TopicEnds, plan_appends, plan_positions,
};
use super::retention::{self, Chunk, Log, RetentionConfig};
use super::sequence::ProducerSequence;
use super::{
    Append, Appended, ConsumerInfo, ConsumerStart, FetchLimit, Fetched, PassReport, Result,
    RetentionChange, RetentionSettings, SeekTo, Store, StoreError, StoredMessage, TopicInfo,
    TopicSignals, now_ms, within_end,
};
use async_trait::async_trait;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    signals: Arc<TopicSignals>,
    config: RetentionConfig,
    /// The background retention pass; `close` stops it.
    tasks: TaskTracker,
    stop: CancellationToken,
}

#[derive(Default)]
struct State {
    /// Indexed by topic id; `None` once deleted (ids are never reused).
    topics: Vec<Option<Topic>>,
    topic_ids: HashMap<String, usize>,
    /// Ids of this run are `id_base + 1`, `id_base + 2`, …: a different range every start,
    /// so that an id a client kept from an earlier run is unknown, never somebody else's.
    id_base: u64,
    /// Indexed by producer id - id_base - 1.
    producers: Vec<Producer>,
    /// Indexed by consumer id - id_base - 1.
    consumers: Vec<Consumer>,
    groups: HashMap<(usize, String), u64>,
}

struct Topic {
    name: String,
    /// The messages kept: the first is at offset `log.start`.
    messages: VecDeque<StoredMessage>,
    log: Log,
    settings: RetentionSettings,
    created_ms: u64,
    chunks: Vec<Chunk>,
}

impl Topic {
    fn new(name: &str, settings: RetentionSettings) -> Self {
        Topic {
            name: name.to_owned(),
            messages: VecDeque::new(),
            log: Log::empty(),
            settings,
            created_ms: now_ms(),
            chunks: Vec::new(),
        }
    }

    /// Drops the messages before `start` from the front.
    fn drop_before(&mut self, start: u64, start_bytes: u64) {
        let gone = start
            .saturating_sub(self.log.start)
            .min(self.messages.len() as u64);
        self.messages.drain(..gone as usize);
        self.log.start = start;
        self.log.start_bytes = start_bytes;
    }
}

struct Producer {
    topic: usize,
    sequence: ProducerSequence,
}

struct Consumer {
    topic: usize,
    group: Option<String>,
    position: u64,
}

impl State {
    fn topic(&self, name: &str) -> Result<usize> {
        self.topic_ids
            .get(name)
            .copied()
            .ok_or_else(|| StoreError::TopicNotFound(name.to_owned()))
    }

    fn live(&self, index: usize) -> &Topic {
        self.topics[index].as_ref().expect("a live topic")
    }

    fn live_mut(&mut self, index: usize) -> &mut Topic {
        self.topics[index].as_mut().expect("a live topic")
    }

    fn index_of(&self, id: u64) -> Option<usize> {
        id.checked_sub(self.id_base + 1).map(|index| index as usize)
    }

    fn add_topic(&mut self, name: &str, settings: RetentionSettings) -> usize {
        let id = self.topics.len();
        self.topics.push(Some(Topic::new(name, settings)));
        self.topic_ids.insert(name.to_owned(), id);
        id
    }

    /// The name of topic `index` if it still exists: an id whose topic was deleted is gone.
    fn registered(&self, index: usize) -> Option<&str> {
        self.topics[index].as_ref().map(|t| t.name.as_str())
    }

    fn producer(&mut self, id: u64, topic: &str) -> Result<&mut Producer> {
        let index = self.index_of(id).ok_or(StoreError::ProducerNotFound(id))?;
        let owner = self
            .producers
            .get(index)
            .ok_or(StoreError::ProducerNotFound(id))?
            .topic;
        let registered = self
            .registered(owner)
            .ok_or(StoreError::ProducerNotFound(id))?;
        if registered != topic {
            return Err(StoreError::WrongTopic {
                role: "producer",
                id,
                registered: registered.to_owned(),
                requested: topic.to_owned(),
            });
        }
        Ok(&mut self.producers[index])
    }

    fn consumer(&mut self, id: u64, topic: &str) -> Result<&mut Consumer> {
        let index = self.index_of(id).ok_or(StoreError::ConsumerNotFound(id))?;
        let owner = self
            .consumers
            .get(index)
            .ok_or(StoreError::ConsumerNotFound(id))?
            .topic;
        let registered = self
            .registered(owner)
            .ok_or(StoreError::ConsumerNotFound(id))?;
        if registered != topic {
            return Err(StoreError::WrongTopic {
                role: "consumer",
                id,
                registered: registered.to_owned(),
                requested: topic.to_owned(),
            });
        }
        Ok(&mut self.consumers[index])
    }

    fn describe(&self, index: usize, config: &RetentionConfig) -> TopicInfo {
        let topic = self.live(index);
        let consumers = self
            .consumers
            .iter()
            .enumerate()
            .filter(|(_, c)| c.topic == index)
            .map(|(i, c)| ConsumerInfo {
                id: self.id_base + i as u64 + 1,
                group: c.group.clone(),
                position: c.position,
                lag: topic.log.after(c.position),
            })
            .collect();
        TopicInfo {
            name: topic.name.clone(),
            start_offset: topic.log.start,
            end_offset: topic.log.end,
            bytes: topic.log.bytes(),
            settings: topic.settings,
            retention: config.defaults.for_topic(topic.settings),
            created_ms: topic.created_ms,
            consumers,
        }
    }

    /// One retention pass over every topic, by the rules every store follows.
    fn retention_pass(&mut self, config: &RetentionConfig, now_ms: u64) -> PassReport {
        let mut report = PassReport {
            led: true,
            ..PassReport::default()
        };
        for topic in self.topics.iter_mut().flatten() {
            let retention = config.defaults.for_topic(topic.settings);
            let plan = retention::plan_pass(&topic.log, &topic.chunks, retention, now_ms);
            report.outpaced |= plan.outpaced;
            plan.apply(&mut topic.chunks);
            if let Some((start, start_bytes)) = plan.new_start {
                report.removed += start - topic.log.start;
                topic.drop_before(start, start_bytes);
            }
        }
        report
    }
}

impl State {
    /// Applies one position change by the same rules as the durable stores' groups.
    fn move_position(&mut self, id: u64, topic: &str, op: PositionOp) -> Result<Positioned> {
        let consumer = self.consumer(id, topic)?;
        let (topic_id, position) = (consumer.topic, consumer.position);
        let log = self.live(topic_id).log;
        let cursor = Cursor {
            topic_id: topic_id as i64,
            position,
            start: log.start,
            end: log.end,
        };
        let plan = plan_positions(&[(id, op)], HashMap::from([(id, cursor)]));
        if let Some(&(_, position)) = plan.positions.first() {
            self.consumer(id, topic)?.position = position;
        }
        let outcome = plan.outcomes[0];
        let taken = outcome.taken().map(|(topic_id, offset)| {
            let topic = self.live(topic_id as usize);
            topic.messages[(offset - topic.log.start) as usize].clone()
        });
        Ok(Positioned::new(outcome, taken))
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(RetentionConfig::default())
    }
}

impl MemoryStore {
    /// An empty store; with `config.every`, its retention pass runs in the background (on the
    /// tokio runtime this is called on).
    pub fn new(config: RetentionConfig) -> Self {
        // Milliseconds of the start time, scaled: far apart for restarts, far below 2^53.
        let id_base = (now_ms() % 1_000_000_000) * 1_000;
        let state = Arc::new(Mutex::new(State {
            id_base,
            ..State::default()
        }));
        let (tasks, stop) = (TaskTracker::new(), CancellationToken::new());
        let signals = Arc::new(TopicSignals::default());
        if let Some(every) = config.every {
            let state = state.clone();
            let pass = move |now| {
                let report = lock(&state).retention_pass(&config, now);
                async move { Ok(report) }
            };
            tasks.spawn(retention::run_passes(
                every,
                stop.clone(),
                signals.clone(),
                pass,
            ));
        }
        MemoryStore {
            state,
            signals,
            config,
            tasks,
            stop,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.state)
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().expect("memory store lock")
}

#[async_trait]
impl Store for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    async fn create_topic(&self, name: &str, settings: RetentionSettings) -> Result<()> {
        let mut state = self.lock();
        if state.topic_ids.contains_key(name) {
            return Err(StoreError::TopicExists(name.to_owned()));
        }
        state.add_topic(name, settings);
        Ok(())
    }

    async fn describe_topic(&self, name: &str) -> Result<TopicInfo> {
        let state = self.lock();
        let index = state.topic(name)?;
        Ok(state.describe(index, &self.config))
    }

    async fn set_retention(&self, name: &str, change: RetentionChange) -> Result<TopicInfo> {
        let mut state = self.lock();
        let index = state.topic(name)?;
        let topic = state.live_mut(index);
        topic.settings = change.apply(topic.settings);
        self.signals.touch(); // the next pass applies the new limits
        Ok(state.describe(index, &self.config))
    }

    async fn delete_topic(&self, name: &str) -> Result<()> {
        let mut state = self.lock();
        let index = state.topic(name)?;
        state.topic_ids.remove(name);
        state.topics[index] = None;
        state.groups.retain(|(topic, _), _| *topic != index);
        drop(state);
        // Long polls on the topic wake, and find their consumer gone.
        self.signals.notify(name);
        Ok(())
    }

    async fn retention_pass(&self, now_ms: u64) -> Result<PassReport> {
        Ok(self.lock().retention_pass(&self.config, now_ms))
    }

    async fn list_topics(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self.lock().topic_ids.keys().cloned().collect();
        names.sort();
        Ok(names)
    }

    async fn register_producer(&self, topic: &str) -> Result<u64> {
        let mut state = self.lock();
        let topic = match state.topic_ids.get(topic) {
            Some(&id) => id,
            None => state.add_topic(topic, RetentionSettings::default()),
        };
        state.producers.push(Producer {
            topic,
            sequence: ProducerSequence::default(),
        });
        Ok(state.id_base + state.producers.len() as u64)
    }

    async fn register_consumer(
        &self,
        topic: &str,
        group: Option<&str>,
        start: ConsumerStart,
    ) -> Result<u64> {
        let mut state = self.lock();
        let topic = state.topic(topic)?;
        if let Some(&id) = group.and_then(|g| state.groups.get(&(topic, g.to_owned()))) {
            return Ok(id);
        }
        let position = match start {
            ConsumerStart::Beginning => 0,
            ConsumerStart::End => state.live(topic).log.end,
        };
        state.consumers.push(Consumer {
            topic,
            group: group.map(str::to_owned),
            position,
        });
        let id = state.id_base + state.consumers.len() as u64;
        if let Some(group) = group {
            state.groups.insert((topic, group.to_owned()), id);
        }
        Ok(id)
    }

    async fn append(&self, append: Append) -> Result<Appended> {
        let mut state = self.lock();
        let producer = state.producer(append.producer_id, &append.topic)?;
        let (topic_id, sequence) = (producer.topic, producer.sequence);
        let end = state.live(topic_id).log.end;
        let mut plan = plan_appends(
            vec![AppendJob {
                topic_id: topic_id as i64,
                topic: append.topic.as_str().into(),
                producer_id: append.producer_id,
                messages: append.messages,
                sequence: append.sequence,
                chunk_bytes: None,
            }],
            TopicEnds::Locked(HashMap::from([(topic_id as i64, end)])),
            HashMap::from([(append.producer_id, sequence)]),
        );
        let outcome = plan.outcomes.pop().expect("one outcome per job");
        if let Some((_, sequence)) = plan.producers.pop() {
            state.producer(append.producer_id, &append.topic)?.sequence = sequence;
        }
        let timestamp_ms = now_ms();
        let topic = state.live_mut(topic_id);
        for ended in plan.topic_ends {
            topic.log.end = ended.end;
            topic.log.end_bytes += ended.added_bytes;
            topic.log.newest_ms = topic.log.newest_ms.max(timestamp_ms);
        }
        for segment in plan.segments {
            topic
                .messages
                .extend(segment.messages.into_iter().zip(segment.base_offset..).map(
                    |(payload, offset)| StoredMessage {
                        offset,
                        payload,
                        timestamp_ms,
                    },
                ));
        }
        drop(state);
        self.signals.notify(&append.topic);
        outcome
    }

    async fn consume(&self, consumer_id: u64, topic: &str) -> Result<Option<StoredMessage>> {
        Ok(self
            .lock()
            .move_position(consumer_id, topic, PositionOp::Take)?
            .into_taken()?)
    }

    async fn fetch(
        &self,
        consumer_id: u64,
        topic: &str,
        from: Option<u64>,
        limit: FetchLimit,
    ) -> Result<Fetched> {
        let mut state = self.lock();
        let consumer = state.consumer(consumer_id, topic)?;
        let (topic_id, position) = (consumer.topic, consumer.position);
        let kept = state.live(topic_id);
        let log = kept.log;
        let from = from.unwrap_or(position);
        within_end(topic, from, log.end)?;
        let first = (log.clamp(from) - log.start) as usize;
        let messages = limit.apply(kept.messages.range(first..).take(limit.messages).cloned());
        Ok(Fetched::new(from, log.start, messages, log.end))
    }

    async fn check_consumer(&self, consumer_id: u64, topic: &str) -> Result<()> {
        self.lock().consumer(consumer_id, topic).map(|_| ())
    }

    async fn commit(&self, consumer_id: u64, topic: &str, to: SeekTo) -> Result<u64> {
        self.lock()
            .move_position(consumer_id, topic, PositionOp::Seek(to))?
            .into_position(topic)
    }

    async fn size(&self, consumer_id: u64, topic: &str) -> Result<u64> {
        let mut state = self.lock();
        let consumer = state.consumer(consumer_id, topic)?;
        let (topic_id, position) = (consumer.topic, consumer.position);
        Ok(state.live(topic_id).log.after(position))
    }

    fn signals(&self) -> &TopicSignals {
        &self.signals
    }

    async fn close(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}
