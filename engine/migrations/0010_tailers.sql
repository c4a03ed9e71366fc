-- Slipstream event store, Postgres, version 10: NOTIFY slipstream_events only while some session
-- tails the log.
--
-- Postgres serialises the commits of the transactions that sent a notification (a global lock on
-- the notification queue, taken at commit): measured here with pgbench, 16 clients committing a
-- one-row insert made 14,000-17,000 commits/s, and 5,700-7,100 with a pg_notify in each. Every
-- append sent one, for the readers that tail the whole log (relays, subscribers, `events tail`),
-- even when none was running: a serving loop listens on slipstream_executions only (0009).
--
-- A session that waits for every append registers here (slipstream_tail, on its LISTEN session),
-- and the append functions notify only while this table has a row. A row whose session is gone is
-- removed at the next registration, or when a store starts (slipstream_tail(NULL)); until then it
-- costs notifications, nothing else.
--
-- The race: an append that looked here before a registration committed does not notify, yet may
-- commit after the new tailer's first read. Its transaction id was assigned before it looked, so
-- it is below the xmax of any snapshot taken once the registration has committed: the registering
-- store takes one, and wakes its tailers once more when pg_snapshot_xmin has passed that xmax
-- (engine/_postgres_store.py, _catch_up_after).

CREATE TABLE slipstream_tailers (
    pid   integer     PRIMARY KEY,  -- the LISTEN session's backend
    since timestamptz NOT NULL DEFAULT now()
);
-- appends run with the caller's rights (a tenant role's too) and look here; backend pids only
GRANT SELECT ON slipstream_tailers TO PUBLIC;

-- on: register the calling session; off: unregister it; NULL: only remove the rows of sessions
-- that are gone. It runs as the tables' owner, so a tenant's LISTEN session registers too.
DO $do$ BEGIN
    EXECUTE format($fn$
        CREATE FUNCTION %1$I.slipstream_tail(on_ boolean) RETURNS void
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $body$
        BEGIN
            DELETE FROM %1$I.slipstream_tailers t
            WHERE t.pid <> pg_backend_pid() AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = t.pid);
            IF on_ THEN
                INSERT INTO %1$I.slipstream_tailers (pid) VALUES (pg_backend_pid()) ON CONFLICT DO NOTHING;
            ELSIF NOT on_ THEN
                DELETE FROM %1$I.slipstream_tailers WHERE pid = pg_backend_pid();
            END IF;
        END;
        $body$
    $fn$, current_schema());
END $do$;

-- The append functions of 0005 and 0007, unchanged but for the condition on their NOTIFY.

