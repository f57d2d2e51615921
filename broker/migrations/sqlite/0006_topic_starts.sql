-- A topic's start in a table of its own, as on PostgreSQL (see its migration 0004: there,
-- appends lock a topic's row for the length of their transaction, and a retention pass that
-- moved the start on that row waited behind them). The statements both stores share read the
-- start from here.
CREATE TABLE topic_starts (
    topic_id     INTEGER PRIMARY KEY REFERENCES topics (id) ON DELETE CASCADE,
    start_offset INTEGER NOT NULL DEFAULT 0,
    start_bytes  INTEGER NOT NULL DEFAULT 0
);

INSERT INTO topic_starts (topic_id, start_offset, start_bytes)
SELECT id, start_offset, start_bytes FROM topics;

ALTER TABLE topics DROP COLUMN start_offset;
ALTER TABLE topics DROP COLUMN start_bytes;

CREATE TRIGGER topic_start AFTER INSERT ON topics
BEGIN
    INSERT INTO topic_starts (topic_id) VALUES (NEW.id);
END;
