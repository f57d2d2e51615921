//! The PostgreSQL store, for production: many brokers may share one database.
//!
//! Concurrency rules, which keep every broker correct against the same tables:
//! - Appends lock the rows of the producers (with sequence numbers) and topics they touch,
//!   always in that order and sorted by id, so two brokers' groups never deadlock. The topic
//!   row lock orders appends to one topic: offsets are handed out gap-free and become visible
//!   in offset order.
//! - Position changes lock the consumer rows (sorted), so two consumes with one consumer id
//!   on two brokers take consecutive messages, never the same one.
//! - Locks are `FOR NO KEY UPDATE`, which does not block the foreign-key checks of concurrent
//!   registrations.
//! - Each append transaction sends a NOTIFY per topic; every broker LISTENs and wakes its
//!   long-polling fetches, so a consumer on broker B sees a message produced on broker A at
//!   once.
//!
//! Retention (see `migrations/postgres/0002_retention.sql`): messages are partitioned by topic,
//! then by offset; one broker at a time (the holder of an advisory lock, on a connection of its
//! own) runs the retention pass, which empties the partitions below each topic's start (a
//! reaper then detaches and drops them: `pg_partitions`) and makes partitions ahead of its
//! end. An append that finds no partition makes one and writes again.
//! Statements name the topics they read (`topic_id = $N`), and plans are made per execution
//! (`plan_cache_mode`), so each statement locks and plans only its own topics' partitions.

use super::batcher::Overlap;
use super::catalog::Owner;
use super::guess::{GroupState, Guess, Guesses, KnownStateGroups, Turn};
use super::pg_copy::{MESSAGES_COPY, MessageRows};
use super::pg_fetch_sql::FETCH;
use super::pg_group_sql::{
    GROUP_CHECKED, GROUP_WITH_MESSAGES, GROUP_WITHOUT_MESSAGES, ONE_TOPIC, ONE_TOPIC_CHECKED,
};
use super::pg_partitions::{Reaper, empty_below};
use super::pg_reach::{Grown, Reaches, make_ahead};
use super::plan::{AppendJob, AppendPlan, TopicEnd, TopicEnds, decide, plan_appends};
use super::retention::{
    Chunk, Log, RetentionConfig, batch_bytes, partition_span, partitions_wanted_to,
};
use super::sql::{
    Backend, CursorRow, FetchArraysRow, LockedRow, MessageRow, SqlStore, db_id, db_int,
    distinct_ids, locked_state, pool_stats,
};
use super::{
    Appended, FetchLimit, Fetched, OpenError, PoolStats, Result, StoreError, TopicSignals,
    within_end,
};
use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions};
use sqlx::{Connection, Postgres, Transaction};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The NOTIFY channel that carries the names of topics with new messages.
const APPENDS_CHANNEL: &str = "myqueue_appends";
/// How long a request waits for a connection before it answers 503: a down database must
/// not make requests hang.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// PostgreSQL's `statement_timeout` for the broker's connections.
const STATEMENT_TIMEOUT: &str = "30s";
/// Append groups in flight at once: a guessed group writes its messages while the group ahead
/// of it commits (see [`super::guess`]), so two server processes insert at once.
const GROUPS_IN_FLIGHT: usize = 2;
/// Connections of the append groups' pool: one per group in flight, and one that stands by
/// while another is dropped after an error.
const APPEND_CONNECTIONS: u32 = GROUPS_IN_FLIGHT as u32 + 1;
/// How long a guessed group waits for the group ahead to end, holding the rows it wrote
/// ([`Turn::wait_at_most`]). A group of `MyProducer`'s takes tens of milliseconds.
const TURN_WAIT: Duration = Duration::from_secs(1);
/// The advisory lock whose holder runs the retention pass ("myqueue" and 1).
const RETENTION_LOCK: i64 = 0x6d79_7175_6575_6501;
/// Attempts of an append group that found no partition for its rows.
const PARTITION_ATTEMPTS: usize = 3;
/// A group of this many rows or more goes in by binary `COPY`; a smaller one by its group
/// statement. `COPY` costs the server less per row (bench/copy_vs_insert.py: 1.34 times the
/// rows per second at 100 rows a group), but two more round trips, which a group of a few
/// rows (a producer sending as messages come, a waiting consumer) feels in full.
const COPY_FROM_ROWS: usize = 32;

/// The PostgreSQL store: [`PgBackend`] with group commit.
pub type PostgresStore = SqlStore<PgBackend>;

/// PostgreSQL's statements.
pub struct PgBackend {
    pool: PgPool,
    /// The append groups' connections, whose plans are generic: see [`append_pool`].
    appends: PgPool,
    /// How to open the connection that holds the retention lock.
    options: PgConnectOptions,
    /// That connection, and whether it holds the lock.
    leader: tokio::sync::Mutex<(Option<PgConnection>, bool)>,
    /// Drops the partitions that retention emptied, in the background.
    reaper: Reaper,
    /// How far each topic's partitions are known to reach, as this broker's retention passes
    /// and appends saw or made them.
    reach: Arc<Reaches>,
    /// Where partitions made ahead of the appends run ([`make_ahead`]), and what stops them.
    tasks: TaskTracker,
    stop: CancellationToken,
    /// How this broker signs the appends it announces.
    announcer: Announcer,
    /// What the next append groups will find under lock ([`super::guess`]).
    guesses: Arc<Guesses>,
    /// Guessed groups whose guess held, and those that started again.
    guessed: [AtomicU64; 2],
    /// Groups planned from known state and stored by one statement, and those whose rows
    /// were not as planned ([`PgBackend::append_known`]).
    known: KnownStateGroups,
}

/// A broker's mark on the appends it announces (`NOTIFY` payload `<mark>/<topic>`). Its own
/// announcements come back to its `LISTEN`; they are not wake-ups there, as the broker woke its
/// long polls at the commit, with the messages ([`super::Tail`]). Woken again with nothing, each
/// of them read the store after every append group.
#[derive(Clone)]
struct Announcer(Arc<str>);

impl Announcer {
    fn new() -> Self {
        let mut bytes = [0u8; 8];
        // Without randomness (it never fails on Linux), the time tells brokers apart as well.
        if getrandom::fill(&mut bytes).is_err() {
            bytes = (now_nanos() as u64).to_le_bytes();
        }
        Announcer(format!("{:016x}/", u64::from_le_bytes(bytes)).into())
    }

    fn as_str(&self) -> &str {
        &self.0
    }

    /// The topic an announcement names, unless this broker made it. (A bare topic name comes
    /// from a topic's deletion.)
    fn foreign_topic<'a>(&self, payload: &'a str) -> Option<&'a str> {
        match payload.strip_prefix(self.as_str()) {
            Some(_) => None,
            None => Some(payload.split_once('/').map_or(payload, |(_, topic)| topic)),
        }
    }
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

