//! The conformance suite: every case runs against every store (memory, SQLite, PostgreSQL),
//! so the three keep the same promises.
//!
//! PostgreSQL cases use the server named by `TEST_DATABASE_URL`, each in a fresh database.
//! Without it they are skipped with a line saying so, except under `CI=true`, where a
//! missing database fails the run.

use broker::store::ConsumerStart::{Beginning, End};
use broker::store::memory::MemoryStore;
use broker::store::postgres::PostgresStore;
use broker::store::retention::{MESSAGE_OVERHEAD_BYTES, RetentionConfig};
use broker::store::sqlite::SqliteStore;
use broker::store::{
    Append, Appended, FetchLimit, Retention, RetentionChange, RetentionSettings, SeekTo, Store,
    StoreError, TopicInfo,
};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// A store under test, and how to open it again (for restart cases).
struct Harness {
    store: Arc<dyn Store>,
    reopen: Reopen,
    _dir: Option<tempfile::TempDir>,
}

enum Reopen {
    Never,
    Sqlite(std::path::PathBuf),
    Postgres(Box<PgConnectOptions>),
}

/// The broker's default retention, and no background pass: cases run passes themselves, at
/// the times they choose.
fn manual_passes() -> RetentionConfig {
    RetentionConfig {
        defaults: Retention::default(),
        every: None,
    }
}

async fn open(reopen: &Reopen, config: RetentionConfig) -> Arc<dyn Store> {
    match reopen {
        Reopen::Never => Arc::new(MemoryStore::new(config)),
        Reopen::Sqlite(path) => Arc::new(SqliteStore::open(path, config).await.unwrap()),
        Reopen::Postgres(options) => Arc::new(
            PostgresStore::open((**options).clone(), 8, config)
                .await
                .unwrap(),
        ),
    }
}

impl Harness {
    async fn memory() -> Option<Harness> {
        Some(Harness {
            store: Arc::new(MemoryStore::new(manual_passes())),
            reopen: Reopen::Never,
            _dir: None,
        })
    }

    async fn sqlite() -> Option<Harness> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        Some(Harness {
            store: Arc::new(SqliteStore::open(&path, manual_passes()).await.unwrap()),
            reopen: Reopen::Sqlite(path),
            _dir: Some(dir),
        })
    }

    /// Closes the store and opens it again with `config` (the memory store starts empty).
    async fn reconfigure(&mut self, config: RetentionConfig) {
        self.store.close().await;
        self.store = open(&self.reopen, config).await;
    }

    /// Another store on the same data (another broker on one PostgreSQL database).
    async fn second_broker(&self) -> Option<Arc<dyn Store>> {
        match &self.reopen {
            Reopen::Postgres(_) => Some(open(&self.reopen, manual_passes()).await),
            _ => None,
        }
    }

    /// What the database holds, for `topic` (by name) or for every topic: its rows (in every
    /// partition) and, for PostgreSQL, its range partitions as (first, end) offsets. `None`
    /// for the memory store.
    async fn stored(&self, topic: Option<&str>) -> Option<(i64, Vec<(i64, i64)>)> {
        let rows_sql = "SELECT count(*) FROM messages \
                        WHERE $1 IS NULL OR topic_id = (SELECT id FROM topics WHERE name = $1)";
        let partitions_sql = "SELECT first_offset, end_offset FROM message_partitions \
                              WHERE $1 IS NULL OR topic_id = (SELECT id FROM topics WHERE name = $1) \
                              ORDER BY topic_id, first_offset";
        let topic = topic.map(str::to_owned);
        match &self.reopen {
            Reopen::Never => None,
            Reopen::Sqlite(path) => {
                let url = format!(
                    "sqlite://{}?mode=ro",
                    path.join("myqueue.sqlite3").display()
                );
                let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
                // Segment tables, `messages_{id}_{first offset}`: every topic's (of that name,
                // if given), in order, with the offsets they may hold as (first, next first).
                let tables: Vec<(String, i64, i64)> = sqlx::query_as(
                    "SELECT name, CAST(substr(name, instr(substr(name, 10), '_') + 10) AS INTEGER) \
                         AS first, CAST(substr(name, 10, instr(substr(name, 10), '_') - 1) \
                         AS INTEGER) AS topic_id \
                     FROM sqlite_master WHERE type = 'table' AND name GLOB 'messages_*_*' \
                     AND ($1 IS NULL OR topic_id = (SELECT id FROM topics WHERE name = $1)) \
                     ORDER BY topic_id, first",
                )
                .bind(topic)
                .fetch_all(&mut conn)
                .await
                .unwrap();
                let mut rows = 0;
                let mut segments = Vec::new();
                for (i, (table, first, topic_id)) in tables.iter().enumerate() {
                    let sql = format!("SELECT count(*) FROM {table}");
                    let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                        .fetch_one(&mut conn)
                        .await
                        .unwrap();
                    rows += count;
                    let next = tables
                        .get(i + 1)
                        .filter(|(_, _, topic)| topic == topic_id)
                        .map_or(i64::MAX, |(_, first, _)| *first);
                    segments.push((*first, next));
                }
                Some((rows, segments))
            }
            Reopen::Postgres(options) => {
                let mut conn = PgConnection::connect_with(options).await.unwrap();
                let rows = sqlx::query_scalar(rows_sql)
                    .bind(topic.clone())
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
                let partitions = sqlx::query_as(partitions_sql)
                    .bind(topic)
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
                Some((rows, partitions))
            }
        }
    }

    async fn postgres() -> Option<Harness> {
        let options = fresh_database(&test_database_url()?).await;
        Some(Harness {
            store: Arc::new(
                PostgresStore::open(options.clone(), 8, manual_passes())
                    .await
                    .unwrap(),
            ),
            reopen: Reopen::Postgres(Box::new(options)),
            _dir: None,
        })
    }

    /// Closes the store and opens it again on the same data: a broker restart.
    async fn restart(&mut self) -> bool {
        if let Reopen::Never = self.reopen {
            return false;
        }
        self.reconfigure(manual_passes()).await;
        true
    }
}

/// The PostgreSQL server to test against; `None` (the case is skipped) when unset, except
/// under `CI=true`.
fn test_database_url() -> Option<String> {
    let Ok(url) = std::env::var("TEST_DATABASE_URL") else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but TEST_DATABASE_URL is unset: the PostgreSQL cases cannot run");
        }
        eprintln!("skipping the PostgreSQL case: TEST_DATABASE_URL is unset");
        return None;
    };
    Some(url)
}

/// Creates an empty database on the test server and returns options that name it.
async fn fresh_database(url: &str) -> PgConnectOptions {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "myqueue_test_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    );
    let admin = PgConnectOptions::from_str(url).expect("TEST_DATABASE_URL is a valid URL");
    let mut conn = PgConnection::connect_with(&admin).await.unwrap();
    // A database name cannot be a bind parameter; this one is made of digits and letters.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name}"
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    admin.database(&name)
}

/// A fetch limit of `n` messages and no byte limit to speak of.
fn messages(n: usize) -> FetchLimit {
    FetchLimit {
        messages: n,
        bytes: usize::MAX,
    }
}

fn append(
    producer_id: u64,
    topic: &str,
    messages: &[impl AsRef<str>],
    sequence: Option<u64>,
) -> Append {
    Append {
        producer_id,
        topic: topic.to_owned(),
        messages: messages.iter().map(|m| m.as_ref().to_owned()).collect(),
        sequence,
    }
}

