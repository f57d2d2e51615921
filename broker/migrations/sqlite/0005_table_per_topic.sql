-- Each topic's messages live in a table of their own, `messages_<topic id>`, keyed by offset
-- (see broker/src/store/sqlite.rs). The broker makes those tables itself, and moves the
-- messages of the one `messages` table of earlier versions into them at start (table names
-- come from topic ids, which a migration cannot build): this migration only marks the layout,
-- so that an older broker, which does not know it, refuses the data directory (sqlx: a
-- migration applied that it does not have) instead of failing every read and write.
-- Migrations after this one must not name `messages`: it is gone once the broker has started.
SELECT 1;
