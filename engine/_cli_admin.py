"""``slipstream admin grant|revoke|grants``: the tenant roles of a Postgres deployment; and
``slipstream admin serves``: its serving processes.

A role granted a project reads and writes only that project's executions, events and catalog
entries: Postgres enforces it with row-level security (``engine._pg_tenancy``), whatever client the
role connects with. These commands run as the tables' owner. Only typer is imported up front
(``slipstream --help`` stays quick); errors are typed `SlipstreamError`s, which the CLI prints as
one line with exit code 2.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated, Any

import typer

__all__ = ["add_serving_commands", "add_tenancy_commands"]

Postgres = Annotated[
    str | None,
    typer.Option(
        "--postgres",
        envvar="SLIPSTREAM_POSTGRES_DSN",
        help="Postgres DSN of the event store, as its owner (the role that runs `slipstream serve`).",
        show_default=False,
    ),
]
Role = Annotated[str, typer.Option("--role", help="The Postgres role (a LOGIN role, or one tenants SET ROLE to).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _dsn(postgres: str | None, command: str) -> str:
    from engine.errors import ConfigError

    if not postgres:
        raise ConfigError(
            f"`slipstream admin {command}` needs --postgres DSN (or SLIPSTREAM_POSTGRES_DSN): tenants are Postgres "
            "roles under row-level security; an embedded state dir has no roles (scope engines with --project)"
        )
    return postgres


async def _migrated(dsn: str) -> None:
    """Start the store and the catalog once, so that their migrations (tables, policies) are in
    (by themselves: an engine would also start the services its environment names, a relay)."""
    from engine._wiring import backend

    for group, what in (("slipstream.stores", "the server event log"), ("slipstream.catalogs", "the server catalog")):
        made = backend(group, "postgres", what)(dsn)
        await made.start()
        await made.close()


def _write(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _grant(
    role: Role,
    project: Annotated[str, typer.Option("--project", help="The project, or '*' for every project.")],
    domain: Annotated[
        str | None, typer.Option("--domain", help="Only this domain (default: every domain).", show_default=False)
    ] = None,
    postgres: Postgres = None,
    as_json: AsJson = False,
) -> None:
    """Let ROLE read and write PROJECT (in DOMAIN only, when given), and give it the table
    privileges an engine needs. Idempotent."""
    from engine._pg_tenancy import grant

    dsn = _dsn(postgres, "grant")

    async def body() -> bool:
        await _migrated(dsn)
        return await grant(dsn, role, project, domain)

    new = asyncio.run(body())
    scope = f"{project}/{domain}" if domain else f"{project} (every domain)"
    if as_json:
        import msgspec

        _write(msgspec.json.encode({"role": role, "project": project, "domain": domain, "new": new}).decode())
    else:
        _write(f"{'granted' if new else 'already granted'}: role {role} may use project {scope}")


def _revoke(
    role: Role,
    project: Annotated[
        str | None, typer.Option("--project", help="Only this project (default: all).", show_default=False)
    ] = None,
    domain: Annotated[str | None, typer.Option("--domain", help="Only this domain.", show_default=False)] = None,
    postgres: Postgres = None,
    as_json: AsJson = False,
) -> None:
    """Remove ROLE's grants (of PROJECT, of DOMAIN); with its last grant, its table privileges go too."""
    from engine._pg_tenancy import revoke

    removed = asyncio.run(revoke(_dsn(postgres, "revoke"), role, project, domain))
    if as_json:
        import msgspec

        _write(msgspec.json.encode({"role": role, "revoked": removed}).decode())
    else:
        _write(f"revoked {removed} grant{'s' if removed != 1 else ''} of role {role}")


def _grants(
    role: Annotated[str | None, typer.Option("--role", help="Only this role.", show_default=False)] = None,
    postgres: Postgres = None,
    as_json: AsJson = False,
) -> None:
    """List the tenant grants: which role may use which project and domain."""
    from engine._pg_tenancy import list_grants

    found = asyncio.run(list_grants(_dsn(postgres, "grants"), role))
    if as_json:
        import msgspec

        _write(msgspec.json.encode(found).decode())
        return
    if not found:
        _write("no grants: every role other than the tables' owner sees nothing")
    for each in found:
        _write(f"{each.role}\t{each.project}\t{each.domain or '*'}\t{each.granted_at:%Y-%m-%d %H:%M:%S}")


def add_tenancy_commands(admin: Any) -> None:
    """Add ``grant``, ``revoke`` and ``grants`` to the ``admin`` command group (a `typer.Typer`)."""
    admin.command("grant")(_grant)
    admin.command("revoke")(_revoke)
    admin.command("grants")(_grants)


def _serves(postgres: Postgres = None, as_json: AsJson = False) -> None:
    """List the serving processes of the store: each one's Postgres session, scope, address, start,
    last beat and leases held (its executions, a relay's)."""
    from engine._pg_leases import serving_processes
    from engine._pg_tenancy import connect_admin

    dsn = _dsn(postgres, "serves")

    async def body() -> list[Any]:
        conn = await connect_admin(dsn)
        try:
            return await serving_processes(conn, "public")
        finally:
            await conn.close()

    found = asyncio.run(body())
    if as_json:
        import msgspec

        _write(msgspec.json.encode(found).decode())
        return
    if not found:
        _write(
            "no serving process: executions stay `created` until one starts (`slipstream serve --postgres DSN`); "
            "`slipstream run --postgres` runs its own"
        )
    for each in found:
        beat = "never beat (a version before 0011)" if each.quiet_s is None else f"beat {each.quiet_s:.1f} s ago"
        _write(
            f"session {each.pid}\t{'every project' if each.scope is None else 'scope ' + each.scope}\t"
            f"{each.client or 'local'}\tsince {each.started:%Y-%m-%d %H:%M:%S}\t{beat}\t{each.leases} leases"
        )


def add_serving_commands(admin: Any) -> None:
    """Add ``serves`` to the ``admin`` command group (a `typer.Typer`)."""
    admin.command("serves")(_serves)