async fn consume_all(store: &dyn Store, consumer: u64, topic: &str) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(message) = store.consume(consumer, topic).await.unwrap() {
        out.push(message.payload);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The cases
// ---------------------------------------------------------------------------------------------

async fn topics_are_created_once_and_listed_sorted(h: Harness) {
    let s = &*h.store;
    s.create_topic("b", RetentionSettings::default())
        .await
        .unwrap();
    s.create_topic("a", RetentionSettings::default())
        .await
        .unwrap();
    assert_eq!(
        s.create_topic("a", RetentionSettings::default()).await,
        Err(StoreError::TopicExists("a".into()))
    );
    assert_eq!(s.list_topics().await.unwrap(), ["a", "b"]);
}

async fn producers_create_topics_and_consumers_need_them(h: Harness) {
    let s = &*h.store;
    assert_eq!(
        s.register_consumer("nope", None, Beginning).await,
        Err(StoreError::TopicNotFound("nope".into()))
    );
    let p1 = s.register_producer("logs").await.unwrap();
    let p2 = s.register_producer("logs").await.unwrap();
    assert_ne!(p1, p2);
    assert_eq!(s.list_topics().await.unwrap(), ["logs"]);
    let c1 = s.register_consumer("logs", None, Beginning).await.unwrap();
    let c2 = s.register_consumer("logs", None, Beginning).await.unwrap();
    assert_ne!(c1, c2);
}

async fn messages_come_out_in_order_once_per_consumer(h: Harness) {
    let s = &*h.store;
    let p = s.register_producer("t").await.unwrap();
    let c1 = s.register_consumer("t", None, Beginning).await.unwrap();
    for m in ["one", "two", "three"] {
        s.append(append(p, "t", &[m], None)).await.unwrap();
    }
    let c2 = s.register_consumer("t", None, Beginning).await.unwrap();
    assert_eq!(s.size(c1, "t").await.unwrap(), 3);
    let first = s.consume(c1, "t").await.unwrap().unwrap();
    assert_eq!((first.offset, first.payload.as_str()), (0, "one"));
    assert!(first.timestamp_ms > 1_600_000_000_000);
    assert_eq!(s.size(c1, "t").await.unwrap(), 2);
    assert_eq!(consume_all(s, c1, "t").await, ["two", "three"]);
    assert_eq!(s.consume(c1, "t").await.unwrap(), None);
    assert_eq!(s.size(c1, "t").await.unwrap(), 0);
    // Every consumer starts at the beginning, whenever it registered.
    assert_eq!(consume_all(s, c2, "t").await, ["one", "two", "three"]);
}

async fn ids_work_only_for_their_own_topic(h: Harness) {
    let s = &*h.store;
    let p = s.register_producer("mine").await.unwrap();
    s.register_producer("other").await.unwrap();
    let c = s.register_consumer("mine", None, Beginning).await.unwrap();
    assert!(matches!(
        s.append(append(p, "other", &["x"], None)).await,
        Err(StoreError::WrongTopic {
            role: "producer",
            ..
        })
    ));
    assert!(matches!(
        s.consume(c, "other").await,
        Err(StoreError::WrongTopic {
            role: "consumer",
            ..
        })
    ));
    assert!(matches!(
        s.size(c, "other").await,
        Err(StoreError::WrongTopic { .. })
    ));
    assert_eq!(
        s.append(append(9999, "mine", &["x"], None)).await,
        Err(StoreError::ProducerNotFound(9999))
    );
    assert_eq!(
        s.consume(9999, "mine").await,
        Err(StoreError::ConsumerNotFound(9999))
    );
    assert_eq!(
        s.size(0, "mine").await,
        Err(StoreError::ConsumerNotFound(0))
    );
    // Nothing was stored by the refused requests.
    assert_eq!(s.size(c, "mine").await.unwrap(), 0);
}

async fn a_retried_batch_is_stored_once(h: Harness) {
    let s = &*h.store;
    let p = s.register_producer("t").await.unwrap();
    let first = s
        .append(append(p, "t", &["a", "b"], Some(0)))
        .await
        .unwrap();
    assert_eq!(
        first,
        Appended {
            base_offset: 0,
            count: 2,
            duplicate: false
        }
    );
    let retry = s
        .append(append(p, "t", &["a", "b"], Some(0)))
        .await
        .unwrap();
    assert_eq!(
        retry,
        Appended {
            base_offset: 0,
            count: 2,
            duplicate: true
        }
    );
    assert!(matches!(
        s.append(append(p, "t", &["c"], Some(5))).await,
        Err(StoreError::SequenceMismatch {
            expected: 2,
            got: 5,
            ..
        })
    ));
    let next = s.append(append(p, "t", &["c"], Some(2))).await.unwrap();
    assert_eq!(next.base_offset, 2);
    let c = s.register_consumer("t", None, Beginning).await.unwrap();
    assert_eq!(consume_all(s, c, "t").await, ["a", "b", "c"]);
}

async fn a_batch_and_its_retry_sent_together_are_stored_once(h: Harness) {
    // Both likely land in one group commit: the retry must still be a duplicate that
    // reports where the original went.
    let store = h.store.clone();
    let p = store.register_producer("t").await.unwrap();
    store
        .append(append(p, "t", &["first"], Some(0)))
        .await
        .unwrap();
    let batch = append(p, "t", &["a", "b"], Some(1));
    let (one, two) = tokio::join!(store.append(batch.clone()), store.append(batch));
    let (one, two) = (one.unwrap(), two.unwrap());
    assert_eq!(one.base_offset, 1);
    assert_eq!(two.base_offset, 1);
    assert!(
        one.duplicate != two.duplicate,
        "exactly one of them is the retry"
    );
    let c = store.register_consumer("t", None, Beginning).await.unwrap();
    assert_eq!(consume_all(&*store, c, "t").await, ["first", "a", "b"]);
}

/// A producer with several batches in flight: the broker recognises a retry of any of its
/// last `PRODUCER_WINDOW` batches (answered as before, stored once), also after a restart, and
/// refuses older ones and gaps.
async fn a_retry_of_any_batch_in_the_window_answers_as_before_and_a_gap_is_refused(mut h: Harness) {
    const WINDOW: u64 = myqueue_wire::PRODUCER_WINDOW as u64;
    let p = h.store.register_producer("t").await.unwrap();
    let other = h.store.register_producer("t").await.unwrap();
    // Batches of two, with another producer's message between them: offsets 0, 3, 6, …
    let batches = WINDOW + 2;
    for i in 0..batches {
        let batch = [format!("m{}", 2 * i), format!("m{}", 2 * i + 1)];
        let stored = h.store.append(append(p, "t", &batch, Some(2 * i))).await;
        assert_eq!(stored.unwrap().base_offset, 3 * i);
        h.store
            .append(append(other, "t", &["x"], None))
            .await
            .unwrap();
    }
    let next = 2 * batches;
    let check = |s: Arc<dyn Store>| async move {
        for i in batches - WINDOW..batches {
            let batch = [format!("m{}", 2 * i), format!("m{}", 2 * i + 1)];
            let retry = s.append(append(p, "t", &batch, Some(2 * i))).await;
            assert_eq!(
                retry.unwrap(),
                Appended {
                    base_offset: 3 * i,
                    count: 2,
                    duplicate: true
                },
                "batch {i}"
            );
        }
        // Older than the window, not a batch's first number, another count, a gap.
        for (sequence, count) in [(0, 2), (2, 2), (next - 3, 2), (next - 2, 1), (next + 2, 1)] {
            let texts: Vec<String> = (0..count).map(|n| format!("late {n}")).collect();
            assert!(
                matches!(
                    s.append(append(p, "t", &texts, Some(sequence))).await,
                    Err(StoreError::SequenceMismatch { expected, got, .. })
                        if expected == next && got == sequence
                ),
                "sequence {sequence}, {count} message(s)"
            );
        }
        let c = s.register_consumer("t", None, Beginning).await.unwrap();
        assert_eq!(
            s.size(c, "t").await.unwrap(),
            3 * batches,
            "nothing stored twice"
        );
    };
    check(h.store.clone()).await;
    if h.restart().await {
        check(h.store.clone()).await;
    }
    let stored = h.store.append(append(p, "t", &["new"], Some(next))).await;
    assert_eq!(stored.unwrap().base_offset, 3 * batches);
}

/// Batches of one producer sent at once, in reverse order: those that arrive before their
/// predecessor are refused as a gap and sent again (as the client does), and in the end every
/// batch is stored once, in the producer's order, at the offset it was answered with.
async fn a_producers_batches_sent_together_are_stored_once_in_its_order(h: Harness) {
    const BATCHES: u64 = myqueue_wire::PRODUCER_WINDOW as u64;
    const SIZE: u64 = 3;
    let store = h.store.clone();
    let p = store.register_producer("t").await.unwrap();
    let texts = |i: u64| -> Vec<String> {
        (i * SIZE..(i + 1) * SIZE)
            .map(|n| format!("m{n}"))
            .collect()
    };
    let mut answered: HashMap<u64, u64> = HashMap::new();
    for _round in 0..20 {
        let sends = (0..BATCHES)
            .rev()
            .filter(|i| !answered.contains_key(i))
            .map(|i| {
                let store = store.clone();
                let batch = append(p, "t", &texts(i), Some(i * SIZE));
                tokio::spawn(async move { (i, store.append(batch).await) })
            });
        for send in sends.collect::<Vec<_>>() {
            match send.await.unwrap() {
                (i, Ok(stored)) => {
                    assert!(!stored.duplicate, "batch {i} was sent once per round");
                    answered.insert(i, stored.base_offset);
                }
                (_, Err(StoreError::SequenceMismatch { .. })) => {} // a gap: sent again
                (i, Err(err)) => panic!("batch {i}: {err}"),
            }
        }
        if answered.len() as u64 == BATCHES {
            break;
        }
    }
    assert_eq!(
        answered.len() as u64,
        BATCHES,
        "every batch stored within 20 rounds"
    );
    for (i, base) in &answered {
        assert_eq!(*base, i * SIZE, "batch {i} in the producer's order");
    }
    let c = store.register_consumer("t", None, Beginning).await.unwrap();
    let all: Vec<String> = (0..BATCHES).flat_map(texts).collect();
    assert_eq!(consume_all(&*store, c, "t").await, all);
}

async fn fetch_reads_without_moving_and_commit_moves(h: Harness) {
    let s = &*h.store;
    let p = s.register_producer("t").await.unwrap();
    s.append(append(p, "t", &["m0", "m1", "m2", "m3"], None))
        .await
        .unwrap();
    let c = s.register_consumer("t", None, Beginning).await.unwrap();
    let fetched = s.fetch(c, "t", None, messages(3)).await.unwrap();
    let payloads: Vec<_> = fetched
        .messages
        .iter()
        .map(|m| m.payload.as_str())
        .collect();
    assert_eq!(payloads, ["m0", "m1", "m2"]);
    assert_eq!((fetched.next_offset, fetched.end_offset), (3, 4));
    assert_eq!(s.size(c, "t").await.unwrap(), 4, "fetch does not move");
    let tail = s.fetch(c, "t", Some(3), messages(10)).await.unwrap();
    assert_eq!(tail.messages.len(), 1);
    assert_eq!(tail.messages[0].offset, 3);
    let empty = s.fetch(c, "t", Some(4), messages(10)).await.unwrap();
    assert!(empty.messages.is_empty());
    assert_eq!(empty.next_offset, 4);
    assert!(matches!(
        s.fetch(c, "t", Some(5), messages(10)).await,
        Err(StoreError::OffsetOutOfRange {
            offset: 5,
            end: 4,
            ..
        })
    ));

    assert_eq!(s.commit(c, "t", SeekTo::Offset(2)).await.unwrap(), 2);
    assert_eq!(s.size(c, "t").await.unwrap(), 2);
    assert_eq!(s.consume(c, "t").await.unwrap().unwrap().payload, "m2");
    assert_eq!(
        s.fetch(c, "t", None, messages(10)).await.unwrap().messages[0].offset,
        3
    );
    assert_eq!(s.commit(c, "t", SeekTo::End).await.unwrap(), 4);
    assert_eq!(s.size(c, "t").await.unwrap(), 0);
    assert_eq!(s.commit(c, "t", SeekTo::Beginning).await.unwrap(), 0);
    assert_eq!(s.size(c, "t").await.unwrap(), 4);
    assert!(matches!(
        s.commit(c, "t", SeekTo::Offset(5)).await,
        Err(StoreError::OffsetOutOfRange {
            offset: 5,
            end: 4,
            ..
        })
    ));
}

async fn a_fetch_stops_at_its_byte_budget_but_always_returns_one_message(h: Harness) {
    let s = &*h.store;
    let p = s.register_producer("t").await.unwrap();
    let hundred = "x".repeat(100);
    let big = "y".repeat(1000);
    s.append(append(p, "t", &[&big, &hundred, &hundred, &hundred], None))
        .await
        .unwrap();
    let c = s.register_consumer("t", None, Beginning).await.unwrap();
    let budget = |bytes| FetchLimit {
        messages: 10,
        bytes,
    };
    // The first message comes even when it alone is over the budget.
    let first = s.fetch(c, "t", Some(0), budget(10)).await.unwrap();
    assert_eq!(first.messages.len(), 1);
    assert_eq!(first.next_offset, 1);
    // Then 100 + 100 fit in 250, a third would not.
    let next = s.fetch(c, "t", Some(1), budget(250)).await.unwrap();
    let offsets: Vec<u64> = next.messages.iter().map(|m| m.offset).collect();
    assert_eq!(offsets, [1, 2]);
    assert_eq!(next.next_offset, 3);
}

/// A store may skip counting a fetch's bytes when the topic's largest payload times the
/// message limit fits the budget (PostgreSQL does): every way of appending must then make a
/// larger payload known, or a fetch would run past its budget.
async fn a_fetch_budget_counts_a_larger_payload_however_it_was_appended(h: Harness) {
    let s = &*h.store;
    let hundred = "x".repeat(100);
    let big = "y".repeat(1000);
    let budget = FetchLimit {
        messages: 10,
        bytes: 1000,
    };
    // Each topic: three small messages (all fit: 10 × 100 bytes), then its own way of
    // appending a large one first and small ones after it: one plain message, a small
    // sequenced batch, a sequenced batch large enough to be copied in (PostgreSQL: by `COPY`,
    // from the producer's state the broker knows), and two topics in one group.
    let plain = s.register_producer("plain").await.unwrap();
    let sequenced = s.register_producer("sequenced").await.unwrap();
    let copied = s.register_producer("copied").await.unwrap();
    let left = s.register_producer("left").await.unwrap();
    let right = s.register_producer("right").await.unwrap();
    let small = [&hundred, &hundred, &hundred];
    for (producer, topic) in [(plain, "plain"), (left, "left"), (right, "right")] {
        s.append(append(producer, topic, &small, None))
            .await
            .unwrap();
        let c = s.register_consumer(topic, None, Beginning).await.unwrap();
        let fetched = s.fetch(c, topic, Some(0), budget).await.unwrap();
        assert_eq!(fetched.messages.len(), 3, "{topic}");
    }
    for (producer, topic) in [(sequenced, "sequenced"), (copied, "copied")] {
        s.append(append(producer, topic, &small, Some(0)))
            .await
            .unwrap();
    }
    s.append(append(plain, "plain", &[&big], None))
        .await
        .unwrap();
    s.append(append(plain, "plain", &small, None))
        .await
        .unwrap();
    s.append(append(sequenced, "sequenced", &[&big, &hundred], Some(3)))
        .await
        .unwrap();
    let many: Vec<&String> = std::iter::once(&big)
        .chain(std::iter::repeat_n(&hundred, 39))
        .collect();
    s.append(append(copied, "copied", &many, Some(3)))
        .await
        .unwrap();
    let both = [&big, &hundred, &hundred];
    let (one, two) = tokio::join!(
        s.append(append(left, "left", &both, None)),
        s.append(append(right, "right", &both, None))
    );
    one.unwrap();
    two.unwrap();
    for topic in ["plain", "sequenced", "copied", "left", "right"] {
        let c = s.register_consumer(topic, None, Beginning).await.unwrap();
        let fetched = s.fetch(c, topic, Some(3), budget).await.unwrap();
        let offsets: Vec<u64> = fetched.messages.iter().map(|m| m.offset).collect();
        assert_eq!(offsets, [3], "{topic}");
        assert_eq!(fetched.messages[0].payload, big, "{topic}");
        // Past it, the small ones fit ten at a time again (the budget is counted, and holds).
        let after = s.fetch(c, topic, Some(4), budget).await.unwrap();
        assert!(!after.messages.is_empty(), "{topic}");
        assert!(
            after.messages.iter().all(|m| m.payload == hundred),
            "{topic}"
        );
    }
}

async fn a_group_name_keeps_one_position(h: Harness) {
    let s = &*h.store;
    let p = s.register_producer("t").await.unwrap();
    s.append(append(p, "t", &["a", "b", "c"], None))
        .await
        .unwrap();
    let c = s
        .register_consumer("t", Some("indexer"), Beginning)
        .await
        .unwrap();
    assert_eq!(s.consume(c, "t").await.unwrap().unwrap().payload, "a");
    let again = s
        .register_consumer("t", Some("indexer"), Beginning)
        .await
        .unwrap();
    assert_eq!(again, c);
    assert_eq!(s.consume(again, "t").await.unwrap().unwrap().payload, "b");
    let other = s
        .register_consumer("t", Some("archiver"), Beginning)
        .await
        .unwrap();
    assert_ne!(other, c);
    assert_eq!(s.consume(other, "t").await.unwrap().unwrap().payload, "a");
}

async fn concurrent_consumes_with_one_id_never_repeat_or_skip(h: Harness) {
    let store = h.store.clone();
    let p = store.register_producer("t").await.unwrap();
    let all: Vec<String> = (0..400).map(|i| format!("m{i}")).collect();
    for chunk in all.chunks(100) {
        store.append(append(p, "t", chunk, None)).await.unwrap();
    }
    let c = store.register_consumer("t", None, Beginning).await.unwrap();
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(m) = store.consume(c, "t").await.unwrap() {
                    got.push(m.offset);
                }
                got
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for worker in workers {
        let got = worker.await.unwrap();
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "each worker sees increasing offsets"
        );
        for offset in got {
            assert!(seen.insert(offset), "offset {offset} consumed twice");
        }
    }
    assert_eq!(seen.len(), 400, "every message consumed exactly once");
}

