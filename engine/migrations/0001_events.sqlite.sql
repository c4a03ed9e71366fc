-- Slipstream event store, SQLite, version 1 (same shape as 0001_events.sql).
-- Applied by engine._sqlite_store inside BEGIN IMMEDIATE. Timestamps are integer microseconds (UTC).

CREATE TABLE events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    execution_id TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    kind         TEXT    NOT NULL,
    node_id      TEXT    NOT NULL DEFAULT '',
    attempt      INTEGER NOT NULL DEFAULT 0,
    payload      BLOB    NOT NULL,
    recorded_at  INTEGER NOT NULL,
    UNIQUE (execution_id, version)
);

-- The log is append-only: history is never rewritten.
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'slipstream events are append-only: UPDATE on table events is not allowed');
END;

CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'slipstream events are append-only: DELETE on table events is not allowed');
END;

CREATE TABLE executions (
    execution_id TEXT    PRIMARY KEY,
    project      TEXT    NOT NULL,
    domain       TEXT    NOT NULL,
    workflow     TEXT    NOT NULL,
    status       TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    parent       TEXT
);

CREATE INDEX executions_newest ON executions (created_at DESC, execution_id DESC);
CREATE INDEX executions_scope_newest ON executions (project, domain, created_at DESC, execution_id DESC);