impl PostgresStore {
    /// Connects, applies migrations (under PostgreSQL's advisory lock, so brokers starting
    /// together do not race) and starts listening for other brokers' appends. Migrating a
    /// database made before retention copies its messages once, into partitions.
    pub async fn open(
        options: PgConnectOptions,
        max_connections: u32,
        retention: RetentionConfig,
    ) -> Result<Self, OpenError> {
        // A statement that hangs (the database stalls without closing the connection) fails
        // after this long with a 503, instead of holding its requests forever. Plans are made
        // for each execution, with the topics' partitions pruned at planning: a generic plan
        // would plan and lock every partition of every topic.
        let options = options.options([
            ("statement_timeout", STATEMENT_TIMEOUT),
            ("plan_cache_mode", "force_custom_plan"),
        ]);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // A broken connection (database restarted) fails one request with a 503 and is
            // dropped; pinging before every use would cost a round trip per request.
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await
            .map_err(OpenError::Connect)?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(OpenError::Migrate)?;
        let signals = Arc::new(TopicSignals::default());
        // LISTEN holds its connection for good: it gets a pool of its own, so requests keep
        // every connection of --db-connections.
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with(options.clone());
        let (tasks, stop) = (TaskTracker::new(), CancellationToken::new());
        let announcer = Announcer::new();
        let guesses = Arc::new(Guesses::default());
        let listening = listen_for_appends(
            listen_pool.clone(),
            signals.clone(),
            announcer.clone(),
            guesses.clone(),
        );
        let stopped = stop.clone();
        tasks.spawn(async move {
            stopped.run_until_cancelled(listening).await;
            listen_pool.close().await;
        });
        let (reaper, reaping) = Reaper::new(options.clone(), stop.clone());
        tasks.spawn(reaping);
        let appends = append_pool(&options);
        warm_append_connection(&appends, &announcer).await;
        let backend = PgBackend {
            pool,
            appends,
            options,
            leader: tokio::sync::Mutex::new((None, false)),
            reaper,
            reach: Default::default(),
            tasks: tasks.clone(),
            stop: stop.clone(),
            announcer: announcer.clone(),
            guesses,
            guessed: Default::default(),
            known: Default::default(),
        };
        Ok(SqlStore::new(backend, signals, tasks, stop, retention))
    }
}

/// The append groups' pool. Their statements (the row locks, the group statement, `COPY`)
/// name the partitioned `messages` table only as an `INSERT`'s target, whose partitions are
/// opened as rows are routed, never planned or locked ahead: a generic plan serves every
/// group, where a custom one cost 0.16-0.23 ms of planning per group (docs/BENCHMARKS.md,
/// "Issue 13: latency"). Connected on first use, like the statements it serves.
fn append_pool(options: &PgConnectOptions) -> PgPool {
    PgPoolOptions::new()
        .max_connections(APPEND_CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .test_before_acquire(false)
        .connect_lazy_with(
            options
                .clone()
                .options([("plan_cache_mode", "force_generic_plan")]),
        )
}

/// Opens one append connection now, not at the first append, and runs the lock statement and
/// the group statements on it once, on no rows, in a transaction rolled back: a new server
/// process to start and authenticate, then each statement's first preparation and plan, cost
/// the first messages of a fresh broker about 10 ms otherwise. While the pool holds only this
/// connection, appends one at a time all run on it (each hands it back at once:
/// `release_clean`). Best effort: should it fail, the first append connects and prepares as
/// before.
async fn warm_append_connection(appends: &PgPool, announcer: &Announcer) {
    let warmed = async {
        let mut conn = appends.acquire().await?;
        let no_rows = plan_appends(Vec::new(), TopicEnds::FromZero, HashMap::new());
        let (written, _) = Written::new(
            no_rows,
            HashMap::new(),
            &HashMap::new(),
            0,
            announcer.clone(),
        )?;
        let mut tx = conn.begin().await?;
        lock_group_rows(&mut tx, &GroupKeys::new(&[]), Wait::Yes).await?;
        written.end_group(&mut tx, 0, true).await?;
        written.end_group(&mut tx, 0, false).await?;
        if let Some(expected) = written.expected(&GroupState::default()) {
            written.end_checked_group(&mut tx, &expected).await?;
        }
        tx.rollback().await?;
        conn.release_clean();
        Ok::<_, StoreError>(())
    };
    if let Err(err) = warmed.await {
        tracing::debug!(error = %err, "the append connection was not warmed at start");
    }
}

/// Wakes this broker's long polls when another broker appends, and stops guessing where
/// that topic's appends go ([`Guesses::shared`]). Runs until stopped.
async fn listen_for_appends(
    pool: PgPool,
    signals: Arc<TopicSignals>,
    announcer: Announcer,
    guesses: Arc<Guesses>,
) {
    let retry = || tokio::time::sleep(Duration::from_secs(1));
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(err) => {
                tracing::warn!(error = %err, "cannot LISTEN for appends; retrying in 1s");
                retry().await;
                continue;
            }
        };
        if let Err(err) = listener.listen(APPENDS_CHANNEL).await {
            tracing::warn!(error = %err, "cannot LISTEN for appends; retrying in 1s");
            retry().await;
            continue;
        }
        // Appends made while we were not listening were not announced: wake every waiter so
        // that it reads again.
        signals.notify_all();
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => {
                    if let Some(topic) = announcer.foreign_topic(notification.payload()) {
                        signals.notify(topic);
                        guesses.shared(topic);
                    }
                }
                Ok(None) => signals.notify_all(), // reconnects on the next call
                Err(err) => {
                    tracing::warn!(error = %err, "lost the LISTEN connection; reconnecting");
                    retry().await;
                    break;
                }
            }
        }
    }
}

/// Where a topic's messages of an append group begin.
#[derive(sqlx::FromRow)]
struct TopicBase {
    id: i64,
    #[sqlx(try_from = "i64")]
    base: u64,
}

/// How far a topic's partitions reach, and the span of its newest one.
#[derive(sqlx::FromRow)]
struct PartitionReach {
    topic_id: i64,
    #[sqlx(try_from = "i64")]
    reached: u64,
    #[sqlx(try_from = "i64")]
    last_span: u64,
}

/// Whether an append's statement found no partition for a row.
fn missing_partition<T>(result: &Result<T>) -> bool {
    matches!(result, Err(err) if err.is_missing_partition())
}

impl PgBackend {
    /// Whether every row of `written` lies below its topic's known reach: no statement of the
    /// group can then miss a partition, and the group needs no savepoint.
    fn partitions_hold(&self, written: &Written) -> bool {
        written
            .topic_ids
            .iter()
            .zip(&written.counts)
            .all(|(topic, count)| {
                let from = written.planned_from.get(topic).copied().unwrap_or(0);
                let end = from.saturating_add(u64::try_from(*count).unwrap_or(u64::MAX));
                self.reach.covers(*topic, end)
            })
    }
}