async fn concurrent_consumers_of_one_topic_each_get_every_message(h: Harness) {
    // Their consumes land in the same groups and take the same offsets at the same time.
    let store = h.store.clone();
    let p = store.register_producer("t").await.unwrap();
    let all: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
    store.append(append(p, "t", &all, None)).await.unwrap();
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let c = store.register_consumer("t", None, Beginning).await.unwrap();
                consume_all(&*store, c, "t").await
            })
        })
        .collect();
    for worker in workers {
        assert_eq!(worker.await.unwrap(), all);
    }
}

async fn concurrent_producers_lose_nothing_and_keep_their_order(h: Harness) {
    let store = h.store.clone();
    const PRODUCERS: usize = 8;
    const EACH: usize = 50;
    let workers: Vec<_> = (0..PRODUCERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let p = store.register_producer("t").await.unwrap();
                for i in 0..EACH {
                    let m = format!("{w}:{i}");
                    store.append(append(p, "t", &[&m], None)).await.unwrap();
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    let c = store.register_consumer("t", None, Beginning).await.unwrap();
    let fetched = store
        .fetch(c, "t", Some(0), messages(10_000))
        .await
        .unwrap();
    assert_eq!(fetched.messages.len(), PRODUCERS * EACH);
    let offsets: Vec<u64> = fetched.messages.iter().map(|m| m.offset).collect();
    assert_eq!(
        offsets,
        (0..(PRODUCERS * EACH) as u64).collect::<Vec<_>>(),
        "gap-free"
    );
    let mut next = [0usize; PRODUCERS];
    for m in &fetched.messages {
        let (w, i) = m.payload.split_once(':').unwrap();
        let (w, i): (usize, usize) = (w.parse().unwrap(), i.parse().unwrap());
        assert_eq!(i, next[w], "producer {w}'s order");
        next[w] += 1;
    }
}

/// Appends of mixed sizes (single messages, and batches large enough for a statement of
/// their own) to two topics of different lengths at once, most without sequence numbers and
/// one producer with them, so that groups mix every kind: every append's answered offset is
/// where its messages are, and each topic's offsets stay gap-free.
async fn concurrent_mixed_appends_get_the_offsets_they_are_stored_at(h: Harness) {
    let store = h.store.clone();
    let seed = store.register_producer("b").await.unwrap();
    let seeded: Vec<String> = (0..7).map(|i| format!("seed:{i}")).collect();
    store
        .append(append(seed, "b", &seeded, None))
        .await
        .unwrap();
    const WORKERS: usize = 6;
    const ROUNDS: usize = 20;
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                // Four workers on "a", two on "b"; the last one numbers its batches.
                let topic = if w < 4 { "a" } else { "b" };
                let sequenced = w == WORKERS - 1;
                let p = store.register_producer(topic).await.unwrap();
                let mut answered = Vec::new();
                let mut sent = 0;
                for round in 0..ROUNDS {
                    let size = if (w + round) % 3 == 0 { 100 } else { 1 };
                    let texts: Vec<String> =
                        (0..size).map(|i| format!("{w}:{round}:{i}")).collect();
                    let sequence = sequenced.then_some(sent);
                    let appended = store
                        .append(append(p, topic, &texts, sequence))
                        .await
                        .unwrap();
                    assert_eq!(appended.count, size as u64);
                    assert!(!appended.duplicate);
                    sent += size as u64;
                    answered.push((appended.base_offset, texts));
                }
                (topic, answered)
            })
        })
        .collect();
    let mut answers = vec![("b", vec![(0, seeded)])];
    for worker in workers {
        answers.push(worker.await.unwrap());
    }
    for topic in ["a", "b"] {
        let c = store
            .register_consumer(topic, None, Beginning)
            .await
            .unwrap();
        let fetched = store
            .fetch(c, topic, Some(0), messages(100_000))
            .await
            .unwrap();
        let stored = fetched.messages;
        let offsets: Vec<u64> = stored.iter().map(|m| m.offset).collect();
        assert_eq!(
            offsets,
            (0..stored.len() as u64).collect::<Vec<_>>(),
            "gap-free"
        );
        let mut expected = 0;
        for (_, answered) in answers.iter().filter(|(t, _)| *t == topic) {
            for (base, texts) in answered {
                let at = &stored[*base as usize..*base as usize + texts.len()];
                let payloads: Vec<&String> = at.iter().map(|m| &m.payload).collect();
                assert_eq!(
                    payloads,
                    texts.iter().collect::<Vec<_>>(),
                    "{topic} at {base}"
                );
                expected += texts.len();
            }
        }
        assert_eq!(stored.len(), expected, "{topic}: every message once");
        assert_eq!(fetched.end_offset, expected as u64, "{topic}: its end");
    }
}

/// A batch as answered: its base offset, and its messages.
type Answer = (u64, Vec<String>);

/// Every worker's answers, together.
async fn answers_of(workers: Vec<tokio::task::JoinHandle<Vec<Answer>>>) -> Vec<Answer> {
    let mut answers = Vec::new();
    for worker in workers {
        answers.extend(worker.await.unwrap());
    }
    answers
}

/// `topic` holds exactly the `answers`, each where its answer says, and no gap.
async fn assert_stored_as_answered(store: &dyn Store, topic: &str, answers: &[Answer]) {
    let c = store
        .register_consumer(topic, None, Beginning)
        .await
        .unwrap();
    let stored = store
        .fetch(c, topic, Some(0), messages(1_000_000))
        .await
        .unwrap()
        .messages;
    let offsets: Vec<u64> = stored.iter().map(|m| m.offset).collect();
    assert_eq!(
        offsets,
        (0..stored.len() as u64).collect::<Vec<_>>(),
        "gap-free"
    );
    let expected: usize = answers.iter().map(|(_, texts)| texts.len()).sum();
    assert_eq!(stored.len(), expected, "every message once");
    for (base, texts) in answers {
        let at = &stored[*base as usize..*base as usize + texts.len()];
        let payloads: Vec<&String> = at.iter().map(|m| &m.payload).collect();
        assert_eq!(payloads, texts.iter().collect::<Vec<_>>(), "at {base}");
    }
}

/// Producers with sequence numbers sending batches large enough to be copied, first all to one
/// broker, then half of them to a second broker where the store is shared (PostgreSQL): a
/// broker guesses where each of its groups will go before the group ahead has committed, and
/// the other broker's first appends make some of those guesses wrong. Every batch is stored
/// once, where its answer says, in each producer's order, and the topic stays gap-free.
async fn pipelined_groups_on_two_brokers_store_every_batch_once_where_answered(h: Harness) {
    let other = h.second_broker().await;
    let brokers = [
        h.store.clone(),
        other.clone().unwrap_or_else(|| h.store.clone()),
    ];
    const PRODUCERS: usize = 8;
    const BATCHES: usize = 40;
    let workers: Vec<_> = (0..PRODUCERS)
        .map(|w| {
            let brokers = brokers.clone();
            tokio::spawn(async move {
                let p = brokers[0].register_producer("t").await.unwrap();
                let mut answered = Vec::new();
                let mut sent = 0;
                for batch in 0..BATCHES {
                    let store = &brokers[if batch < BATCHES / 2 { 0 } else { w % 2 }];
                    let size = 32 + (w * 7 + batch * 13) % 40;
                    let texts: Vec<String> =
                        (0..size).map(|i| format!("{w}:{batch}:{i}")).collect();
                    let appended = store
                        .append(append(p, "t", &texts, Some(sent)))
                        .await
                        .unwrap();
                    assert_eq!((appended.count, appended.duplicate), (size as u64, false));
                    sent += size as u64;
                    answered.push((appended.base_offset, texts));
                }
                answered
            })
        })
        .collect();
    let answers = answers_of(workers).await;
    assert_stored_as_answered(&*h.store, "t", &answers).await;
    if let Some(other) = other {
        other.close().await;
    }
}

