-- Each topic's messages live in segment tables, `messages_<topic id>_<first offset>` (see
-- broker/src/store/sqlite_segments.rs); the broker renames the `messages_<topic id>` tables of
-- earlier versions to `messages_<topic id>_0` at start (table names come from topic ids, which
-- a migration cannot build). This migration only marks the layout, so that an older broker,
-- which does not know it, refuses the data directory (sqlx: a migration applied that it does
-- not have) instead of failing every read and appending to a table of the old layout.
SELECT 1;
