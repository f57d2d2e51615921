-- A producer may keep several batches in flight: the broker remembers its most recent
-- batches (a JSON array of [sequence, count, base_offset], oldest first) to recognise a retry
-- of any of them. Empty in rows written before: their last batch (last_base_offset,
-- last_count) is the only one known.
ALTER TABLE producers ADD COLUMN recent_batches TEXT NOT NULL DEFAULT '';