async fn a_restart_keeps_messages_positions_and_sequences(mut h: Harness) {
    let p = h.store.register_producer("t").await.unwrap();
    h.store
        .append(append(p, "t", &["a", "b", "c"], Some(0)))
        .await
        .unwrap();
    let c = h
        .store
        .register_consumer("t", Some("g"), Beginning)
        .await
        .unwrap();
    assert_eq!(h.store.consume(c, "t").await.unwrap().unwrap().payload, "a");
    if !h.restart().await {
        return; // the memory store keeps nothing, by design
    }
    let s = &*h.store;
    assert_eq!(s.list_topics().await.unwrap(), ["t"]);
    assert_eq!(s.size(c, "t").await.unwrap(), 2);
    assert_eq!(
        s.register_consumer("t", Some("g"), Beginning)
            .await
            .unwrap(),
        c
    );
    // The retry of the last batch is still recognised after the restart.
    assert!(
        s.append(append(p, "t", &["a", "b", "c"], Some(0)))
            .await
            .unwrap()
            .duplicate
    );
    s.append(append(p, "t", &["d"], Some(3))).await.unwrap();
    assert_eq!(consume_all(s, c, "t").await, ["b", "c", "d"]);
}

async fn an_append_wakes_waiters_on_its_topic(h: Harness) {
    let s = &*h.store;
    let p = s.register_producer("t").await.unwrap();
    let mut woken = s.signals().subscribe("t");
    s.append(append(p, "t", &["x"], None)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), woken.changed())
        .await
        .expect("woken within 5 s")
        .unwrap();
}

async fn empty_and_unicode_messages_are_kept_exactly(h: Harness) {
    let s = &*h.store;
    let p = s.register_producer("t").await.unwrap();
    let texts = [
        "",
        "naïve ☃ 日本語 🎉",
        "line\nbreak \"quoted\" \\ back",
        "\u{0}\u{1f}",
    ];
    s.append(append(p, "t", &texts, None)).await.unwrap();
    let c = s.register_consumer("t", None, Beginning).await.unwrap();
    assert_eq!(consume_all(s, c, "t").await, texts);
}

async fn a_consumer_may_start_at_the_end_and_a_group_keeps_its_position(h: Harness) {
    let s = &*h.store;
    let p = s.register_producer("t").await.unwrap();
    s.append(append(p, "t", &["old 1", "old 2"], None))
        .await
        .unwrap();
    let c = s.register_consumer("t", None, End).await.unwrap();
    assert_eq!(s.size(c, "t").await.unwrap(), 0);
    assert!(
        s.fetch(c, "t", None, messages(10))
            .await
            .unwrap()
            .messages
            .is_empty()
    );
    s.append(append(p, "t", &["new"], None)).await.unwrap();
    assert_eq!(s.size(c, "t").await.unwrap(), 1);
    let taken = s.consume(c, "t").await.unwrap().unwrap();
    assert_eq!((taken.offset, taken.payload.as_str()), (2, "new"));
    assert_eq!(s.consume(c, "t").await.unwrap(), None);

    // A group that exists keeps its position, whatever the new registration's start says.
    let g = s
        .register_consumer("t", Some("g"), Beginning)
        .await
        .unwrap();
    assert_eq!(s.consume(g, "t").await.unwrap().unwrap().payload, "old 1");
    assert_eq!(s.register_consumer("t", Some("g"), End).await.unwrap(), g);
    assert_eq!(s.size(g, "t").await.unwrap(), 2);
    let late = s.register_consumer("t", Some("late"), End).await.unwrap();
    s.append(append(p, "t", &["newer"], None)).await.unwrap();
    assert_eq!(
        s.register_consumer("t", Some("late"), End).await.unwrap(),
        late
    );
    assert_eq!(
        s.register_consumer("t", Some("late"), Beginning)
            .await
            .unwrap(),
        late
    );
    assert_eq!(consume_all(s, late, "t").await, ["newer"]);

    // On an empty topic the end is the beginning.
    s.create_topic("empty", RetentionSettings::default())
        .await
        .unwrap();
    let e = s.register_consumer("empty", None, End).await.unwrap();
    assert_eq!(s.size(e, "empty").await.unwrap(), 0);
}

// ---------------------------------------------------------------------------------------------
// Retention, describe, delete
// ---------------------------------------------------------------------------------------------

/// 100-byte messages for retention's count: 36 bytes of payload and the overhead.
const UNIT: u64 = 100;

fn unit_messages(from: usize, n: usize) -> Vec<String> {
    let payload = (UNIT - MESSAGE_OVERHEAD_BYTES) as usize;
    (from..from + n)
        .map(|i| format!("{i:0>width$}", width = payload))
        .collect()
}

fn by_bytes(bytes: u64) -> RetentionSettings {
    RetentionSettings {
        ms: None,
        bytes: Some(bytes),
    }
}

