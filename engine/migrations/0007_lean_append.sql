-- Slipstream event store, Postgres, version 7: a lean append for the commonest call, one execution
-- that already exists (every round of a running execution).
--
-- slipstream_append (0005) takes 23 arrays so that one call can carry many executions, new and old;
-- binding and unpacking them cost ~0.045 ms of a ~0.45 ms append before any work (measured: an
-- empty body with those parameters 0.12 ms, with the 9 below 0.08 ms, a bare SELECT 0.075 ms).
-- slipstream_append_one takes the execution's scalars and one array per event column; the versions
-- are expected + 1, 2, ... (the store numbers events consecutively). It does what slipstream_append
-- does for one execution, in the same order and with the same errors:
--
-- 1. set slipstream.writer (the projection guard of 0005);
-- 2. check that the checksum the client chained from is the one stored at the expected version
--    (SL409 otherwise: a stale client cache costs a retry, never a wrong chain; it also fails when
--    that version does not exist);
-- 3. insert the events under the sequence lock 0x51175EA3_0001 and release it: the insert is the
--    transaction's first write, so its xid and seq values are allocated inside the lock, exactly as
--    in slipstream_append (0004's header: xid order agrees with seq order across writers, which
--    keeps read_all's `xid < pg_snapshot_xmin` filter commit-safe). ON CONFLICT DO NOTHING, so that
--    nothing fails while the lock is held; fewer rows written than sent is a lost race (SL409);
-- 4. move the projection row with UPDATE ... WHERE version = expected (SL409 when another writer
--    moved it first: that UPDATE waits for the other's commit and then re-checks the row);
-- 5. NOTIFY slipstream_events with the execution id, delivered at commit.
--
-- It runs with the caller's rights (no SECURITY DEFINER): a tenant role's insert and update pass
-- the row-security policies of 0006 or fail, as through slipstream_append. Group commits of several
-- executions and creations keep going through slipstream_append.

CREATE FUNCTION slipstream_append_one(
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
    PERFORM pg_notify('slipstream_events', target);
END;
$$;
