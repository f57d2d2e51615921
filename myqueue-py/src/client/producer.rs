//! The producer: `send()` appends to an in-memory batch and returns at once; one background
//! task per topic delivers the batches in order, up to `max_in_flight` requests in flight per
//! topic, with retries.
//!
//! Delivery is idempotent: each batch carries the producer's sequence number, so a batch
//! resent after a lost response or a broker restart is stored once. When a batch is given up
//! (delivery timeout), the topic's producer id is dropped and a new one registered for the
//! next batch, so the broker's sequence check never confuses the two.
//!
//! Memory is bounded: `buffer_size` bytes of accepted, undelivered messages at most; beyond
//! that `try_send` answers `Full` and the caller waits (back-pressure).

use super::error::{ClientError, Result};
use super::http::BrokerClient;
use super::retry::Backoff;
use super::runtime;
use bytes::Bytes;
use myqueue_wire::{ErrorCode, MAX_BATCH_MESSAGES, Num, ProduceBatchResponse};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// How long a batch waits for more messages before it is sent.
    pub linger: Duration,
    /// A batch is sent once it holds this many bytes of messages.
    pub batch_size: usize,
    /// Bytes of accepted, undelivered messages at most; `send()` waits beyond.
    pub buffer_size: usize,
    /// How long a batch is retried before its messages are reported undeliverable.
    pub delivery_timeout: Duration,
    /// Timeout of one HTTP request.
    pub request_timeout: Duration,
    /// Largest message `send()` accepts (the broker's default limit).
    pub max_message_bytes: usize,
    /// Batches per topic sent before the first of them is answered (1 to
    /// [`myqueue_wire::PRODUCER_WINDOW`]).
    pub max_in_flight: usize,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        use super::defaults::producer::*;
        ProducerConfig {
            linger: LINGER,
            batch_size: BATCH_SIZE,
            buffer_size: BUFFER_SIZE,
            delivery_timeout: DELIVERY_TIMEOUT,
            request_timeout: super::defaults::REQUEST_TIMEOUT,
            max_message_bytes: MAX_MESSAGE_BYTES,
            max_in_flight: MAX_IN_FLIGHT,
        }
    }
}

/// Where one batch went: the offset of its first message, or why it was not delivered.
#[derive(Default)]
struct Outcome {
    result: Mutex<Option<Result<u64>>>,
    done: Condvar,
}

/// The future-like handle `send()` returns: the message's offset once delivered.
#[derive(Clone)]
pub struct SendHandle {
    outcome: Arc<Outcome>,
    index: u64,
}

impl SendHandle {
    /// The stored offset, the delivery error, or `None` while in flight.
    pub fn try_get(&self) -> Option<Result<u64>> {
        let result = self.outcome.result.lock().expect("outcome lock");
        result
            .as_ref()
            .map(|r| r.clone().map(|base| base + self.index))
    }

    /// Waits up to `slice` for the outcome; true when it is known.
    pub fn wait(&self, slice: Duration) -> bool {
        let result = self.outcome.result.lock().expect("outcome lock");
        let (result, _) = self
            .outcome
            .done
            .wait_timeout_while(result, slice, |r| r.is_none())
            .expect("outcome lock");
        result.is_some()
    }
}

struct Batch {
    messages: Vec<String>,
    bytes: usize,
    created: Instant,
    outcome: Arc<Outcome>,
}

struct TopicQueue {
    /// Oldest first; the last one is open for more messages.
    batches: VecDeque<Batch>,
    wake: Arc<Notify>,
    /// Messages accepted for this topic so far, and of those, how many are finished
    /// (delivered or given up). Batches of a topic finish in order, so "finished ≥ n" means
    /// the first n accepted messages are finished.
    accepted: u64,
    finished: u64,
}

/// What a flush waits for: every message accepted before it, per topic.
pub struct FlushMark {
    accepted: Vec<(Arc<str>, u64)>,
    undelivered_before: u64,
}

#[derive(Default)]
struct State {
    topics: HashMap<Arc<str>, TopicQueue>,
    buffered_bytes: usize,
    /// Messages given up so far.
    undelivered: u64,
    /// The first delivery failure: the producer is no longer healthy.
    failure: Option<ClientError>,
    closed: bool,
    /// While positive, batches are sent without waiting for `linger`.
    flushing: u32,
}