/// Appends `batches` batches of `each` unit messages to `topic`, with a retention pass (at
/// `now`) after each: every batch closes a chunk of its own when chunks are `each` units.
async fn fill_with_passes(s: &dyn Store, topic: &str, batches: usize, each: usize) -> u64 {
    let p = s.register_producer(topic).await.unwrap();
    for b in 0..batches {
        s.append(append(p, topic, &unit_messages(b * each, each), None))
            .await
            .unwrap();
        s.retention_pass(now()).await.unwrap();
    }
    p
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn describe(s: &dyn Store, topic: &str) -> TopicInfo {
    s.describe_topic(topic).await.unwrap()
}

async fn retention_by_size_removes_the_oldest_chunks_and_keeps_the_limit(h: Harness) {
    let s = &*h.store;
    // Chunks of 1,000 bytes (an eighth of the limit): ten messages.
    s.create_topic("t", by_bytes(8000)).await.unwrap();
    let early = s.register_consumer("t", None, Beginning).await.unwrap();
    fill_with_passes(s, "t", 10, 10).await;
    let info = describe(s, "t").await;
    // 10,000 bytes appended; the oldest chunks go while 8,000 or more remain.
    assert_eq!((info.start_offset, info.end_offset), (20, 100));
    assert_eq!((info.messages(), info.bytes), (80, 8000));
    // A consumer registered at 0 continues from the start.
    assert_eq!(s.size(early, "t").await.unwrap(), 80);
    let first = s.consume(early, "t").await.unwrap().unwrap();
    assert_eq!(first.offset, 20);
    assert_eq!(first.payload, unit_messages(20, 1)[0]);
    assert_eq!(s.size(early, "t").await.unwrap(), 79);
    // The rows below the start are freed (PostgreSQL: partitions wholly below it are).
    match h.stored(Some("t")).await {
        Some((rows, partitions)) if partitions.is_empty() => assert_eq!(rows, 80),
        Some((rows, partitions)) => {
            assert!(rows >= 80 && partitions.iter().all(|&(_, end)| end > 20));
        }
        None => {}
    }
    // Nothing new: a pass changes nothing.
    assert_eq!(s.retention_pass(now()).await.unwrap().removed, 0);
    assert_eq!(describe(s, "t").await.start_offset, 20);
}

/// Reads that span many chunks (SQLite keeps about a chunk per table, PostgreSQL per
/// partition) get every message kept once, in order, wherever they begin and whatever their
/// limit; before and after a restart, while retention drops the oldest.
async fn reads_across_chunks_get_every_message_in_order(mut h: Harness) {
    // Chunks of 1,000 bytes (ten unit messages); 200 messages in batches of 7.
    h.store.create_topic("t", by_bytes(8000)).await.unwrap();
    let p = fill_with_passes(&*h.store, "t", 20, 7).await;
    h.store
        .append(append(p, "t", &unit_messages(140, 60), None))
        .await
        .unwrap();
    h.store.retention_pass(now()).await.unwrap();
    for restarted in [false, true] {
        if restarted && !h.restart().await {
            return;
        }
        let s = &*h.store;
        let info = describe(s, "t").await;
        assert_eq!(info.end_offset, 200);
        assert!(info.start_offset > 0, "retention dropped the oldest");
        let (start, end) = (info.start_offset as usize, 200);
        let c = s.register_consumer("t", None, Beginning).await.unwrap();
        for limit in [1, 3, 11, 1000] {
            let mut from = 0;
            let mut read = Vec::new();
            while from < end as u64 {
                let fetched = s.fetch(c, "t", Some(from), messages(limit)).await.unwrap();
                assert!(!fetched.messages.is_empty(), "from {from}, limit {limit}");
                assert!(fetched.messages.len() <= limit);
                assert_eq!(fetched.skipped, (start as u64).saturating_sub(from));
                read.extend(
                    fetched
                        .messages
                        .iter()
                        .map(|m| (m.offset, m.payload.clone())),
                );
                from = fetched.next_offset;
            }
            let expected: Vec<(u64, String)> = (start as u64..)
                .zip(unit_messages(start, end - start))
                .collect();
            assert_eq!(read, expected, "limit {limit}");
        }
        // Byte budgets that run out anywhere, also just before a segment's first message.
        let payload = unit_messages(0, 1)[0].len();
        for fit in [1, 2, 3, 5, 7] {
            let limit = FetchLimit {
                messages: 1000,
                bytes: payload * fit,
            };
            for first in start as u64..end as u64 {
                let fetched = s.fetch(c, "t", Some(first), limit).await.unwrap();
                let offsets: Vec<u64> = fetched.messages.iter().map(|m| m.offset).collect();
                let expected: Vec<u64> = (first..(first + fit as u64).min(end as u64)).collect();
                assert_eq!(offsets, expected, "from {first}, {fit} fit");
            }
        }
        // From the consumer's position, one message at a time.
        assert_eq!(
            consume_all(s, c, "t").await,
            unit_messages(start, end - start)
        );
        if let Some((rows, segments)) = h.stored(Some("t")).await {
            assert!(rows >= (end - start) as i64);
            // PostgreSQL's partitions span thousands of offsets; SQLite's segments a chunk.
            if matches!(h.reopen, Reopen::Sqlite(_)) {
                assert!(segments.len() > 2, "{segments:?}");
            }
            assert!(
                segments.iter().all(|&(_, next)| next > start as i64),
                "{start} {segments:?}"
            );
        }
    }
}

async fn retention_by_age_removes_expired_chunks_even_the_newest(h: Harness) {
    let s = &*h.store;
    // Chunks of 10 ms at most (an eighth of 80 ms).
    let settings = RetentionSettings {
        ms: Some(80),
        bytes: None,
    };
    s.create_topic("t", settings).await.unwrap();
    let p = s.register_producer("t").await.unwrap();
    let c = s.register_consumer("t", None, Beginning).await.unwrap();
    s.append(append(p, "t", &["a1", "a2", "a3"], None))
        .await
        .unwrap();
    s.retention_pass(now()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    s.append(append(p, "t", &["b1", "b2"], None)).await.unwrap();
    let stored = s
        .fetch(c, "t", Some(0), messages(10))
        .await
        .unwrap()
        .messages;
    let (a, b) = (stored[0].timestamp_ms, stored[3].timestamp_ms);
    assert!(b >= a + 30, "{a} {b}");
    // A pass (as if at `a`) closes the second batch into a chunk of its own.
    s.retention_pass(a).await.unwrap();
    // 80 ms after the first batch: it has expired, the second has not.
    let report = s.retention_pass(a + 81).await.unwrap();
    assert_eq!(report.removed, 3);
    assert_eq!(describe(s, "t").await.start_offset, 3);
    assert_eq!(consume_all(s, c, "t").await, ["b1", "b2"]);
    // 80 ms after the second: the topic is empty, its offsets go on.
    s.retention_pass(b + 81).await.unwrap();
    let info = describe(s, "t").await;
    assert_eq!((info.start_offset, info.end_offset, info.bytes), (5, 5, 0));
    let appended = s.append(append(p, "t", &["c1"], None)).await.unwrap();
    assert_eq!(appended.base_offset, 5);
    s.retention_pass(now()).await.unwrap();
    assert_eq!(consume_all(s, c, "t").await, ["c1"]);
}

async fn positions_before_the_start_continue_from_the_start(h: Harness) {
    let s = &*h.store;
    s.create_topic("t", by_bytes(800)).await.unwrap();
    let c = s.register_consumer("t", None, Beginning).await.unwrap();
    let fresh = s
        .register_consumer("t", Some("g"), Beginning)
        .await
        .unwrap();
    fill_with_passes(s, "t", 10, 1).await;
    // Ten one-message chunks of 100 bytes, 800 kept.
    let info = describe(s, "t").await;
    assert_eq!((info.start_offset, info.end_offset), (2, 10));
    assert_eq!(s.size(c, "t").await.unwrap(), 8);
    // Seeks before the start (and to the beginning) move to the start.
    assert_eq!(s.commit(c, "t", SeekTo::Offset(1)).await.unwrap(), 2);
    assert_eq!(s.commit(c, "t", SeekTo::Beginning).await.unwrap(), 2);
    assert_eq!(s.commit(c, "t", SeekTo::Offset(5)).await.unwrap(), 5);
    assert!(matches!(
        s.commit(c, "t", SeekTo::Offset(11)).await,
        Err(StoreError::OffsetOutOfRange { .. })
    ));
    // The consumer still at 0: its consume takes the message at the start.
    assert_eq!(s.consume(fresh, "t").await.unwrap().unwrap().offset, 2);
    assert_eq!(s.size(fresh, "t").await.unwrap(), 7);
}

/// A consumer's `start` chosen at registration (issue 14) on a topic whose start retention
/// moved (issue 9): the beginning is position 0, which continues from the start; the end is the
/// end, whatever the start.
async fn registration_starts_on_a_retained_topic(h: Harness) {
    let s = &*h.store;
    s.create_topic("t", by_bytes(800)).await.unwrap();
    let p = fill_with_passes(s, "t", 10, 1).await;
    assert_eq!(describe(s, "t").await.start_offset, 2);

    let beginning = s.register_consumer("t", None, Beginning).await.unwrap();
    assert_eq!(s.size(beginning, "t").await.unwrap(), 8);
    let fetched = s.fetch(beginning, "t", None, messages(1)).await.unwrap();
    assert_eq!((fetched.skipped, fetched.messages[0].offset), (2, 2));
    assert_eq!(s.consume(beginning, "t").await.unwrap().unwrap().offset, 2);

    let end = s.register_consumer("t", Some("late"), End).await.unwrap();
    assert_eq!(s.size(end, "t").await.unwrap(), 0);
    let fetched = s.fetch(end, "t", None, messages(1)).await.unwrap();
    assert_eq!((fetched.skipped, fetched.messages.len()), (0, 0));
    s.append(append(p, "t", &["after"], None)).await.unwrap();
    assert_eq!(consume_all(s, end, "t").await, ["after"]);
    let info = describe(s, "t").await;
    let late = info.consumers.iter().find(|c| c.id == end).unwrap();
    assert_eq!((late.position, late.lag), (11, 0));
}

async fn a_fetch_across_the_start_says_how_many_were_removed(h: Harness) {
    let s = &*h.store;
    s.create_topic("t", by_bytes(800)).await.unwrap();
    let c = s.register_consumer("t", None, Beginning).await.unwrap();
    fill_with_passes(s, "t", 10, 1).await;
    // From the consumer's position (0): two removed, the rest from the start.
    let fetched = s.fetch(c, "t", None, messages(3)).await.unwrap();
    let offsets: Vec<u64> = fetched.messages.iter().map(|m| m.offset).collect();
    assert_eq!(offsets, [2, 3, 4]);
    assert_eq!((fetched.skipped, fetched.next_offset), (2, 5));
    let from_one = s.fetch(c, "t", Some(1), messages(100)).await.unwrap();
    assert_eq!((from_one.skipped, from_one.messages.len()), (1, 8));
    let inside = s.fetch(c, "t", Some(4), messages(100)).await.unwrap();
    assert_eq!((inside.skipped, inside.messages[0].offset), (0, 4));
    // Everything removed (by age): nothing to read, all skipped, nothing out of range.
    s.set_retention(
        "t",
        RetentionChange {
            ms: Some(Some(1)),
            bytes: None,
        },
    )
    .await
    .unwrap();
    s.retention_pass(now() + 10_000).await.unwrap();
    let gone = s.fetch(c, "t", Some(0), messages(100)).await.unwrap();
    assert!(gone.messages.is_empty());
    assert_eq!(
        (gone.skipped, gone.next_offset, gone.end_offset),
        (10, 10, 10)
    );
    assert!(matches!(
        s.fetch(c, "t", Some(11), messages(1)).await,
        Err(StoreError::OffsetOutOfRange { .. })
    ));
}

async fn describe_shows_the_log_its_retention_and_every_consumer(h: Harness) {
    let s = &*h.store;
    assert_eq!(
        s.describe_topic("nope").await,
        Err(StoreError::TopicNotFound("nope".into()))
    );
    let before = now();
    s.create_topic("t", by_bytes(1_000_000)).await.unwrap();
    let p = s.register_producer("t").await.unwrap();
    s.append(append(p, "t", &unit_messages(0, 5), None))
        .await
        .unwrap();
    let anonymous = s.register_consumer("t", None, Beginning).await.unwrap();
    let grouped = s
        .register_consumer("t", Some("indexer"), Beginning)
        .await
        .unwrap();
    s.commit(grouped, "t", SeekTo::Offset(3)).await.unwrap();
    let info = describe(s, "t").await;
    assert_eq!(info.name, "t");
    assert_eq!(
        (info.start_offset, info.end_offset, info.bytes),
        (0, 5, 500)
    );
    assert_eq!(info.settings, by_bytes(1_000_000));
    assert_eq!(
        info.retention,
        Retention {
            ms: Retention::default().ms,
            bytes: Some(1_000_000)
        }
    );
    assert!(info.created_ms >= before - 1000 && info.created_ms <= now() + 1000);
    let consumers: Vec<_> = info
        .consumers
        .iter()
        .map(|c| (c.id, c.group.as_deref(), c.position, c.lag))
        .collect();
    assert_eq!(
        consumers,
        [(anonymous, None, 0, 5), (grouped, Some("indexer"), 3, 2)]
    );
    // Producers create topics with the broker's default.
    s.register_producer("other").await.unwrap();
    let other = describe(s, "other").await;
    assert_eq!(other.settings, RetentionSettings::default());
    assert_eq!(other.retention, Retention::default());
    assert!(other.consumers.is_empty());
}

async fn retention_settings_change_and_return_to_the_default(h: Harness) {
    let s = &*h.store;
    s.create_topic("t", RetentionSettings::default())
        .await
        .unwrap();
    let only_ms = RetentionChange {
        ms: Some(Some(60_000)),
        bytes: None,
    };
    let info = s.set_retention("t", only_ms).await.unwrap();
    assert_eq!(
        info.settings,
        RetentionSettings {
            ms: Some(60_000),
            bytes: None
        }
    );
    let bytes_too = RetentionChange {
        ms: None,
        bytes: Some(Some(5000)),
    };
    let info = s.set_retention("t", bytes_too).await.unwrap();
    assert_eq!(
        info.retention,
        Retention {
            ms: Some(60_000),
            bytes: Some(5000)
        }
    );
    let reset_ms = RetentionChange {
        ms: Some(None),
        bytes: None,
    };
    let info = s.set_retention("t", reset_ms).await.unwrap();
    assert_eq!(info.settings, by_bytes(5000));
    assert_eq!(info.retention.ms, Retention::default().ms);
    assert_eq!(
        s.set_retention("nope", reset_ms).await,
        Err(StoreError::TopicNotFound("nope".into()))
    );
    // A lower limit applies at the next pass.
    fill_with_passes(s, "t", 8, 10).await;
    assert_eq!(describe(s, "t").await.start_offset, 30);
    s.set_retention(
        "t",
        RetentionChange {
            ms: None,
            bytes: Some(Some(2000)),
        },
    )
    .await
    .unwrap();
    s.append(append(
        s.register_producer("t").await.unwrap(),
        "t",
        &unit_messages(80, 1),
        None,
    ))
    .await
    .unwrap();
    s.retention_pass(now()).await.unwrap();
    let info = describe(s, "t").await;
    assert!((2000..3000).contains(&info.bytes), "{info:?}");
}

async fn a_deleted_topic_and_its_ids_are_gone_and_its_name_starts_afresh(h: Harness) {
    let s = &*h.store;
    let p = s.register_producer("t").await.unwrap();
    s.append(append(p, "t", &["old1", "old2"], None))
        .await
        .unwrap();
    let c = s
        .register_consumer("t", Some("g"), Beginning)
        .await
        .unwrap();
    let anonymous = s.register_consumer("t", None, Beginning).await.unwrap();
    assert_eq!(s.consume(c, "t").await.unwrap().unwrap().payload, "old1");
    s.register_producer("other").await.unwrap();
    s.delete_topic("t").await.unwrap();
    assert_eq!(
        s.delete_topic("t").await,
        Err(StoreError::TopicNotFound("t".into()))
    );
    assert_eq!(s.list_topics().await.unwrap(), ["other"]);
    assert_eq!(
        s.describe_topic("t").await,
        Err(StoreError::TopicNotFound("t".into()))
    );
    assert_eq!(
        s.append(append(p, "t", &["x"], None)).await,
        Err(StoreError::ProducerNotFound(p))
    );
    assert_eq!(s.size(c, "t").await, Err(StoreError::ConsumerNotFound(c)));
    assert_eq!(
        s.register_consumer("t", None, Beginning).await,
        Err(StoreError::TopicNotFound("t".into()))
    );
    // Created again: empty, from offset 0; the old ids do not work with it.
    s.create_topic("t", RetentionSettings::default())
        .await
        .unwrap();
    assert_eq!(
        s.append(append(p, "t", &["x"], Some(0))).await,
        Err(StoreError::ProducerNotFound(p))
    );
    assert_eq!(
        s.consume(c, "t").await,
        Err(StoreError::ConsumerNotFound(c))
    );
    assert_eq!(
        s.fetch(anonymous, "t", None, messages(1)).await,
        Err(StoreError::ConsumerNotFound(anonymous))
    );
    assert_eq!(
        s.commit(c, "t", SeekTo::Beginning).await,
        Err(StoreError::ConsumerNotFound(c))
    );
    let p2 = s.register_producer("t").await.unwrap();
    assert_ne!(p2, p);
    let appended = s.append(append(p2, "t", &["new"], None)).await.unwrap();
    assert_eq!(appended.base_offset, 0);
    let c2 = s
        .register_consumer("t", Some("g"), Beginning)
        .await
        .unwrap();
    assert_ne!(c2, c, "the group starts over with a new id");
    assert_eq!(consume_all(s, c2, "t").await, ["new"]);
    let info = describe(s, "t").await;
    assert_eq!((info.start_offset, info.end_offset), (0, 1));
    assert_eq!(info.consumers.len(), 1);
    // The next pass frees what the deleted topic stored.
    s.retention_pass(now()).await.unwrap();
    if let Some((rows, _)) = h.stored(None).await {
        assert_eq!(rows, 1, "only the new topic's message is stored");
    }
}

async fn a_restart_keeps_starts_settings_and_chunks(mut h: Harness) {
    h.store.create_topic("t", by_bytes(800)).await.unwrap();
    fill_with_passes(&*h.store, "t", 10, 1).await;
    let before = describe(&*h.store, "t").await;
    if !h.restart().await {
        return;
    }
    let s = &*h.store;
    assert_eq!(describe(s, "t").await, before);
    let p = s.register_producer("t").await.unwrap();
    s.append(append(p, "t", &unit_messages(10, 1), None))
        .await
        .unwrap();
    s.retention_pass(now()).await.unwrap();
    let info = describe(s, "t").await;
    assert_eq!((info.start_offset, info.end_offset), (3, 11));
}

async fn the_background_pass_applies_retention(mut h: Harness) {
    let config = RetentionConfig {
        defaults: Retention {
            ms: None,
            bytes: Some(800),
        },
        every: Some(Duration::from_millis(10)),
    };
    h.reconfigure(config).await;
    let s = &*h.store;
    let p = s.register_producer("t").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut sent = 0;
    loop {
        s.append(append(p, "t", &unit_messages(sent, 2), None))
            .await
            .unwrap();
        sent += 2;
        tokio::time::sleep(Duration::from_millis(15)).await;
        let info = describe(s, "t").await;
        if info.start_offset > 0 {
            assert!(info.bytes >= 800, "{info:?}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no pass ran: {info:?}"
        );
    }
}

/// Consumes race with retention passes and appends: every consume answers the message at the
/// position it moves past (never a message removed under it), positions only move forward,
/// and the consumer reaches the end.
async fn consumes_racing_retention_never_lose_the_message_they_move_past(h: Harness) {
    let store = h.store.clone();
    store.create_topic("t", by_bytes(2000)).await.unwrap();
    let p = store.register_producer("t").await.unwrap();
    let c = store.register_consumer("t", None, Beginning).await.unwrap();
    const BATCHES: usize = 60;
    let producer = {
        let store = store.clone();
        tokio::spawn(async move {
            for b in 0..BATCHES {
                store
                    .append(append(p, "t", &unit_messages(b * 5, 5), None))
                    .await
                    .unwrap();
                store.retention_pass(now()).await.unwrap();
            }
        })
    };
    let consumer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut last: Option<u64> = None;
            let mut seen = 0;
            loop {
                match store.consume(c, "t").await.unwrap() {
                    Some(m) => {
                        assert!(last.is_none_or(|l| m.offset > l));
                        assert_eq!(m.payload, unit_messages(m.offset as usize, 1)[0]);
                        last = Some(m.offset);
                        seen += 1;
                    }
                    None if last == Some((BATCHES * 5 - 1) as u64) => return seen,
                    None => tokio::task::yield_now().await,
                }
            }
        })
    };
    producer.await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(60), consumer)
        .await
        .expect("the consumer reaches the end")
        .unwrap();
    assert!(seen >= 20, "{seen}");
    assert_eq!(store.size(c, "t").await.unwrap(), 0);
}

