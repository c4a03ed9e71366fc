-- Slipstream event store, SQLite, version 6: nothing to do. The Postgres store gained row-level
-- security keyed on database roles; an embedded SQLite file has no roles (whoever can open the
-- file reads all of it), so its tenancy is the engine's scope alone.
SELECT 1;
