-- Slipstream event store, Postgres, version 11: serving processes beat, and a silent one's
-- session is ended so that its executions move.
--
-- A lease is a session advisory lock on a serving process's listening session (engine/_pg_leases.py),
-- so it dies with that session: at once when the process dies (its socket closes), but not when
-- the process hangs (stopped, swapping, an event loop blocked) or its host vanishes (no FIN
-- reaches the server, which keeps the session until TCP keepalive gives up: two hours by
-- default). Its executions waited that long.
--
-- Each serving process now beats here on that session at each look at the member list (every
-- half second), and the others end the session of one that has not beaten for the member timeout
-- (pg_terminate_backend, with their own rights), which frees its leases. Only sessions that have
-- beaten here are ever ended: a serving process of an earlier version (during a rolling restart)
-- never beats, and is left alone.
--
-- Unlogged: a beat writes no WAL, so its commit waits for no flush; after a server crash the
-- table is empty, as the sessions are gone.

CREATE UNLOGGED TABLE slipstream_members (
    pid  integer     PRIMARY KEY,  -- the listening session's backend
    beat timestamptz NOT NULL
);
GRANT SELECT ON slipstream_members TO PUBLIC;

-- The calling session beats; rows of sessions that are no longer members go; returns every member
-- (a session whose application_name is `member`, or `member@<scope tag>`) with the seconds since
-- its last beat (NULL: it never beat). It runs as the tables' owner, so a tenant's session beats too.
DO $do$ BEGIN
    EXECUTE format($fn$
        CREATE FUNCTION %1$I.slipstream_beat(member text)
        RETURNS TABLE (pid integer, application_name text, quiet double precision)
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $body$
        BEGIN
            INSERT INTO %1$I.slipstream_members AS m (pid, beat) VALUES (pg_backend_pid(), clock_timestamp())
            ON CONFLICT ON CONSTRAINT slipstream_members_pkey DO UPDATE SET beat = excluded.beat;
            RETURN QUERY
            WITH alive AS (
                SELECT a.pid AS member_pid, a.application_name AS member_name
                FROM pg_stat_activity a
                WHERE a.datname OPERATOR(pg_catalog.=) current_database()
                  AND (a.application_name OPERATOR(pg_catalog.=) member
                       OR starts_with(a.application_name, member OPERATOR(pg_catalog.||) '@'))
            ), gone AS (
                DELETE FROM %1$I.slipstream_members m
                WHERE m.pid OPERATOR(pg_catalog.<>) ALL (SELECT alive.member_pid FROM alive)
            )
            SELECT alive.member_pid, alive.member_name::text,
                   extract(epoch FROM clock_timestamp() OPERATOR(pg_catalog.-) m.beat)::float8
            FROM alive LEFT JOIN %1$I.slipstream_members m ON m.pid OPERATOR(pg_catalog.=) alive.member_pid;
        END;
        $body$
    $fn$, current_schema());
END $do$;