/// PostgreSQL: partitions below the start are dropped, partitions are made ahead of the end,
/// and one broker of two does the work.
async fn postgres_drops_partitions_and_one_broker_leads(h: Harness) {
    let Some(other) = h.second_broker().await else {
        return;
    };
    let s = &*h.store;
    // Chunks of 12,500 bytes: 125 messages; 1,000 messages kept.
    s.create_topic("t", by_bytes(100_000)).await.unwrap();
    assert!(s.retention_pass(now()).await.unwrap().led);
    assert!(!other.retention_pass(now()).await.unwrap().led);
    let p = s.register_producer("t").await.unwrap();
    for b in 0..60 {
        // Half the appends through the broker that does not lead.
        let via = if b % 2 == 0 { s } else { &*other };
        via.append(append(p, "t", &unit_messages(b * 125, 125), None))
            .await
            .unwrap();
        assert!(s.retention_pass(now()).await.unwrap().led);
    }
    let info = describe(s, "t").await;
    assert_eq!((info.start_offset, info.end_offset), (6500, 7500));
    // The pass empties the partitions below the start; its reaper drops them soon after.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (rows, partitions) = loop {
        let (rows, partitions) = h.stored(Some("t")).await.unwrap();
        if partitions.iter().all(|&(_, end)| end > 6500) {
            break (rows, partitions);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "partitions below the start are dropped: {partitions:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        partitions.iter().any(|&(first, _)| first >= 7500),
        "made ahead: {partitions:?}"
    );
    assert!((1000..1250).contains(&rows), "{rows}");
    // The leader stops: the other takes over (once the server has ended the leader's session).
    h.store.close().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !other.retention_pass(now()).await.unwrap().led {
        assert!(tokio::time::Instant::now() < deadline, "nobody leads");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    other.close().await;
}

/// PostgreSQL: a topic deleted on one broker ends its ids on another broker that has them
/// cached, also once the topic is created again under its name.
async fn postgres_ids_cached_by_another_broker_end_with_their_topic(h: Harness) {
    let Some(other) = h.second_broker().await else {
        return;
    };
    let s = &*h.store;
    let p = s.register_producer("t").await.unwrap();
    let c = s
        .register_consumer("t", Some("g"), Beginning)
        .await
        .unwrap();
    other.append(append(p, "t", &["a"], Some(0))).await.unwrap();
    assert_eq!(other.consume(c, "t").await.unwrap().unwrap().payload, "a");
    s.delete_topic("t").await.unwrap();
    s.create_topic("t", RetentionSettings::default())
        .await
        .unwrap();
    assert_eq!(
        other.append(append(p, "t", &["x"], None)).await,
        Err(StoreError::ProducerNotFound(p))
    );
    assert_eq!(
        other.append(append(p, "t", &["x"], Some(1))).await,
        Err(StoreError::ProducerNotFound(p))
    );
    assert_eq!(
        other.consume(c, "t").await,
        Err(StoreError::ConsumerNotFound(c))
    );
    assert_eq!(
        other.size(c, "t").await,
        Err(StoreError::ConsumerNotFound(c))
    );
    assert_eq!(
        other.fetch(c, "t", None, messages(1)).await,
        Err(StoreError::ConsumerNotFound(c))
    );
    assert_eq!(describe(s, "t").await.end_offset, 0);
    other.close().await;
}

/// PostgreSQL: an append larger than the partitions made ahead makes its own partition.
async fn postgres_an_append_past_the_partitions_makes_one(h: Harness) {
    if h.second_broker().await.is_none() {
        return;
    }
    let s = &*h.store;
    let p = s.register_producer("t").await.unwrap();
    let many: Vec<String> = (0..10_000).map(|i| format!("m{i}")).collect();
    let appended = s.append(append(p, "t", &many, Some(0))).await.unwrap();
    assert_eq!(appended.base_offset, 0);
    let more = s.append(append(p, "t", &many, None)).await.unwrap();
    assert_eq!(more.base_offset, 10_000);
    let c = s.register_consumer("t", None, Beginning).await.unwrap();
    let tail = s.fetch(c, "t", Some(19_999), messages(5)).await.unwrap();
    assert_eq!(tail.messages[0].payload, "m9999");
    let (rows, partitions) = h.stored(Some("t")).await.unwrap();
    assert_eq!(rows, 20_000);
    assert!(partitions.last().unwrap().1 >= 20_000, "{partitions:?}");
}

/// PostgreSQL: a topic that grows gets partitions made ahead of its end in the background,
/// without a retention pass, before any append needs them, none shorter than its first.
async fn postgres_partitions_are_made_ahead_of_a_growing_topic(h: Harness) {
    if h.second_broker().await.is_none() {
        return;
    }
    let s = &*h.store;
    let p = s.register_producer("t").await.unwrap();
    // A young topic's first partition spans 4,096 offsets; partitions are made ahead once
    // fewer than half of that remain: 21 groups of 100 leave 1,996.
    const GROUP: usize = 100;
    for b in 0..21 {
        let batch = unit_messages(b * GROUP, GROUP);
        let appended = s
            .append(append(p, "t", &batch, Some((b * GROUP) as u64)))
            .await
            .unwrap();
        assert_eq!(appended.base_offset, (b * GROUP) as u64);
    }
    let mut end = 21 * GROUP;
    let (rows, partitions) = made_ahead_past(&h, p, &mut end, 4097, 1, true).await;
    assert_eq!(rows, end as i64);
    assert_eq!(partitions, [(0, 4096), (4096, 8192)]);
    let c = s.register_consumer("t", None, Beginning).await.unwrap();
    let fetched = s.fetch(c, "t", Some(2_090), messages(10)).await.unwrap();
    let payloads: Vec<String> = fetched.messages.into_iter().map(|m| m.payload).collect();
    assert_eq!(payloads, unit_messages(2_090, 10));
}

/// PostgreSQL: partitions made ahead of a topic whose chunks are tiny (closed by time in a
/// quiet spell) are a quarter of the look-ahead long, not a chunk: a few partitions per
/// cover, not thousands.
async fn postgres_partitions_made_ahead_are_not_as_tiny_as_a_quiet_chunk(h: Harness) {
    if h.second_broker().await.is_none() {
        return;
    }
    let s = &*h.store;
    let before = now();
    // Chunks close after 50 ms; passes at `before` remove nothing.
    let by_age = RetentionSettings {
        ms: Some(8 * 50),
        bytes: None,
    };
    s.create_topic("t", by_age).await.unwrap();
    let p = s.register_producer("t").await.unwrap();
    for b in 0..3 {
        s.append(append(p, "t", &unit_messages(b * 5, 5), None))
            .await
            .unwrap();
        s.retention_pass(before).await.unwrap();
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    // Three chunks of 5 offsets: retention would size partitions at 16 offsets.
    // Groups of 1,000 want partitions reaching 8,000 past their end: 2,000 a partition.
    let mut end = 15;
    for _ in 0..10 {
        s.append(append(p, "t", &unit_messages(end, 1000), None))
            .await
            .unwrap();
        end += 1000;
    }
    let (rows, partitions) = made_ahead_past(&h, p, &mut end, 18_015, 1000, false).await;
    assert_eq!(rows, end as i64);
    // The first (made with the topic), then partitions of 2,000 offsets, one after the other.
    assert_eq!(partitions[0], (0, 4096), "{partitions:?}");
    for (i, &(first, end)) in partitions.iter().enumerate().skip(1) {
        assert_eq!(
            (first, end),
            (partitions[i - 1].1, first + 2000),
            "{partitions:?}"
        );
    }
}

/// Waits until topic "t"'s partitions reach `past` (made in the background), then answers its
/// rows and partitions. A request that comes while the topic's cover runs waits for that cover
/// to end, but one whose cover fails is dropped until a group asks again: one more group of
/// `nudge` messages a second from producer `p` asks again here; `end` is the topic's end, and
/// counts them.
async fn made_ahead_past(
    h: &Harness,
    p: u64,
    end: &mut usize,
    past: i64,
    nudge: usize,
    sequenced: bool,
) -> (i64, Vec<(i64, i64)>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut nudge_at = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        let (rows, partitions) = h.stored(Some("t")).await.unwrap();
        if partitions
            .last()
            .is_some_and(|&(_, reached)| reached >= past)
        {
            return (rows, partitions);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not made ahead: {partitions:?}"
        );
        if tokio::time::Instant::now() >= nudge_at {
            let sequence = sequenced.then_some(*end as u64);
            h.store
                .append(append(p, "t", &unit_messages(*end, nudge), sequence))
                .await
                .unwrap();
            *end += nudge;
            nudge_at += Duration::from_secs(1);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() { super::$case(super::Harness::memory().await.unwrap()).await }
        )* }
        mod sqlite { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() { super::$case(super::Harness::sqlite().await.unwrap()).await }
        )* }
        mod postgres { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                if let Some(harness) = super::Harness::postgres().await {
                    super::$case(harness).await
                }
            }
        )* }
    };
}

