-- Retention (see broker/src/store/retention.rs and docs/DESIGN.md, "Retention").
--
-- Each topic's log has a start (the oldest offset kept) and byte counts (payload + 64 per
-- message: appended before the start, and before the end), and retention settings of its own
-- (NULL: the broker's default). Chunks cut the log for retention.
--
-- Messages are partitioned twice: by LIST on the topic, then by RANGE on the offset. Retention
-- drops a topic's partitions once they lie wholly below its start: no DELETE, no VACUUM, and
-- the files of what was dropped are gone at commit. Partitions are made ahead of the appends
-- by the retention pass, each about a chunk long (an eighth of the retention), and on demand
-- by an append that finds none. Partitions are made by CREATE TABLE + ATTACH PARTITION, which
-- locks the parent only in SHARE UPDATE EXCLUSIVE mode (appends and reads go on); dropping one
-- locks its topic's table briefly (and gives up after lock_timeout, to try again later).
--
-- Every statement here that names a table it builds does so from numbers (topic ids,
-- offsets) through format('%I'): the broker itself only calls these functions with bound
-- parameters.

ALTER TABLE topics
    ADD COLUMN start_offset    BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN start_bytes     BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN end_bytes       BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN newest_ms       BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN retention_ms    BIGINT CHECK (retention_ms > 0),
    ADD COLUMN retention_bytes BIGINT CHECK (retention_bytes > 0);

-- Offsets first_offset..end_offset, bytes first_bytes..end_bytes of the topic's count, begun
-- after opened_ms, newest message stored at newest_ms.
CREATE TABLE chunks (
    topic_id     BIGINT NOT NULL,
    first_offset BIGINT NOT NULL,
    end_offset   BIGINT NOT NULL,
    first_bytes  BIGINT NOT NULL,
    end_bytes    BIGINT NOT NULL,
    opened_ms    BIGINT NOT NULL,
    newest_ms    BIGINT NOT NULL,
    PRIMARY KEY (topic_id, first_offset)
);

-- Topics deleted whose partitions are not dropped yet.
CREATE TABLE dropped_topics (
    topic_id   BIGINT PRIMARY KEY,
    dropped_ms BIGINT NOT NULL
);

-- The range partitions that exist: messages_t<topic>_<first_offset>, in messages_t<topic>.
CREATE TABLE message_partitions (
    topic_id     BIGINT NOT NULL,
    first_offset BIGINT NOT NULL,
    end_offset   BIGINT NOT NULL,
    PRIMARY KEY (topic_id, first_offset)
);

ALTER TABLE messages RENAME TO messages_unpartitioned;
ALTER INDEX messages_pkey RENAME TO messages_unpartitioned_pkey;

CREATE TABLE messages (
    topic_id    BIGINT NOT NULL,
    log_offset  BIGINT NOT NULL,
    producer_id BIGINT NOT NULL,
    stored_ms   BIGINT NOT NULL,
    payload     BYTEA  NOT NULL,
    PRIMARY KEY (topic_id, log_offset)
) PARTITION BY LIST (topic_id);

-- Serialises the partition changes of one topic (appends and reads never take it), so that
-- making and dropping partitions never race and never deadlock with each other.
CREATE FUNCTION myqueue_lock_partitions(topic BIGINT) RETURNS void
LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock(1836675441, (topic % 2147483647)::integer)
$$;

-- The topic's own partitioned table, in messages.
CREATE FUNCTION myqueue_add_topic_partition(topic BIGINT) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    parent TEXT := 'messages_t' || topic;
BEGIN
    EXECUTE format('CREATE TABLE %I (LIKE messages INCLUDING DEFAULTS) '
                   'PARTITION BY RANGE (log_offset)', parent);
    EXECUTE format('ALTER TABLE messages ATTACH PARTITION %I FOR VALUES IN (%s)', parent, topic);
END $$;

-- A partition for offsets lo..hi of the topic.
CREATE FUNCTION myqueue_add_partition(topic BIGINT, lo BIGINT, hi BIGINT) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    parent TEXT := 'messages_t' || topic;
    leaf   TEXT := 'messages_t' || topic || '_' || lo;
BEGIN
    EXECUTE format('CREATE TABLE %I (LIKE messages INCLUDING DEFAULTS)', leaf);
    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%s) TO (%s)',
                   parent, leaf, lo, hi);
    INSERT INTO message_partitions (topic_id, first_offset, end_offset) VALUES (topic, lo, hi);
END $$;

-- Makes partitions of `span` offsets until they reach `up_to`. A span of 0 makes one
-- partition that reaches it (at least as long as the last one): for an append that found no
-- partition. Answers how many it made.
CREATE FUNCTION myqueue_cover_partitions(topic BIGINT, up_to BIGINT, span BIGINT) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    reached   BIGINT;
    last_span BIGINT;
    made      INTEGER := 0;
