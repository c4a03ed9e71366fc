-- Slipstream event store, SQLite, version 3 (same shape as 0003_cursors.sql): durable cursors of
-- tailing readers, one row per reader name; updated_at is integer microseconds (UTC).

CREATE TABLE cursors (
    name       TEXT    PRIMARY KEY,
    seq        INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