impl PgBackend {
    /// How many guessed append groups this broker's guess held for, and how many started
    /// again ([`super::guess`]).
    pub fn guessed_groups(&self) -> (u64, u64) {
        let [right, wrong] = &self.guessed;
        (right.load(Ordering::Relaxed), wrong.load(Ordering::Relaxed))
    }

    /// How many append groups planned from known state one statement stored, and how many
    /// found their rows changed and were stored the ordinary way.
    pub fn known_state_groups(&self) -> (u64, u64) {
        self.known.counts()
    }

    async fn store_group(
        &self,
        jobs: Vec<AppendJob>,
        stored_ms: u64,
        guess: &mut Guess,
    ) -> Result<Vec<Result<Appended>>> {
        let stored_ms = db_int(stored_ms)?;
        let keys = GroupKeys::new(&jobs);
        if keys.sequenced.is_empty() && keys.topics.len() == 1 {
            return self.append_unsequenced(jobs, stored_ms, guess, &keys).await;
        }
        let rows: usize = jobs.iter().map(|job| job.messages.len()).sum();
        if rows < COPY_FROM_ROWS
            && !keys.sequenced.is_empty()
            && let Some(found) = guess.found().await
        {
            match self
                .append_known(&jobs, &found, stored_ms, &keys, guess)
                .await?
            {
                Known::Stored(answers) => {
                    self.known.stored();
                    return Ok(answers);
                }
                Known::Unsuited => self.known.unsuited(),
                Known::Changed => {
                    self.known.changed();
                    // Another broker appends to these topics, or a group ahead failed.
                    guess.wrong();
                    for job in &jobs {
                        self.guesses.shared(&job.topic);
                    }
                }
            }
        }
        if rows >= COPY_FROM_ROWS
            && let Some(found) = guess.found().await
        {
            let guessed = self
                .append_guessed(&jobs, &found, stored_ms, &keys, guess)
                .await?;
            crate::metrics::guessed_group(guessed.is_some());
            self.guessed[usize::from(guessed.is_none())].fetch_add(1, Ordering::Relaxed);
            if let Some(answers) = guessed {
                return Ok(answers);
            }
            // Wrong: the groups guessed after this one are wrong too, and find out under lock;
            // another broker may be appending to these topics.
            guess.wrong();
            for job in &jobs {
                self.guesses.shared(&job.topic);
            }
        }
        let mut conn = self.appends.acquire().await?;
        let mut tx = conn.begin().await?;
        guess.turn.wait().await;
        let locked = lock_group_rows(&mut tx, &keys, Wait::Yes).await?;
        let (ends, producers) = locked_state(locked)?;
        let found = GroupState {
            ends: ends.clone(),
            producers: producers.clone(),
        };
        let plan = plan_appends(jobs, TopicEnds::Locked(ends.clone()), producers);
        guess.certain(found.after(&plan.topic_ends, &plan.producers));
        let (written, outcomes) = Written::new(
            plan,
            ends,
            &keys.producer_topics,
            stored_ms,
            self.announcer.clone(),
        )?;
        let bases = if self.partitions_hold(&written) {
            written.write(&mut tx).await
        } else {
            // A failed statement would abort the transaction and its locks; the savepoint
            // keeps them while partitions are made.
            sqlx::query("SAVEPOINT write").execute(&mut *tx).await?;
            let mut bases = written.write(&mut tx).await;
            for _ in 1..PARTITION_ATTEMPTS {
                if !missing_partition(&bases) {
                    break;
                }
                sqlx::query("ROLLBACK TO SAVEPOINT write")
                    .execute(&mut *tx)
                    .await?;
                written.cover(&mut tx).await?;
                bases = written.write(&mut tx).await;
            }
            bases
        };
        if missing_partition(&bases) {
            // Known reaches are never more than the truth; should one be, forget them all.
            self.reach.forget_all();
        }
        let bases = bases?;
        tx.commit().await?;
        conn.release_clean();
        Ok(written.place(outcomes, &bases, &keys.job_topics))
    }

    /// Plain appends to one topic: one statement, its own transaction. Offsets are planned
    /// from 0; the statement adds the topic's end under its lock.
    async fn append_unsequenced(
        &self,
        jobs: Vec<AppendJob>,
        stored_ms: i64,
        guess: &mut Guess,
        keys: &GroupKeys,
    ) -> Result<Vec<Result<Appended>>> {
        let plan = plan_appends(jobs, TopicEnds::FromZero, HashMap::new());
        let mut conn = self.appends.acquire().await?;
        let (written, outcomes) = Written::new(
            plan,
            HashMap::new(),
            &keys.producer_topics,
            stored_ms,
            self.announcer.clone(),
        )?;
        // Its statement locks the topic's row, and commits.
        guess.turn.wait().await;
        let mut bases = written.execute(&mut conn).await;
        for _ in 1..PARTITION_ATTEMPTS {
            if !missing_partition(&bases) {
                break;
            }
            written.cover(&mut conn).await?;
            bases = written.execute(&mut conn).await;
        }
        let bases = bases?;
        conn.release_clean();
        guess.certain(written.ends(&bases));
        Ok(written.place(outcomes, &bases, &keys.job_topics))
    }

    /// A small group whose topics and producers the groups ahead of it left in a known state
    /// ([`Guess::found`]): planned from that state and stored by one statement that checks it under
    /// lock, as its own transaction ([`super::pg_group_sql::group_statement`], `checked`). One
    /// round trip, where a group planned from its rows locked takes four (`BEGIN`, the lock, the
    /// statement, `COMMIT`): a producer sending messages as they come, to a consumer that waits,
    /// feels each one. Only for a group whose every batch is new and whose partitions are known to
    /// exist; a retry, a refused batch or a missing partition is handled under lock by the ordinary
    /// way.
    async fn append_known(
        &self,
        jobs: &[AppendJob],
        found: &GroupState,
        stored_ms: i64,
        keys: &GroupKeys,
        guess: &mut Guess,
    ) -> Result<Known> {
        let plan = plan_appends(
            jobs.to_vec(),
            TopicEnds::Locked(found.ends.clone()),
            found.producers.clone(),
        );
        if !plan
            .outcomes
            .iter()
            .all(|o| matches!(o, Ok(a) if !a.duplicate))
        {
            return Ok(Known::Unsuited);
        }
        let leaves = found.after(&plan.topic_ends, &plan.producers);
        let (written, outcomes) = Written::new(
            plan,
            found.ends.clone(),
            &keys.producer_topics,
            stored_ms,
            self.announcer.clone(),
        )?;
        let Some(expected) = written.expected(found) else {
            return Ok(Known::Unsuited);
        };
        if !self.partitions_hold(&written) {
            return Ok(Known::Unsuited);
        }
        let mut conn = self.appends.acquire().await?;
        guess.turn.wait().await;
        let bases = written.end_checked_group(&mut conn, &expected).await?;
        conn.release_clean();
        if bases.len() != written.topic_ids.len() {
            tracing::debug!(?found, "an append group's rows were not as planned");
            return Ok(Known::Changed);
        }
        guess.certain(leaves);
        Ok(Known::Stored(written.place(
            outcomes,
            &bases,
            &keys.job_topics,
        )))
    }