BEGIN
    PERFORM myqueue_lock_partitions(topic);
    IF NOT EXISTS (SELECT 1 FROM topics WHERE id = topic) THEN
        RETURN 0;
    END IF;
    SELECT end_offset, end_offset - first_offset INTO reached, last_span
        FROM message_partitions WHERE topic_id = topic ORDER BY first_offset DESC LIMIT 1;
    reached := coalesce(reached, 0);
    IF span <= 0 THEN
        span := greatest(up_to - reached, coalesce(last_span, 1));
    END IF;
    WHILE reached < up_to LOOP
        PERFORM myqueue_add_partition(topic, reached, reached + span);
        reached := reached + span;
        made := made + 1;
    END LOOP;
    RETURN made;
END $$;

-- Drops the partitions of the topic that lie wholly below `below`, its start (its messages
-- there are no longer readable). Answers how many it dropped.
CREATE FUNCTION myqueue_drop_partitions_below(topic BIGINT, below BIGINT) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    p       RECORD;
    dropped INTEGER := 0;
BEGIN
    PERFORM myqueue_lock_partitions(topic);
    -- A drop waits for the statements reading the topic's table, and holds up those that
    -- come after it: it gives up rather than wait long, and the next pass tries again.
    PERFORM set_config('lock_timeout', '2s', true);
    FOR p IN SELECT first_offset FROM message_partitions
             WHERE topic_id = topic AND end_offset <= below ORDER BY first_offset LOOP
        EXECUTE format('DROP TABLE IF EXISTS %I', 'messages_t' || topic || '_' || p.first_offset);
        DELETE FROM message_partitions WHERE topic_id = topic AND first_offset = p.first_offset;
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END $$;

-- Drops everything a deleted topic stored.
CREATE FUNCTION myqueue_drop_topic_partitions(topic BIGINT) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM myqueue_lock_partitions(topic);
    PERFORM set_config('lock_timeout', '2s', true);
    EXECUTE format('DROP TABLE IF EXISTS %I', 'messages_t' || topic);
    DELETE FROM message_partitions WHERE topic_id = topic;
END $$;

-- The messages stored before this migration, into partitions of their topics: up to 16 per
-- topic for them (each a chunk, with its exact size), then room for what comes.
DO $$
DECLARE
    t    RECORD;
    span BIGINT;
    lo   BIGINT;
BEGIN
    FOR t IN SELECT id, next_offset FROM topics ORDER BY id LOOP
        PERFORM myqueue_add_topic_partition(t.id);
        span := greatest((t.next_offset + 15) / 16, 4096);
        lo := 0;
        WHILE lo <= t.next_offset LOOP
            PERFORM myqueue_add_partition(t.id, lo, lo + span);
            lo := lo + span;
        END LOOP;
    END LOOP;
END $$;

INSERT INTO messages (topic_id, log_offset, producer_id, stored_ms, payload)
SELECT topic_id, log_offset, producer_id, stored_ms, payload FROM messages_unpartitioned;

INSERT INTO chunks (topic_id, first_offset, end_offset, first_bytes, end_bytes, opened_ms, newest_ms)
SELECT topic_id, min(log_offset), max(log_offset) + 1, min(upto - bytes), max(upto),
       min(stored_ms), max(stored_ms)
FROM (
    SELECT m.topic_id, m.log_offset, m.stored_ms,
           octet_length(m.payload) + 64 AS bytes,
           sum(octet_length(m.payload) + 64)
               OVER (PARTITION BY m.topic_id ORDER BY m.log_offset) AS upto,
           m.log_offset / greatest((t.next_offset + 15) / 16, 4096) AS bucket
    FROM messages_unpartitioned m JOIN topics t ON t.id = m.topic_id
) sized
GROUP BY topic_id, bucket;

UPDATE topics t SET end_bytes = c.end_bytes, newest_ms = c.newest_ms
FROM (SELECT topic_id, max(end_bytes) AS end_bytes, max(newest_ms) AS newest_ms
      FROM chunks GROUP BY topic_id) c
WHERE t.id = c.topic_id;

DROP TABLE messages_unpartitioned;

-- Every new topic gets its partitioned table and a first partition in the transaction that
-- creates it.
CREATE FUNCTION myqueue_topic_created() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM myqueue_lock_partitions(NEW.id);
    PERFORM myqueue_add_topic_partition(NEW.id);
    PERFORM myqueue_add_partition(NEW.id, 0, 4096);
    RETURN NULL;
END $$;

CREATE TRIGGER topic_partitions AFTER INSERT ON topics
    FOR EACH ROW EXECUTE FUNCTION myqueue_topic_created();
