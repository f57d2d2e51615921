-- Retention (see broker/src/store/retention.rs): each topic's log has a start (the oldest
-- offset kept) and byte counts (payload + 64 per message: appended before the start, and
-- before the end), and retention settings of its own (NULL: the broker's default). Chunks
-- cut the log for retention; a deleted topic's messages are freed in the background.

ALTER TABLE topics ADD COLUMN start_offset INTEGER NOT NULL DEFAULT 0;
ALTER TABLE topics ADD COLUMN start_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE topics ADD COLUMN end_bytes INTEGER NOT NULL DEFAULT 0;
-- When the newest message was stored.
ALTER TABLE topics ADD COLUMN newest_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE topics ADD COLUMN retention_ms INTEGER CHECK (retention_ms > 0);
ALTER TABLE topics ADD COLUMN retention_bytes INTEGER CHECK (retention_bytes > 0);

-- Offsets first_offset..end_offset, bytes first_bytes..end_bytes of the topic's count, begun
-- after opened_ms, newest message stored at newest_ms.
CREATE TABLE chunks (
    topic_id     INTEGER NOT NULL,
    first_offset INTEGER NOT NULL,
    end_offset   INTEGER NOT NULL,
    first_bytes  INTEGER NOT NULL,
    end_bytes    INTEGER NOT NULL,
    opened_ms    INTEGER NOT NULL,
    newest_ms    INTEGER NOT NULL,
    PRIMARY KEY (topic_id, first_offset)
);

-- Topics deleted whose messages are not all freed yet.
CREATE TABLE dropped_topics (
    topic_id   INTEGER PRIMARY KEY,
    dropped_ms INTEGER NOT NULL
);

-- Messages stored before this migration: up to 16 chunks per topic, with their exact sizes.
INSERT INTO chunks (topic_id, first_offset, end_offset, first_bytes, end_bytes, opened_ms, newest_ms)
SELECT topic_id, min(log_offset), max(log_offset) + 1, min(upto - bytes), max(upto),
       min(stored_ms), max(stored_ms)
FROM (
    SELECT m.topic_id, m.log_offset, m.stored_ms,
           length(CAST(m.payload AS BLOB)) + 64 AS bytes,
           sum(length(CAST(m.payload AS BLOB)) + 64)
               OVER (PARTITION BY m.topic_id ORDER BY m.log_offset) AS upto,
           m.log_offset / ((t.next_offset + 15) / 16) AS bucket
    FROM messages m JOIN topics t ON t.id = m.topic_id
)
GROUP BY topic_id, bucket;

UPDATE topics SET
    end_bytes = coalesce((SELECT max(end_bytes) FROM chunks WHERE chunks.topic_id = topics.id), 0),
    newest_ms = coalesce((SELECT max(newest_ms) FROM chunks WHERE chunks.topic_id = topics.id), 0);
