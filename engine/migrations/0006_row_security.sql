-- Slipstream event store, Postgres, version 6: tenancy enforced by Postgres itself (DESIGN 11).
--
-- Row-level security on `events` and `executions`, keyed on `slipstream_grants` (role -> project,
-- and a domain or '' for all of them; project '*' is every project). A role listed there (granted
-- with `slipstream admin grant`) sees, inserts and moves only the rows of its projects, whatever
-- SQL it sends. Table owners (the role that ran the migrations: `slipstream serve`, the relay)
-- and superusers are not subject to row security, so their path costs nothing more; a role that
-- is neither and has no grant sees no row at all.
--
-- An event row carries no project: it belongs to the project of its execution's `executions` row.
-- Reading one needs that row to be visible (the policy's subquery runs under the executions
-- policy). Appending one needs either that row to be granted, or no row at all (a new execution:
-- slipstream_append writes its events before its row, in the same transaction, and the row itself
-- must then pass the executions policy). The second test looks past row security, through a
-- SECURITY DEFINER function, so that an execution the tenant cannot see still counts as existing;
-- a deferred trigger then refuses, at commit, events left without their execution's row.
-- Policies name tables by OID once created, and the functions qualify every name, so neither can
-- be pointed at a look-alike table or operator.

CREATE TABLE IF NOT EXISTS slipstream_grants (
    role       name        NOT NULL,
    project    text        NOT NULL,
    domain     text        NOT NULL DEFAULT '',
    granted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (role, project, domain)
);
ALTER TABLE slipstream_grants ENABLE ROW LEVEL SECURITY;
DO $do$ BEGIN
    -- the catalog's migrations create the same table and policy when they share this schema
    IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE schemaname = current_schema()
                   AND tablename = 'slipstream_grants' AND policyname = 'grants_own') THEN
        CREATE POLICY grants_own ON slipstream_grants FOR SELECT USING (role = current_user);
    END IF;
END $do$;

ALTER TABLE executions ENABLE ROW LEVEL SECURITY;
CREATE POLICY executions_tenant ON executions
    USING (EXISTS (SELECT 1 FROM slipstream_grants g WHERE g.role = current_user
                   AND g.project IN ('*', executions.project) AND g.domain IN ('', executions.domain)))
    WITH CHECK (EXISTS (SELECT 1 FROM slipstream_grants g WHERE g.role = current_user
                        AND g.project IN ('*', executions.project) AND g.domain IN ('', executions.domain)));

-- The SECURITY DEFINER functions below name every table with its schema and every operator as
-- OPERATOR(pg_catalog.=), instead of pinning search_path with a SET clause: a caller's search_path
-- (a look-alike table in pg_temp, an operator in a schema of its own) cannot reach them, and a SET
-- clause would cost a search_path change on each call, once per appended event. They take one
-- argument: a second one made each call cost ~300 us instead of ~5 us on Postgres 15 (measured).
DO $do$ BEGIN
    EXECUTE format($fn$
        CREATE FUNCTION %1$I.slipstream_execution_is_new(target text) RETURNS boolean
        LANGUAGE plpgsql STABLE SECURITY DEFINER AS $body$
        BEGIN
            PERFORM FROM %1$I.executions x WHERE x.execution_id OPERATOR(pg_catalog.=) target;
            RETURN NOT FOUND;
        END;
        $body$
    $fn$, current_schema());
END $do$;

ALTER TABLE events ENABLE ROW LEVEL SECURITY;
-- The first clause: slipstream_append's INSERT ... RETURNING must see the events it has just
-- written, before the execution's row exists (only the writing transaction has that xid).
CREATE POLICY events_tenant_read ON events FOR SELECT
    USING (xid = pg_current_xact_id_if_assigned()
           OR EXISTS (SELECT 1 FROM executions x WHERE x.execution_id = events.execution_id));
-- Appending: to an execution whose row the role sees (the executions policy: a granted project),
-- or to one that has no row in any project yet (a new one; its row must then pass that policy).
CREATE POLICY events_tenant_append ON events FOR INSERT
    WITH CHECK (EXISTS (SELECT 1 FROM executions x WHERE x.execution_id = events.execution_id)
                OR slipstream_execution_is_new(execution_id));

-- Events of a new execution must come with its row, in the same transaction: checked at commit,
-- so that a role cannot leave events that belong to no project. The tables' owner (the role that
-- runs this migration: the append path of `slipstream serve`) is trusted and skips the check, at
-- the cost of one comparison per row.
DO $do$ BEGIN
    EXECUTE format($fn$
        CREATE FUNCTION %1$I.slipstream_events_have_execution() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER AS $body$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM %1$I.executions x
                           WHERE x.execution_id OPERATOR(pg_catalog.=) NEW.execution_id) THEN
                RAISE EXCEPTION 'event %% of execution %% has no executions row', NEW.version, NEW.execution_id
                    USING ERRCODE = 'insufficient_privilege',
                          HINT = 'append through slipstream_append, which writes both in one transaction';
            END IF;
            RETURN NULL;
        END;
        $body$
    $fn$, current_schema());
    EXECUTE format($tr$
        CREATE CONSTRAINT TRIGGER events_have_execution AFTER INSERT ON events
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (current_user <> %L)
            EXECUTE FUNCTION slipstream_events_have_execution()
    $tr$, current_user);
END $do$;
