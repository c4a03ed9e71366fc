-- Slipstream event store, Postgres, version 1.
-- Applied by engine._postgres_store inside one transaction, with search_path set to the store's schema.

CREATE TABLE events (
    seq          bigserial   PRIMARY KEY,
    execution_id text        NOT NULL,
    version      integer     NOT NULL,
    kind         text        NOT NULL,
    node_id      text        NOT NULL DEFAULT '',
    attempt      integer     NOT NULL DEFAULT 0,
    payload      bytea       NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    -- the writing transaction: read_all only returns rows below pg_snapshot_xmin (commit-safe tailing)
    xid          xid8        NOT NULL DEFAULT pg_current_xact_id(),
    CONSTRAINT events_execution_version_key UNIQUE (execution_id, version)
);

-- The log is append-only: history is never rewritten, not even by an operator by mistake.
CREATE FUNCTION slipstream_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'slipstream events are append-only: % on table events is not allowed', TG_OP
        USING ERRCODE = 'restrict_violation',
              HINT = 'append a new event instead of changing or removing recorded ones';
END;
$$;

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    FOR EACH ROW EXECUTE FUNCTION slipstream_events_append_only();
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION slipstream_events_append_only();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION slipstream_events_append_only();

-- Derived projection for listing; rebuilt from events if ever lost. Kept in the append transaction.
CREATE TABLE executions (
    execution_id text        PRIMARY KEY,
    project      text        NOT NULL,
    domain       text        NOT NULL,
    workflow     text        NOT NULL,
    status       text        NOT NULL,
    version      integer     NOT NULL,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    parent       text
);

CREATE INDEX executions_newest ON executions (created_at DESC, execution_id DESC);
CREATE INDEX executions_scope_newest ON executions (project, domain, created_at DESC, execution_id DESC);
CREATE INDEX executions_status_newest ON executions (status, created_at DESC, execution_id DESC);
