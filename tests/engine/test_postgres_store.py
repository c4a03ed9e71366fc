"""Postgres-only behaviour of `PostgresEventStore`: commit-safe tailing, migrations, lost connections."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import anyio
import asyncpg
import pytest

from engine._chain import chain_checksums
from engine._postgres_store import PostgresEventStore
from engine._store_common import load_migrations
from engine.errors import ConcurrencyConflict, ConfigError, SlipstreamError, StoreUnavailable
from engine.events import ExecutionAborted, ExecutionStarted, NodeQueued, encode_event
from engine.interfaces import StoredEvent, to_records
from tests.conftest import with_database
from tests.engine.test_store_contract import T0, created, lifecycle, new_id, queued


@pytest.fixture
async def store(postgres_database: str, postgres_schema: str) -> AsyncIterator[PostgresEventStore]:
    async with PostgresEventStore(postgres_database, schema=postgres_schema, max_size=4) as s:
        yield s


async def raw(store: PostgresEventStore) -> asyncpg.Connection:
    return await asyncpg.connect(store._dsn, server_settings={"search_path": store.schema})


async def terminate_store_backends(dsn: str) -> int:
    """Kill every store connection to this database (pool and listener), as a failover would."""
    admin = await asyncpg.connect(dsn)
    try:
        return int(
            await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = 'slipstream-store'"
                " AND pid <> pg_backend_pid()"
            )
        )
    finally:
        await admin.close()


async def test_read_all_never_skips_a_lower_seq_that_commits_late(store: PostgresEventStore) -> None:
    first, second = new_id(), new_id()
    early = await raw(store)
    late = await raw(store)
    insert = (
        "INSERT INTO events (execution_id, version, kind, node_id, attempt, payload)"
        " VALUES ($1, 1, 'ExecutionCreated', '', 0, $2) RETURNING seq"
    )
    try:
        low = early.transaction()
        await low.start()
        low_seq = await early.fetchval(insert, first, encode_event(created(first)))
        high = late.transaction()
        await high.start()
        high_seq = await late.fetchval(insert, second, encode_event(created(second)))
        assert low_seq < high_seq
        await high.commit()

        # the higher seq is committed, but the lower one may still commit: a tailer must wait
        assert await store.read_all(0) == []
        await low.commit()
        # both now, or (while another transaction of the server is open) a prefix of both, never a gap
        expected = [(low_seq, first), (high_seq, second)]
        with anyio.fail_after(30):
            while (tailed := [(g.seq, g.event.execution_id) for g in await store.read_all(0)]) != expected:
                assert tailed == expected[: len(tailed)], tailed
                await anyio.sleep(0.05)
    finally:
        await early.close()
        await late.close()


async def test_read_all_returns_only_the_committed_prefix(store: PostgresEventStore) -> None:
    done = new_id()
    await store.append(done, 0, [created(done)])
    blocker = await raw(store)
    try:
        tx = blocker.transaction()
        await tx.start()
        pending = new_id()
        await blocker.execute(
            "INSERT INTO events (execution_id, version, kind, payload) VALUES ($1, 1, 'ExecutionCreated', $2)",
            pending,
            encode_event(created(pending)),
        )
        later = new_id()
        await store.append(later, 0, [created(later)])
        assert [g.event.execution_id for g in await store.read_all(0)] == [done]
        await tx.rollback()
        # other transactions of the server (other tests, other databases) may hold the prefix back
        # a moment longer: read_all waits for every older transaction, whoever runs it
        with anyio.fail_after(30):
            while (found := [g.event.execution_id for g in await store.read_all(0)]) != [done, later]:
                assert found == [done], found
                await anyio.sleep(0.05)
    finally:
        await blocker.close()


async def test_truncate_is_rejected(store: PostgresEventStore) -> None:
    eid = new_id()
    await store.append(eid, 0, lifecycle(eid))
    conn = await raw(store)
    try:
        with pytest.raises(asyncpg.PostgresError, match="append-only: TRUNCATE on table events is not allowed"):
            await conn.execute("TRUNCATE events")
    finally:
        await conn.close()
    assert await store.read(eid) == lifecycle(eid)


async def test_migrations_are_recorded_and_concurrent_starts_are_safe(
    postgres_database: str, postgres_schema: str
) -> None:
    stores = [PostgresEventStore(postgres_database, schema=postgres_schema, min_size=1, max_size=2) for _ in range(5)]
    await asyncio.gather(*(s.start() for s in stores))
    try:
        conn = await asyncpg.connect(postgres_database, server_settings={"search_path": postgres_schema})
        try:
            rows = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
        finally:
            await conn.close()
        assert [(r["version"], r["name"]) for r in rows] == [(m.version, m.name) for m in load_migrations("postgres")]
        eid = new_id()
        await stores[0].append(eid, 0, [created(eid)])
        assert await stores[4].current_version(eid) == 1
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    # starting again applies nothing and keeps the data
    async with PostgresEventStore(postgres_database, schema=postgres_schema) as again:
        assert await again.current_version(eid) == 1


async def test_invalid_schema_name_is_rejected() -> None:
    with pytest.raises(ValueError, match="invalid schema name"):
        PostgresEventStore("postgresql://x@localhost/db", schema='x"; DROP TABLE events; --')


# --- start-up errors: one typed error naming the DSN (never its password) and the fix -----------------


def with_user(dsn: str, user: str, password: str | None = None) -> str:
    parts = urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    credentials = user if password is None else f"{user}:{password}"
    return urlunsplit((parts.scheme, f"{credentials}@{host}", parts.path, parts.query, parts.fragment))


async def start_error(dsn: str, **options: object) -> SlipstreamError:
    store = PostgresEventStore(dsn, **options)  # type: ignore[arg-type]
    with pytest.raises(SlipstreamError) as info:
        await store.start()
    assert store._pool is None and store._listener is None  # nothing left open
    assert info.value.__cause__ is not None  # chained to the driver's error
    return info.value


async def test_unreachable_server_raises_store_unavailable() -> None:
    error = await start_error("postgresql://postgres:hunter2@127.0.0.1:1/nothing")
    assert isinstance(error, StoreUnavailable)
    assert str(error) == (
        "cannot reach Postgres at postgresql://postgres:***@127.0.0.1:1/nothing: connection refused; "
        "start the server, or fix the host and port in the DSN, then try again"
    )


async def test_unknown_host_raises_store_unavailable() -> None:
    error = await start_error("postgresql://postgres@no-such-host.invalid:5432/test")
    assert isinstance(error, StoreUnavailable)
    assert "no-such-host.invalid" in str(error) and "host name not found" in str(error)
    assert "fix the host name in the DSN" in str(error)


async def test_missing_database_is_a_config_error(postgres_database: str) -> None:
    name = f"slipstream_missing_{uuid.uuid4().hex[:8]}"
    dsn = with_database(postgres_database, name)
    error = await start_error(dsn)
    assert isinstance(error, ConfigError)
    assert str(error).startswith(f"Postgres database {name!r} does not exist (DSN {dsn}): ")
    assert f'CREATE DATABASE "{name}"' in str(error) and "name an existing database" in str(error)


async def test_refused_user_is_a_config_error_without_the_password(postgres_database: str) -> None:
    role = f"slipstream_nobody_{uuid.uuid4().hex[:8]}"
    error = await start_error(with_user(postgres_database, role, "s3cret"))
    assert isinstance(error, ConfigError)
    assert f"Postgres refused user {role!r}" in str(error) and "fix the user and password in the DSN" in str(error)
    assert "s3cret" not in str(error) and ":***@" in str(error)


async def test_a_user_without_create_rights_is_a_config_error(postgres_database: str, postgres_schema: str) -> None:
    role = f"slipstream_reader_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(postgres_database)
    try:
        await admin.execute(f'CREATE ROLE "{role}" LOGIN')
        try:
            error = await start_error(with_user(postgres_database, role), schema=postgres_schema)
        finally:
            await admin.execute(f'DROP ROLE "{role}"')
    finally:
        await admin.close()
    assert isinstance(error, ConfigError)
    assert f"Postgres user {role!r} may not create the event store in schema {postgres_schema!r}" in str(error)
    assert "grant it CREATE on the database" in str(error)
    assert "start the owner first (`slipstream serve`, or `slipstream admin grant`)" in str(error)


@pytest.mark.parametrize(
    "dsn",
    ["notadsn", "mysql://root@localhost/db", "postgresql://postgres@127.0.0.1:notaport/test"],
)
async def test_malformed_dsn_is_a_config_error(dsn: str) -> None:
    error = await start_error(dsn)
    assert isinstance(error, ConfigError)
    assert str(error).startswith(f"invalid Postgres DSN {dsn!r}: ")
    assert "write postgresql://USER[:PASSWORD]@HOST:PORT/DATABASE" in str(error)


def test_password_parameter_is_redacted_too() -> None:
    store = PostgresEventStore("postgresql://127.0.0.1/test?user=u&password=hunter2&sslmode=disable")
    assert store._redacted_dsn() == "postgresql://127.0.0.1/test?user=u&password=***&sslmode=disable"


async def test_recovers_after_connections_are_killed(store: PostgresEventStore, postgres_database: str) -> None:
    eid = new_id()
    await store.append(eid, 0, [created(eid)])
    acknowledged = 1
    for _ in range(3):
        assert await terminate_store_backends(postgres_database) >= 1
        # The next calls either succeed or raise StoreUnavailable; nothing is silently dropped.
        for _attempt in range(20):
            version = await _current_version_eventually(store, eid)
            assert version >= acknowledged
            try:
                acknowledged = await store.append(eid, version, [queued(eid, version + 1)])
                break
            except StoreUnavailable:
                await asyncio.sleep(0.05)
            except ConcurrencyConflict:  # an append that failed ambiguously did commit: reload
                continue
        else:
            pytest.fail("the store did not recover after its connections were killed")
    events = await store.read(eid)
    assert [e.version for e in events] == list(range(1, len(events) + 1))
    assert len(events) >= acknowledged >= 4


async def _current_version_eventually(store: PostgresEventStore, eid: str) -> int:
    for _ in range(50):
        try:
            return await store.current_version(eid)
        except StoreUnavailable:
            await asyncio.sleep(0.05)
    raise AssertionError("reads did not recover")


async def test_append_interrupted_by_a_killed_connection_is_all_or_nothing(
    store: PostgresEventStore, postgres_database: str
) -> None:
    ids = [new_id() for _ in range(400)]
    batches = [(eid, 0, lifecycle(eid)) for eid in ids]
    append = asyncio.create_task(store.append_many(batches))
    await asyncio.sleep(0.01)
    await terminate_store_backends(postgres_database)
    try:
        await append
        committed = True
    except StoreUnavailable:
        committed = False
    counts = {len(await store.read(eid)) for eid in ids} if committed else None
    if committed:
        assert counts == {6}
    else:
        # StoreUnavailable: the transaction either committed whole or not at all
        lengths = {await _current_version_eventually(store, eid) for eid in ids}
        assert lengths in ({0}, {6})
    # and the next append works
    again = new_id()
    for _ in range(20):
        try:
            await store.append(again, 0, [created(again)])
            break
        except StoreUnavailable:
            await asyncio.sleep(0.05)
    assert await store.current_version(again) == 1


async def test_listener_reconnects_after_being_killed(
    store: PostgresEventStore, postgres_database: str, postgres_schema: str
) -> None:
    await terminate_store_backends(postgres_database)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while store._listener is None or store._listener.is_closed():
        assert loop.time() < deadline, "listener did not reconnect"
        await asyncio.sleep(0.05)
    # drain the spurious wake-ups of the reconnect
    await store.wait_for_changes(timeout=0.1)
    async with PostgresEventStore(postgres_database, schema=postgres_schema) as other:
        waiter = asyncio.create_task(store.wait_for_changes(timeout=10))
        await asyncio.sleep(0.05)
        eid = new_id()
        start = loop.time()
        await other.append(eid, 0, [created(eid)])
        await asyncio.wait_for(waiter, timeout=5)
        assert loop.time() - start < 2


async def _channels(store: PostgresEventStore) -> set[str]:
    """The channels the store's listener session LISTENs on (asked on that session)."""
    assert store._listener is not None
    found = await store._leases.exclusive(
        lambda session: session.fetchval("SELECT array_agg(c) FROM pg_listening_channels() c")
    )
    return set(found or [])


