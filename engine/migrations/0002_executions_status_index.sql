-- Slipstream event store, Postgres, version 2. Postgres has had this index since version 1; this
-- migration keeps the version numbers of the two dialects in step (SQLite gets the index in its 0002),
-- so that "schema version N" means the same tables and indexes on both.

CREATE INDEX IF NOT EXISTS executions_status_newest ON executions (status, created_at DESC, execution_id DESC);
