"""Postgres enforces tenancy itself (event store migration 0006, catalog migration 0002): a role
granted project ``a`` reads and writes only project ``a``'s executions, events and catalog rows,
whatever SQL it sends, while an engine connected as it works for its own project end to end."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from catalog import LocalBlobStore, PostgresCatalog
from engine import AccessDenied, ConfigError, Engine, ExecutionNotFound, InvalidScope
from engine._pg_tenancy import grant, list_grants, revoke
from engine._postgres_store import PostgresEventStore
from engine._store_common import load_migrations
from plugins.local import LocalExecutor
from tests.catalog import _workflows as cwf
from tests.conftest import _admin, run_blocking
from tests.engine.test_store_contract import created

from . import _workflows as wf


def as_role(dsn: str, role: str) -> str:
    """``dsn`` with its user replaced by ``role`` (the test server trusts local connections)."""
    parts = urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, f"{role}@{host}", parts.path, parts.query, parts.fragment))


@pytest.fixture
def tenant_role(postgres_database: str) -> Iterator[str]:
    """A LOGIN role that is neither superuser nor owner (dropped after, with its privileges)."""
    role = f"slipstream_tenant_{uuid.uuid4().hex[:10]}"
    run_blocking(_admin(postgres_database, f'CREATE ROLE "{role}" LOGIN'))
    yield role
    run_blocking(_admin(postgres_database, f'DROP OWNED BY "{role}"; DROP ROLE "{role}"'))


def engine_on(dsn: str, schema: str, tmp_path: Path, **options: object) -> Engine:
    options.setdefault("retry_delay", 0.05)
    return Engine(
        PostgresEventStore(dsn, schema=schema),
        {"local": LocalExecutor()},
        catalog=PostgresCatalog(dsn, schema=schema),
        blobs=LocalBlobStore(tmp_path / "blobs"),
        **options,  # type: ignore[arg-type]
    )


@pytest.fixture
async def two_projects(postgres_database: str, postgres_schema: str, tmp_path: Path) -> dict[str, str]:
    """The owner (a superuser here) runs an execution in project ``a`` and one in ``b``, each with a
    cached task (catalog rows) and a published artifact; returns their execution ids."""
    ids: dict[str, str] = {}
    async with engine_on(postgres_database, postgres_schema, tmp_path) as owner:
        for project, x in (("a", 2), ("b", 3)):
            handle = await owner.launch(cwf.square_wf, project=project, x=x)
            assert await handle.outputs(timeout=60) == x * x
            ids[project] = handle.execution_id
            published = await owner.launch(cwf.publish_wf, project=project, region="eu", n=x)
            await published.wait(timeout=60)
        assert owner.runs_loop and owner.catalog is not None
        await owner.controller.catalog.flush()  # type: ignore[union-attr]
    return ids


@pytest.fixture
async def tenant(
    postgres_database: str, postgres_schema: str, tenant_role: str, two_projects: dict[str, str]
) -> AsyncIterator[asyncpg.Connection]:
    """A raw connection as the tenant role, granted project ``a``: what a client that bypasses the
    library can do."""
    assert await grant(postgres_database, tenant_role, "a", schema=postgres_schema)
    conn = await asyncpg.connect(as_role(postgres_database, tenant_role))
    await conn.execute(f'SET search_path TO "{postgres_schema}"')
    yield conn
    await conn.close()


async def test_a_tenant_role_reads_only_its_project(tenant: asyncpg.Connection, two_projects: dict[str, str]) -> None:
    a, b = two_projects["a"], two_projects["b"]
    assert {r["project"] for r in await tenant.fetch("SELECT project FROM executions")} == {"a"}
    assert await tenant.fetchval("SELECT count(*) FROM executions WHERE execution_id = $1", b) == 0
    assert await tenant.fetchval("SELECT count(*) FROM events WHERE execution_id = $1", a) > 0
    assert await tenant.fetchval("SELECT count(*) FROM events WHERE execution_id = $1", b) == 0
    mine = {r[0] for r in await tenant.fetch("SELECT DISTINCT execution_id FROM events")}
    assert a in mine and b not in mine
    assert {r[0] for r in await tenant.fetch("SELECT project FROM catalog_datasets")} == {"a"}
    projects = await tenant.fetch(
        "SELECT DISTINCT d.project FROM catalog_artifacts a JOIN catalog_datasets d ON d.id = a.dataset_id"
    )
    assert [r[0] for r in projects] == ["a"]
    # names, partitions and lineage only of its own artifacts (each project published "features")
    tagged = await tenant.fetchval("SELECT count(*) FROM catalog_tags")
    assert tagged == 1 and await tenant.fetchval("SELECT count(*) FROM catalog_partitions") == 1
    unseen = await tenant.fetchval(
        "SELECT count(*) FROM catalog_lineage l WHERE NOT EXISTS "
        "(SELECT 1 FROM catalog_artifacts a WHERE a.id = l.artifact_id)"
    )
    assert unseen == 0
    assert await tenant.fetchval("SELECT count(*) FROM catalog_lineage WHERE execution_id = $1", b) == 0
    assert [r[0] for r in await tenant.fetch("SELECT project FROM slipstream_grants")] == ["a"]


async def test_a_tenant_role_cannot_write_another_project(
    tenant: asyncpg.Connection, two_projects: dict[str, str], postgres_database: str, postgres_schema: str
) -> None:
    b = two_projects["b"]
    # past the projection's own guard (migration 0005 lets only the append function change it; a
    # client that bypasses the library can claim to be that writer too)
    await tenant.execute("SELECT set_config('slipstream.writer', 'on', false)")
    # the projection: another project's row is not there to update, and a row cannot move there
    assert await tenant.execute("UPDATE executions SET status = 'aborted' WHERE execution_id = $1", b) == "UPDATE 0"
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        await tenant.execute(
            "INSERT INTO executions (execution_id, project, domain, workflow, status, version, created_at, "
            "updated_at) VALUES ('forged', 'b', 'development', 'w', 'created', 1, now(), now())"
        )
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        await tenant.execute("UPDATE executions SET project = 'b' WHERE project = 'a'")
    # the log: no event can be appended to another project's execution, even one it cannot see
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        await tenant.execute(
            "INSERT INTO events (execution_id, version, kind, payload) VALUES ($1, 999, 'ExecutionAborted', '')", b
        )
    # ... nor through the lean append function (it runs with the caller's rights: b's events are not
    # there to chain from, so it refuses before writing anything)
    with pytest.raises(asyncpg.PostgresError, match=f"execution {b} changed under the appender") as caught:
        await tenant.execute(
            "SELECT slipstream_append_one($1, 1, NULL, 'aborted', $2, $3, $4, $5, $6)",
            b,
            ["ExecutionAborted"],
            [""],
            [0],
            [b""],
            [b""],
        )
    assert caught.value.sqlstate == "SL409"
    # ... nor through a look-alike table in its own temporary schema (the check pins its search_path)
    await tenant.execute("CREATE TEMP TABLE executions (execution_id text, project text, domain text)")
    await tenant.execute(f'SET search_path TO pg_temp, "{postgres_schema}"')
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        await tenant.execute(
            f'INSERT INTO "{postgres_schema}".events (execution_id, version, kind, payload) '
            "VALUES ($1, 999, 'ExecutionAborted', '')",
            b,
        )
    await tenant.execute(f'DROP TABLE pg_temp.executions; SET search_path TO "{postgres_schema}"')
    # the catalog: no dataset of another project, no name or partition on its artifacts
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        await tenant.execute(
            "INSERT INTO catalog_datasets (id, project, domain, name, version, interface, created_at) "
            "VALUES ('forged', 'b', 'development', 't', '1', 'i', now())"
        )
    owner = await asyncpg.connect(postgres_database)
    try:
        theirs = await owner.fetchval(
            f'SELECT a.id FROM "{postgres_schema}".catalog_artifacts a JOIN "{postgres_schema}".catalog_datasets d '
            "ON d.id = a.dataset_id WHERE d.project = 'b' LIMIT 1"
        )
        before = await owner.fetchval(f'SELECT count(*) FROM "{postgres_schema}".catalog_artifacts')
    finally:
        await owner.close()
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        await tenant.execute("INSERT INTO catalog_tags (artifact_id, name, created_at) VALUES ($1, 'x', now())", theirs)
    moved = await tenant.execute("UPDATE catalog_partitions SET value = 'x' WHERE artifact_id = $1", theirs)
    assert moved == "UPDATE 0"
    assert await tenant.execute("DELETE FROM catalog_artifacts WHERE id = $1", theirs) == "DELETE 0"
    # and what no tenant may do at all
    for statement in ("DELETE FROM executions", "SELECT * FROM cursors", "DROP TABLE events"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await tenant.execute(statement)
    owner = await asyncpg.connect(postgres_database)
    try:
        assert await owner.fetchval(f'SELECT count(*) FROM "{postgres_schema}".catalog_artifacts') == before
        status = await owner.fetchval(f'SELECT status FROM "{postgres_schema}".executions WHERE execution_id = $1', b)
        assert status == "succeeded"
    finally:
        await owner.close()


async def test_a_tenant_role_cannot_choose_the_seq_or_xid_of_an_event(
    tenant: asyncpg.Connection,
    two_projects: dict[str, str],
    postgres_database: str,
    postgres_schema: str,
    tenant_role: str,
) -> None:
    """A chosen seq would move the relay's read_all cursor past later events, a chosen xid would
    pass the commit-safety filter early: a tenant's INSERT takes both from their defaults."""
    a = two_projects["a"]
    forged = (
        "INSERT INTO events (execution_id, version, kind, payload, seq) VALUES ($1, 900, 'ExecutionAborted', '', 9e15)",
        "INSERT INTO events (execution_id, version, kind, payload, xid) VALUES ($1, 901, 'ExecutionAborted', '', '1')",
    )

    async def refused() -> None:
        for statement in forged:
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
                await tenant.execute(statement, a)

    await refused()
    # a grant made before column grants gave INSERT on the whole table: granting again narrows it
    await _admin(postgres_database, f'GRANT INSERT ON "{postgres_schema}".events TO "{tenant_role}"')
    assert not await grant(postgres_database, tenant_role, "a", schema=postgres_schema)
    await refused()
    # the columns an append writes are still granted (rolled back: the log is append-only)
    transaction = tenant.transaction()
    await transaction.start()
    written = "INSERT INTO events (execution_id, version, kind, payload) VALUES ($1, 902, 'ExecutionAborted', '')"
    assert await tenant.execute(written, a) == "INSERT 0 1"
    await transaction.rollback()