async def test_a_loop_is_not_woken_by_every_append_until_a_consumer_wants_them(
    store: PostgresEventStore, postgres_database: str, postgres_schema: str
) -> None:
    """A serving loop listens for creations and status changes only: a node event of a running
    execution, appended by another process, neither wakes its watcher nor reaches its listener.
    Once a consumer here waits for every append (a relay), the store listens to every append."""
    loop = asyncio.get_running_loop()
    eid = new_id()
    async with PostgresEventStore(postgres_database, schema=postgres_schema) as other:
        await other.append(eid, 0, [created(eid), ExecutionStarted(execution_id=eid, version=2, at=T0)])
        assert await _channels(store) == {"slipstream_executions"}
        with anyio.fail_after(30):
            while True:  # until the creation's and the start's wake-ups are taken (a wait times out)
                start = loop.time()
                await store.wait_for_changes(timeout=0.3, executions_only=True)
                if loop.time() - start >= 0.29:
                    break
            await other.append(eid, 2, [queued(eid, 3)])
            start = loop.time()
            await store.wait_for_changes(timeout=0.5, executions_only=True)
            assert loop.time() - start >= 0.45, "woken by a node event"

            async def relay() -> None:
                await store.wait_for_changes(timeout=0.01)  # a first wait: the store starts listening
                await store.wait_for_changes(timeout=0.3)
                await store.wait_for_changes(timeout=10)

            tailer = asyncio.create_task(relay())
            await asyncio.sleep(0.5)
            assert await _channels(store) == {"slipstream_executions", "slipstream_events"}
            start = loop.time()
            await other.append(eid, 3, [queued(eid, 4)])
            await tailer
            assert loop.time() - start < 2
        # the listener's replacement listens to both channels too
        old = store._listener
        await terminate_store_backends(postgres_database)
        deadline = loop.time() + 10
        while store._listener is None or store._listener is old or store._listener.is_closed():
            assert loop.time() < deadline, "listener did not reconnect"
            await asyncio.sleep(0.05)
        assert await _channels(store) == {"slipstream_executions", "slipstream_events"}