conformance!(
    topics_are_created_once_and_listed_sorted,
    producers_create_topics_and_consumers_need_them,
    messages_come_out_in_order_once_per_consumer,
    ids_work_only_for_their_own_topic,
    a_retried_batch_is_stored_once,
    a_batch_and_its_retry_sent_together_are_stored_once,
    a_retry_of_any_batch_in_the_window_answers_as_before_and_a_gap_is_refused,
    a_producers_batches_sent_together_are_stored_once_in_its_order,
    fetch_reads_without_moving_and_commit_moves,
    a_fetch_stops_at_its_byte_budget_but_always_returns_one_message,
    a_fetch_budget_counts_a_larger_payload_however_it_was_appended,
    a_group_name_keeps_one_position,
    a_consumer_may_start_at_the_end_and_a_group_keeps_its_position,
    concurrent_consumes_with_one_id_never_repeat_or_skip,
    concurrent_consumers_of_one_topic_each_get_every_message,
    concurrent_producers_lose_nothing_and_keep_their_order,
    concurrent_mixed_appends_get_the_offsets_they_are_stored_at,
    pipelined_groups_on_two_brokers_store_every_batch_once_where_answered,
    a_restart_keeps_messages_positions_and_sequences,
    an_append_wakes_waiters_on_its_topic,
    empty_and_unicode_messages_are_kept_exactly,
    retention_by_size_removes_the_oldest_chunks_and_keeps_the_limit,
    reads_across_chunks_get_every_message_in_order,
    retention_by_age_removes_expired_chunks_even_the_newest,
    positions_before_the_start_continue_from_the_start,
    registration_starts_on_a_retained_topic,
    a_fetch_across_the_start_says_how_many_were_removed,
    describe_shows_the_log_its_retention_and_every_consumer,
    retention_settings_change_and_return_to_the_default,
    a_deleted_topic_and_its_ids_are_gone_and_its_name_starts_afresh,
    a_restart_keeps_starts_settings_and_chunks,
    the_background_pass_applies_retention,
    consumes_racing_retention_never_lose_the_message_they_move_past,
    postgres_drops_partitions_and_one_broker_leads,
    postgres_an_append_past_the_partitions_makes_one,
    postgres_partitions_are_made_ahead_of_a_growing_topic,
    postgres_partitions_made_ahead_are_not_as_tiny_as_a_quiet_chunk,
    postgres_ids_cached_by_another_broker_end_with_their_topic,
);

// ---------------------------------------------------------------------------------------------
// Data from before retention, migrated at start
// ---------------------------------------------------------------------------------------------

/// Applies the first migration of `backend` (the schema before retention) to `pool`.
async fn migrate_to_the_first_schema<DB>(backend: &str, pool: &sqlx::Pool<DB>)
where
    DB: sqlx::Database,
    DB::Connection: sqlx::migrate::Migrate,
{
    let old = tempfile::tempdir().unwrap();
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend)
        .join("0001_init.sql");
    std::fs::copy(&source, old.path().join("0001_init.sql")).unwrap();
    let migrator = sqlx::migrate::Migrator::new(old.path()).await.unwrap();
    migrator.run(pool).await.unwrap();
}

/// The rows of an older broker: topic `old` with three messages, a producer (sequence 3) and
/// a grouped consumer at position 1.
const OLD_ROWS: [&str; 4] = [
    "INSERT INTO topics (name, next_offset, created_ms) VALUES ('old', 3, 1000)",
    "INSERT INTO producers (topic_id, next_sequence, last_base_offset, last_count, created_ms) \
     VALUES (1, 3, 0, 3, 1000)",
    "INSERT INTO consumers (topic_id, group_name, position, created_ms) VALUES (1, 'g', 1, 1000)",
    "INSERT INTO messages (topic_id, log_offset, producer_id, stored_ms, payload) \
     VALUES (1, 0, 1, 1001, $1), (1, 1, 1, 1002, $2), (1, 2, 1, 1003, $3)",
];

/// What the migrated store must answer.
async fn check_migrated(store: &dyn Store) {
    let info = store.describe_topic("old").await.unwrap();
    assert_eq!((info.start_offset, info.end_offset), (0, 3));
    assert_eq!(info.bytes, 3 * MESSAGE_OVERHEAD_BYTES + 1 + 2 + 3);
    assert_eq!(info.settings, RetentionSettings::default());
    let c = store
        .register_consumer("old", Some("g"), Beginning)
        .await
        .unwrap();
    assert_eq!(
        store.consume(c, "old").await.unwrap().unwrap().payload,
        "bb"
    );
    // Its payloads were never measured: a fetch counts its byte budget (1 + 2 fit in 3).
    let budget = FetchLimit {
        messages: 10,
        bytes: 3,
    };
    let fetched = store.fetch(c, "old", Some(0), budget).await.unwrap();
    let payloads: Vec<&str> = fetched
        .messages
        .iter()
        .map(|m| m.payload.as_str())
        .collect();
    assert_eq!(payloads, ["a", "bb"]);
    // The producer's retry is still recognised; new messages go on at offset 3.
    let retry = store
        .append(append(1, "old", &["a", "bb", "ccc"], Some(0)))
        .await
        .unwrap();
    assert!(retry.duplicate);
    let next = store
        .append(append(1, "old", &["d"], Some(3)))
        .await
        .unwrap();
    assert_eq!(next.base_offset, 3);
    // Retention works on the migrated topic: by age, everything but the new message goes.
    store
        .set_retention(
            "old",
            RetentionChange {
                ms: Some(Some(60_000)),
                bytes: None,
            },
        )
        .await
        .unwrap();
    store.retention_pass(now()).await.unwrap();
    assert_eq!(store.describe_topic("old").await.unwrap().start_offset, 3);
    assert_eq!(consume_all(store, c, "old").await, ["d"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_a_data_directory_from_before_retention_is_migrated() {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool};
    // Before this process's first SQLite connection, which may be this one.
    broker::store::sqlite_config::configure_once();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("myqueue.sqlite3");
    let options = SqliteConnectOptions::new()
        .filename(&file)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal);
    let pool = SqlitePool::connect_with(options.clone()).await.unwrap();
    migrate_to_the_first_schema("sqlite", &pool).await;
    for sql in OLD_ROWS {
        let mut query = sqlx::query(sql);
        if sql.contains("$1") {
            query = query.bind("a").bind("bb").bind("ccc");
        }
        query.execute(&pool).await.unwrap();
    }
    let mode: i64 = sqlx::query_scalar("PRAGMA auto_vacuum")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(mode, 0, "an older file has no auto-vacuum");
    pool.close().await;

    let store = SqliteStore::open(dir.path(), manual_passes())
        .await
        .unwrap();
    check_migrated(&store).await;
    store.close().await;
    let pool = SqlitePool::connect_with(options).await.unwrap();
    let mode: i64 = sqlx::query_scalar("PRAGMA auto_vacuum")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(mode, 2, "incremental auto-vacuum after the migration");
    pool.close().await;
}

/// A data directory from before tables per topic (every message in one `messages` table): at
/// start each topic's messages from its start on move into its own table, in order, and a
/// topic deleted before, whose messages were not freed yet, is forgotten by the next pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_one_messages_table_is_split_into_a_table_per_topic() {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool};
    // Before this process's first SQLite connection, which may be this one.
    broker::store::sqlite_config::configure_once();
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteConnectOptions::new()
        .filename(dir.path().join("myqueue.sqlite3"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal);
    let pool = SqlitePool::connect_with(options.clone()).await.unwrap();
    // The schema as it was then: the migrations up to 0005 (the broker applies the later ones,
    // 0006 moving the starts to a table of their own).
    let migrations = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
    let then = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&migrations).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.as_str() < "0006" {
            std::fs::copy(&path, then.path().join(name)).unwrap();
        }
    }
    let migrator = sqlx::migrate::Migrator::new(then.path()).await.unwrap();
    migrator.run(&pool).await.unwrap();
    for sql in [
        // Topic a's start is 1: its message 0 was retained out and is not moved.
        "INSERT INTO topics (id, name, next_offset, start_offset, start_bytes, end_bytes, \
             created_ms) VALUES (1, 'a', 3, 1, 66, 198, 1000), (2, 'b', 2, 0, 0, 132, 1000)",
        "INSERT INTO producers (topic_id, next_sequence, created_ms) VALUES (1, 0, 1000)",
        "INSERT INTO messages (topic_id, log_offset, producer_id, stored_ms, payload) VALUES \
             (1, 0, 1, 1001, 'a0'), (2, 0, 1, 1001, 'b0'), (1, 1, 1, 1002, 'a1'), \
             (2, 1, 1, 1002, 'b1'), (1, 2, 1, 1003, 'a2'), (3, 0, 1, 1001, 'gone')",
        "INSERT INTO dropped_topics (topic_id, dropped_ms) VALUES (3, 1004)",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    pool.close().await;

    let store = SqliteStore::open(dir.path(), manual_passes())
        .await
        .unwrap();
    for (topic, expected) in [("a", vec!["a1", "a2"]), ("b", vec!["b0", "b1"])] {
        let c = store
            .register_consumer(topic, None, Beginning)
            .await
            .unwrap();
        assert_eq!(consume_all(&store, c, topic).await, expected);
    }
    let next = store
        .append(append(1, "a", &["a3"], Some(0)))
        .await
        .unwrap();
    assert_eq!(next.base_offset, 3);
    store.retention_pass(now()).await.unwrap();
    store.close().await;

    let pool = SqlitePool::connect_with(options).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name GLOB 'messages*' \
         ORDER BY name",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(tables, ["messages_1_0", "messages_2_0"]);
    let below_start: i64 =
        sqlx::query_scalar("SELECT count(*) FROM messages_1_0 WHERE log_offset < 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(below_start, 0, "what retention removed is not moved");
    let dropped: i64 = sqlx::query_scalar("SELECT count(*) FROM dropped_topics")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(dropped, 0, "the deleted topic is forgotten");
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_database_from_before_retention_is_migrated_into_partitions() {
    let Some(url) = test_database_url() else {
        return;
    };
    let options = fresh_database(&url).await;
    let pool = sqlx::PgPool::connect_with(options.clone()).await.unwrap();
    migrate_to_the_first_schema("postgres", &pool).await;
    for sql in OLD_ROWS {
        let mut query = sqlx::query(sql);
        if sql.contains("$1") {
            query = query
                .bind(b"a".as_slice())
                .bind(b"bb".as_slice())
                .bind(b"ccc".as_slice());
        }
        query.execute(&pool).await.unwrap();
    }
    pool.close().await;

    let store = PostgresStore::open(options.clone(), 4, manual_passes())
        .await
        .unwrap();
    check_migrated(&store).await;
    store.close().await;
    let mut conn = PgConnection::connect_with(&options).await.unwrap();
    let kind: String =
        sqlx::query_scalar("SELECT relkind::text FROM pg_class WHERE relname = 'messages'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(kind, "p", "messages is partitioned");
    let leaves: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_partition_tree('messages') WHERE isleaf")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(leaves >= 1);
}

/// An append group's transaction is opened and committed by its own statements (sqlx does not
/// count it): one that fails midway must be rolled back, and the writer must go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_a_failed_append_group_is_rolled_back_and_the_writer_goes_on() {
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
    broker::store::sqlite_config::configure_once();
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), manual_passes())
        .await
        .unwrap();
    let producer = store.register_producer("t").await.unwrap();
    let first = store
        .append(append(producer, "t", &["m0", "m1"], Some(0)))
        .await
        .unwrap();
    assert_eq!(first.base_offset, 0);

    // A trigger fails the group's last statements, after its INSERT has run.
    let raw = SqlitePool::connect_with(
        SqliteConnectOptions::new().filename(dir.path().join("myqueue.sqlite3")),
    )
    .await
    .unwrap();
    sqlx::query(
        "CREATE TRIGGER fail_appends BEFORE UPDATE ON topics \
         BEGIN SELECT RAISE(ABORT, 'injected'); END",
    )
    .execute(&raw)
    .await
    .unwrap();
    let failed = store
        .append(append(producer, "t", &["lost"], Some(2)))
        .await;
    assert!(
        matches!(&failed, Err(err) if err.to_string().contains("injected")),
        "the injected failure reaches the caller: {failed:?}"
    );
    sqlx::query("DROP TRIGGER fail_appends")
        .execute(&raw)
        .await
        .unwrap();
    raw.close().await;

    // Offset 2 is free again (a row left there would be a conflict) and the writer works.
    let next = store
        .append(append(producer, "t", &["m2"], Some(2)))
        .await
        .unwrap();
    assert_eq!(next.base_offset, 2);
    let consumer = store.register_consumer("t", None, Beginning).await.unwrap();
    assert_eq!(consume_all(&store, consumer, "t").await, ["m0", "m1", "m2"]);
    store.close().await;
}

