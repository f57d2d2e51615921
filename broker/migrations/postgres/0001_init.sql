-- myqueue schema for PostgreSQL. Timestamps are milliseconds since the Unix epoch, set by
-- the broker. Offsets come from topics.next_offset, updated in the appending transaction:
-- the row lock makes appends to one topic commit in offset order, so offsets are gap-free
-- and a reader never sees offset k+1 before k (a bigserial would not guarantee that).

CREATE TABLE topics (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        TEXT   NOT NULL UNIQUE,
    next_offset BIGINT NOT NULL DEFAULT 0,
    created_ms  BIGINT NOT NULL
);

CREATE TABLE producers (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic_id         BIGINT NOT NULL REFERENCES topics (id),
    next_sequence    BIGINT NOT NULL DEFAULT 0,
    last_base_offset BIGINT NOT NULL DEFAULT 0,
    last_count       BIGINT NOT NULL DEFAULT 0,
    created_ms       BIGINT NOT NULL
);

CREATE TABLE consumers (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic_id   BIGINT NOT NULL REFERENCES topics (id),
    group_name TEXT,
    position   BIGINT NOT NULL DEFAULT 0,
    created_ms BIGINT NOT NULL,
    UNIQUE (topic_id, group_name)
);

-- No foreign keys here: every row is written by the broker after it checked the producer,
-- and a foreign key check per row would cost an index probe per message.
CREATE TABLE messages (
    topic_id    BIGINT NOT NULL,
    log_offset  BIGINT NOT NULL,
    producer_id BIGINT NOT NULL,
    stored_ms   BIGINT NOT NULL,
    -- UTF-8 text, kept as bytes: PostgreSQL's text type cannot hold U+0000, which is valid
    -- in a message.
    payload     BYTEA  NOT NULL,
    PRIMARY KEY (topic_id, log_offset)
);