async def test_a_loop_still_hears_of_an_abort_by_another_process(
    store: PostgresEventStore, postgres_database: str, postgres_schema: str
) -> None:
    """changed_by_others names an execution another process aborted, without listening to every append."""
    eid = new_id()
    await store.append(eid, 0, [created(eid), ExecutionStarted(execution_id=eid, version=2, at=T0)])
    assert store.changed_by_others() is None  # the first answer: unknown
    async with PostgresEventStore(postgres_database, schema=postgres_schema) as other:
        await other.append(eid, 2, [queued(eid, 3)])
        await other.append(eid, 3, [ExecutionAborted(execution_id=eid, version=4, at=T0, reason="stop")])
        with anyio.fail_after(10):
            while eid not in (found := store.changed_by_others() or set()):
                assert found == set(), found
                await asyncio.sleep(0.02)
    assert "slipstream_events" not in await _channels(store)


async def _heard(listening: list[str], eid: str, seconds: float) -> bool:
    """Whether a NOTIFY on slipstream_events named ``eid`` within ``seconds``."""
    with anyio.move_on_after(seconds):
        while eid not in listening:  # noqa: ASYNC110 (filled by the driver's callback)
            await asyncio.sleep(0.01)
    return eid in listening


async def _tailers(conn: asyncpg.Connection) -> set[int]:
    return {int(pid) for (pid,) in await conn.fetch("SELECT pid FROM slipstream_tailers")}