/// PostgreSQL: an append group that fails (a trigger refuses one of its messages) while the
/// next group, guessed from what the failed one would have left, is already writing: the next
/// group finds out under lock and starts again, so nothing is stored past the topic's end and
/// every answer says where its batch is. The failed group's batches are sent again, as
/// `MyProducer` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_group_guessed_after_a_failed_one_starts_again() {
    let Some(url) = test_database_url() else {
        return;
    };
    let options = fresh_database(&url).await;
    let store = Arc::new(
        PostgresStore::open(options.clone(), 8, manual_passes())
            .await
            .unwrap(),
    );
    let mut admin = PgConnection::connect_with(&options).await.unwrap();
    // The refusal comes late (50 ms), so that the next group is formed, and guessed from
    // what the failing one would leave, while the failing one is still in flight.
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_boom() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN IF NEW.payload = 'boom'::bytea THEN \
             PERFORM pg_sleep(0.05); RAISE EXCEPTION 'injected'; END IF; \
         RETURN NEW; END $$; \
         CREATE TRIGGER refuse_boom BEFORE INSERT ON messages \
         FOR EACH ROW EXECUTE FUNCTION refuse_boom();",
    )
    .execute(&mut admin)
    .await
    .unwrap();
    const PRODUCERS: usize = 6;
    const BATCHES: usize = 30;
    let workers: Vec<_> = (0..PRODUCERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let p = store.register_producer("t").await.unwrap();
                let (mut answered, mut sent, mut failures) = (Vec::new(), 0, 0);
                for batch in 0..BATCHES {
                    let mut texts: Vec<String> =
                        (0..40).map(|i| format!("{w}:{batch}:{i}")).collect();
                    if w == 0 && batch % 5 == 4 {
                        texts[20] = "boom".to_owned();
                    }
                    let appended = loop {
                        match store.append(append(p, "t", &texts, Some(sent))).await {
                            Ok(appended) => break appended,
                            Err(err) => {
                                assert!(err.to_string().contains("injected"), "{err}");
                                failures += 1;
                                assert!(failures < 200, "too many failures");
                                // Sent again, without the refused message.
                                texts.retain(|text| text != "boom");
                            }
                        }
                    };
                    assert_eq!(
                        (appended.count, appended.duplicate),
                        (texts.len() as u64, false)
                    );
                    sent += texts.len() as u64;
                    answered.push((appended.base_offset, texts));
                }
                answered
            })
        })
        .collect();
    let answers = answers_of(workers).await;
    assert_stored_as_answered(&*store, "t", &answers).await;
    let (right, wrong) = store.backend().guessed_groups();
    assert!(
        right > 0,
        "groups were guessed: {right} right, {wrong} wrong"
    );
    assert!(
        wrong > 0,
        "a guess after a failed group was wrong: {right} right"
    );
    store.close().await;
}

/// Another writer appends behind the broker's back (another broker whose announcement has not
/// arrived yet, for PostgreSQL; for SQLite, anything the broker's line of groups did not see).
/// The next group, planned from the state the group ahead of it left, finds its rows changed,
/// writes nothing, and is stored the ordinary way: after the other writer's message, with the
/// producer's state right (its retry is answered where it went).
async fn a_group_planned_from_changed_state_is_stored_the_ordinary_way(
    store: &dyn Store,
    producer: u64,
    known_state_groups: impl Fn() -> (u64, u64),
    append_behind_its_back: impl AsyncFnOnce(),
) {
    let first = store.append(append(producer, "t", &["a"], Some(0)));
    assert_eq!(first.await.unwrap().base_offset, 0);
    let second = store.append(append(producer, "t", &["b"], Some(1)));
    assert_eq!(second.await.unwrap().base_offset, 1);
    assert_eq!(
        known_state_groups(),
        (1, 0),
        "the second planned from known state"
    );
    // The producer's state the one-trip group wrote: its batch is recognised where it went.
    // (SQLite's one trip answers a retry too; PostgreSQL's leaves it to the ordinary way.)
    let second_again = store.append(append(producer, "t", &["b"], Some(1)));
    let second_again = second_again.await.unwrap();
    assert_eq!(
        (second_again.base_offset, second_again.duplicate),
        (1, true)
    );
    let (stored, _) = known_state_groups();

    append_behind_its_back().await;
    let third = store
        .append(append(producer, "t", &["c"], Some(2)))
        .await
        .unwrap();
    assert_eq!(
        known_state_groups(),
        (stored, 1),
        "the third found its rows changed"
    );
    assert_eq!((third.base_offset, third.duplicate), (3, false));
    let retried = store
        .append(append(producer, "t", &["c"], Some(2)))
        .await
        .unwrap();
    assert_eq!((retried.base_offset, retried.duplicate), (3, true));
    let fourth = store.append(append(producer, "t", &["d"], Some(3)));
    assert_eq!(fourth.await.unwrap().base_offset, 4);

    let c = store.register_consumer("t", None, Beginning).await.unwrap();
    let stored = store.fetch(c, "t", Some(0), messages(10)).await.unwrap();
    let payloads: Vec<&str> = stored.messages.iter().map(|m| m.payload.as_str()).collect();
    assert_eq!(payloads, ["a", "b", "x", "c", "d"]);
}

/// A PostgreSQL store on a fresh database with topic "t" and a producer of it, whose
/// partitions a pass made known to reach ahead, as a one-trip group needs.
async fn postgres_with_a_producer(url: &str) -> (PgConnectOptions, PostgresStore, u64) {
    let options = fresh_database(url).await;
    let store = PostgresStore::open(options.clone(), 8, manual_passes())
        .await
        .unwrap();
    let producer = store.register_producer("t").await.unwrap();
    store.retention_pass(now()).await.unwrap();
    (options, store, producer)
}

#[tokio::test]
async fn postgres_a_group_planned_from_changed_state_is_stored_the_ordinary_way() {
    let Some(url) = test_database_url() else {
        return;
    };
    let (options, store, producer) = postgres_with_a_producer(&url).await;
    let behind_its_back = async || {
        let mut admin = PgConnection::connect_with(&options).await.unwrap();
        sqlx::raw_sql(
            "INSERT INTO messages (topic_id, log_offset, producer_id, stored_ms, payload) \
                 SELECT id, next_offset, 0, 0, 'x'::bytea FROM topics WHERE name = 't'; \
             UPDATE topics SET next_offset = next_offset + 1 WHERE name = 't';",
        )
        .execute(&mut admin)
        .await
        .unwrap();
    };
    a_group_planned_from_changed_state_is_stored_the_ordinary_way(
        &store,
        producer,
        || store.backend().known_state_groups(),
        behind_its_back,
    )
    .await;
    store.close().await;
}

/// PostgreSQL: the one-trip group checks the producer's row as well as the topic's. Here only
/// the producer's row changes (its recent batches, written again with a trailing space, which
/// reads the same): the third group writes nothing, and is stored the ordinary way, after "b".
#[tokio::test]
async fn postgres_a_group_whose_producer_row_changed_is_stored_the_ordinary_way() {
    let Some(url) = test_database_url() else {
        return;
    };
    let (options, store, producer) = postgres_with_a_producer(&url).await;
    for (sequence, payload) in [(0, "a"), (1, "b")] {
        let appended = store.append(append(producer, "t", &[payload], Some(sequence)));
        assert_eq!(appended.await.unwrap().base_offset, sequence);
    }
    assert_eq!(store.backend().known_state_groups(), (1, 0));

    let mut admin = PgConnection::connect_with(&options).await.unwrap();
    sqlx::query("UPDATE producers SET recent_batches = recent_batches || ' ' WHERE id = $1")
        .bind(producer as i64)
        .execute(&mut admin)
        .await
        .unwrap();
    let third = store.append(append(producer, "t", &["c"], Some(2)));
    let third = third.await.unwrap();
    assert_eq!(
        store.backend().known_state_groups(),
        (1, 1),
        "found it changed"
    );
    assert_eq!((third.base_offset, third.duplicate), (2, false));
    let retried = store.append(append(producer, "t", &["c"], Some(2)));
    let retried = retried.await.unwrap();
    assert_eq!((retried.base_offset, retried.duplicate), (2, true));

    let c = store.register_consumer("t", None, Beginning).await.unwrap();
    let stored = store.fetch(c, "t", Some(0), messages(10)).await.unwrap();
    let payloads: Vec<&str> = stored.messages.iter().map(|m| m.payload.as_str()).collect();
    assert_eq!(payloads, ["a", "b", "c"]);
    store.close().await;
}

#[tokio::test]
async fn sqlite_a_group_planned_from_changed_state_is_stored_the_ordinary_way() {
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
    broker::store::sqlite_config::configure_once();
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), manual_passes())
        .await
        .unwrap();
    let producer = store.register_producer("t").await.unwrap();
    let file = dir.path().join("myqueue.sqlite3");
    let behind_its_back = async || {
        let raw = SqlitePool::connect_with(SqliteConnectOptions::new().filename(&file))
            .await
            .unwrap();
        sqlx::raw_sql(
            "INSERT INTO messages_1_0 (log_offset, producer_id, stored_ms, payload) \
                 SELECT next_offset, 0, 0, 'x' FROM topics WHERE name = 't'; \
             UPDATE topics SET next_offset = next_offset + 1 WHERE name = 't';",
        )
        .execute(&raw)
        .await
        .unwrap();
        raw.close().await;
    };
    a_group_planned_from_changed_state_is_stored_the_ordinary_way(
        &store,
        producer,
        || store.backend().known_state_groups(),
        behind_its_back,
    )
    .await;
    store.close().await;
}