/// A producer's state in one process.
pub struct Core {
    http: BrokerClient,
    config: ProducerConfig,
    state: Mutex<State>,
    /// Signalled when buffer space is freed, a batch finishes, or the producer closes.
    changed: Condvar,
}

/// What `try_send` could not do at once.
pub enum SendError {
    /// The buffer is full: wait for [`Core::wait_changed`] and try again.
    Full(String),
    Failed(ClientError),
}

impl Core {
    /// A producer with `registered` topics already known (`topic → producer id`).
    pub fn new(
        http: BrokerClient,
        config: ProducerConfig,
        registered: HashMap<String, u64>,
    ) -> Arc<Core> {
        let core = Arc::new(Core {
            http,
            config,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let mut state = core.lock();
        for (topic, id) in registered {
            core.add_topic(&mut state, topic.into(), Some(id));
        }
        drop(state);
        core
    }

    /// The same producer, for a forked child: same broker and settings, nothing buffered,
    /// producer ids registered again on first use.
    pub fn for_child(&self) -> Arc<Core> {
        let http = self
            .http
            .renewed()
            .expect("the parent built the same client");
        Core::new(http, self.config.clone(), HashMap::new())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn add_topic(self: &Arc<Self>, state: &mut State, topic: Arc<str>, id: Option<u64>) {
        let wake = Arc::new(Notify::new());
        state.topics.insert(
            topic.clone(),
            TopicQueue {
                batches: VecDeque::new(),
                wake: wake.clone(),
                accepted: 0,
                finished: 0,
            },
        );
        runtime::handle().spawn(deliver_topic(self.clone(), topic, id, wake));
    }

    /// Accepts `value` for `topic` without waiting, or says why not.
    pub fn try_send(self: &Arc<Self>, topic: &str, value: String) -> Result<SendHandle, SendError> {
        if let Err(why) = myqueue_wire::check_topic_name(topic) {
            return Err(SendError::Failed(ClientError::Invalid(why)));
        }
        if value.len() > self.config.max_message_bytes {
            return Err(SendError::Failed(ClientError::Invalid(format!(
                "the message is {} bytes; the limit is {} bytes (max_message_bytes)",
                value.len(),
                self.config.max_message_bytes
            ))));
        }
        let mut state = self.lock();
        if state.closed {
            return Err(SendError::Failed(ClientError::Closed(
                "send() after stop(): the producer is closed".into(),
            )));
        }
        let bytes = value.len().max(1);
        if state.buffered_bytes > 0 && state.buffered_bytes + bytes > self.config.buffer_size {
            return Err(SendError::Full(value));
        }
        if !state.topics.contains_key(topic) {
            self.add_topic(&mut state, topic.into(), None);
        }
        state.buffered_bytes += bytes;
        let batch_size = self.config.batch_size;
        let queue = state.topics.get_mut(topic).expect("added above");
        queue.accepted += 1;
        let open = queue
            .batches
            .back_mut()
            .filter(|b| b.bytes + bytes <= batch_size && b.messages.len() < MAX_BATCH_MESSAGES);
        let (handle, wake) = match open {
            Some(batch) => {
                batch.messages.push(value);
                batch.bytes += bytes;
                let handle = SendHandle {
                    outcome: batch.outcome.clone(),
                    index: batch.messages.len() as u64 - 1,
                };
                // The sender waits for a full batch or the linger time; wake it when full.
                (handle, batch.bytes >= batch_size)
            }
            None => {
                let outcome = Arc::new(Outcome::default());
                queue.batches.push_back(Batch {
                    messages: vec![value],
                    bytes,
                    created: Instant::now(),
                    outcome: outcome.clone(),
                });
                // A new batch: the sender starts its linger timer (or sends the previous one).
                (SendHandle { outcome, index: 0 }, true)
            }
        };
        if wake {
            queue.wake.notify_one();
        }
        Ok(handle)
    }

    /// Waits up to `slice` for buffer space, a delivery, or the end.
    pub fn wait_changed(&self, slice: Duration) {
        let state = self.lock();
        let _ = self.changed.wait_timeout(state, slice);
    }

    /// True while the producer is open, healthy and has room for a message.
    pub fn has_room(&self) -> Option<bool> {
        let state = self.lock();
        if state.closed || state.failure.is_some() {
            return None;
        }
        Some(state.buffered_bytes < self.config.buffer_size)
    }

    /// Whether `send()` may be called: open and no delivery failure so far.
    pub fn is_healthy(&self) -> bool {
        let state = self.lock();
        !state.closed && state.failure.is_none()
    }

    /// Sends every batch at once instead of after `linger`, until [`Core::end_flush`]; marks
    /// the messages accepted so far, which [`Core::is_flushed`] then waits for.
    pub fn begin_flush(&self) -> FlushMark {
        let mut state = self.lock();
        state.flushing += 1;
        for queue in state.topics.values() {
            queue.wake.notify_one();
        }
        FlushMark {
            accepted: state
                .topics
                .iter()
                .map(|(topic, queue)| (topic.clone(), queue.accepted))
                .collect(),
            undelivered_before: state.undelivered,
        }
    }

    pub fn end_flush(&self) {
        let mut state = self.lock();
        state.flushing = state.flushing.saturating_sub(1);
    }

    /// Whether every message accepted before `mark` is finished; and how many of the
    /// messages given up since `mark` was taken.
    pub fn is_flushed(&self, mark: &FlushMark) -> (bool, u64) {
        let state = self.lock();
        let done = mark.accepted.iter().all(|(topic, accepted)| {
            state
                .topics
                .get(topic)
                .is_none_or(|queue| queue.finished >= *accepted)
        });
        (done, state.undelivered - mark.undelivered_before)
    }

    /// Messages accepted and not yet delivered or given up.
    pub fn unfinished(&self) -> u64 {
        let state = self.lock();
        state.topics.values().map(|q| q.accepted - q.finished).sum()
    }

    /// Messages given up so far, and the first reason.
    pub fn undelivered(&self) -> (u64, Option<ClientError>) {
        let state = self.lock();
        (state.undelivered, state.failure.clone())
    }

    /// Refuses further sends and sends what is buffered without waiting for `linger`.
    pub fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        for queue in state.topics.values() {
            queue.wake.notify_one();
        }
        drop(state);
        self.changed.notify_all();
    }

    /// Takes the next batch of `topic` once it is due, or `None` when closed and drained.
    async fn next_batch(&self, topic: &str, wake: &Notify) -> Option<Batch> {
        loop {
            let due = {
                let mut state = self.lock();
                let closed = state.closed;
                let urgent = closed || state.flushing > 0;
                let queue = state.topics.get_mut(topic)?;
                match queue.batches.front() {
                    None if closed => return None,
                    None => None,
                    Some(front) => {
                        let ready = urgent
                            || queue.batches.len() > 1
                            || front.bytes >= self.config.batch_size
                            || front.messages.len() >= MAX_BATCH_MESSAGES
                            || front.created.elapsed() >= self.config.linger;
                        if ready {
                            return queue.batches.pop_front();
                        }
                        Some(front.created + self.config.linger)
                    }
                }
            };
            match due {
                Some(at) => {
                    let _ = tokio::time::timeout_at(at.into(), wake.notified()).await;
                }
                None => wake.notified().await,
            }
        }
    }

    /// Records a finished batch of `topic` and wakes whoever waits for space or for the
    /// outcome.
    fn finish(&self, topic: &str, batch: Batch, result: Result<u64>) {
        let count = batch.messages.len() as u64;
        let mut state = self.lock();
        state.buffered_bytes -= batch.bytes;
        if let Some(queue) = state.topics.get_mut(topic) {
            queue.finished += count;
        }
        if let Err(err) = &result {
            state.undelivered += count;
            if state.failure.is_none() {
                state.failure = Some(err.clone());
            }
        }
        drop(state);
        *batch.outcome.result.lock().expect("outcome lock") = Some(result);
        batch.outcome.done.notify_all();
        self.changed.notify_all();
    }
}

#[derive(Serialize)]
struct BatchBody<'a> {
    topic: &'a str,
    producer_id: Num,
    sequence: Num,
    messages: &'a [String],
}

/// The producer id of one topic and the sequence numbers of its batches.
struct Registration {
    id: u64,
    /// The sequence number after the last batch known to be stored (answered).
    next_sequence: u64,
    /// The sequence number after the last batch sent (in flight or answered).
    next_sent: u64,
}

impl Registration {
    fn new(id: u64) -> Self {
        Registration {
            id,
            next_sequence: 0,
            next_sent: 0,
        }
    }
}

/// A batch sent once, its answer awaited in the background.
struct InFlight {
    batch: Batch,
    /// The producer id it was sent under.
    id: u64,
    answer: JoinHandle<Result<u64>>,
}

impl InFlight {
    /// Its answer: where it was stored, or why not (a task that did not finish is a failure
    /// that says nothing about whether the batch was stored).
    async fn answer(&mut self) -> Result<u64> {
        (&mut self.answer)
            .await
            .unwrap_or_else(|err| Err(ClientError::Unavailable(format!("send task: {err}"))))
    }
}

/// The delivery loop of one topic: batches in order, up to `max_in_flight` of them sent
/// before the first is answered. The broker stores a producer's batches only in sequence
/// order and recognises a retry of any of its recent ones, so order and "stored once" hold
/// with several in flight. Answers are taken in order; the first failure stops sending, and
/// the batches in flight are then delivered one at a time, as with `max_in_flight = 1`.
async fn deliver_topic(core: Arc<Core>, topic: Arc<str>, id: Option<u64>, wake: Arc<Notify>) {
    let mut registration = id.map(Registration::new);
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    let window = core.config.max_in_flight.max(1);
    let mut drained = false;
    loop {
        // A new producer id is registered by `deliver`, with nothing in flight.
        let room = in_flight.is_empty() || (registration.is_some() && in_flight.len() < window);
        tokio::select! {
            // Answers first: they free room and buffer space.
            biased;
            answer = async { in_flight.front_mut().expect("guarded").answer().await },
                if !in_flight.is_empty() =>
            {
                let sent = in_flight.pop_front().expect("guarded");
                match answer {
                    Ok(base) => {
                        if let Some(reg) = registration.as_mut().filter(|reg| reg.id == sent.id) {
                            reg.next_sequence += sent.batch.messages.len() as u64;
                        }
                        core.finish(&topic, sent.batch, Ok(base));
                    }
                    Err(err) => {
                        let sent = std::iter::once((sent, Err(err))).chain(collect(&mut in_flight).await);
                        recover(&core, &topic, &mut registration, sent.collect()).await;
                    }
                }
            }
            batch = core.next_batch(&topic, &wake), if room && !drained => {
                let Some(batch) = batch else {
                    drained = true;
                    if in_flight.is_empty() {
                        return;
                    }
                    continue;
                };
                match registration.as_mut() {
                    Some(reg) if window > 1 => in_flight.push_back(send(&core, &topic, reg, batch)),
                    _ => {
                        let result = deliver(&core, &topic, &mut registration, &batch).await;
                        core.finish(&topic, batch, result);
                    }
                }
            }
            else => return,
        }
    }
}

/// Sends `batch` once under the next sequence number, answered in the background.
fn send(core: &Core, topic: &str, reg: &mut Registration, batch: Batch) -> InFlight {
    let json = serde_json::to_vec(&BatchBody {
        topic,
        producer_id: Num(reg.id),
        sequence: Num(reg.next_sent),
        messages: &batch.messages,
    })
    .expect("a batch serialises");
    reg.next_sent += batch.messages.len() as u64;
    let http = core.http.clone();
    let answer = runtime::handle().spawn(async move {
        http.produce_batch::<ProduceBatchResponse>(Bytes::from(json))
            .await
            .map(|stored| stored.base_offset)
    });
    InFlight {
        batch,
        id: reg.id,
        answer,
    }
}

/// Every answer of the batches still in flight, in order.
async fn collect(in_flight: &mut VecDeque<InFlight>) -> Vec<(InFlight, Result<u64>)> {
    let mut answered = Vec::with_capacity(in_flight.len());
    while let Some(mut sent) = in_flight.pop_front() {
        let answer = sent.answer().await;
        answered.push((sent, answer));
    }
    answered
}

/// Finishes the batches of a window whose first failed, in order: a stored one as stored,
/// the others delivered again one at a time (a retry of a stored one is recognised by the
/// broker and answered as before). When a batch is given up (its delivery timeout passed,
/// its fate unknown), its producer id is dropped; a later batch whose answer was lost under
/// that id may have been stored, so it is reported undelivered, never sent twice. (An id
/// dropped because the broker refused it stored nothing after the refused batch.)
async fn recover(
    core: &Core,
    topic: &str,
    registration: &mut Option<Registration>,
    sent: Vec<(InFlight, Result<u64>)>,
) {
    let mut given_up: Option<u64> = None;
    for (sent, answer) in sent {
        let result = match answer {
            Ok(base) => {
                if let Some(reg) = registration.as_mut().filter(|reg| reg.id == sent.id) {
                    reg.next_sequence += sent.batch.messages.len() as u64;
                }
                Ok(base)
            }
            Err(err)
                if given_up == Some(sent.id) && !matches!(err, ClientError::Rejected { .. }) =>
            {
                Err(ClientError::Delivery(format!(
                    "{} message(s) to topic '{topic}' not delivered: {err}; an earlier batch \
                     was given up with its producer id, so this one is not sent again",
                    sent.batch.messages.len()
                )))
            }
            Err(_) => {
                let result = deliver(core, topic, registration, &sent.batch).await;
                let kept = registration.as_ref().is_some_and(|reg| reg.id == sent.id);
                if result.is_err() && !kept {
                    given_up = Some(sent.id);
                }
                result
            }
        };
        core.finish(topic, sent.batch, result);
    }
    if let Some(reg) = registration.as_mut() {
        reg.next_sent = reg.next_sequence;
    }
}

/// Sends one batch until it is stored, refused, or its delivery timeout passes.
async fn deliver(
    core: &Core,
    topic: &str,
    registration: &mut Option<Registration>,
    batch: &Batch,
) -> Result<u64> {
    let deadline = batch.created + core.config.delivery_timeout;
    let mut backoff = Backoff::new();
    let mut body: Option<(u64, u64, Bytes)> = None;
    loop {
        let attempt = async {
            if registration.is_none() {
                let id = core.http.register_producer(topic).await?;
                *registration = Some(Registration::new(id));
            }
            let reg = registration.as_ref().expect("registered above");
            // Serialised once per (id, sequence) and resent as is.
            if !matches!(&body, Some((id, seq, _)) if *id == reg.id && *seq == reg.next_sequence) {
                let json = serde_json::to_vec(&BatchBody {
                    topic,
                    producer_id: Num(reg.id),
                    sequence: Num(reg.next_sequence),
                    messages: &batch.messages,
                })
                .expect("a batch serialises");
                body = Some((reg.id, reg.next_sequence, Bytes::from(json)));
            }
            let (_, _, json) = body.as_ref().expect("serialised above");
            core.http
                .produce_batch::<ProduceBatchResponse>(json.clone())
                .await
        }
        .await;
        let err = match attempt {
            Ok(stored) => {
                if let Some(reg) = registration.as_mut() {
                    reg.next_sequence += batch.messages.len() as u64;
                    reg.next_sent = reg.next_sequence;
                }
                return Ok(stored.base_offset);
            }
            Err(err) => err,
        };
        match &err {
            ClientError::Rejected {
                code:
                    ErrorCode::SequenceMismatch | ErrorCode::ProducerNotFound | ErrorCode::WrongTopic,
                ..
            } if Instant::now() < deadline => {
                // The broker does not know this producer id as ours (its database was reset,
                // or the memory store restarted), or lost track of its sequence: the batch was
                // not stored. Continue under a fresh id.
                *registration = None;
                continue;
            }
            err if err.is_retriable() => {
                let wait = backoff.next_wait();
                if Instant::now() + wait < deadline {
                    tracing::debug!(topic, error = %err, "delivery failed; retrying in {wait:?}");
                    tokio::time::sleep(wait).await;
                    continue;
                }
            }
            _ => {}
        }
        if !matches!(err, ClientError::Rejected { .. }) {
            // The batch may or may not have been stored (only a refusal says it was not):
            // never reuse this id's sequence numbers.
            *registration = None;
        }
        return Err(ClientError::Delivery(format!(
            "{} message(s) to topic '{topic}' not delivered: {err}",
            batch.messages.len()
        )));
    }
}