async def _start_tailing(store: PostgresEventStore) -> None:
    """A consumer of every append, as a relay is: its first wait registers the store's session."""
    await store.wait_for_changes(timeout=0.01)


async def test_appends_notify_only_while_a_session_tails_the_log(
    store: PostgresEventStore, postgres_database: str, postgres_schema: str
) -> None:
    """No NOTIFY on slipstream_events (a global lock at commit) while nobody tails the log; one per
    append while a store's consumer waits for every append; none again once that store closed."""
    heard: list[str] = []
    conn = await raw(store)
    try:
        await conn.add_listener("slipstream_events", lambda *args: heard.append(args[-1]))
        before = new_id()
        await store.append(before, 0, [created(before)])
        assert not await _heard(heard, before, 0.5)
        async with PostgresEventStore(postgres_database, schema=postgres_schema) as tailer:
            await _start_tailing(tailer)
            assert tailer._listener is not None
            assert await _tailers(conn) == {tailer._listener.get_server_pid()}
            during = new_id()
            await store.append(during, 0, [created(during)])
            assert await _heard(heard, during, 10)
            await store.append(during, 1, [queued(during, 2)])  # the lean append notifies too
            heard.clear()
            await store.append(during, 2, [queued(during, 3)])
            assert await _heard(heard, during, 10)
        assert await _tailers(conn) == set()
        after = new_id()
        await store.append(after, 0, [created(after)])
        assert not await _heard(heard, after, 0.5)
    finally:
        await conn.close()


