//! The consumer: one background task per topic prefetches messages (`fetch` with a long poll,
//! so waiting costs neither client nor broker anything; while a backlog is known, a second
//! fetch reads ahead), and `poll()` hands them out one at a time, taking the topics in turn.
//!
//! What counts as consumed: a message handed out by `poll()` is consumed when `poll()` is
//! called again (the program asked for the next one) or the consumer stops. A background
//! task commits consumed positions to the broker every `auto_commit_interval`, and `stop()`
//! commits the last one. A program that crashes while handling a message therefore gets it
//! again when it restarts with the same group: at least once, never silently lost.
//!
//! Retention may remove messages before this consumer reads them (it lags by more than the
//! topic keeps). The broker then answers from the topic's start and says how many were
//! skipped; the next message handed out carries that number ([`Message::missed`]), so the
//! program hears of each gap once, where it happened, and reading goes on.

use super::defaults;
use super::error::{ClientError, Result};
use super::http::BrokerClient;
use super::retry::Backoff;
use super::runtime;
use myqueue_wire::{ErrorCode, FetchLimits, FetchResponse, NamedOffset, OffsetSpec};
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// A durable name: the same group continues where it stopped.
    pub group: Option<String>,
    /// Where a consumer this registration creates starts; `None`: the broker's default. A
    /// group that exists keeps its position.
    pub start: Option<NamedOffset>,
    /// Messages and payload bytes per fetch request at most, and how long one fetch waits on
    /// the broker for a message (checked against the broker's limits when built).
    pub fetch: FetchLimits,
    /// Messages prefetched per topic at most.
    pub buffer_messages: usize,
    /// Payload bytes prefetched per topic at most (a fetch may go past it once).
    pub buffer_bytes: usize,
    /// How often consumed positions are committed.
    pub auto_commit_interval: Duration,
    /// Timeout of one HTTP request (on top of the long poll).
    pub request_timeout: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        use defaults::consumer::*;
        ConsumerConfig {
            group: None,
            start: None,
            fetch: fetch_limits(FETCH_MAX_MESSAGES, FETCH_MAX_BYTES)
                .expect("the defaults are within the limits (tested)"),
            buffer_messages: BUFFER_MESSAGES,
            buffer_bytes: BUFFER_BYTES,
            auto_commit_interval: AUTO_COMMIT_INTERVAL,
            request_timeout: defaults::REQUEST_TIMEOUT,
        }
    }
}

/// The limits of this client's fetches: `max_messages` and `max_bytes` as given, with the
/// client's long poll.
pub fn fetch_limits(
    max_messages: u32,
    max_bytes: u64,
) -> Result<FetchLimits, myqueue_wire::FetchLimitError> {
    let wait_ms = defaults::consumer::LONG_POLL.as_millis() as u64;
    FetchLimits::new(Some(max_messages.into()), Some(max_bytes), Some(wait_ms))
}

/// A consumed message.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: Arc<str>,
    pub value: String,
    pub offset: u64,
    /// Milliseconds since the Unix epoch, when the broker stored it.
    pub timestamp: u64,
    /// Messages of the topic that retention removed just before this one, before this
    /// consumer could read them (0 almost always).
    pub missed: u64,
}

/// One subscribed topic.
struct Topic {
    name: Arc<str>,
    consumer_id: u64,
    /// Serialises commits and seeks of this topic, so an older commit never lands after a seek.
    commit_lock: tokio::sync::Mutex<()>,
    /// Wakes the fetcher when its buffer has room again.
    space: Notify,
    /// Wakes the fetcher when a seek made its request in flight obsolete.
    reset: Notify,
}

#[derive(Default)]
struct Buffer {
    messages: VecDeque<Message>,
    /// Payload bytes in `messages`.
    bytes: usize,
    /// Next offset to fetch; `None`: the broker's committed position.
    fetch_from: Option<u64>,
    /// Bumped by every seek; fetches started before it are dropped.
    generation: u64,
    /// Messages retention removed before they were fetched, not yet told to the program: the
    /// next message fetched carries them.
    missed: u64,
    /// Position to commit: after the last consumed message.
    consumed: Option<u64>,
    /// Position the broker has.
    committed: Option<u64>,
}

