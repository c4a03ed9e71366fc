-- Slipstream event store, Postgres, version 5: a checksum chain over each execution's events, and
-- an executions projection that only the store's own writes may change.
--
-- events.checksum chains each event to the one before it in its execution (engine/_chain.py):
-- sha256 over the previous checksum (a seed of the execution id for version 1), the version,
-- attempt, kind, node and payload. The client computes it (it knows the previous checksum from
-- its reads and appends, or asks on a miss); slipstream_append checks, for every execution it
-- appends to after version 0, that the checksum the client chained from is the one stored at the
-- expected version, and raises SL409 (a ConcurrencyConflict) otherwise: a stale client cache can
-- cost a retry, never a wrong chain. Events written before this migration keep NULL: unchained
-- legacy events, accepted only before an execution's first chained event.
--
-- The executions projection is derived from the log: UPDATE, DELETE and TRUNCATE of it fail
-- unless the transaction set slipstream.writer to 'on' (slipstream_append does, and so do the
-- store's quarantine and rebuild-projections). It guards against mistakes, not against a
-- superuser: `slipstream executions verify` compares the projection with the log either way.

ALTER TABLE events ADD COLUMN checksum bytea;

DROP FUNCTION slipstream_append(
    text[], integer[], text[], text[], integer[], bytea[],
    text[], text[], text[], text[], text[], integer[], timestamptz[], text[],
    text[], integer[], integer[], text[],
    text[]
);

CREATE FUNCTION slipstream_append(
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
    PERFORM pg_notify('slipstream_events', i) FROM unnest(notify_ids) AS i;
END;
$$;

CREATE FUNCTION slipstream_executions_derived() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the slipstream executions projection is derived from the events log: % on table executions is not allowed', TG_OP
        USING ERRCODE = 'restrict_violation',
              HINT = 'rebuild it from the log with `slipstream admin rebuild-projections`';
END;
$$;

CREATE TRIGGER executions_no_update BEFORE UPDATE ON executions FOR EACH ROW
    WHEN (current_setting('slipstream.writer', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION slipstream_executions_derived();
CREATE TRIGGER executions_no_delete BEFORE DELETE ON executions FOR EACH ROW
    WHEN (current_setting('slipstream.writer', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION slipstream_executions_derived();
CREATE TRIGGER executions_no_truncate BEFORE TRUNCATE ON executions FOR EACH STATEMENT
    WHEN (current_setting('slipstream.writer', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION slipstream_executions_derived();