async def test_a_tenant_role_cannot_plant_events_in_an_execution_another_project_creates(
    tenant: asyncpg.Connection, postgres_database: str, postgres_schema: str
) -> None:
    """Events written ahead for an id that does not exist yet, committed after another project
    created that execution, would belong to that project: the commit-time check refuses them."""
    planted = f"planted-{uuid.uuid4().hex[:8]}"
    transaction = tenant.transaction()
    await transaction.start()
    await tenant.execute(
        "INSERT INTO events (execution_id, version, kind, payload) VALUES ($1, 999, 'ExecutionAborted', '')", planted
    )
    owner = await asyncpg.connect(postgres_database)
    try:
        async with owner.transaction():
            await owner.execute("SELECT set_config('slipstream.writer', 'on', true)")
            await owner.execute(
                f'INSERT INTO "{postgres_schema}".executions (execution_id, project, domain, workflow, status, '
                "version, created_at, updated_at) VALUES ($1, 'b', 'development', 'w', 'created', 1, now(), now())",
                planted,
            )
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="not in a project granted to role"):
            await transaction.commit()
        left = f'SELECT count(*) FROM "{postgres_schema}".events WHERE execution_id = $1'
        assert await owner.fetchval(left, planted) == 0
    finally:
        await owner.close()


async def test_an_engine_connected_as_a_tenant_role_runs_its_own_project(
    tenant: asyncpg.Connection,
    two_projects: dict[str, str],
    postgres_database: str,
    postgres_schema: str,
    tenant_role: str,
    tmp_path: Path,
) -> None:
    dsn = as_role(postgres_database, tenant_role)
    async with engine_on(dsn, postgres_schema, tmp_path, project="a") as engine:
        handle = await engine.launch(wf.diamond, x=2)
        assert await handle.outputs(timeout=60) == 12  # the loop, the append function, the outputs
        cached = await engine.launch(cwf.square_wf, x=2)  # project a's artifact answers it
        assert await cached.outputs(timeout=60) == 4
        kinds = [type(event).__name__ for event in await engine.history(cached.execution_id)]
        assert "NodeCacheHit" in kinds
        assert {s.project for s in await engine.list_executions()} == {"a"}
        with pytest.raises(ExecutionNotFound):
            await engine.get(two_projects["b"])
        assert engine.catalog is not None
        assert {x.dataset.project for x in await engine.catalog.list_artifacts()} == {"a"}
    # an unscoped engine of the same role: reads are filtered by Postgres, writes elsewhere refused
    async with engine_on(dsn, postgres_schema, tmp_path, run_loop=False) as engine:
        assert {s.project for s in await engine.list_executions()} == {"a"}
        with pytest.raises(ExecutionNotFound):
            await engine.history(two_projects["b"])
        with pytest.raises(AccessDenied, match=f"role '{tenant_role}'.*slipstream admin grant"):
            await engine.launch(wf.diamond, project="b", x=1)


