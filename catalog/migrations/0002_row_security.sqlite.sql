-- The catalog, SQLite, version 2: nothing to do. The Postgres catalog gained row-level security
-- keyed on database roles; a SQLite file has no roles, so its tenancy is the engine's scope alone.
SELECT 1;
