-- Slipstream event store, SQLite, version 5 (same columns as 0005_event_checksums.sql).
--
-- events.checksum chains each event to the one before it in its execution (engine/_chain.py):
-- sha256 over the previous checksum (a seed of the execution id for version 1), the version,
-- attempt, kind, node and payload. Events written before this migration keep NULL: unchained
-- legacy events, accepted only before an execution's first chained event.
--
-- The executions projection may only be changed by the store's own writes: the store registers
-- slipstream_writer() on its connection, true only while it writes the projection. Any other
-- connection (the sqlite3 shell, a script) lacks the function, so its UPDATE or DELETE fails.
-- Rebuild the projection from the log with `slipstream admin rebuild-projections` instead.

ALTER TABLE events ADD COLUMN checksum BLOB;

CREATE TRIGGER executions_no_update BEFORE UPDATE ON executions WHEN NOT slipstream_writer()
BEGIN
    SELECT RAISE(ABORT, 'the slipstream executions projection is derived from the events log: rebuild it with `slipstream admin rebuild-projections` instead of updating it');
END;

CREATE TRIGGER executions_no_delete BEFORE DELETE ON executions WHEN NOT slipstream_writer()
BEGIN
    SELECT RAISE(ABORT, 'the slipstream executions projection is derived from the events log: rebuild it with `slipstream admin rebuild-projections` instead of deleting from it');
END;