async def test_a_tenant_role_tails_the_log_of_its_project(
    tenant: asyncpg.Connection, postgres_database: str, postgres_schema: str, tenant_role: str
) -> None:
    """A tenant's store registers its listening session as a tailer (appends then notify), and is
    woken by an append to its project."""
    dsn = as_role(postgres_database, tenant_role)
    async with PostgresEventStore(dsn, schema=postgres_schema) as store:
        await store.wait_for_changes(timeout=0.01)  # a relay's first wait: the session registers
        assert store._listener is not None
        assert await tenant.fetchval("SELECT array_agg(pid) FROM slipstream_tailers") == [
            store._listener.get_server_pid()
        ]
        waiter = asyncio.create_task(store.wait_for_changes(timeout=30))
        await asyncio.sleep(0.2)
        started = asyncio.get_running_loop().time()
        eid = f"tail-{uuid.uuid4().hex[:8]}"
        await store.append(eid, 0, [created(eid, project="a")])
        await asyncio.wait_for(waiter, timeout=30)
        assert asyncio.get_running_loop().time() - started < 5
    assert await tenant.fetchval("SELECT count(*) FROM slipstream_tailers") == 0


async def test_a_tenant_roles_serving_loop_beats(
    tenant: asyncpg.Connection, postgres_database: str, postgres_schema: str, tenant_role: str
) -> None:
    """Its beats (migration 0011) go through the owner's function: without them the other serving
    processes could not tell it from a silent one."""
    dsn = as_role(postgres_database, tenant_role)
    async with PostgresEventStore(dsn, schema=postgres_schema) as store:
        await store.announce_loop("a")
        assert store._listener is not None
        pid = store._listener.get_server_pid()
        first = await tenant.fetchval("SELECT beat FROM slipstream_members WHERE pid = $1", pid)
        await asyncio.sleep(1.2)
        assert first is not None
        assert await tenant.fetchval("SELECT beat FROM slipstream_members WHERE pid = $1", pid) > first