    /// A group whose rows were guessed: its messages go in by `COPY` at the offsets the guess
    /// gives, then its rows are locked (once the group ahead has committed) and compared with
    /// the guess. `None` when the guess was wrong: nothing was written, and the group starts
    /// again the ordinary way.
    async fn append_guessed(
        &self,
        jobs: &[AppendJob],
        found: &GroupState,
        stored_ms: i64,
        keys: &GroupKeys,
        guess: &mut Guess,
    ) -> Result<Option<Vec<Result<Appended>>>> {
        let decided = decide(
            jobs,
            TopicEnds::Locked(found.ends.clone()),
            found.producers.clone(),
        );
        let leaves = found.after(&decided.topic_ends, &decided.producers);
        guess.tentative(leaves.clone());
        let messages = jobs.iter().flat_map(|job| &job.messages);
        let payload_bytes = messages.clone().map(String::len).sum();
        let mut rows = MessageRows::with_capacity(messages.count(), payload_bytes);
        // In (topic, offset) order, as every group that writes under lock does per topic: two
        // transactions that meet at a row wait for each other one way only.
        let mut stored = decided.stored.clone();
        stored.sort_by_key(|&index| {
            let base = decided.outcomes[index]
                .as_ref()
                .map_or(0, |a| a.base_offset);
            (jobs[index].topic_id, base)
        });
        for &index in &stored {
            let job = &jobs[index];
            let Ok(appended) = &decided.outcomes[index] else {
                continue;
            };
            for (offset, payload) in (appended.base_offset..).zip(&job.messages) {
                let (offset, producer) = (db_int(offset)?, db_int(job.producer_id)?);
                rows.push(
                    job.topic_id,
                    offset,
                    producer,
                    stored_ms,
                    payload.as_bytes(),
                );
            }
        }
        self.cover_guessed(jobs, &decided.topic_ends).await?;
        let mut conn = self.appends.acquire().await?;
        let mut tx = conn.begin().await?;
        let locked = match copy_then_lock(&mut tx, rows, keys, &mut guess.turn).await {
            Ok(Some(locked)) => locked_state(locked)?,
            Ok(None) => {
                tracing::debug!("an append group's turn did not come; its guess is dropped");
                tx.rollback().await?;
                conn.release_clean();
                return Ok(None);
            }
            Err(err) if err.refutes_guess() => {
                tracing::debug!(%err, "an append group's guess was refuted");
                tx.rollback().await?;
                conn.release_clean();
                return Ok(None);
            }
            Err(err) => return Err(err),
        };
        if locked.0 != found.ends || locked.1 != found.producers {
            tracing::debug!(?found, ?locked, "an append group's guess was wrong");
            tx.rollback().await?;
            conn.release_clean();
            return Ok(None);
        }
        guess.certain(leaves);
        let plan = AppendPlan {
            outcomes: decided.outcomes,
            segments: Vec::new(),
            topic_ends: decided.topic_ends,
            producers: decided.producers,
        };
        let (written, outcomes) = Written::new(
            plan,
            locked.0,
            &keys.producer_topics,
            stored_ms,
            self.announcer.clone(),
        )?;
        let bases = written.end_group(&mut tx, stored_ms, false).await?;
        tx.commit().await?;
        conn.release_clean();
        Ok(Some(written.place(outcomes, &bases, &keys.job_topics)))
    }
}

impl PgBackend {
    /// Makes partitions for a guessed group's rows where they are not known to exist, reaching
    /// past them as far as [`Reaches::cover_to`] says. Its own statement, before the group's
    /// transaction: a write that found no partition would end the transaction.
    async fn cover_guessed(&self, jobs: &[AppendJob], ends: &[TopicEnd]) -> Result<()> {
        let wanted: Vec<(i64, u64)> = ends
            .iter()
            .filter(|ended| !self.reach.covers(ended.topic_id, ended.end))
            .map(|ended| {
                let mut grown = Grown {
                    topic_id: ended.topic_id,
                    end: ended.end,
                    rows: 0,
                    bytes: 0,
                    chunk_bytes: None,
                };
                for job in jobs.iter().filter(|job| job.topic_id == ended.topic_id) {
                    grown.rows += job.messages.len() as u64;
                    grown.bytes += batch_bytes(&job.messages);
                    grown.chunk_bytes = job.chunk_bytes;
                }
                (ended.topic_id, self.reach.cover_to(&grown))
            })
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let topics: Vec<i64> = wanted.iter().map(|&(topic, _)| topic).collect();
        let up_to = wanted
            .iter()
            .map(|&(_, end)| db_int(end))
            .collect::<Result<Vec<i64>>>()?;
        let mut conn = self.appends.acquire().await?;
        sqlx::query(
            "SELECT myqueue_cover_partitions(u.id, u.up_to, 0) \
             FROM UNNEST($1::bigint[], $2::bigint[]) AS u(id, up_to) ORDER BY u.id",
        )
        .bind(&topics)
        .bind(&up_to)
        .execute(&mut *conn)
        .await?;
        conn.release_clean(); // the group's transaction may take it next
        for (topic, end) in wanted {
            self.reach.learn(topic, end);
        }
        Ok(())
    }
}

/// What became of a group planned from the state the groups ahead of it left
/// ([`PgBackend::append_known`]).
enum Known {
    /// Stored, by one statement.
    Stored(Vec<Result<Appended>>),
    /// Its rows were not as planned: nothing was written.
    Changed,
    /// Not a group for one statement: nothing was tried.
    Unsuited,
}

/// The rows an append group touches.
struct GroupKeys {
    /// Each job's (topic, producer), in order.
    job_topics: Vec<(i64, u64)>,
    producer_topics: HashMap<u64, i64>,
    /// The producers that sent sequence numbers, and the topics, each sorted.
    sequenced: Vec<i64>,
    topics: Vec<i64>,
}

impl GroupKeys {
    fn new(jobs: &[AppendJob]) -> Self {
        let job_topics: Vec<(i64, u64)> = jobs
            .iter()
            .map(|job| (job.topic_id, job.producer_id))
            .collect();
        let mut topics: Vec<i64> = job_topics.iter().map(|&(topic, _)| topic).collect();
        topics.sort_unstable();
        topics.dedup();
        GroupKeys {
            producer_topics: jobs
                .iter()
                .map(|job| (job.producer_id, job.topic_id))
                .collect(),
            sequenced: distinct_ids(
                jobs.iter()
                    .filter(|job| job.sequence.is_some())
                    .map(|job| job.producer_id),
            ),
            job_topics,
            topics,
        }
    }
}

/// Whether a lock waits for rows locked by another transaction, or fails at once.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wait {
    Yes,
    No,
}

