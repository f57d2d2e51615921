//! What a store can refuse or fail with, and the wire code each maps to.

use myqueue_wire::ErrorCode;
use std::sync::Arc;

const SQLITE_IOERR: i32 = 10;
const SQLITE_FULL: i32 = 13;
const PG_DISK_FULL: &str = "53100";
const PG_IO_ERROR: &str = "58030";

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    #[error("topic '{0}' does not exist")]
    TopicNotFound(String),
    #[error("producer {0} does not exist")]
    ProducerNotFound(u64),
    #[error("consumer {0} does not exist")]
    ConsumerNotFound(u64),
    #[error("{role} {id} is registered to topic '{registered}', not '{requested}'")]
    WrongTopic {
        role: &'static str,
        id: u64,
        registered: String,
        requested: String,
    },
    #[error(
        "producer {producer_id} sent sequence {got}, but the broker expects {expected} \
         (or a retry of one of its last {} batches): a batch before it is missing, or the \
         producer lost track and must register again",
        super::sequence::RECENT_BATCHES
    )]
    SequenceMismatch {
        producer_id: u64,
        expected: u64,
        got: u64,
    },
    #[error("offset {offset} is past the end of topic '{topic}' (its end is {end})")]
    OffsetOutOfRange {
        topic: String,
        offset: u64,
        end: u64,
    },
    /// The database is down, overloaded or refused the work: the same request may succeed
    /// later (503). The `Arc` lets one failed group commit answer all its requests.
    #[error("storage unavailable: {0}")]
    Unavailable(#[source] Arc<sqlx::Error>),
    /// A stored value that does not fit its column or type: the broker's bug, or a database
    /// edited by hand. Sending the request again would not help (500).
    #[error("stored data cannot be read: {0}")]
    Undecodable(#[source] Arc<sqlx::Error>),
    /// A bug, such as a group commit that panicked (500).
    #[error("internal error: {0}")]
    Internal(String),
    #[error("the broker is shutting down")]
    ShuttingDown,
    /// The store answers but cannot write: the last append failed for lack of disk space or
    /// with an I/O error, and none has succeeded since (`GET /healthz`, 503).
    #[error("the store cannot write: {0}")]
    Unwritable(#[source] Arc<sqlx::Error>),
}

impl StoreError {
    pub fn code(&self) -> ErrorCode {
        match self {
            StoreError::TopicExists(_) => ErrorCode::TopicExists,
            StoreError::TopicNotFound(_) => ErrorCode::TopicNotFound,
            StoreError::ProducerNotFound(_) => ErrorCode::ProducerNotFound,
            StoreError::ConsumerNotFound(_) => ErrorCode::ConsumerNotFound,
            StoreError::WrongTopic { .. } => ErrorCode::WrongTopic,
            StoreError::SequenceMismatch { .. } => ErrorCode::SequenceMismatch,
            StoreError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            StoreError::Unavailable(_) => ErrorCode::StorageUnavailable,
            StoreError::Undecodable(_) | StoreError::Internal(_) => ErrorCode::Internal,
            StoreError::ShuttingDown => ErrorCode::ShuttingDown,
            StoreError::Unwritable(_) => ErrorCode::StoreUnwritable,
        }
    }
}

impl StoreError {
    /// A foreign key refused a row: its topic was deleted meanwhile (by another broker).
    pub fn is_foreign_key_violation(&self) -> bool {
        match self {
            StoreError::Unavailable(err) => err
                .as_database_error()
                .is_some_and(|db| db.is_foreign_key_violation()),
            _ => false,
        }
    }

    /// The database's disk is full or failing (SQLite's `SQLITE_FULL` and `SQLITE_IOERR`
    /// families, PostgreSQL's `disk_full` and `io_error`): the cause, if so.
    pub fn disk_failure(&self) -> Option<Arc<sqlx::Error>> {
        let StoreError::Unavailable(err) = self else {
            return None;
        };
        let db = err.as_database_error()?;
        let code = db.code()?;
        let disk = if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
            // The extended result code, whose low byte is the primary one.
            code.parse::<i32>()
                .is_ok_and(|extended| matches!(extended & 0xff, SQLITE_IOERR | SQLITE_FULL))
        } else {
            matches!(&*code, PG_DISK_FULL | PG_IO_ERROR)
        };
        disk.then(|| err.clone())
    }

    /// A statement gave up waiting for a lock (PostgreSQL: `lock_timeout`, or chosen to end
    /// a deadlock), so that another may go on: worth trying again later.
    pub fn is_lock_wait_given_up(&self) -> bool {
        match self {
            StoreError::Unavailable(err) => err
                .as_database_error()
                .and_then(|db| db.code())
                .is_some_and(|code| code == "55P03" || code == "40P01"),
            _ => false,
        }
    }

    /// A guessed append group met what its guess did not foresee (PostgreSQL,
    /// [`super::guess`]): rows already at its offsets (another broker's), a lock it gave up
    /// waiting for, or no partition for a row. It starts again the ordinary way.
    pub fn refutes_guess(&self) -> bool {
        let unique = match self {
            StoreError::Unavailable(err) => err
                .as_database_error()
                .is_some_and(|db| db.is_unique_violation()),
            _ => false,
        };
        unique || self.is_lock_wait_given_up() || self.is_missing_partition()
    }

    /// A row found no partition to go to (PostgreSQL): the partitions made ahead did not
    /// reach far enough.
    pub fn is_missing_partition(&self) -> bool {
        match self {
            // A CHECK constraint names itself; routing a row to no partition names none.
            StoreError::Unavailable(err) => err
                .as_database_error()
                .is_some_and(|db| db.is_check_violation() && db.constraint().is_none()),
            _ => false,
        }
    }
}

/// Errors compare by what they say: a test can expect an exact refusal, and two storage
/// failures with the same text are the same failure.
impl PartialEq for StoreError {
    fn eq(&self, other: &Self) -> bool {
        self.code() == other.code() && self.to_string() == other.to_string()
    }
}

impl Eq for StoreError {}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        use sqlx::Error::*;
        match err {
            ColumnDecode { .. }
            | ColumnNotFound(_)
            | ColumnIndexOutOfBounds { .. }
            | Decode(_)
            | Encode(_)
            | TypeNotFound { .. } => StoreError::Undecodable(Arc::new(err)),
            // Everything else means the database is down, overloaded or broken (constraint
            // violations are handled where they can happen): it may succeed later.
            err => StoreError::Unavailable(Arc::new(err)),
        }
    }
}

/// Why a durable store could not be opened at start-up.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The data directory's lock: another broker has it, or the lock file is unusable.
    #[error(transparent)]
    Lock(#[from] super::dir_lock::LockError),
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("cannot bring the database schema up to date: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// SQLite: moving the messages of an older data directory into tables per topic failed
    /// (e.g. a full disk); the next start goes on where it stopped.
    #[error("cannot move the SQLite messages into a table per topic: {0}")]
    SplitByTopic(#[source] sqlx::Error),
}