async def test_a_tenant_role_that_may_not_end_a_silent_owners_session_says_so_once(
    tenant: asyncpg.Connection,
    postgres_database: str,
    postgres_schema: str,
    tenant_role: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Ending a silent serve's session takes its role's rights (or pg_signal_backend): a tenant's
    serve may not end the owner's (a superuser here), and says so once, naming the fix."""
    async with (
        PostgresEventStore(postgres_database, schema=postgres_schema) as owner,
        PostgresEventStore(as_role(postgres_database, tenant_role), schema=postgres_schema, member_timeout=2) as mine,
    ):
        await owner.announce_loop()
        watcher = owner._leases._watcher
        assert watcher is not None and owner._listener is not None
        watcher.cancel()  # the owner's serve stops beating
        await mine.announce_loop("a")
        await asyncio.sleep(4)
        said = [r.getMessage() for r in caplog.records if "may not end" in r.getMessage()]
        assert len(said) == 1 and "pg_signal_backend" in said[0], said
        assert not owner._listener.is_closed()
        assert await mine.serving_loops() == 2


async def test_a_tenant_role_started_before_the_owner_after_an_upgrade_is_told_to_start_the_owner(
    tenant: asyncpg.Connection, postgres_database: str, postgres_schema: str, tenant_role: str
) -> None:
    newest = max(m.version for m in load_migrations("postgres"))
    await _admin(postgres_database, f'DELETE FROM "{postgres_schema}".schema_migrations WHERE version = {newest}')
    store = PostgresEventStore(as_role(postgres_database, tenant_role), schema=postgres_schema)
    with pytest.raises(ConfigError, match=r"start the owner first \(`slipstream serve`, or `slipstream admin grant`\)"):
        await store.start()
    await store.close()


async def test_grants_are_listed_and_revoked(
    tenant: asyncpg.Connection, postgres_database: str, postgres_schema: str, tenant_role: str
) -> None:
    assert not await grant(postgres_database, tenant_role, "a", schema=postgres_schema)  # idempotent
    assert await grant(postgres_database, tenant_role, "c", "staging", schema=postgres_schema)
    listed = [(g.project, g.domain) for g in await list_grants(postgres_database, tenant_role, schema=postgres_schema)]
    assert listed == [("a", None), ("c", "staging")]
    assert await revoke(postgres_database, tenant_role, "a", schema=postgres_schema) == 1
    assert await tenant.fetchval("SELECT count(*) FROM executions") == 0  # still a grant: privileges kept
    assert await revoke(postgres_database, tenant_role, schema=postgres_schema) == 1
    with pytest.raises(asyncpg.InsufficientPrivilegeError):  # the last grant went: so did the privileges
        await tenant.fetchval(f'SELECT count(*) FROM "{postgres_schema}".executions')
    for role, project, domain in (("bad role", "a", None), (tenant_role, "", None), (tenant_role, "a", "prod")):
        with pytest.raises(InvalidScope):
            await grant(postgres_database, role, project, domain, schema=postgres_schema)


async def test_the_domain_of_a_grant_narrows_it(
    postgres_database: str, postgres_schema: str, tenant_role: str, tmp_path: Path
) -> None:
    async with engine_on(postgres_database, postgres_schema, tmp_path) as owner:
        for domain in ("development", "production"):
            await (await owner.launch(wf.diamond, project="a", domain=domain, x=1)).wait(timeout=60)
    await grant(postgres_database, tenant_role, "a", "production", schema=postgres_schema)
    async with engine_on(as_role(postgres_database, tenant_role), postgres_schema, tmp_path, run_loop=False) as eng:
        assert [s.domain for s in await eng.list_executions()] == ["production"]


def test_the_admin_commands(
    postgres_database: str, tenant_role: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``slipstream admin grant|grants|revoke`` (the store's migrations are applied on the way)."""
    import json

    monkeypatch.delenv("SLIPSTREAM_POSTGRES_DSN", raising=False)

    from engine._cli import _main

    def cli(*args: str) -> tuple[int, str, str]:
        code = _main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    where = ("--postgres", postgres_database)
    code, out, _ = cli("admin", "grant", "--role", tenant_role, "--project", "a", *where)
    assert code == 0 and out == f"granted: role {tenant_role} may use project a (every domain)\n"
    code, out, _ = cli("admin", "grant", "--role", tenant_role, "--project", "b", "--domain", "staging", *where)
    assert code == 0 and "project b/staging" in out
    code, out, _ = cli("admin", "grants", "--role", tenant_role, *where, "--json")
    assert [(g["project"], g["domain"]) for g in json.loads(out)] == [("a", None), ("b", "staging")]
    code, out, _ = cli("admin", "revoke", "--role", tenant_role, *where)
    assert code == 0 and out == f"revoked 2 grants of role {tenant_role}\n"
    for args, fragment in (
        (("--role", tenant_role, "--project", "a"), "needs --postgres DSN"),
        (("--role", "no such role", "--project", "a", *where), "is not a plain Postgres role name"),
        (("--role", "slipstream_nobody_x", "--project", "a", *where), "has no role 'slipstream_nobody_x'"),
        (("--role", tenant_role, "--project", "", *where), "project '' is not a name"),
        (("--role", tenant_role, "--project", "a", "--domain", "prod", *where), "did you mean 'production'"),
    ):
        code, _, err = cli("admin", "grant", *args)
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and fragment in err, err
