"""Tenant roles of a Postgres deployment: who may read and write which projects (DESIGN 11).

Row-level security (event store migration 0006, catalog migration 0002) lets a role that is not
the tables' owner see and write only the rows of the projects ``slipstream_grants`` lists for it.
`grant` adds such a row and gives the role the table privileges an engine needs (no more: no
DELETE of events, no cursors, no DDL); `revoke` removes rows, and the privileges with the last
one. Both run as the tables' owner (or a superuser): ``slipstream admin grant|revoke|grants``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

import asyncpg
import msgspec

from engine._validation import DOMAINS, check_scope
from engine.errors import AccessDenied, ConfigError, InvalidScope, StoreUnavailable

__all__ = ["ALL_PROJECTS", "Grant", "connect_admin", "grant", "list_grants", "revoke", "tenant_privileges"]

ALL_PROJECTS = "*"
_ROLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_SCHEMA = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_ADMIN = "(the admin connection's user)"

# What an engine connected as a tenant role does: read its executions and events, append (which
# inserts events and moves the projection), use the catalog (put, look up, publish, evict) and its
# reservations. Tables that do not exist in the schema (a store without a catalog) are skipped.
# Events: INSERT of only the columns slipstream_append and slipstream_append_one write (migrations
# 0005, 0007; they run with the caller's rights), so that seq, xid and recorded_at always take
# their defaults: a chosen seq would move the relay's and sinks' read_all cursors past later
# events, a chosen xid would pass the commit-safety filter before the row's transaction commits.
_EVENT_COLUMNS = "execution_id, version, kind, node_id, attempt, payload, checksum"
_TABLE_PRIVILEGES: tuple[tuple[str, str], ...] = (
    ("schema_migrations", "SELECT"),
    ("catalog_migrations", "SELECT"),
    ("slipstream_grants", "SELECT"),
    ("executions", "SELECT, INSERT, UPDATE"),
    ("events", f"SELECT, INSERT ({_EVENT_COLUMNS})"),
    ("catalog_datasets", "SELECT, INSERT"),
    ("catalog_artifacts", "SELECT, INSERT, DELETE"),
    ("catalog_tags", "SELECT, INSERT, DELETE"),
    ("catalog_partitions", "SELECT, INSERT, UPDATE, DELETE"),
    ("catalog_lineage", "SELECT, INSERT"),
    ("catalog_reservations", "SELECT, INSERT, UPDATE, DELETE"),
)


class Grant(msgspec.Struct, frozen=True):
    """One row of ``slipstream_grants``: ``role`` may use ``project`` (``*``: every project) in
    ``domain`` (``None``: every domain)."""

    role: str
    project: str
    domain: str | None
    granted_at: datetime


def tenant_privileges() -> Sequence[tuple[str, str]]:
    """The table privileges `grant` gives, as ``(table, privileges)``."""
    return _TABLE_PRIVILEGES


def _check(role: str, project: str | None, domain: str | None, schema: str, domains: Sequence[str]) -> None:
    if not _ROLE.fullmatch(role):
        raise InvalidScope(
            f"role {role!r} is not a plain Postgres role name: use letters, digits and '_', starting with a letter "
            "or '_' (at most 63)"
        )
    if not _SCHEMA.fullmatch(schema):
        raise InvalidScope(f"schema {schema!r} is not a plain Postgres schema name")
    if project is not None and project != ALL_PROJECTS:
        check_scope(project, domain or domains[0], domains)
    elif domain is not None:
        check_scope("x", domain, domains)


async def connect_admin(dsn: str) -> asyncpg.Connection:
    """A connection for `slipstream admin`, with reach and refusal told apart.

    Raises:
        StoreUnavailable: Postgres cannot be reached.
        ConfigError: it refused the connection.
    """
    try:
        return await asyncpg.connect(dsn)
    except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, TimeoutError) as exc:
        raise StoreUnavailable(f"cannot reach Postgres for `slipstream admin`: {exc}") from exc
    except asyncpg.PostgresError as exc:
        raise ConfigError(f"Postgres refused the connection for `slipstream admin` ({exc}); check the DSN") from exc


async def _tables(conn: asyncpg.Connection, schema: str) -> set[str]:
    rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1", schema)
    return {row[0] for row in rows}


async def grant(
    dsn: str,
    role: str,
    project: str,
    domain: str | None = None,
    *,
    schema: str = "public",
    domains: Sequence[str] = DOMAINS,
) -> bool:
    """Let ``role`` read and write ``project`` (in ``domain`` only, when given) under row-level
    security, and give it the table privileges an engine needs. Idempotent.

    Run as the owner of the tables (the role that applied the migrations) or a superuser, after
    the store and catalog were started once (their migrations create the tables and policies).

    Returns:
        True if the grant is new, False if it was there already.

    Raises:
        InvalidScope: a malformed role, project or domain.
        ConfigError: the role does not exist, or the schema holds no Slipstream tables.
        AccessDenied: the connecting role may not grant (it is not the tables' owner).
    """
    _check(role, project, domain, schema, domains)
    conn = await connect_admin(dsn)
    try:
        if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", role):
            raise ConfigError(
                f"Postgres has no role {role!r}: create it first (CREATE ROLE {role} LOGIN PASSWORD '...'), then grant"
            )
        tables = await _tables(conn, schema)
        if "slipstream_grants" not in tables:
            raise ConfigError(
                f"schema {schema!r} has no slipstream_grants table: start the store there once as its owner "
                "(`slipstream serve --postgres DSN`, or any engine) so that its migrations run, then grant"
            )
        async with conn.transaction():
            status = await conn.execute(
                f'INSERT INTO "{schema}".slipstream_grants (role, project, domain) VALUES ($1, $2, $3) '
                "ON CONFLICT DO NOTHING",
                role,
                project,
                domain or "",
            )
            await conn.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"')
            if "events" in tables:
                # a grant of an earlier version gave INSERT on the whole table, which a column grant
                # does not narrow: take it back first (this revokes the column grants too)
                await conn.execute(f'REVOKE INSERT ON "{schema}".events FROM "{role}"')
            for table, privileges in _TABLE_PRIVILEGES:
                if table in tables:
                    await conn.execute(f'GRANT {privileges} ON "{schema}"."{table}" TO "{role}"')
            sequence = await conn.fetchval("SELECT pg_get_serial_sequence($1, 'seq')", f'"{schema}".events')
            if sequence is not None:  # appends take their seq from it
                await conn.execute(f'GRANT USAGE ON SEQUENCE {sequence} TO "{role}"')
    except asyncpg.InsufficientPrivilegeError as exc:
        raise AccessDenied(_ADMIN, f"{exc}; run `slipstream admin` as the tables' owner") from exc
    finally:
        await conn.close()
    return status.endswith(" 1")


async def revoke(
    dsn: str,
    role: str,
    project: str | None = None,
    domain: str | None = None,
    *,
    schema: str = "public",
    domains: Sequence[str] = DOMAINS,
) -> int:
    """Remove ``role``'s grants of ``project`` (every project when None; of ``domain`` only, when
    given); with its last grant gone, take back the table privileges `grant` gave.

    Returns:
        How many grants were removed.

    Raises:
        InvalidScope: a malformed role, project or domain.
        AccessDenied: the connecting role may not revoke.
    """
    _check(role, project, domain, schema, domains)
    conn = await connect_admin(dsn)
    try:
        tables = await _tables(conn, schema)
        if "slipstream_grants" not in tables:
            return 0
        async with conn.transaction():
            status = await conn.execute(
                f'DELETE FROM "{schema}".slipstream_grants WHERE role = $1 '
                "AND ($2::text IS NULL OR project = $2) AND ($3::text IS NULL OR domain = $3)",
                role,
                project,
                domain,
            )
            left = await conn.fetchval(f'SELECT count(*) FROM "{schema}".slipstream_grants WHERE role = $1', role)
            exists = await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", role)
            if left == 0 and exists:
                for table, _ in _TABLE_PRIVILEGES:
                    if table in tables:
                        await conn.execute(f'REVOKE ALL ON "{schema}"."{table}" FROM "{role}"')
                sequence = await conn.fetchval("SELECT pg_get_serial_sequence($1, 'seq')", f'"{schema}".events')
                if sequence is not None:
                    await conn.execute(f'REVOKE ALL ON SEQUENCE {sequence} FROM "{role}"')
                await conn.execute(f'REVOKE USAGE ON SCHEMA "{schema}" FROM "{role}"')
    except asyncpg.InsufficientPrivilegeError as exc:
        raise AccessDenied(_ADMIN, f"{exc}; run `slipstream admin` as the tables' owner") from exc
    finally:
        await conn.close()
    return int(status.rsplit(" ", 1)[-1])


async def list_grants(dsn: str, role: str | None = None, *, schema: str = "public") -> list[Grant]:
    """The grants of ``schema`` (of ``role`` only, when given), by role and project."""
    if role is not None and not _ROLE.fullmatch(role):
        raise InvalidScope(f"role {role!r} is not a plain Postgres role name")
    if not _SCHEMA.fullmatch(schema):
        raise InvalidScope(f"schema {schema!r} is not a plain Postgres schema name")
    conn = await connect_admin(dsn)
    try:
        if "slipstream_grants" not in await _tables(conn, schema):
            return []
        rows = await conn.fetch(
            f'SELECT role, project, domain, granted_at FROM "{schema}".slipstream_grants '
            "WHERE $1::name IS NULL OR role = $1 ORDER BY role, project, domain",
            role,
        )
    except asyncpg.InsufficientPrivilegeError as exc:
        raise AccessDenied(_ADMIN, str(exc)) from exc
    finally:
        await conn.close()
    return [Grant(str(r[0]), r[1], r[2] or None, r[3]) for r in rows]