async def test_a_tailer_gone_without_unregistering_is_forgotten(
    store: PostgresEventStore, postgres_database: str, postgres_schema: str
) -> None:
    """A tailer's row outlives a killed session only until the next registration or store start:
    a crashed relay does not leave every append notifying for good."""
    conn = await raw(store)
    try:
        crashed = await raw(store)
        await crashed.execute("SELECT slipstream_tail(true)")
        dead = crashed.get_server_pid()
        crashed.terminate()
        with anyio.fail_after(10):
            while await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", dead):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert await _tailers(conn) == {dead}
        async with PostgresEventStore(postgres_database, schema=postgres_schema):
            assert await _tailers(conn) == set()  # a store starting cleans up
        crashed = await raw(store)
        await crashed.execute("SELECT slipstream_tail(true)")
        dead = crashed.get_server_pid()
        crashed.terminate()
        await _start_tailing(store)  # a registration cleans up too
        assert store._listener is not None
        with anyio.fail_after(10):
            while await _tailers(conn) != {store._listener.get_server_pid()}:  # noqa: ASYNC110 (polled)
                await asyncio.sleep(0.01)
        # a tailer whose session is killed registers its replacement session
        old = store._listener
        await terminate_store_backends(postgres_database)
        with anyio.fail_after(10):
            while store._listener is None or store._listener is old or store._listener.is_closed():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert await _tailers(conn) == {store._listener.get_server_pid()}
    finally:
        await conn.close()


async def test_an_append_that_missed_the_registration_still_wakes_the_new_tailer(
    store: PostgresEventStore, postgres_database: str, postgres_schema: str
) -> None:
    """An append that looked for tailers before a tailer registered sends no NOTIFY; if it commits
    after the tailer's first read, the tailer is still woken for it, once it has committed."""
    eid = new_id()
    await store.append(eid, 0, [created(eid)])
    (first,) = await store.read_records(eid)
    other = await raw(store)
    try:
        transaction = other.transaction()
        await transaction.start()
        await _their_uncommitted_version_2(other, eid, first)  # looked: no tailer, no NOTIFY
        async with PostgresEventStore(postgres_database, schema=postgres_schema) as tailer:
            await _start_tailing(tailer)
            position = max(found.seq for found in await tailer.read_all(0, 100))
            waiter = asyncio.create_task(tailer.wait_for_changes(timeout=30))
            await asyncio.sleep(0.3)
            assert not waiter.done()  # the catch-up waits for the open append
            committed = asyncio.get_running_loop().time()
            await transaction.commit()
            await asyncio.wait_for(waiter, timeout=30)
            assert asyncio.get_running_loop().time() - committed < 5
            caught_up = await tailer.read_all(position, 100)
            assert [(found.event.execution_id, found.event.version) for found in caught_up] == [(eid, 2)]
    finally:
        await other.close()


async def test_unix_socket_dsn(postgres_database: str, postgres_schema: str) -> None:
    parts = urlsplit(postgres_database)
    socket_dir = Path("/var/run/postgresql")
    if parts.hostname not in ("127.0.0.1", "localhost") or not (socket_dir / f".s.PGSQL.{parts.port}").exists():
        pytest.skip("no local unix socket for this server")
    dsn = f"postgresql://{parts.username}@{parts.path}?host={socket_dir}&port={parts.port}"
    try:
        async with PostgresEventStore(dsn, schema=postgres_schema) as store:
            eid = new_id()
            await store.append(eid, 0, [created(eid)])
            assert await store.current_version(eid) == 1
    except (StoreUnavailable, ConfigError) as exc:  # pg_hba may not allow local socket connections
        pytest.skip(f"unix socket refused: {exc}")