/// Locks a group's rows: one statement locks the producers, then the topics (the UNION's
/// branches run in order), each in id order: every broker takes locks in the same order.
async fn lock_group_rows(
    tx: &mut PgConnection,
    keys: &GroupKeys,
    wait: Wait,
) -> Result<Vec<LockedRow>> {
    static WAITING: LazyLock<String> = LazyLock::new(|| lock_statement(""));
    static NOWAIT: LazyLock<String> = LazyLock::new(|| lock_statement(" NOWAIT"));
    let statement: &'static str = if wait == Wait::Yes { &WAITING } else { &NOWAIT };
    Ok(sqlx::query_as(statement)
        .bind(&keys.sequenced)
        .bind(&keys.topics)
        .fetch_all(tx)
        .await?)
}

fn lock_statement(nowait: &str) -> String {
    format!(
        "WITH p AS ( \
             SELECT id, next_sequence, last_base_offset, last_count, recent_batches \
             FROM producers \
             WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE{nowait} \
         ), t AS ( \
             SELECT id, next_offset FROM topics \
             WHERE id = ANY($2) ORDER BY id FOR NO KEY UPDATE{nowait} \
         ) \
         SELECT 'producer' AS kind, id, next_sequence AS next, last_base_offset, \
             last_count, recent_batches FROM p \
         UNION ALL \
         SELECT 'topic', id, next_offset, 0, 0, '' FROM t"
    )
}

/// A guessed group's messages by `COPY`, then its rows locked in its turn, without waiting:
/// rows locked then are another broker's group's, which may be waiting for the rows just
/// copied (a deadlock, if this one waited in turn). The guess is then wrong anyway. `None`
/// when the turn did not come in [`TURN_WAIT`].
async fn copy_then_lock(
    tx: &mut PgConnection,
    rows: MessageRows,
    keys: &GroupKeys,
    turn: &mut Turn,
) -> Result<Option<Vec<LockedRow>>> {
    if !rows.is_empty() {
        let mut copy = tx.copy_in_raw(MESSAGES_COPY).await?;
        copy.send(rows.finish()).await?;
        copy.finish().await?;
    }
    if !turn.wait_at_most(TURN_WAIT).await {
        return Ok(None);
    }
    lock_group_rows(tx, keys, Wait::No).await.map(Some)
}

#[async_trait]
impl Backend for PgBackend {
    type Db = Postgres;

    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn readers(&self) -> &PgPool {
        &self.pool
    }

    fn pools(&self) -> Vec<PoolStats> {
        vec![
            pool_stats("main", &self.pool),
            pool_stats("appends", &self.appends),
        ]
    }