#[derive(Default)]
struct State {
    buffers: Vec<Buffer>,
    /// The last message handed out: (topic index, offset). Consumed at the next poll.
    held: Option<(usize, u64)>,
    /// Round robin: the topic to look at first.
    next_topic: usize,
    stopped: bool,
    /// A fetch failure that retrying cannot fix (e.g. the consumer id is gone).
    failure: Option<ClientError>,
}

/// What `poll()` found.
pub enum Polled {
    Message(Message),
    /// Nothing buffered now: wait with [`ConsumerCore::wait_arrival`].
    Empty,
    Stopped,
}

pub struct ConsumerCore {
    http: BrokerClient,
    config: ConsumerConfig,
    topics: Vec<Topic>,
    state: Mutex<State>,
    /// Signalled when messages arrive or the consumer stops.
    arrived: Condvar,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl ConsumerCore {
    /// Registers one consumer per topic (all before anything starts: a missing topic fails the
    /// whole consumer) and starts prefetching.
    pub async fn open(
        http: BrokerClient,
        config: ConsumerConfig,
        topics: &[String],
    ) -> Result<Arc<ConsumerCore>> {
        let mut registered = Vec::with_capacity(topics.len());
        for topic in topics {
            if let Err(why) = myqueue_wire::check_topic_name(topic) {
                return Err(ClientError::Invalid(why));
            }
            let id = http
                .register_consumer(topic, config.group.as_deref(), config.start)
                .await?;
            registered.push((topic.clone(), id));
        }
        Ok(Self::start(http, config, registered))
    }

    fn start(
        http: BrokerClient,
        config: ConsumerConfig,
        registered: Vec<(String, u64)>,
    ) -> Arc<Self> {
        let topics: Vec<Topic> = registered
            .into_iter()
            .map(|(name, consumer_id)| Topic {
                name: name.into(),
                consumer_id,
                commit_lock: tokio::sync::Mutex::new(()),
                space: Notify::new(),
                reset: Notify::new(),
            })
            .collect();
        let core = Arc::new(ConsumerCore {
            http,
            config,
            state: Mutex::new(State {
                buffers: topics.iter().map(|_| Buffer::default()).collect(),
                ..State::default()
            }),
            topics,
            arrived: Condvar::new(),
            tasks: Mutex::new(Vec::new()),
        });
        let runtime = runtime::handle();
        let mut tasks: Vec<JoinHandle<()>> = (0..core.topics.len())
            .map(|index| runtime.spawn(prefetch(core.clone(), index)))
            .collect();
        tasks.push(runtime.spawn(auto_commit(Arc::downgrade(&core))));
        *core.tasks.lock().expect("tasks lock") = tasks;
        core
    }

    /// The same consumer in a forked child: the same consumer ids, reading on from the
    /// broker's committed position.
    pub fn for_child(&self) -> Arc<ConsumerCore> {
        let http = self
            .http
            .renewed()
            .expect("the parent built the same client");
        let registered = self
            .topics
            .iter()
            .map(|t| (t.name.to_string(), t.consumer_id))
            .collect();
        Self::start(http, self.config.clone(), registered)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn topic_names(&self) -> Vec<String> {
        self.topics.iter().map(|t| t.name.to_string()).collect()
    }

    fn index(&self, topic: &str) -> Result<usize> {
        self.topics
            .iter()
            .position(|t| &*t.name == topic)
            .ok_or_else(|| {
                ClientError::Invalid(format!("this consumer is not subscribed to '{topic}'"))
            })
    }

    /// Marks the message handed out last as consumed.
    fn release_held(state: &mut State) {
        if let Some((index, offset)) = state.held.take() {
            state.buffers[index].consumed = Some(offset + 1);
        }
    }

    /// The next message, taking the topics in turn; never waits.
    pub fn poll(&self) -> Result<Polled> {
        let mut state = self.lock();
        Self::release_held(&mut state);
        if state.stopped {
            return Ok(Polled::Stopped);
        }
        if let Some(err) = state.failure.clone() {
            return Err(err);
        }
        let n = state.buffers.len();
        for step in 0..n {
            let index = (state.next_topic + step) % n;
            let buffer = &mut state.buffers[index];
            if let Some(message) = buffer.messages.pop_front() {
                let bytes_before = buffer.bytes;
                buffer.bytes -= message.value.len();
                // Wake the prefetch when the buffer falls to half, by count or by bytes.
                let half_bytes = self.config.buffer_bytes / 2;
                if buffer.messages.len() == self.config.buffer_messages / 2
                    || (bytes_before > half_bytes && buffer.bytes <= half_bytes)
                {
                    self.topics[index].space.notify_one();
                }
                state.next_topic = (index + 1) % n;
                state.held = Some((index, message.offset));
                return Ok(Polled::Message(message));
            }
        }
        Ok(Polled::Empty)
    }

    /// Returns the message `poll()` handed out last to the front of its topic's buffer, as if
    /// it had not been handed out, its gap told (the program could not take it: e.g. the gap's
    /// warning was turned into an exception).
    pub fn put_back(&self, mut message: Message) {
        let Some(index) = self.topics.iter().position(|t| t.name == message.topic) else {
            return;
        };
        let mut state = self.lock();
        if state.held == Some((index, message.offset)) {
            state.held = None;
        }
        message.missed = 0;
        let buffer = &mut state.buffers[index];
        buffer.bytes += message.value.len();
        buffer.messages.push_front(message);
    }

    /// Waits up to `slice` for messages to arrive (or the consumer to stop).
    pub fn wait_arrival(&self, slice: Duration) {
        let state = self.lock();
        let _ = self.arrived.wait_timeout_while(state, slice, |s| {
            !s.stopped && s.failure.is_none() && s.buffers.iter().all(|b| b.messages.is_empty())
        });
    }

    pub fn is_stopped(&self) -> bool {
        self.lock().stopped
    }

    /// Stops prefetching and ends `poll()`. With `taken_is_consumed`, the message handed out
    /// last counts as consumed (a normal stop); without (the program failed while handling
    /// it), it will be delivered again. Call [`ConsumerCore::commit`] afterwards to store the
    /// final positions.
    pub fn stop(&self, taken_is_consumed: bool) {
        let mut state = self.lock();
        if taken_is_consumed {
            Self::release_held(&mut state);
        } else {
            state.held = None;
        }
        state.stopped = true;
        drop(state);
        self.arrived.notify_all();
        for task in self.tasks.lock().expect("tasks lock").drain(..) {
            task.abort();
        }
    }

    /// Commits the consumed positions of every topic now.
    pub async fn commit(&self) -> Result<()> {
        for index in 0..self.topics.len() {
            self.commit_topic(index).await?;
        }
        Ok(())
    }

    async fn commit_topic(&self, index: usize) -> Result<()> {
        let topic = &self.topics[index];
        let _serialised = topic.commit_lock.lock().await;
        let target = {
            let state = self.lock();
            let buffer = &state.buffers[index];
            match buffer.consumed {
                Some(consumed) if buffer.committed != Some(consumed) => consumed,
                _ => return Ok(()),
            }
        };
        let position = self
            .http
            .commit(
                &topic.name,
                topic.consumer_id,
                OffsetSpec::At(myqueue_wire::Num(target)),
            )
            .await?;
        self.lock().buffers[index].committed = Some(position);
        Ok(())
    }

    /// Messages in `topic` after this consumer's position (consumed positions are committed
    /// first, so the answer counts what the program has not taken yet).
    pub async fn size(&self, topic: &str) -> Result<u64> {
        let index = self.index(topic)?;
        self.commit_topic(index).await?;
        let topic = &self.topics[index];
        self.http.size(&topic.name, topic.consumer_id).await
    }

    /// Moves the position in `topic`: the next message comes from `to`. Prefetched messages
    /// are dropped.
    pub async fn seek(&self, topic: &str, to: OffsetSpec) -> Result<u64> {
        let index = self.index(topic)?;
        let topic = &self.topics[index];
        let _serialised = topic.commit_lock.lock().await;
        let position = self.http.commit(&topic.name, topic.consumer_id, to).await?;
        let mut state = self.lock();
        if matches!(state.held, Some((held, _)) if held == index) {
            state.held = None;
        }
        let buffer = &mut state.buffers[index];
        buffer.messages.clear();
        buffer.bytes = 0;
        buffer.generation += 1;
        buffer.fetch_from = Some(position);
        buffer.missed = 0;
        buffer.consumed = None;
        buffer.committed = Some(position);
        drop(state);
        topic.reset.notify_one();
        topic.space.notify_one();
        Ok(position)
    }
}

/// Messages the first fetch of a topic asks for at most: a fresh consumer hands out its first
/// messages as soon as a small read is done, while the next, full-sized fetches run.
const FIRST_FETCH_MESSAGES: u32 = 500;

/// Fetches of one topic in flight at most: the one that may wait on the broker (the long poll)
/// and, while the topic is known to hold more, a read-ahead of the messages after it, so that
/// the broker's next read and the transfer overlap the handing out of the current ones.
const FETCHES_IN_FLIGHT: usize = 2;

/// One fetch sent and not yet taken into the buffer.
struct Pending {
    /// Where it reads from; `None`: the broker's committed position.
    from: Option<u64>,
    /// Messages it may return at most.
    max_messages: u32,
    /// The buffer's generation when it was sent: a seek since makes it obsolete.
    generation: u64,
    /// A read-ahead (sent before the fetch ahead of it was answered, never waits on the broker).
    read_ahead: bool,
    answer: JoinHandle<Result<FetchResponse>>,
}

impl Pending {
    /// Where the fetch after this one starts if this one returns all it may.
    fn ahead(&self) -> Option<u64> {
        self.from.map(|from| from + u64::from(self.max_messages))
    }
}

/// A fetch dropped unanswered is cancelled: its request goes (a long poll no longer holds the
/// broker's slot for this client), also when the prefetch loop itself is aborted by `stop()`.
impl Drop for Pending {
    fn drop(&mut self) {
        self.answer.abort();
    }
}

/// Drops fetches in flight whose answers will not be used.
fn abandon(pending: &mut VecDeque<Pending>) {
    pending.clear();
}

/// The prefetch loop of one topic. Answers are taken in the order the fetches were sent, and a
/// read-ahead's only if it starts exactly where the buffer's next fetch would (its guess was
/// right: the fetch before it returned all it could); otherwise it is dropped and reading goes
/// on from the buffer's position, as if it had never been sent. So the buffer gets the same
/// messages, in the same order, as with one fetch at a time.
async fn prefetch(core: Arc<ConsumerCore>, index: usize) {
    let topic = &core.topics[index];
    let mut backoff = Backoff::new();
    let mut pending: VecDeque<Pending> = VecDeque::new();
    // The topic's end as last answered: read-aheads go only where messages are known to be.
    let mut known_end: Option<u64> = None;
    // Whether the last answer held all it could: the byte limit does not cut fetches short,
    // so a read-ahead can guess where the next one starts.
    let mut last_was_full = false;
    let mut first_fetch = true;
    let full = core.config.fetch;
    loop {
        {
            let state = core.lock();
            if state.stopped {
                abandon(&mut pending);
                return;
            }
            let buffer = &state.buffers[index];
            while pending.len() < FETCHES_IN_FLIGHT {
                let requested: usize = pending.iter().map(|p| p.max_messages as usize).sum();
                if buffer.messages.len() + requested >= core.config.buffer_messages
                    || buffer.bytes >= core.config.buffer_bytes
                {
                    break;
                }
                let (from, limits, read_ahead) = match pending.back() {
                    None => {
                        let limits = if first_fetch {
                            with_messages(
                                full,
                                full.max_messages().min(FIRST_FETCH_MESSAGES),
                                full.wait(),
                            )
                        } else {
                            full
                        };
                        (buffer.fetch_from, limits, false)
                    }
                    Some(last) => match (last.ahead(), known_end) {
                        (Some(at), Some(end)) if at < end && last_was_full => (
                            Some(at),
                            with_messages(full, full.max_messages(), Duration::ZERO),
                            true,
                        ),
                        _ => break,
                    },
                };
                let http = core.http.clone();
                let name = topic.name.clone();
                let consumer_id = topic.consumer_id;
                pending.push_back(Pending {
                    from,
                    max_messages: limits.max_messages(),
                    generation: buffer.generation,
                    read_ahead,
                    answer: runtime::handle()
                        .spawn(async move { http.fetch(&name, consumer_id, from, limits).await }),
                });
            }
        }
        let has_room = pending.len() < FETCHES_IN_FLIGHT;
        let Some(front) = pending.front_mut() else {
            topic.space.notified().await;
            continue;
        };
        let fetched = tokio::select! {
            answer = &mut front.answer => answer.unwrap_or_else(|err| {
                Err(ClientError::Unavailable(format!("fetch task: {err}")))
            }),
            _ = topic.reset.notified() => {
                abandon(&mut pending);
                continue;
            }
            // Room for a read-ahead again: send it (the fetch in flight goes on).
            _ = topic.space.notified(), if has_room => continue,
        };
        let sent = pending.pop_front().expect("front exists");
        match fetched {
            Ok(fetched) => {
                let mut state = core.lock();
                let buffer = &mut state.buffers[index];
                if buffer.generation != sent.generation {
                    abandon(&mut pending); // a seek happened meanwhile
                    continue;
                }
                if sent.read_ahead && sent.from != buffer.fetch_from {
                    // The fetch before it returned less than it could: read on from there.
                    abandon(&mut pending);
                    continue;
                }
                backoff = Backoff::new();
                first_fetch = false;
                known_end = Some(fetched.end_offset);
                last_was_full = fetched.messages.len() == sent.max_messages as usize;
                let start = fetched.next_offset - fetched.messages.len() as u64;
                if buffer.committed.is_none() {
                    buffer.committed = Some(start);
                }
                buffer.fetch_from = Some(fetched.next_offset);
                buffer.missed += fetched.skipped;
                if fetched.messages.is_empty() {
                    continue;
                }
                buffer.bytes += fetched
                    .messages
                    .iter()
                    .map(|m| m.message.len())
                    .sum::<usize>();
                let mut missed = std::mem::take(&mut buffer.missed);
                buffer
                    .messages
                    .extend(fetched.messages.into_iter().map(|m| Message {
                        topic: topic.name.clone(),
                        value: m.message,
                        offset: m.offset,
                        timestamp: m.timestamp,
                        missed: std::mem::take(&mut missed),
                    }));
                drop(state);
                core.arrived.notify_all();
            }
            // A read-ahead that failed tells nothing the next fetch will not: read on from
            // the buffer's position.
            Err(_) if sent.read_ahead => abandon(&mut pending),
            Err(err) if err.is_retriable() => {
                abandon(&mut pending);
                let wait = backoff.next_wait();
                tracing::debug!(topic = %topic.name, error = %err, "fetch failed; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
            }
            Err(ClientError::Rejected {
                code: ErrorCode::OffsetOutOfRange,
                ..
            }) => {
                abandon(&mut pending);
                // The topic is shorter than our position (e.g. its database was restored
                // from an older backup): go on from the broker's committed position.
                {
                    let mut state = core.lock();
                    let buffer = &mut state.buffers[index];
                    if buffer.generation == sent.generation {
                        buffer.fetch_from = None;
                    }
                }
                tokio::time::sleep(backoff.next_wait()).await;
            }
            Err(err) => {
                abandon(&mut pending);
                core.lock().failure.get_or_insert(err);
                core.arrived.notify_all();
                return;
            }
        }
    }
}

/// `limits` with another message count and wait (both within the limits already checked).
fn with_messages(limits: FetchLimits, max_messages: u32, wait: Duration) -> FetchLimits {
    FetchLimits::new(
        Some(max_messages.into()),
        Some(limits.max_bytes()),
        Some(wait.as_millis() as u64),
    )
    .unwrap_or(limits)
}

/// Commits consumed positions every `auto_commit_interval` until the consumer is dropped or
/// stopped.
async fn auto_commit(core: std::sync::Weak<ConsumerCore>) {
    loop {
        let interval = match core.upgrade() {
            Some(core) => core.config.auto_commit_interval,
            None => return,
        };
        tokio::time::sleep(interval).await;
        let Some(core) = core.upgrade() else { return };
        if core.is_stopped() {
            return;
        }
        if let Err(err) = core.commit().await {
            tracing::debug!(error = %err, "auto-commit failed; retrying later");
        }
    }
}
