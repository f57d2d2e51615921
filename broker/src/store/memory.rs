//! The in-memory store (the assignment's Part A): fast, and nothing survives a restart.

use super::plan::{AppendJob, Cursor, PositionOp, Positioned, plan_appends, plan_positions};
use super::sequence::ProducerSequence;
use super::{
    Append, Appended, ConsumerStart, FetchLimit, Fetched, Result, SeekTo, Store, StoreError,
    StoredMessage, TopicSignals, now_ms, within_end,
};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Mutex;

pub struct MemoryStore {
    state: Mutex<State>,
    signals: TopicSignals,
}

#[derive(Default)]
struct State {
    /// Indexed by topic id.
    topics: Vec<Topic>,
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
    log: Vec<StoredMessage>,
}

struct Producer {
    topic: usize,
    sequence: ProducerSequence,
}

struct Consumer {
    topic: usize,
    position: u64,
}

impl State {
    fn topic(&self, name: &str) -> Result<usize> {
        self.topic_ids
            .get(name)
            .copied()
            .ok_or_else(|| StoreError::TopicNotFound(name.to_owned()))
    }

    fn index_of(&self, id: u64) -> Option<usize> {
        id.checked_sub(self.id_base + 1).map(|index| index as usize)
    }

    fn add_topic(&mut self, name: &str) -> usize {
        let id = self.topics.len();
        self.topics.push(Topic {
            name: name.to_owned(),
            log: Vec::new(),
        });
        self.topic_ids.insert(name.to_owned(), id);
        id
    }

    fn producer(&mut self, id: u64, topic: &str) -> Result<&mut Producer> {
        let index = self.index_of(id).ok_or(StoreError::ProducerNotFound(id))?;
        let producer = self
            .producers
            .get_mut(index)
            .ok_or(StoreError::ProducerNotFound(id))?;
        let registered = &self.topics[producer.topic].name;
        if registered != topic {
            return Err(StoreError::WrongTopic {
                role: "producer",
                id,
                registered: registered.clone(),
                requested: topic.to_owned(),
            });
        }
        Ok(producer)
    }

    fn consumer(&mut self, id: u64, topic: &str) -> Result<&mut Consumer> {
        let index = self.index_of(id).ok_or(StoreError::ConsumerNotFound(id))?;
        let consumer = self
            .consumers
            .get_mut(index)
            .ok_or(StoreError::ConsumerNotFound(id))?;
        let registered = &self.topics[consumer.topic].name;
        if registered != topic {
            return Err(StoreError::WrongTopic {
                role: "consumer",
                id,
                registered: registered.clone(),
                requested: topic.to_owned(),
            });
        }
        Ok(consumer)
    }
}

impl State {
    /// Applies one position change by the same rules as the durable stores' groups.
    fn move_position(&mut self, id: u64, topic: &str, op: PositionOp) -> Result<Positioned> {
        let consumer = self.consumer(id, topic)?;
        let (topic_id, position) = (consumer.topic, consumer.position);
        let cursor = Cursor {
            topic_id: topic_id as i64,
            position,
            end: self.topics[topic_id].log.len() as u64,
        };
        let plan = plan_positions(&[(id, op)], HashMap::from([(id, cursor)]));
        if let Some(&(_, position)) = plan.positions.first() {
            self.consumer(id, topic)?.position = position;
        }
        let outcome = plan.outcomes[0];
        let taken = outcome
            .taken()
            .map(|(topic_id, offset)| self.topics[topic_id as usize].log[offset as usize].clone());
        Ok(Positioned::new(outcome, taken))
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        // Milliseconds of the start time, scaled: far apart for restarts, far below 2^53.
        let id_base = (now_ms() % 1_000_000_000) * 1_000;
        MemoryStore {
            state: Mutex::new(State {
                id_base,
                ..State::default()
            }),
            signals: TopicSignals::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("memory store lock")
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    async fn create_topic(&self, name: &str) -> Result<()> {
        let mut state = self.lock();
        if state.topic_ids.contains_key(name) {
            return Err(StoreError::TopicExists(name.to_owned()));
        }
        state.add_topic(name);
        Ok(())
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
            None => state.add_topic(topic),
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
            ConsumerStart::End => state.topics[topic].log.len() as u64,
        };
        state.consumers.push(Consumer { topic, position });
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
        let end = state.topics[topic_id].log.len() as u64;
        let mut plan = plan_appends(
            vec![AppendJob {
                topic_id: topic_id as i64,
                topic: append.topic.as_str().into(),
                producer_id: append.producer_id,
                messages: append.messages,
                sequence: append.sequence,
            }],
            HashMap::from([(topic_id as i64, end)]),
            HashMap::from([(append.producer_id, sequence)]),
        );
        let outcome = plan.outcomes.pop().expect("one outcome per job");
        if let Some((_, sequence)) = plan.producers.pop() {
            state.producer(append.producer_id, &append.topic)?.sequence = sequence;
        }
        let timestamp_ms = now_ms();
        let log = &mut state.topics[topic_id].log;
        for segment in plan.segments {
            log.extend(segment.messages.into_iter().zip(segment.base_offset..).map(
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
        let log = &state.topics[topic_id].log;
        let end = log.len() as u64;
        let from = from.unwrap_or(position);
        within_end(topic, from, end)?;
        let messages = limit.apply(log[from as usize..].iter().take(limit.messages).cloned());
        Ok(Fetched::new(from, messages, end))
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
        Ok((state.topics[topic_id].log.len() as u64).saturating_sub(position))
    }

    fn signals(&self) -> &TopicSignals {
        &self.signals
    }

    async fn close(&self) {}
}