    async fn begin_write(&self) -> sqlx::Result<Transaction<'static, Postgres>> {
        self.pool.begin().await
    }

    const BEGIN_WRITE: &'static str = "BEGIN";

    async fn write_connection(&self) -> sqlx::Result<PoolConnection<Postgres>> {
        self.pool.acquire().await
    }

    /// Two groups at once, when the second has enough sequenced messages to be guessed (a
    /// small group, or plain appends to one topic, would take the ordinary way after the
    /// first anyway, and only split the commits).
    fn append_overlap(&self) -> Overlap<AppendJob> {
        Overlap {
            in_flight: GROUPS_IN_FLIGHT,
            size: |job| job.sequence.map_or(0, |_| job.messages.len()),
            from: COPY_FROM_ROWS,
        }
    }

    fn guess_group(&self, jobs: &[AppendJob]) -> Guess {
        self.guesses.guess(jobs)
    }

    /// One commit for a whole group of appends, in as few round trips as possible: a group of
    /// plain appends to one topic is a single statement (its own transaction). Producers with
    /// sequence numbers, or several topics, lock their rows in id order (so brokers never
    /// deadlock) inside a transaction; their offsets are then known, so the messages go in by
    /// binary `COPY`, the cheaper way for the large groups of `MyProducer`. A large group
    /// whose rows were guessed writes its messages before it locks ([`super::guess`]).
    async fn append_group(
        &self,
        jobs: Vec<AppendJob>,
        stored_ms: u64,
        guess: Guess,
    ) -> Result<Vec<Result<Appended>>> {
        let mut guess = guess;
        let job_topics: Vec<JobTopic> = jobs.iter().map(JobTopic::of).collect();
        let result = self.store_group(jobs, stored_ms, &mut guess).await;
        if result.is_err() {
            guess.failed();
        }
        guess.turn.done();
        if let Ok(appended) = &result {
            let grown = grown_topics(&job_topics, appended);
            // Its rows are stored: partitions reach its ends, at least.
            for topic in &grown {
                self.reach.learn(topic.topic_id, topic.end);
            }
            let due = self.reach.due(grown);
            make_ahead(due, &self.pool, &self.reach, &self.tasks, &self.stop);
        }
        result
    }

    /// Locked in id order, like appends' rows: brokers never deadlock.
    async fn lock_cursors(&self, tx: &mut PgConnection, ids: &[u64]) -> Result<Vec<CursorRow>> {
        Ok(sqlx::query_as(
            "SELECT c.id AS consumer_id, c.topic_id, c.position, s.start_offset, \
                 t.next_offset AS end_offset \
             FROM consumers c JOIN topics t ON t.id = c.topic_id \
                 JOIN topic_starts s ON s.topic_id = t.id \
             WHERE c.id = ANY($1) ORDER BY c.id FOR NO KEY UPDATE OF c",
        )
        .bind(distinct_ids(ids.iter().copied()))
        .fetch_all(tx)
        .await?)
    }

    async fn move_and_take(
        &self,
        tx: &mut PgConnection,
        positions: &[(u64, u64)],
        taken: &[(i64, u64)],
    ) -> Result<Vec<MessageRow>> {
        let (moved, positions) = columns(positions.iter().copied())?;
        let (topics, offsets) =
            columns(taken.iter().map(|&(topic, offset)| (topic as u64, offset)))?;
        let mut taken_topics = topics.clone();
        taken_topics.sort_unstable();
        taken_topics.dedup();
        // `topic_id = ANY($5)` lets the planner keep only these topics' partitions. Each
        // message is one index probe (a LATERAL subquery with LIMIT 1 is never turned into a
        // join): as a plain join, the plan made for these values hashed the keys and scanned
        // every row of the topic, 17 ms for 32 keys in a topic of 40,000 messages where the
        // probes take 0.3 ms (single-message consume at 64 connections: 3,000 req/s).
        Ok(sqlx::query_as(
            "WITH moved AS ( \
                 UPDATE consumers c SET position = u.position \
                 FROM UNNEST($1::bigint[], $2::bigint[]) AS u(id, position) WHERE c.id = u.id \
             ) \
             SELECT m.topic_id, m.log_offset, m.payload, m.stored_ms \
             FROM UNNEST($3::bigint[], $4::bigint[]) AS k(topic_id, log_offset) \
             CROSS JOIN LATERAL ( \
                 SELECT topic_id, log_offset, payload, stored_ms FROM messages \
                 WHERE topic_id = k.topic_id AND log_offset = k.log_offset \
                     AND topic_id = ANY($5) \
                 LIMIT 1 \
             ) m",
        )
        .bind(&moved)
        .bind(&positions)
        .bind(&topics)
        .bind(&offsets)
        .bind(&taken_topics)
        .fetch_all(tx)
        .await?)
    }

    async fn fetch(
        &self,
        owner: &Owner,
        consumer_id: u64,
        from: Option<u64>,
        limit: FetchLimit,
    ) -> Result<Fetched> {
        // One statement, one snapshot: the start, the end and the messages agree, and a
        // partition that retention empties meanwhile waits for this statement to finish.
        let mut conn = self.pool.acquire().await?;
        let row: Option<FetchArraysRow> = sqlx::query_as(FETCH.as_str())
            .bind(db_id(consumer_id))
            .bind(from.map(|offset| db_id(offset).unwrap_or(i64::MAX)))
            .bind(i64::try_from(limit.messages).unwrap_or(i64::MAX))
            .bind(i64::try_from(limit.bytes).unwrap_or(i64::MAX))
            .bind(owner.topic_id)
            .fetch_optional(&mut *conn)
            .await?;
        conn.release_clean();
        let mut row = row.ok_or(StoreError::ConsumerNotFound(consumer_id))?;
        let (start, end) = (row.start_offset, row.end_offset);
        let from = within_end(&owner.topic, from.unwrap_or(row.position), end)?;
        let messages = row.messages()?;
        Ok(Fetched::new(from, start, messages, end))
    }

    /// `FOR UPDATE`: appends, position moves and registrations of the topic wait for the
    /// delete, then find the topic gone. The NOTIFY wakes other brokers' long polls on it.
    async fn lock_topic(&self, tx: &mut PgConnection, name: &str) -> Result<Option<i64>> {
        let row: Option<(i64, String)> = sqlx::query_as(
            "SELECT id, pg_notify($2, name)::text FROM topics WHERE name = $1 FOR UPDATE",
        )
        .bind(name)
        .bind(APPENDS_CHANNEL)
        .fetch_optional(tx)
        .await?;
        Ok(row.map(|(id, _)| id))
    }

    /// The lock is a session lock on a connection of this broker's own: it is held while the
    /// connection lives, and passes to another broker when this one stops or loses it.
    async fn lead_retention(&self) -> Result<bool> {
        let mut leader = self.leader.lock().await;
        let (conn, holding) = &mut *leader;
        if conn.is_none() {
            *holding = false;
            *conn = Some(PgConnection::connect_with(&self.options).await?);
        }
        let session = conn.as_mut().expect("connected above");
        let checked = match *holding {
            true => sqlx::query_scalar("SELECT true").fetch_one(session).await,
            false => {
                sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(RETENTION_LOCK)
                    .fetch_one(session)
                    .await
            }
        };
        match checked {
            Ok(held) => {
                *holding = held;
                Ok(held)
            }
            Err(err) => {
                // The connection is gone, and the lock with it.
                *conn = None;
                *holding = false;
                Err(err.into())
            }
        }
    }

    /// Empties the partitions at once; the reaper drops them after the pass.
    async fn free_below(&self, topic_id: i64, start: u64) -> Result<bool> {
        empty_below(&self.pool, topic_id, start).await?;
        Ok(true)
    }

    async fn free_topic(&self, topic_id: i64) -> Result<bool> {
        sqlx::query("SELECT myqueue_drop_topic_partitions($1)")
            .bind(topic_id)
            .execute(&self.pool)
            .await?;
        Ok(true)
    }

    /// Makes partitions so that each topic's reach a few partitions past its end, each about
    /// as long as its last closed chunk.
    async fn prepare_appends(&self, topics: &[(i64, Log, Vec<Chunk>)]) -> Result<()> {
        let reaches: Vec<PartitionReach> = sqlx::query_as(
            "SELECT topic_id, max(end_offset) AS reached, \
                 (array_agg(end_offset - first_offset ORDER BY first_offset DESC))[1] AS last_span \
             FROM message_partitions GROUP BY topic_id",
        )
        .fetch_all(&self.pool)
        .await?;
        let reaches: HashMap<i64, PartitionReach> =
            reaches.into_iter().map(|r| (r.topic_id, r)).collect();
        for (topic_id, log, chunks) in topics {
            let Some(reach) = reaches.get(topic_id) else {
                continue;
            };
            let span = partition_span(chunks, reach.last_span);
            let wanted = partitions_wanted_to(log.end, span, !chunks.is_empty());
            if reach.reached < wanted {
                sqlx::query("SELECT myqueue_cover_partitions($1, $2, $3)")
                    .bind(topic_id)
                    .bind(db_int(wanted)?)
                    .bind(db_int(span)?)
                    .execute(&self.pool)
                    .await?;
            }
            self.reach.learn(*topic_id, reach.reached.max(wanted));
            if !chunks.is_empty() {
                self.reach.sized(*topic_id);
            }
        }
        // Once per pass this broker leads: the partitions it emptied (or a broker before it
        // did and was stopped before dropping them) go now.
        self.reaper.wake();
        Ok(())
    }

    async fn close(&self) {
        self.appends.close().await;
        if let Some(conn) = self.leader.lock().await.0.take() {
            let _ = conn.close().await;
        }
        self.pool.close().await;
    }
}

/// What a grown topic's partitions need to know of a job, kept while the job goes to be
/// stored.
struct JobTopic {
    topic_id: i64,
    bytes: u64,
    chunk_bytes: Option<u64>,
}

impl JobTopic {
    fn of(job: &AppendJob) -> Self {
        JobTopic {
            topic_id: job.topic_id,
            bytes: batch_bytes(&job.messages),
            chunk_bytes: job.chunk_bytes,
        }
    }
}

/// Each topic a group stored messages in, as the group left it (`jobs`: the group's jobs, in
/// order).
fn grown_topics(jobs: &[JobTopic], appended: &[Result<Appended>]) -> Vec<Grown> {
    let mut grown: HashMap<i64, Grown> = HashMap::new();
    for (job, appended) in jobs.iter().zip(appended) {
        if let Ok(appended) = appended
            && !appended.duplicate
        {
            let topic = grown.entry(job.topic_id).or_insert(Grown {
                topic_id: job.topic_id,
                end: 0,
                rows: 0,
                bytes: 0,
                chunk_bytes: job.chunk_bytes,
            });
            topic.end = topic.end.max(appended.base_offset + appended.count);
            topic.rows += appended.count;
            topic.bytes += job.bytes;
        }
    }
    grown.into_values().collect()
}

