-- Slipstream event store, SQLite, version 7: nothing to do. The Postgres store gained a lean append
-- function for one existing execution (a server-side function; SQLite appends in-process).
SELECT 1;
