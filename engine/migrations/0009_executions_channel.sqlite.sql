-- Slipstream event store, SQLite, version 9: nothing to do. The Postgres store gained a NOTIFY
-- channel for execution creations and status changes (SQLite wakes its waiters in-process and by
-- polling PRAGMA data_version).
SELECT 1;
