-- Slipstream event store, SQLite, version 2: the status index that 0001_events.sql gives Postgres,
-- for list_executions(status=...) newest first. Applied to databases made by version 1 as well.

CREATE INDEX executions_status_newest ON executions (status, created_at DESC, execution_id DESC);
