-- Slipstream event store, SQLite, version 11: nothing to do. Postgres serving processes beat in
-- slipstream_members so that a silent one's leases are freed (SQLite's lease is a file lock,
-- which dies with its process).
SELECT 1;
