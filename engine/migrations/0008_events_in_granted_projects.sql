-- Slipstream event store, Postgres, version 8: a tenant's events land only in its own projects.
--
-- Migration 0006's deferred trigger checked, at commit, only that the events' execution had some
-- `executions` row. A tenant could therefore insert events (at versions the real writer will not
-- reach) for an execution id that did not exist yet, keep its transaction open while another
-- project created that execution, and commit: its events then belonged to the other project.
-- At commit the execution's row must now be in a project (and domain) granted to the inserting
-- role. The function is SECURITY DEFINER, so current_user is the tables' owner inside it: the
-- inserting role is session_user (the role the tenant logged in as; the trigger's WHEN clause
-- already skips the owner). Names stay schema-qualified and operators pinned, as in 0006.

DO $do$ BEGIN
    EXECUTE format($fn$
        CREATE OR REPLACE FUNCTION %1$I.slipstream_events_have_execution() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER AS $body$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM %1$I.executions x
                           WHERE x.execution_id OPERATOR(pg_catalog.=) NEW.execution_id) THEN
                RAISE EXCEPTION 'event %% of execution %% has no executions row', NEW.version, NEW.execution_id
                    USING ERRCODE = 'insufficient_privilege',
                          HINT = 'append through slipstream_append, which writes both in one transaction';
            END IF;
            IF NOT EXISTS (SELECT 1 FROM %1$I.executions x JOIN %1$I.slipstream_grants g
                               ON g.role OPERATOR(pg_catalog.=) session_user
                              AND (g.project OPERATOR(pg_catalog.=) '*'
                                   OR g.project OPERATOR(pg_catalog.=) x.project)
                              AND (g.domain OPERATOR(pg_catalog.=) ''
                                   OR g.domain OPERATOR(pg_catalog.=) x.domain)
                           WHERE x.execution_id OPERATOR(pg_catalog.=) NEW.execution_id) THEN
                RAISE EXCEPTION 'event %% of execution %% is not in a project granted to role %%',
                        NEW.version, NEW.execution_id, session_user
                    USING ERRCODE = 'insufficient_privilege',
                          HINT = 'append only to executions of your projects (`slipstream admin grants` lists them)';
            END IF;
            RETURN NULL;
        END;
        $body$
    $fn$, current_schema());
END $do$;
