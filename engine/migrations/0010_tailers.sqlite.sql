-- Slipstream event store, SQLite, version 10: nothing to do. The Postgres store notifies
-- slipstream_events only while a session tails the log (SQLite wakes its waiters in-process and
-- by polling PRAGMA data_version).
SELECT 1;
