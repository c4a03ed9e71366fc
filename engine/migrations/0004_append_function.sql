-- Slipstream event store, Postgres, version 4: an append is one call (one round trip, one
-- transaction), not a BEGIN, a lock, an insert, an unlock, the projection, a notify and a COMMIT.
--
-- slipstream_append(events..., new executions..., moved executions..., ids to notify) inserts the
-- events, moves the `executions` projection and notifies `slipstream_events`, all or nothing. A
-- lost optimistic-concurrency race raises SQLSTATE SL409 with the execution id as DETAIL and its
-- expected version as HINT (the caller turns it into ConcurrencyConflict).
--
-- The insert runs under the session advisory lock 0x51175EA30001 (released before the projection
-- and the commit, so commits still overlap): the insert is the transaction's first write, so its
-- xid and its seq values are allocated inside the lock and xid order agrees with seq order across
-- writers, which is what makes read_all's `xid < pg_snapshot_xmin` filter commit-safe. The insert
-- uses ON CONFLICT DO NOTHING so that nothing can fail while the lock is held; should anything
-- else fail there, the caller unlocks the session before handing the connection back.

CREATE FUNCTION slipstream_append(
    ev_execution text[], ev_version integer[], ev_kind text[], ev_node text[], ev_attempt integer[],
    ev_payload bytea[],
    new_id text[], new_project text[], new_domain text[], new_workflow text[], new_status text[],
    new_version integer[], new_created timestamptz[], new_parent text[],
    old_id text[], old_expected integer[], old_version integer[], old_status text[],
    notify_ids text[]
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    wanted integer := cardinality(ev_execution);
    done_ids text[];
    done_versions integer[];
    loser text;
    loser_expected integer;
BEGIN
    PERFORM pg_advisory_lock(89160813838337);  -- 0x51175EA3_0001, the sequence lock
    WITH ins AS (
        INSERT INTO events (execution_id, version, kind, node_id, attempt, payload)
        SELECT e, v, k, n, a, p
        FROM unnest(ev_execution, ev_version, ev_kind, ev_node, ev_attempt, ev_payload)
             WITH ORDINALITY AS r(e, v, k, n, a, p, ord)
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
