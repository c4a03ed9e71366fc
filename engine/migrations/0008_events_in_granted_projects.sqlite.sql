-- Slipstream event store, SQLite, version 8: nothing to do. The Postgres store's commit-time check
-- of a tenant's events now also requires the execution to be in one of the role's granted
-- projects; an embedded SQLite file has no roles.
SELECT 1;
