-- no-transaction
-- Freed pages go back to the file system in steps (PRAGMA incremental_vacuum, run after
-- retention frees messages), so the database file shrinks when it holds less. A new database
-- is created this way (the connection sets auto_vacuum before the first table exists); an
-- older one needs this VACUUM, once: it rewrites the whole file, which takes about as long as
-- copying it and needs up to twice its size free on disk meanwhile.
PRAGMA auto_vacuum = INCREMENTAL;
VACUUM;