async def test_many_executions_in_one_call_and_notify(store: PostgresEventStore) -> None:
    ids = [f"bulk-{uuid.uuid4().hex[:8]}-{i}" for i in range(1000)]
    versions = await store.append_many([(eid, 0, [created(eid), queued(eid, 2)]) for eid in ids])
    assert versions == [2] * 1000
    page = await store.list_executions(limit=1000)
    assert {s.execution_id for s in page.items} == set(ids)
    nxt = NodeQueued(execution_id=ids[0], version=3, at=T0, node_id="b", attempt=1)
    assert await store.append(ids[0], 2, [nxt]) == 3


async def test_a_lease_dies_with_its_session(postgres_database: str, postgres_schema: str) -> None:
    """A crashed owner (its session killed) never blocks an execution."""
    async with (
        PostgresEventStore(postgres_database, schema=postgres_schema) as owner,
        PostgresEventStore(postgres_database, schema=postgres_schema) as other,
    ):
        assert await owner.claim("leased")
        assert not await other.claim("leased")
        admin = await asyncpg.connect(postgres_database)
        try:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND pid <> pg_backend_pid() "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
        finally:
            await admin.close()
        for _ in range(50):
            if await other.claim("leased"):
                break
            await asyncio.sleep(0.1)
        assert await other.claim("leased")


# --- the lean append (migration 0007): one existing execution per call -------------------------------

_STORE_WAITS_ON_A_LOCK = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
    " AND application_name = 'slipstream-store' AND wait_event_type = 'Lock'"
)
_STORE_ADVISORY_LOCKS = (
    "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE l.locktype = 'advisory'"
    " AND a.datname = current_database() AND a.application_name = 'slipstream-store'"
)


async def _their_uncommitted_version_2(other: asyncpg.Connection, eid: str, after: StoredEvent) -> None:
    """Another process's append of version 2 (node ``theirs``), left uncommitted in ``other``'s
    open transaction: an append of ours at version 1 waits on it."""
    theirs = NodeQueued(execution_id=eid, version=2, at=T0, node_id="theirs", attempt=1)
    (record,) = to_records(eid, 1, [theirs])
    (checksum,) = chain_checksums(eid, after.checksum, [record])
    await other.execute(
        "SELECT slipstream_append_one($1, 1, $2, NULL, $3, $4, $5, $6, $7)",
        eid,
        after.checksum,
        [record.kind],
        [record.node_id],
        [record.attempt],
        [record.payload],
        [checksum],
    )


async def _until_the_store_waits_on_a_lock(other: asyncpg.Connection) -> None:
    with anyio.fail_after(30):  # polled: no event says it waits
        while not await other.fetchval(_STORE_WAITS_ON_A_LOCK):  # noqa: ASYNC110
            await anyio.sleep(0.01)


async def test_a_writer_at_the_same_version_still_conflicts_through_the_lean_append(store: PostgresEventStore) -> None:
    eid = new_id()
    await store.append(eid, 0, [created(eid)])
    (first,) = await store.read_records(eid)
    ours = NodeQueued(execution_id=eid, version=2, at=T0, node_id="ours", attempt=1)
    other = await raw(store)
    try:
        # another process's append of version 2, not yet committed when ours arrives
        tx = other.transaction()
        await tx.start()
        await _their_uncommitted_version_2(other, eid, first)
        appending = asyncio.create_task(store.append(eid, 1, [ours]))
        await _until_the_store_waits_on_a_lock(other)  # ours waits on their uncommitted version 2
        await tx.commit()
        with pytest.raises(ConcurrencyConflict) as caught:
            await appending
        assert (caught.value.execution_id, caught.value.expected_version, caught.value.actual_version) == (eid, 1, 2)
        held = await other.fetchval(_STORE_ADVISORY_LOCKS)
        assert held == 0, "a lost race left the sequence lock held on a pooled connection"
    finally:
        await other.close()
    assert [e.version for e in await store.read(eid)] == [1, 2]  # reads verify the chain
    assert [(r.version, r.node_id) for r in await store.read_records(eid)] == [(1, ""), (2, "theirs")]
    summary = await store.get_summary(eid)
    assert summary is not None and summary.version == 2
    # the loser's cache was dropped: its next append chains from their event
    assert await store.append(eid, 2, [queued(eid, 3)]) == 3
    assert [e.version for e in await store.read(eid)] == [1, 2, 3]


