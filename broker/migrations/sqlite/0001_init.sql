-- myqueue schema for the embedded SQLite store. Timestamps are milliseconds since the Unix
-- epoch, set by the broker. AUTOINCREMENT: ids are never reused, so a stale id can never
-- name somebody else's producer or consumer.

CREATE TABLE topics (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL UNIQUE,
    -- The offset the next message gets; the topic's size without counting its log.
    next_offset INTEGER NOT NULL DEFAULT 0,
    created_ms  INTEGER NOT NULL
);

CREATE TABLE producers (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    topic_id         INTEGER NOT NULL REFERENCES topics (id),
    -- Idempotent batches: the sequence number the next batch must carry, and where the last
    -- batch went (to answer its retries without storing it twice).
    next_sequence    INTEGER NOT NULL DEFAULT 0,
    last_base_offset INTEGER NOT NULL DEFAULT 0,
    last_count       INTEGER NOT NULL DEFAULT 0,
    created_ms       INTEGER NOT NULL
);

CREATE TABLE consumers (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    topic_id   INTEGER NOT NULL REFERENCES topics (id),
    -- NULL for an anonymous consumer; a name makes the registration durable.
    group_name TEXT,
    -- The next offset this consumer consumes.
    position   INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL,
    UNIQUE (topic_id, group_name)
);

CREATE TABLE messages (
    topic_id    INTEGER NOT NULL,
    log_offset  INTEGER NOT NULL,
    producer_id INTEGER NOT NULL,
    stored_ms   INTEGER NOT NULL,
    payload     TEXT    NOT NULL,
    PRIMARY KEY (topic_id, log_offset)
);