/// Pairs of numbers as two BIGINT columns, for `UNNEST`.
fn columns(pairs: impl Iterator<Item = (u64, u64)>) -> Result<(Vec<i64>, Vec<i64>)> {
    let mut columns = (Vec::new(), Vec::new());
    for (a, b) in pairs {
        columns.0.push(db_int(a)?);
        columns.1.push(db_int(b)?);
    }
    Ok(columns)
}

/// What a checked group statement expects its rows to hold
/// ([`super::pg_group_sql::group_statement`], `checked`): the topics' ends in the order of
/// [`Written::topic_ids`], the producers' next sequence numbers and recent batches in the order
/// of their ids (`Written::sequences[0]`).
struct Expected {
    ends: Vec<i64>,
    next_sequences: Vec<i64>,
    recent_batches: Vec<String>,
}

/// A planned append group as the columns of one statement. `planned_from` holds the topic
/// ends the plan started from (read under lock); a topic missing from it was planned from 0,
/// and the statement adds its real end, which its UPDATE locks.
struct Written {
    planned_from: HashMap<i64, u64>,
    topic_ids: Vec<i64>,
    counts: Vec<i64>,
    bytes: Vec<i64>,
    /// Each topic's largest payload in the group (the topic's `largest_payload` rises to it).
    largest: Vec<i64>,
    rows: [Vec<i64>; 3],
    payloads: Vec<Vec<u8>>,
    sequences: [Vec<i64>; 5],
    /// Each sequenced producer's recent batches ([`super::sequence::ProducerSequence::recent_json`]). Their
    /// offsets are final: a group with sequenced producers is always planned under lock.
    recent_batches: Vec<String>,
    /// When the group's messages are stored (milliseconds since the Unix epoch).
    stored_ms: i64,
    /// How this broker signs its announcements ([`Announcer`]).
    announcer: Announcer,
}

impl Written {
    /// The statement's columns, and the plan's answers for [`Written::place`].
    fn new(
        plan: AppendPlan,
        planned_from: HashMap<i64, u64>,
        producer_topics: &HashMap<u64, i64>,
        stored_ms: i64,
        announcer: Announcer,
    ) -> Result<(Self, Vec<Result<Appended>>)> {
        let start = |topic: i64| planned_from.get(&topic).copied().unwrap_or(0);
        let mut written = Written {
            topic_ids: Vec::new(),
            counts: Vec::new(),
            bytes: Vec::new(),
            largest: Vec::new(),
            rows: Default::default(),
            payloads: Vec::new(),
            sequences: Default::default(),
            recent_batches: Vec::new(),
            planned_from: HashMap::new(),
            stored_ms,
            announcer,
        };
        for ended in &plan.topic_ends {
            written.topic_ids.push(ended.topic_id);
            written
                .counts
                .push(db_int(ended.end - start(ended.topic_id))?);
            written.bytes.push(db_int(ended.added_bytes)?);
            written.largest.push(db_int(ended.largest_payload)?);
        }
        for segment in plan.segments {
            let first = segment.base_offset - start(segment.topic_id);
            for (offset, payload) in (first..).zip(segment.messages) {
                written.rows[0].push(segment.topic_id);
                written.rows[1].push(db_int(offset)?);
                written.rows[2].push(db_int(segment.producer_id)?);
                written.payloads.push(payload.into_bytes());
            }
        }
        for (id, sequence) in &plan.producers {
            let topic = producer_topics[id];
            let last = sequence.last();
            let values = [
                db_int(*id)?,
                topic,
                db_int(sequence.next)?,
                db_int(last.base_offset - start(topic))?,
                db_int(last.count)?,
            ];
            for (column, value) in written.sequences.iter_mut().zip(values) {
                column.push(value);
            }
            written.recent_batches.push(sequence.recent_json());
        }
        written.planned_from = planned_from;
        Ok((written, plan.outcomes))
    }