CREATE OR REPLACE FUNCTION slipstream_append(
    ev_execution text[], ev_version integer[], ev_kind text[], ev_node text[], ev_attempt integer[],
    ev_payload bytea[], ev_checksum bytea[],
    new_id text[], new_project text[], new_domain text[], new_workflow text[], new_status text[],
    new_version integer[], new_created timestamptz[], new_parent text[],
    old_id text[], old_expected integer[], old_version integer[], old_status text[],
    chk_id text[], chk_version integer[], chk_prev bytea[],
    notify_ids text[]
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    wanted integer := cardinality(ev_execution);
    done_ids text[];
    done_versions integer[];
    loser text;
    loser_expected integer;
    stored bytea;
BEGIN
    PERFORM set_config('slipstream.writer', 'on', true);  -- the projection guard lets this transaction through
    -- the checksum each execution's first new event chains from must be the stored one (one
    -- index probe each, with a cached plan: a set-based join here cost ten times as much)
    FOR i IN 1 .. coalesce(cardinality(chk_id), 0) LOOP
        SELECT checksum INTO stored FROM events WHERE execution_id = chk_id[i] AND version = chk_version[i];
        IF NOT FOUND OR stored IS DISTINCT FROM chk_prev[i] THEN
            RAISE EXCEPTION 'execution % changed under the appender (its version % or that checksum)',
                chk_id[i], chk_version[i]
                USING ERRCODE = 'SL409', DETAIL = chk_id[i], HINT = chk_version[i]::text;
        END IF;
    END LOOP;
    PERFORM pg_advisory_lock(89160813838337);  -- 0x51175EA3_0001, the sequence lock
    WITH ins AS (
        INSERT INTO events (execution_id, version, kind, node_id, attempt, payload, checksum)
        SELECT e, v, k, n, a, p, c
        FROM unnest(ev_execution, ev_version, ev_kind, ev_node, ev_attempt, ev_payload, ev_checksum)
             WITH ORDINALITY AS r(e, v, k, n, a, p, c, ord)
        ORDER BY ord
        ON CONFLICT (execution_id, version) DO NOTHING
        RETURNING execution_id, version
    )
    SELECT array_agg(execution_id), array_agg(version) INTO done_ids, done_versions FROM ins;
    PERFORM pg_advisory_unlock(89160813838337);
    IF coalesce(cardinality(done_ids), 0) <> wanted THEN
        -- the first execution one of whose events another writer recorded first
        SELECT r.e INTO loser
        FROM unnest(ev_execution, ev_version) WITH ORDINALITY AS r(e, v, ord)
        WHERE NOT EXISTS (
            SELECT 1 FROM unnest(done_ids, done_versions) AS d(e, v) WHERE d.e = r.e AND d.v = r.v
        )
        ORDER BY r.ord LIMIT 1;
        SELECT min(r.v) - 1 INTO loser_expected FROM unnest(ev_execution, ev_version) AS r(e, v) WHERE r.e = loser;
        RAISE EXCEPTION 'concurrent append to execution %', loser
            USING ERRCODE = 'SL409', DETAIL = loser, HINT = loser_expected::text;
    END IF;
    IF cardinality(new_id) > 0 THEN
        WITH ins AS (
            INSERT INTO executions (execution_id, project, domain, workflow, status, version, created_at,
                                    updated_at, parent)
            SELECT i, pr, d, w, s, v, c, now(), pa
            FROM unnest(new_id, new_project, new_domain, new_workflow, new_status, new_version, new_created,
                        new_parent) AS r(i, pr, d, w, s, v, c, pa)
            ORDER BY i
            ON CONFLICT (execution_id) DO NOTHING
            RETURNING execution_id
        )
        SELECT array_agg(execution_id) INTO done_ids FROM ins;
        IF coalesce(cardinality(done_ids), 0) <> cardinality(new_id) THEN
            SELECT i INTO loser FROM unnest(new_id) AS i WHERE i <> ALL (coalesce(done_ids, '{}')) ORDER BY i LIMIT 1;
            RAISE EXCEPTION 'concurrent creation of execution %', loser
                USING ERRCODE = 'SL409', DETAIL = loser, HINT = '0';
        END IF;
    END IF;
    IF cardinality(old_id) > 0 THEN
        -- row locks taken in id order (old_id is sorted), so overlapping appends cannot deadlock
        WITH u AS (
            SELECT i, x, v, s FROM unnest(old_id, old_expected, old_version, old_status) AS r(i, x, v, s)
        ), locked AS (
            SELECT e.execution_id FROM executions e JOIN u ON e.execution_id = u.i
            ORDER BY e.execution_id FOR UPDATE OF e
        ), upd AS (
            UPDATE executions e
            SET version = u.v, status = coalesce(u.s, e.status), updated_at = now()
            FROM u
            WHERE e.execution_id = u.i AND e.version = u.x AND e.execution_id IN (SELECT execution_id FROM locked)
            RETURNING e.execution_id
        )
        SELECT array_agg(execution_id) INTO done_ids FROM upd;
        IF coalesce(cardinality(done_ids), 0) <> cardinality(old_id) THEN
            SELECT r.i, r.x INTO loser, loser_expected
            FROM unnest(old_id, old_expected) AS r(i, x)
            WHERE r.i <> ALL (coalesce(done_ids, '{}')) ORDER BY r.i LIMIT 1;
            RAISE EXCEPTION 'concurrent append to execution %', loser
                USING ERRCODE = 'SL409', DETAIL = loser, HINT = loser_expected::text;
        END IF;
    END IF;
    IF EXISTS (SELECT FROM slipstream_tailers) THEN  -- somebody tails the log (above)
        PERFORM pg_notify('slipstream_events', i) FROM unnest(notify_ids) AS i;
    END IF;
END;
$$;

CREATE OR REPLACE FUNCTION slipstream_append_one(
    target text, expected integer, chained_from bytea, new_status text,
    ev_kind text[], ev_node text[], ev_attempt integer[], ev_payload bytea[], ev_checksum bytea[]
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    stored bytea;
    wanted integer := cardinality(ev_kind);
    written integer;
BEGIN
    PERFORM set_config('slipstream.writer', 'on', true);
    SELECT checksum INTO stored FROM events WHERE execution_id = target AND version = expected;
    IF NOT FOUND OR stored IS DISTINCT FROM chained_from THEN
        RAISE EXCEPTION 'execution % changed under the appender (its version % or that checksum)', target, expected
            USING ERRCODE = 'SL409', DETAIL = target, HINT = expected::text;
    END IF;
    PERFORM pg_advisory_lock(89160813838337);  -- 0x51175EA3_0001, the sequence lock
    INSERT INTO events (execution_id, version, kind, node_id, attempt, payload, checksum)
    SELECT target, expected + r.ord::integer, r.k, r.n, r.a, r.p, r.c
    FROM unnest(ev_kind, ev_node, ev_attempt, ev_payload, ev_checksum) WITH ORDINALITY AS r(k, n, a, p, c, ord)
    ORDER BY r.ord
    ON CONFLICT (execution_id, version) DO NOTHING;
    GET DIAGNOSTICS written = ROW_COUNT;
    PERFORM pg_advisory_unlock(89160813838337);
    IF written <> wanted THEN
        RAISE EXCEPTION 'concurrent append to execution %', target
            USING ERRCODE = 'SL409', DETAIL = target, HINT = expected::text;
    END IF;
    UPDATE executions SET version = expected + wanted, status = coalesce(new_status, status), updated_at = now()
    WHERE execution_id = target AND version = expected;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'concurrent append to execution %', target
            USING ERRCODE = 'SL409', DETAIL = target, HINT = expected::text;
    END IF;
    IF EXISTS (SELECT FROM slipstream_tailers) THEN
        PERFORM pg_notify('slipstream_events', target);
    END IF;
END;
$$;