async def test_an_append_cancelled_while_its_function_holds_the_sequence_lock_leaves_no_lock_behind(
    store: PostgresEventStore, postgres_database: str, postgres_schema: str
) -> None:
    eid = new_id()
    await store.append(eid, 0, [created(eid)])
    (first,) = await store.read_records(eid)
    other = await raw(store)
    try:
        # another process's uncommitted version 2: our insert waits on it, inside the function,
        # holding the session's sequence lock
        tx = other.transaction()
        await tx.start()
        await _their_uncommitted_version_2(other, eid, first)
        appending = asyncio.create_task(store.append(eid, 1, [queued(eid, 2)]))
        await _until_the_store_waits_on_a_lock(other)
        appending.cancel()  # a round cancelled mid-append (a shutdown, a timeout)
        with pytest.raises(asyncio.CancelledError):
            await appending
        await tx.commit()
        with anyio.fail_after(10):  # the pool's connections hold no advisory lock once idle
            while await other.fetchval(_STORE_ADVISORY_LOCKS):  # noqa: ASYNC110
                await anyio.sleep(0.05)
    finally:
        await other.close()
    # another process's store appends at once (a leaked lock would stall it for good)
    async with PostgresEventStore(postgres_database, schema=postgres_schema) as second:
        with anyio.fail_after(10):
            assert await second.append(eid, 2, [queued(eid, 3)]) == 3
    assert await store.append(eid, 3, [queued(eid, 4)]) == 4
    assert [e.version for e in await store.read(eid)] == [1, 2, 3, 4]


async def test_the_lean_append_refuses_a_version_that_is_not_the_newest(store: PostgresEventStore) -> None:
    eid = new_id()
    await store.append(eid, 0, [created(eid), queued(eid, 2)])
    store._heads.pop(eid, None)
    with pytest.raises(ConcurrencyConflict) as caught:  # version 1 exists, 2 is taken
        await store.append(eid, 1, [queued(eid, 2)])
    assert (caught.value.expected_version, caught.value.actual_version) == (1, 2)
    with pytest.raises(ConcurrencyConflict) as caught:  # version 5 does not exist
        await store.append(eid, 5, [queued(eid, 6)])
    assert (caught.value.expected_version, caught.value.actual_version) == (5, 2)
    assert [e.version for e in await store.read(eid)] == [1, 2]
    summary = await store.get_summary(eid)
    assert summary is not None and (summary.version, summary.status) == (2, "created")


async def test_group_appends_to_existing_executions_still_move_each_row(store: PostgresEventStore) -> None:
    ids = [new_id() for _ in range(3)]
    await store.append_many([(eid, 0, [created(eid)]) for eid in ids])
    started = [ExecutionStarted(execution_id=eid, version=2, at=T0) for eid in ids]
    # several existing executions and a new one in one call: the general append function
    fresh = new_id()
    versions = await store.append_many(
        [(eid, 1, [start, queued(eid, 3)]) for eid, start in zip(ids, started, strict=True)]
        + [(fresh, 0, [created(fresh)])]
    )
    assert versions == [3, 3, 3, 1]
    for eid in ids:
        summary = await store.get_summary(eid)
        assert summary is not None and (summary.version, summary.status) == (3, "running")
        assert [e.version for e in await store.read(eid)] == [1, 2, 3]
    # concurrent single appends of one store: the first is written at once (the lean function), the
    # others meanwhile queue and go together (the general one); a stale one conflicts alone
    results = await asyncio.gather(
        *(store.append(eid, 3, [queued(eid, 4)]) for eid in ids),
        store.append(ids[1], 3, [queued(ids[1], 4)]),
        return_exceptions=True,
    )
    assert results[:3] == [4, 4, 4]
    assert isinstance(results[3], ConcurrencyConflict) and results[3].execution_id == ids[1]
    for eid in ids:
        summary = await store.get_summary(eid)
        assert summary is not None and summary.version == 4
        assert [e.version for e in await store.read(eid)] == [1, 2, 3, 4]