    /// Makes partitions for the rows of this group (one per topic, reaching past its rows),
    /// after its statement found none for some.
    async fn cover(&self, conn: &mut PgConnection) -> Result<()> {
        sqlx::query(
            "SELECT myqueue_cover_partitions(t.id, t.next_offset + u.count, 0) \
             FROM topics t JOIN UNNEST($1::bigint[], $2::bigint[]) AS u(id, count) \
             ON t.id = u.id ORDER BY t.id",
        )
        .bind(&self.topic_ids)
        .bind(&self.counts)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// For a group planned under lock: its rows by `COPY` when there are many
    /// ([`COPY_FROM_ROWS`]), else in its statement.
    async fn write(&self, conn: &mut PgConnection) -> Result<HashMap<i64, u64>> {
        match self.payloads.len() >= COPY_FROM_ROWS {
            true => self.copy_and_bump(conn).await,
            false => self.execute(conn).await,
        }
    }

    /// The single-statement path: the messages go in by the group's statement, each at its
    /// topic's end (read under the row lock the statement's UPDATE takes) plus its offset in
    /// the group.
    async fn execute(&self, conn: &mut PgConnection) -> Result<HashMap<i64, u64>> {
        self.end_group(conn, self.stored_ms, true).await
    }

    /// For a group planned under lock (its offsets are final): the messages by binary `COPY`,
    /// then the group's statement without them.
    async fn copy_and_bump(&self, conn: &mut PgConnection) -> Result<HashMap<i64, u64>> {
        let stored_ms = self.stored_ms;
        let payload_bytes = self.payloads.iter().map(Vec::len).sum();
        let mut rows = MessageRows::with_capacity(self.payloads.len(), payload_bytes);
        let [topic_ids, offsets, producer_ids] = &self.rows;
        for (i, payload) in self.payloads.iter().enumerate() {
            let start = self.planned_from.get(&topic_ids[i]).copied().unwrap_or(0);
            let offset = offsets[i].checked_add(db_int(start)?).ok_or_else(|| {
                StoreError::Internal(format!("offset past 2^63 in topic {}", topic_ids[i]))
            })?;
            rows.push(topic_ids[i], offset, producer_ids[i], stored_ms, payload);
        }
        if !rows.is_empty() {
            let mut copy = conn.copy_in_raw(MESSAGES_COPY).await?;
            copy.send(rows.finish()).await?;
            copy.finish().await?;
        }
        self.end_group(conn, stored_ms, false).await
    }

    /// Runs [`super::pg_group_sql::group_statement`]: bumps each topic's end, byte count and newest
    /// time, inserts the messages (`with_messages`), records the producers' sequence state and
    /// announces the topics to other brokers. Answers where each topic's messages began; a topic
    /// deleted meanwhile is not there.
    async fn end_group(
        &self,
        conn: &mut PgConnection,
        stored_ms: i64,
        with_messages: bool,
    ) -> Result<HashMap<i64, u64>> {
        self.run_group_statement(conn, stored_ms, with_messages, None)
            .await
    }

    /// A checked group ([`PgBackend::append_known`]): [`Written::end_group`] with the messages,
    /// if its rows are as `expected`. Answers no topics if they are not; nothing changed then.
    async fn end_checked_group(
        &self,
        conn: &mut PgConnection,
        expected: &Expected,
    ) -> Result<HashMap<i64, u64>> {
        self.run_group_statement(conn, self.stored_ms, true, Some(expected))
            .await
    }

    async fn run_group_statement(
        &self,
        conn: &mut PgConnection,
        stored_ms: i64,
        with_messages: bool,
        expected: Option<&Expected>,
    ) -> Result<HashMap<i64, u64>> {
        if with_messages && let Some(topic) = self.one_topic(expected.is_some()) {
            return self.run_one_topic(conn, topic, stored_ms, expected).await;
        }
        let no_rows: [Vec<i64>; 3] = Default::default();
        let (sql, rows, payloads): (&str, &[Vec<i64>; 3], &[Vec<u8>]) =
            match (with_messages, expected) {
                (true, Some(_)) => (&GROUP_CHECKED, &self.rows, &self.payloads),
                (true, None) => (&GROUP_WITH_MESSAGES, &self.rows, &self.payloads),
                (false, _) => (&GROUP_WITHOUT_MESSAGES, &no_rows, &[]),
            };
        let mut statement = sqlx::query_as(sql)
            .bind(&self.topic_ids)
            .bind(&self.counts)
            .bind(stored_ms)
            .bind(&rows[0])
            .bind(&rows[1])
            .bind(&rows[2])
            .bind(payloads)
            .bind(&self.sequences[0])
            .bind(&self.sequences[1])
            .bind(&self.sequences[2])
            .bind(&self.sequences[3])
            .bind(&self.sequences[4])
            .bind(APPENDS_CHANNEL)
            .bind(&self.bytes)
            .bind(&self.recent_batches)
            .bind(self.announcer.as_str())
            .bind(&self.largest);
        if let Some(expected) = expected {
            statement = statement
                .bind(&expected.ends)
                .bind(&expected.next_sequences)
                .bind(&expected.recent_batches);
        }
        let bases: Vec<TopicBase> = statement.fetch_all(conn).await?;
        Ok(bases.into_iter().map(|b| (b.id, b.base)).collect())
    }

    /// The group's one topic, if a one-topic statement can store it: a single topic with no
    /// sequenced producer, or (`checked`) with exactly one, of that topic.
    fn one_topic(&self, checked: bool) -> Option<i64> {
        let [topic] = self.topic_ids[..] else {
            return None;
        };
        let producers = &self.sequences[1];
        let fits = match checked {
            false => producers.is_empty(),
            true => producers[..] == [topic],
        };
        fits.then_some(topic)
    }

    /// [`ONE_TOPIC`], or [`ONE_TOPIC_CHECKED`] when the rows must be as `expected`.
    async fn run_one_topic(
        &self,
        conn: &mut PgConnection,
        topic: i64,
        stored_ms: i64,
        expected: Option<&Expected>,
    ) -> Result<HashMap<i64, u64>> {
        let sql: &str = match expected {
            Some(_) => &ONE_TOPIC_CHECKED,
            None => &ONE_TOPIC,
        };
        let mut statement = sqlx::query_as(sql)
            .bind(topic)
            .bind(self.counts[0])
            .bind(stored_ms)
            .bind(self.bytes[0])
            .bind(&self.rows[1])
            .bind(&self.rows[2])
            .bind(&self.payloads)
            .bind(APPENDS_CHANNEL)
            .bind(self.announcer.as_str())
            .bind(self.largest[0]);
        if let Some(expected) = expected {
            let [id, _, next, base_in_group, last_count] = &self.sequences;
            statement = statement
                .bind(id[0])
                .bind(next[0])
                .bind(base_in_group[0])
                .bind(last_count[0])
                .bind(&self.recent_batches[0])
                .bind(expected.ends[0])
                .bind(expected.next_sequences[0])
                .bind(&expected.recent_batches[0]);
        }
        let bases: Vec<TopicBase> = statement.fetch_all(conn).await?;
        Ok(bases.into_iter().map(|b| (b.id, b.base)).collect())
    }

    /// What the rows of this group, planned from `found`, must hold for a checked statement:
    /// each topic's end and each sequenced producer's state as `found` has them.
    fn expected(&self, found: &GroupState) -> Option<Expected> {
        let ends = self
            .topic_ids
            .iter()
            .map(|topic| found.ends.get(topic).map(|&end| db_int(end)))
            .collect::<Option<Result<Vec<i64>>>>()?
            .ok()?;
        let mut next_sequences = Vec::with_capacity(self.sequences[0].len());
        let mut recent_batches = Vec::with_capacity(self.sequences[0].len());
        for id in &self.sequences[0] {
            let state = found.producers.get(&u64::try_from(*id).ok()?)?;
            next_sequences.push(db_int(state.next).ok()?);
            recent_batches.push(state.recent_json());
        }
        Some(Expected {
            ends,
            next_sequences,
            recent_batches,
        })
    }

    /// What an unsequenced group left: its topics' ends, from where the statement put them.
    fn ends(&self, bases: &HashMap<i64, u64>) -> GroupState {
        let ends = self
            .topic_ids
            .iter()
            .zip(&self.counts)
            .filter_map(|(topic, &count)| {
                let count = u64::try_from(count).ok()?;
                Some((*topic, bases.get(topic)? + count))
            })
            .collect();
        GroupState {
            ends,
            producers: HashMap::new(),
        }
    }

    /// The answers: new batches were planned from `planned_from` and move to where their
    /// topic really was (under lock the two agree and nothing moves). Duplicates keep their
    /// stored offsets. A new batch whose topic was deleted meanwhile (it has no base) is
    /// answered `producer_not_found`: its producer went with the topic.
    fn place(
        &self,
        outcomes: Vec<Result<Appended>>,
        bases: &HashMap<i64, u64>,
        job_topics: &[(i64, u64)],
    ) -> Vec<Result<Appended>> {
        let start = |topic: i64| self.planned_from.get(&topic).copied().unwrap_or(0);
        outcomes
            .into_iter()
            .zip(job_topics)
            .map(|(outcome, &(topic, producer))| {
                let appended = outcome?;
                if appended.duplicate {
                    return Ok(appended);
                }
                let base = bases
                    .get(&topic)
                    .ok_or(StoreError::ProducerNotFound(producer))?;
                Ok(Appended {
                    base_offset: appended.base_offset + base - start(topic),
                    ..appended
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broker_ignores_its_own_announcements_only() {
        let (mine, theirs) = (Announcer::new(), Announcer::new());
        assert_ne!(mine.as_str(), theirs.as_str());
        assert_eq!(mine.foreign_topic(&format!("{}logs", mine.as_str())), None);
        let other = format!("{}logs", theirs.as_str());
        assert_eq!(mine.foreign_topic(&other), Some("logs"));
        assert_eq!(
            mine.foreign_topic("logs"),
            Some("logs"),
            "a deletion's bare name"
        );
    }
}
