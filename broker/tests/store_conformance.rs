//! The conformance suite: every case runs against every store (memory, SQLite, PostgreSQL),
//! so the three keep the same promises.
//!
//! PostgreSQL cases use the server named by `TEST_DATABASE_URL`, each in a fresh database.
//! Without it they are skipped with a line saying so, except under `CI=true`, where a
//! missing database fails the run.

use broker::store::ConsumerStart::{Beginning, End};
use broker::store::memory::MemoryStore;
use broker::store::postgres::PostgresStore;
use broker::store::sqlite::SqliteStore;
use broker::store::{Append, Appended, FetchLimit, SeekTo, Store, StoreError};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use std::collections::HashSet;
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

impl Harness {
    async fn memory() -> Option<Harness> {
        Some(Harness {
            store: Arc::new(MemoryStore::new()),
            reopen: Reopen::Never,
            _dir: None,
        })
    }

    async fn sqlite() -> Option<Harness> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        Some(Harness {
            store: Arc::new(SqliteStore::open(&path).await.unwrap()),
            reopen: Reopen::Sqlite(path),
            _dir: Some(dir),
        })
    }

    async fn postgres() -> Option<Harness> {
        let Ok(url) = std::env::var("TEST_DATABASE_URL") else {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI=true but TEST_DATABASE_URL is unset: the PostgreSQL cases cannot run");
            }
            eprintln!("skipping the PostgreSQL case: TEST_DATABASE_URL is unset");
            return None;
        };
        let options = fresh_database(&url).await;
        Some(Harness {
            store: Arc::new(PostgresStore::open(options.clone(), 8).await.unwrap()),
            reopen: Reopen::Postgres(Box::new(options)),
            _dir: None,
        })
    }

    /// Closes the store and opens it again on the same data: a broker restart.
    async fn restart(&mut self) -> bool {
        let store = match &self.reopen {
            Reopen::Never => return false,
            Reopen::Sqlite(path) => {
                self.store.close().await;
                Arc::new(SqliteStore::open(path).await.unwrap()) as Arc<dyn Store>
            }
            Reopen::Postgres(options) => {
                self.store.close().await;
                Arc::new(PostgresStore::open((**options).clone(), 8).await.unwrap())
            }
        };
        self.store = store;
        true
    }
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
    s.create_topic("b").await.unwrap();
    s.create_topic("a").await.unwrap();
    assert_eq!(
        s.create_topic("a").await,
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
    s.create_topic("empty").await.unwrap();
    let e = s.register_consumer("empty", None, End).await.unwrap();
    assert_eq!(s.size(e, "empty").await.unwrap(), 0);
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
    fetch_reads_without_moving_and_commit_moves,
    a_fetch_stops_at_its_byte_budget_but_always_returns_one_message,
    a_group_name_keeps_one_position,
    a_consumer_may_start_at_the_end_and_a_group_keeps_its_position,
    concurrent_consumes_with_one_id_never_repeat_or_skip,
    concurrent_consumers_of_one_topic_each_get_every_message,
    concurrent_producers_lose_nothing_and_keep_their_order,
    concurrent_mixed_appends_get_the_offsets_they_are_stored_at,
    a_restart_keeps_messages_positions_and_sequences,
    an_append_wakes_waiters_on_its_topic,
    empty_and_unicode_messages_are_kept_exactly,
);
