-- Slipstream event store, SQLite, version 4: nothing to do. The Postgres store gained a server-side
-- append function (one round trip per append); SQLite appends run in the process already.
SELECT 1;
