-- Retention at work beside a topic's appends, without waiting for them or stalling them.
--
-- A topic's start moves to a table of its own. Each append group locks its topic's row (for
-- the offsets it hands out) for as long as its transaction runs, hundreds of milliseconds for
-- a large group; a retention pass that moved the start on that row waited behind every group
-- in the queue, and the store outgrew its bound while it waited. Nothing else locks a start.
--
-- The table is locked first: the column drop below needs this lock, and taking it only then
-- could deadlock with an older broker's appends still running.
LOCK TABLE topics IN ACCESS EXCLUSIVE MODE;

CREATE TABLE topic_starts (
    topic_id     BIGINT PRIMARY KEY REFERENCES topics (id) ON DELETE CASCADE,
    start_offset BIGINT NOT NULL DEFAULT 0,
    start_bytes  BIGINT NOT NULL DEFAULT 0
);

INSERT INTO topic_starts (topic_id, start_offset, start_bytes)
SELECT id, start_offset, start_bytes FROM topics;

ALTER TABLE topics DROP COLUMN start_offset, DROP COLUMN start_bytes;

CREATE FUNCTION myqueue_topic_start_created() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO topic_starts (topic_id) VALUES (NEW.id);
    RETURN NULL;
END $$;

CREATE TRIGGER topic_start AFTER INSERT ON topics
    FOR EACH ROW EXECUTE FUNCTION myqueue_topic_start_created();

-- A partition below a topic's start is freed in two steps (broker/src/store/pg_partitions.rs):
-- TRUNCATE at once, which locks only that partition, then, in the background, DETACH
-- PARTITION CONCURRENTLY and DROP TABLE. A DROP of an attached partition locked the topic's
-- whole table and stalled its appends. `emptied`: truncated, still to drop.
ALTER TABLE message_partitions ADD COLUMN emptied BOOLEAN NOT NULL DEFAULT false;

-- Replaced by the two steps above.
DROP FUNCTION myqueue_drop_partitions_below(BIGINT, BIGINT);
