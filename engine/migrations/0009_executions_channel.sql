-- Slipstream event store, Postgres, version 9: a second NOTIFY channel, slipstream_executions, for
-- the changes a control loop looks for: an execution created, or its status changed (started,
-- ended, aborted, quarantined).
--
-- Every append still NOTIFYs slipstream_events (relays, subscribers and `events tail` need each
-- one). A serving loop only needs to hear of new work and of aborts, yet listening on
-- slipstream_events it received, read and handled a notification per append of every process,
-- its own included: about 0.04 ms of a chain node's 0.6 ms (measured, python -m benchmarks
-- server). A store now listens on slipstream_executions, and on slipstream_events only once a
-- consumer waits for every append.
--
-- The projection row is where a status changes, whoever changes it (the append functions, the
-- quarantine mark, a rebuild), so the notification comes from triggers on it. The UPDATE trigger's
-- WHEN skips the row event altogether when the status stays (every round of a running execution).

CREATE FUNCTION slipstream_notify_execution() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('slipstream_executions', NEW.execution_id);
    RETURN NULL;
END;
$$;

CREATE TRIGGER executions_notify_created AFTER INSERT ON executions FOR EACH ROW
    EXECUTE FUNCTION slipstream_notify_execution();
CREATE TRIGGER executions_notify_status AFTER UPDATE OF status ON executions FOR EACH ROW
    WHEN (NEW.status IS DISTINCT FROM OLD.status)
    EXECUTE FUNCTION slipstream_notify_execution();
