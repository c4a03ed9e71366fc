"""`PostgresEventStore`: the production event store (asyncpg), DESIGN section 5.

An append is one call of the server-side function ``slipstream_append`` (migration 0004): one
round trip and one transaction for every execution of the call, in which it does what follows.

1. take the session advisory lock ``_SEQ_LOCK``, insert all events with one ``INSERT ... SELECT
   FROM unnest(...)``, release the lock. The insert is the transaction's first write, so its
   transaction id (stored in ``events.xid``) and its ``seq`` values are allocated inside the
   lock: across store writers, ``xid`` order and ``seq`` order agree. That is what makes
   ``read_all``'s ``xid < pg_snapshot_xmin(pg_current_snapshot())`` filter commit-safe: a row is
   returned only once every transaction that could still commit a lower ``seq`` has finished.
   The lock is released before commit, so commits (WAL flushes) of concurrent appends overlap.
2. move the ``executions`` projection rows with a conditional ``UPDATE ... WHERE version =
   expected`` (or an ``INSERT ... ON CONFLICT DO NOTHING`` for new executions); a row that does not
   match is a ``ConcurrencyConflict``. Racers on the same version also meet on the events unique
   key; either way exactly one wins.
3. ``pg_notify('slipstream_events', execution_id)`` per execution, delivered at commit, while a
   session tails the log (migration 0010: a store registers its listening session once one of
   its consumers waits for every append).

The commonest append, one execution that exists already (each round of a running execution),
calls ``slipstream_append_one`` (migration 0007) instead: the same steps and errors for one
execution, with its scalars and one array per event column rather than 23 arrays, whose binding
alone cost about a tenth of the append.

Each event carries a checksum chained to the previous event of its execution (``engine._chain``,
migration 0005), computed here before the call. The checksum to chain from comes from a cache of
each execution's newest event that reads and appends fill, so the steady state costs no extra
round trip; on a miss one query fetches it. The function checks the cached checksum against the
stored one in the same call, so a stale cache costs a `ConcurrencyConflict`, never a wrong chain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg
import msgspec

from engine._chain import chain_checksums
from engine._outage import Reachability
from engine._pg_leases import DEFAULT_MEMBER_TIMEOUT, AdvisoryLeases, member_name
from engine._projection import (
    ProjectionChange,
    check_reader_cursor,
    decode_cursor,
    normalize_statuses,
    page_of,
    plan_projection,
)
from engine._store_common import load_migrations
from engine._wakeups import ChangeSignal
from engine.errors import AccessDenied, ConcurrencyConflict, ConfigError, SlipstreamError, StoreUnavailable
from engine.interfaces import (
    EventStore,
    ExecutionPage,
    ExecutionStatus,
    ExecutionSummary,
    StoredEvent,
)

__all__ = ["EXECUTIONS_CHANNEL", "NOTIFY_CHANNEL", "PostgresEventStore"]

log = logging.getLogger(__name__)
# "lost Postgres ..." / "Postgres ... back after N s": what a server's operator reads (`slipstream serve`
# prints this logger), one line per change of state however many calls failed in between
reach_log = logging.getLogger("slipstream.store")


def _not_a_floor_retry(record: logging.LogRecord) -> bool:
    # asyncpg's pool retries its min_size floor on its own during an outage and logs a traceback
    # each time; the store reports the outage once (Reachability), so these add only noise
    return not record.getMessage().startswith("Failed to restore the pool connection floor")


logging.getLogger("asyncpg.pool").addFilter(_not_a_floor_retry)

# Every append NOTIFYs this channel while some session tails the log (migration 0010); creations
# and status changes also NOTIFY the executions one (migration 0009), all a control loop looking
# for work needs to hear of.
NOTIFY_CHANNEL = "slipstream_events"
EXECUTIONS_CHANNEL = "slipstream_executions"
# Arbitrary constants naming Slipstream's advisory locks (pg_advisory_* take one bigint key).
_SEQ_LOCK = 0x51175EA3_0001
_MIGRATION_LOCK = 0x51175EA3_0002
_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# How long a new tailer waits for the appends that may have missed its registration, at most (an
# unrelated transaction left open anywhere on the server holds pg_snapshot_xmin back).
_CATCH_UP_LIMIT_S = 5.0

# Errors that mean "the server or the connection went away", not "the request was wrong".
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,  # protocol state broken by a connection killed mid-call
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, pg_terminate_backend (57P01)
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections
)

# One round trip, one transaction: the server-side function of migration 0004 (its header says why
# the sequence lock is kept, and how it is held only around the insert).
_APPEND = "SELECT slipstream_append(" + ", ".join(f"${i}" for i in range(1, 24)) + ")"
# The commonest append, one execution that exists already (a round of a running execution), through
# the function of migration 0007: the same checks and locking with 9 parameters, not 23 arrays.
_APPEND_ONE = "SELECT slipstream_append_one($1, $2, $3, $4, $5, $6, $7, $8, $9)"
_CONFLICT_STATE = "SL409"  # raised by slipstream_append when another writer won the race

_READ_ALL = """
SELECT seq, execution_id, version, payload, xid < pg_snapshot_xmin(pg_current_snapshot()) AS safe
FROM events WHERE seq > $1 ORDER BY seq LIMIT $2
"""

_READ = (
    "SELECT version, kind, node_id, attempt, payload, checksum FROM events"
    " WHERE execution_id = $1 AND version >= $2 ORDER BY version"
)
# the reads that queued while one was in flight, in one query: (execution_id, from version) pairs
# by position (`ord`), each row tagged with the pair's position
_READ_MANY = """
SELECT r.ord, e.version, e.kind, e.node_id, e.attempt, e.payload, e.checksum
FROM unnest($1::text[], $2::integer[]) WITH ORDINALITY AS r(i, a, ord)
JOIN events e ON e.execution_id = r.i AND e.version >= r.a
ORDER BY r.ord, e.version
"""

# the checksums appends chain from, on a cache miss: (execution_id, version) -> checksum
_HEADS = """
SELECT r.i, e.seq IS NOT NULL, e.checksum
FROM unnest($1::text[], $2::integer[]) AS r(i, v)
LEFT JOIN events e ON e.execution_id = r.i AND e.version = r.v
"""
# Executions whose newest checksum the store remembers; beyond it the oldest are forgotten (a miss
# costs one query at the next append, nothing else).
_HEAD_CACHE_SIZE = 65_536
# The projection guard of migration 0005 lets a transaction that set this through.
_AS_WRITER = "SELECT set_config('slipstream.writer', 'on', true)"

_SUMMARY_COLUMNS = "execution_id, project, domain, workflow, status, created_at, updated_at, version, parent"

_WRITE_CURSOR = """
INSERT INTO cursors (name, seq, updated_at) VALUES ($1, $2, now())
ON CONFLICT (name) DO UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at
WHERE cursors.seq < excluded.seq
"""


class PostgresEventStore(EventStore):
    """Event store on Postgres through an asyncpg pool.

    Migrations in ``engine/migrations`` are applied at `start` (idempotent, safe to run from many
    processes at once). Connection loss during an operation raises `StoreUnavailable`; the pool
    reconnects on the next call. Reads are retried once after a lost connection; appends never are
    (the caller decides, and a retried append that did commit shows up as a `ConcurrencyConflict`).

    Args:
        dsn: a libpq URL, e.g. ``postgresql://user@host:5432/db`` or, for a unix socket,
            ``postgresql://user@/db?host=/path/to/socket-dir``.
        min_size: connections the pool keeps open.
        max_size: most connections the pool opens (plus one for LISTEN).
        schema: the schema holding the tables; created if missing.
        member_timeout: seconds a serving process may go without beating (it beats every half
            second while it serves) before the other serving processes end its session, which
            frees its leases so that its executions move to them; default
            ``$SLIPSTREAM_MEMBER_TIMEOUT``, else 10.

    Raises:
        ValueError: an invalid schema name, or a ``member_timeout`` under 2 seconds.
        ConfigError: ``$SLIPSTREAM_MEMBER_TIMEOUT`` is not a number of seconds, at least 2.
    """

    name = "postgres"

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        schema: str = "public",
        member_timeout: float | None = None,
    ) -> None:
        if not _SCHEMA_NAME.match(schema):
            raise ValueError(f"invalid schema name {schema!r}: use letters, digits and underscores")
        if member_timeout is None:
            member_timeout = _member_timeout_from_environment()
        elif not member_timeout >= _LEAST_MEMBER_TIMEOUT:
            raise ValueError(
                f"member_timeout={member_timeout!r}: give at least {_LEAST_MEMBER_TIMEOUT:g} seconds "
                "(serving processes beat every half second)"
            )
        self._dsn = dsn
        self._min_size = min_size
        self._max_size = max_size
        self._schema = schema
        self._reach = Reachability(f"Postgres at {self._redacted_dsn()}", reach_log)
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        self._listener_task: asyncio.Task[None] | None = None
        self._listener_lost = asyncio.Event()
        self._changes = ChangeSignal()  # any append (wait_for_changes)
        self._execution_changes = ChangeSignal()  # creations, status changes (executions_only=True)
        # whether the listener also LISTENs on NOTIFY_CHANNEL: only once a consumer waits for every
        # append (a relay, a subscriber), since each notification costs its receiver a socket read
        # and a wake-up, and a serving loop alone would take one for every append of every process
        self._every_append = False
        # wakes the tailers once the appends that may have missed their registration have ended
        self._catch_up: asyncio.Task[None] | None = None
        self._closing = False
        # appends waiting for the one being written, to go out together after it
        self._writing = False
        self._waiting: list[tuple[Sequence[tuple[str, int, Sequence[StoredEvent]]], asyncio.Future[None]]] = []
        # the pooled connection appends keep between calls: they are written one at a time, and
        # taking a connection from the pool and handing it back cost each append about 60 us and
        # an event-loop turn (asyncpg shields the release in a task of its own)
        self._writer: asyncpg.Connection | None = None
        # reads that arrive while one is in flight go out together in the next query (a serving
        # loop loads hundreds of new executions at once, each a round trip of its own otherwise)
        self._reading = False
        self._reads: list[tuple[str, int, asyncio.Future[list[StoredEvent]]]] = []
        self._read_sender: asyncio.Task[None] | None = None
        # per execution, the version and checksum of its newest event as last read or appended
        # here (None: an unchained legacy event); the next append chains from it
        self._heads: dict[str, tuple[int, bytes | None]] = {}
        # changed_by_others: executions other processes' NOTIFYs named, once somebody asks
        self._own_sessions: set[int] = set()
        self._foreign: set[str] = set()
        self._tracking = False
        self._missed_notifications = False
        # leases are session advisory locks held on the listener connection: they die with it
        self._leases = AdvisoryLeases(
            lambda: self._listener,
            self._fetch,
            member_name(schema),
            _UNAVAILABLE,
            self._wake_all,
            member_timeout=member_timeout,
        )

    @property
    def schema(self) -> str:
        """The schema the store's tables live in."""
        return self._schema

    def _server_settings(self) -> dict[str, str]:
        return {"search_path": f'"{self._schema}"', "application_name": "slipstream-store"}

    async def start(self) -> None:
        """Open the pool, apply pending migrations and start listening for appends.

        Raises:
            StoreUnavailable: Postgres cannot be reached (refused, timed out, unknown host, shutting
                down, out of connections); starting again later may work.
            ConfigError: the DSN is malformed, names a database that does not exist, or a user that
                the server refuses or that may not create the store's tables.
        """
        if self._pool is not None:
            return
        self._closing = False
        try:
            await self._migrate()
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=self._min_size,
                max_size=self._max_size,
                server_settings=self._server_settings(),
                reset=_keep_session,
                init=self._note_own_session,
            )
            # Listening before start returns: no append after start can go unnoticed.
            await self._connect_listener()
        except BaseException as exc:
            if self._pool is not None:
                self._pool.terminate()
                self._pool = None
            error = self._start_error(exc)
            if error is None:
                raise
            raise error from exc
        self._listener_task = asyncio.create_task(self._listen_forever(), name="slipstream-store-listener")

    def _start_error(self, exc: BaseException) -> SlipstreamError | None:
        """The typed error for a driver error met while starting (``None``: not ours to translate)."""
        dsn = self._redacted_dsn()
        parts = _dsn_parts(self._dsn)
        user = f"user {parts['user']!r}" if "user" in parts else "the DSN's user"
        # ClientConfigurationError is also an InterfaceError (which _UNAVAILABLE holds): test it first.
        # A plain ValueError is what asyncpg raises for a DSN it cannot parse at all (a bad port).
        if isinstance(exc, ValueError):
            return ConfigError(
                f"invalid Postgres DSN {dsn!r}: {exc}; write postgresql://USER[:PASSWORD]@HOST:PORT/DATABASE"
            )
        if isinstance(exc, asyncpg.InvalidCatalogNameError):
            named = re.search(r'database "(.*)" does not exist', str(exc))
            database = named.group(1) if named else parts.get("database", "")
            return ConfigError(
                f"Postgres database {database!r} does not exist (DSN {dsn}): create it (CREATE DATABASE "
                f'"{database}"; or `createdb {database}`), or name an existing database in the DSN'
            )
        if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):  # unknown role, wrong password
            return ConfigError(
                f"Postgres refused {user} (DSN {dsn}): {exc}; fix the user and password in the DSN, "
                "or the server's roles and pg_hba.conf"
            )
        if isinstance(exc, asyncpg.InsufficientPrivilegeError):
            return ConfigError(
                f"Postgres {user} may not create the event store in schema {self._schema!r} (DSN {dsn}): "
                f"{exc}; if the store exists (a tenant role after an upgrade), start the owner first "
                "(`slipstream serve`, or `slipstream admin grant`) so that it applies the new migrations; "
                "for a new store, grant it CREATE on the database, or pass a schema it owns"
            )
        if isinstance(exc, _UNAVAILABLE):
            if isinstance(exc, socket.gaierror):
                fix = "fix the host name in the DSN (or the DNS)"
            elif isinstance(exc, asyncpg.exceptions.InsufficientResourcesError):
                fix = "close idle clients or raise the server's max_connections, then try again"
            elif isinstance(exc, asyncpg.exceptions.OperatorInterventionError):
                fix = "the server is starting up or shutting down: try again once it is up"
            else:
                fix = "start the server, or fix the host and port in the DSN, then try again"
            return StoreUnavailable(f"cannot reach Postgres at {dsn}: {_reason(exc)}; {fix}")
        return None

    async def close(self) -> None:
        """Stop listening and close every connection (idempotent)."""
        self._closing = True
        if self._listener_task is not None:
            self._listener_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener_task
            self._listener_task = None
        await self._leases.close()  # closing the listener session releases its advisory locks
        if self._catch_up is not None:
            self._catch_up.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._catch_up
            self._catch_up = None
        if self._read_sender is not None:
            self._read_sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._read_sender
            self._read_sender = None
        writer, self._writer = self._writer, None
        if writer is not None and self._pool is not None:  # the pool's close waits for it
            with contextlib.suppress(Exception):
                await self._pool.release(writer)
        listener, self._listener = self._listener, None
        if listener is not None:
            if self._every_append:  # appends need not notify for us any more (else: the next cleanup)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(listener.execute("SELECT slipstream_tail(false)"), timeout=2)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(listener.close(), timeout=2)
            if not listener.is_closed():
                listener.terminate()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pool.close(), timeout=10)
            if not pool.is_closing():  # graceful close failed (a stuck connection): do not hang
                pool.terminate()

    def _redacted_dsn(self) -> str:
        """The DSN without its password (in the user part or as a ``password=`` parameter)."""
        dsn = re.sub(r"://([^:@/]*):[^@/]*@", r"://\1:***@", self._dsn)
        return re.sub(r"(?i)\b(password=)[^&\s]*", r"\1***", dsn)

    # --- migrations --------------------------------------------------------------------------------

    async def _migrate(self) -> None:
        conn: asyncpg.Connection = await asyncpg.connect(self._dsn)
        try:
            if await self._migrated(conn):
                return
            async with conn.transaction():
                # Serialises concurrent starts: the second waits, then finds everything applied.
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self._schema}"')
                await conn.execute(f'SET LOCAL search_path TO "{self._schema}"')
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version integer PRIMARY KEY, name text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                )
                applied = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
                for migration in load_migrations("postgres"):
                    if migration.version in applied:
                        continue
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        migration.version,
                        migration.name,
                    )
                    log.info("applied migration %04d_%s to schema %s", migration.version, migration.name, self._schema)
        finally:
            await conn.close()

    async def _migrated(self, conn: asyncpg.Connection) -> bool:
        """Whether every migration is applied already (the usual start): then no DDL and no lock
        are needed, so a role that may not create tables (a tenant under row-level security,
        migration 0006) starts as well."""
        table = f'"{self._schema}".schema_migrations'
        if await conn.fetchval("SELECT to_regclass($1)", table) is None:
            return False
        applied = {r[0] for r in await conn.fetch(f"SELECT version FROM {table}")}
        return {m.version for m in load_migrations("postgres")} <= applied

    # --- connections ---------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _connection(self, *, held: bool = False) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection, with driver errors translated; ``held``: the writer's (`_held`),
        unless the pool has only one connection (the reads need it between appends)."""
        if self._pool is None:
            raise RuntimeError("PostgresEventStore is not started: `await store.start()` (or `async with`) first")
        try:
            async with self._held() if held and self._max_size > 1 else self._pool.acquire() as conn:
                try:
                    yield conn
                except _UNAVAILABLE:
                    # The connection may be half-dead (asyncpg can leave its protocol mid-operation):
                    # drop it so the pool opens a fresh one instead of handing it out again. One the
                    # server closed is already detached from the pool, and terminate() raises: the
                    # error to report is still the one that got us here.
                    with contextlib.suppress(asyncpg.InterfaceError):
                        conn.terminate()
                    raise
        except _UNAVAILABLE as exc:
            self._reach.lost(_reason(exc))
            raise StoreUnavailable(f"Postgres event store at {self._redacted_dsn()} is unavailable: {exc}") from exc
        except asyncpg.InsufficientPrivilegeError as exc:  # row-level security (migration 0006), privileges
            raise AccessDenied(_dsn_parts(self._dsn).get("user", "(the DSN's user)"), str(exc)) from exc
        self._reach.back()

    @contextlib.asynccontextmanager
    async def _held(self) -> AsyncIterator[asyncpg.Connection]:
        """The connection appends keep between calls (one append is written at a time). After a
        failed call (a lost race aside: the function rolled back cleanly) it goes back to the pool
        and the next append takes another. The pool does not reset it (`_keep_session`): `_write`
        ends the session of a call that stopped while the append function may have held the
        sequence lock, and the pool replaces a closed connection."""
        assert self._pool is not None
        conn = self._writer
        if conn is None or not _usable(conn):
            conn = self._writer = await self._pool.acquire()
        try:
            yield conn
        except ConcurrencyConflict:
            raise
        except BaseException:
            self._writer = None
            with contextlib.suppress(Exception):
                await self._pool.release(conn)
            raise

    async def _fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        # Reads are idempotent: one retry hides a connection the pool had not yet noticed was dead.
        for attempt in (1, 2):
            try:
                async with self._connection() as conn:
                    return await conn.fetch(query, *args)
            except StoreUnavailable:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    # --- append --------------------------------------------------------------------------------------

    async def _append_records(self, batches: Sequence[tuple[str, int, Sequence[StoredEvent]]]) -> None:
        """Write at once, or, while another append of this store is being written, after it in one
        transaction with every append that arrived meanwhile (launches of many executions at once,
        writers other than the loop's group commit)."""
        plan_projection(batches)  # a caller's mistake fails its own call, not a shared transaction
        if self._writing:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting.append((batches, future))
            await future
            return
        self._writing = True
        try:
            await self._write(batches)
        finally:
            try:
                while self._waiting:
                    group, self._waiting = self._waiting, []
                    await self._write_group(group)
            except BaseException as exc:  # cancelled while writing for others: nobody else will
                for _, waiting in self._waiting:
                    if not waiting.done():
                        waiting.set_exception(StoreUnavailable(f"append abandoned: {exc!r}"))
                self._waiting = []
                raise
            finally:
                self._writing = False

    async def _write_group(self, group: list[tuple[Sequence[tuple[str, int, Sequence[StoredEvent]]], Any]]) -> None:
        """Write the appends of ``group`` in one transaction; after a conflict (or when two name
        the same execution) one by one, so that only those who lost a race see it."""
        ids = [execution_id for batches, _ in group for execution_id, _, _ in batches]
        if len(group) > 1 and len(ids) == len(set(ids)):
            try:
                await self._write([batch for batches, _ in group for batch in batches])
            except ConcurrencyConflict:
                pass
            except BaseException as exc:
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                return
            else:
                for _, future in group:
                    if not future.done():
                        future.set_result(None)
                return
        for batches, future in group:
            try:
                await self._write(batches)
            except BaseException as exc:
                if not future.done():
                    future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
            else:
                if not future.done():
                    future.set_result(None)

    def _note_head(self, execution_id: str, last: StoredEvent) -> None:
        self._remember(execution_id, last.version, last.checksum)

    def _remember(self, execution_id: str, version: int, checksum: bytes | None) -> None:
        heads = self._heads
        heads.pop(execution_id, None)  # re-inserted last: the dict's order is its recency
        heads[execution_id] = (version, checksum)
        if len(heads) > _HEAD_CACHE_SIZE:
            del heads[next(iter(heads))]

    async def _chained_from(
        self, conn: asyncpg.Connection, batches: Sequence[tuple[str, int, Sequence[StoredEvent]]]
    ) -> dict[str, bytes | None]:
        """The stored checksum each batch that follows a version chains from: cached, or (for
        the misses, in one query) read. Raises ConcurrencyConflict where the version is not there."""
        found: dict[str, bytes | None] = {}
        missing: list[tuple[str, int]] = []
        for execution_id, expected, records in batches:
            if expected == 0 or not records:
                continue
            head = self._heads.get(execution_id)
            if head is not None and head[0] == expected:
                found[execution_id] = head[1]
            else:
                missing.append((execution_id, expected))
        if missing:
            rows = await conn.fetch(_HEADS, [m[0] for m in missing], [m[1] for m in missing])
            stored = {execution_id: (exists, checksum) for execution_id, exists, checksum in rows}
            for execution_id, expected in missing:  # ids are unique in one append (plan_projection)
                exists, checksum = stored[execution_id]
                if not exists:
                    actual = await self._version_after_rollback(conn, execution_id)
                    raise ConcurrencyConflict(execution_id, expected, actual)
                found[execution_id] = checksum
        return found

    async def _write(self, batches: Sequence[tuple[str, int, Sequence[StoredEvent]]]) -> None:
        changes = plan_projection(batches)
        if not changes:
            return
        async with self._connection(held=True) as conn:
            try:
                await self._write_on(conn, batches, changes)
            except BaseException as exc:
                for execution_id, _, _ in batches:  # whatever happened, read the head again next time
                    self._heads.pop(execution_id, None)
                if not isinstance(exc, ConcurrencyConflict | asyncpg.PostgresError):
                    # stopped mid-call (a cancellation, a lost connection): the function may still
                    # hold the session's sequence lock, which outlives its transaction and would
                    # stall every writer once the pool hands the connection out idle. Ending the
                    # session releases it (an error the server raised was unlocked in _write_on).
                    _end_session(conn)
                raise
        # Our own NOTIFY wakes this store's consumers as it wakes every other's (once per append);
        # only while the listener is down do we wake them ourselves.
        if self._listener is None or self._listener.is_closed():
            self._wake_all()

    async def _write_on(
        self,
        conn: asyncpg.Connection,
        batches: Sequence[tuple[str, int, Sequence[StoredEvent]]],
        changes: list[ProjectionChange],
    ) -> None:
        chained_from = await self._chained_from(conn, batches)
        if len(changes) == 1 and changes[0].created is None:
            query, args, heads = _lean_append(batches, changes[0], chained_from)
        else:
            query, args, heads = _append_call(batches, changes, chained_from)
        try:
            await conn.execute(query, *args)
        except asyncpg.PostgresError as exc:
            if getattr(exc, "sqlstate", None) != _CONFLICT_STATE:
                # the function failed while it may have held the sequence lock (a session
                # lock outlives the transaction): never hand the connection back holding it
                # (a lost race is raised after the unlock)
                if not conn.is_closed():
                    try:
                        await conn.execute("SELECT pg_advisory_unlock($1)", _SEQ_LOCK)
                    except Exception:  # then the session goes, and its lock with it
                        _end_session(conn)
                raise
            execution_id, expected = str(exc.detail), int(exc.hint or 0)  # type: ignore[attr-defined]
            actual = await self._version_after_rollback(conn, execution_id)
            raise ConcurrencyConflict(execution_id, expected, actual) from None
        for execution_id, version, checksum in heads:
            self._remember(execution_id, version, checksum)

    @staticmethod
    async def _version_after_rollback(conn: asyncpg.Connection, execution_id: str) -> int | None:
        with contextlib.suppress(Exception):
            return int(
                await conn.fetchval(
                    "SELECT coalesce(max(version), 0) FROM events WHERE execution_id = $1", execution_id
                )
            )
        return None

    # --- reads ---------------------------------------------------------------------------------------

    async def _read_records(self, execution_id: str, after: int) -> list[StoredEvent]:
        """Read at once; or, while another read is in flight, in the next query with every read
        that arrived meanwhile (sent by a task of the store, so that no caller waits for others')."""
        if self._reading:
            future: asyncio.Future[list[StoredEvent]] = asyncio.get_running_loop().create_future()
            self._reads.append((execution_id, after, future))
            return await future
        self._reading = True
        try:
            rows = await self._fetch(_READ, execution_id, after)
        finally:
            if self._reads:
                self._read_sender = asyncio.create_task(self._send_reads(), name="slipstream-store-reads")
            else:
                self._reading = False
        return [StoredEvent(execution_id, *r) for r in rows]

    async def _send_reads(self) -> None:
        """Send the queued reads, a query per batch, until none is left."""
        batch: list[tuple[str, int, asyncio.Future[list[StoredEvent]]]] = []
        try:
            while self._reads:
                batch, self._reads = self._reads, []
                try:
                    rows = await self._fetch(_READ_MANY, [b[0] for b in batch], [b[1] for b in batch])
                except Exception as exc:
                    for *_, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                found: list[list[StoredEvent]] = [[] for _ in batch]
                for ord_, *fields in rows:
                    found[ord_ - 1].append(StoredEvent(batch[ord_ - 1][0], *fields))
                for (*_, future), records in zip(batch, found, strict=True):
                    if not future.done():
                        future.set_result(records)
        finally:
            self._reading = False
            self._read_sender = None
            left, self._reads = batch + self._reads, []
            for *_, future in left:  # cancelled (the store is closing): nobody will send them
                if not future.done():
                    future.set_exception(StoreUnavailable("the event store is closing"))

    async def _read_all_records(self, after_seq: int, limit: int) -> list[tuple[int, str, int, bytes]]:
        if limit <= 0:
            return []
        out: list[tuple[int, str, int, bytes]] = []
        for seq, execution_id, version, payload, safe in await self._fetch(_READ_ALL, after_seq, limit):
            if not safe:
                # A transaction at or above the high-water mark wrote this row: rows after it may be
                # followed by a lower seq still to commit, so stop here (the tailer asks again later).
                break
            out.append((seq, execution_id, version, payload))
        return out

    async def execution_ids(self, after: str = "", limit: int = 1000) -> list[str]:
        """Ids of the executions that have events, in id order, after ``after``.

        Raises:
            StoreUnavailable: Postgres cannot be reached.
        """
        rows = await self._fetch(
            "SELECT DISTINCT execution_id FROM events WHERE execution_id > $1 ORDER BY execution_id LIMIT $2",
            after,
            limit,
        )
        return [r[0] for r in rows]

    async def quarantine(self, execution_id: str) -> None:
        """Mark the execution ``quarantined`` in the projection (its events are not touched).

        Raises:
            StoreUnavailable: Postgres cannot be reached.
        """
        async with self._connection() as conn, conn.transaction():
            await conn.execute(_AS_WRITER)
            await conn.execute(
                "UPDATE executions SET status = 'quarantined', updated_at = now() WHERE execution_id = $1",
                execution_id,
            )

    async def replace_summaries(self, summaries: Sequence[ExecutionSummary], remove: Sequence[str] = ()) -> list[str]:
        """Write projection rows as given and delete those of ``remove``, in one transaction,
        skipping the executions whose log moved on; returns their ids.

        The rows are locked first (an append holds its execution's row until it commits), so the
        newest versions read after that are the committed ones.

        Raises:
            StoreUnavailable: Postgres cannot be reached.
        """
        ids = sorted({s.execution_id for s in summaries} | set(remove))
        if not ids:
            return []
        async with self._connection() as conn, conn.transaction():
            await conn.execute(_AS_WRITER)
            await conn.execute(
                "SELECT 1 FROM executions WHERE execution_id = ANY($1::text[]) ORDER BY execution_id FOR UPDATE", ids
            )
            newest = {
                r[0]: r[1]
                for r in await conn.fetch(
                    "SELECT execution_id, max(version) FROM events WHERE execution_id = ANY($1::text[])"
                    " GROUP BY execution_id",
                    ids,
                )
            }
            skipped = [e for e in remove if e in newest]
            skipped += [s.execution_id for s in summaries if newest.get(s.execution_id, 0) != s.version]
            gone = [e for e in remove if e not in skipped]
            if gone:
                await conn.execute("DELETE FROM executions WHERE execution_id = ANY($1::text[])", gone)
            rows = [
                msgspec.structs.astuple(s)  # its fields are _SUMMARY_COLUMNS, in that order
                for s in summaries
                if s.execution_id not in skipped
            ]
            if rows:
                await conn.executemany(
                    f"INSERT INTO executions ({_SUMMARY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                    " ON CONFLICT (execution_id) DO UPDATE SET project = excluded.project,"
                    " domain = excluded.domain, workflow = excluded.workflow, status = excluded.status,"
                    " created_at = excluded.created_at, updated_at = excluded.updated_at,"
                    " version = excluded.version, parent = excluded.parent",
                    rows,
                )
        return skipped

    async def current_version(self, execution_id: str) -> int:
        """The execution's latest version (0 if unknown).

        Raises:
            StoreUnavailable: Postgres cannot be reached.
        """
        rows = await self._fetch("SELECT coalesce(max(version), 0) FROM events WHERE execution_id = $1", execution_id)
        return int(rows[0][0])

    async def get_summary(self, execution_id: str) -> ExecutionSummary | None:
        """The projection row of one execution, or ``None`` if unknown.

        Raises:
            StoreUnavailable: Postgres cannot be reached.
        """
        rows = await self._fetch(f"SELECT {_SUMMARY_COLUMNS} FROM executions WHERE execution_id = $1", execution_id)
        return _summary(rows[0]) if rows else None

    async def get_summaries(self, execution_ids: Sequence[str]) -> dict[str, ExecutionSummary]:
        """The projection rows of several executions, by id (unknown ones left out), in one query.

        Raises:
            StoreUnavailable: Postgres cannot be reached.
        """
        rows = await self._fetch(
            f"SELECT {_SUMMARY_COLUMNS} FROM executions WHERE execution_id = ANY($1::text[])", list(execution_ids)
        )
        return {summary.execution_id: summary for summary in map(_summary, rows)}

    async def list_executions(
        self,
        *,
        project: str | None = None,
        domain: str | None = None,
        status: ExecutionStatus | Sequence[ExecutionStatus] | None = None,
        workflow: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> ExecutionPage:
        """Executions newest first (by creation time, then id), filtered.

        Args:
            project: only this project.
            domain: only this domain.
            status: one status or several.
            workflow: only executions of this workflow name.
            limit: page size (at least 1).
            cursor: ``next_cursor`` of the previous page.

        Returns:
            A page; its ``next_cursor`` is ``None`` on the last page.

        Raises:
            ValueError: bad ``limit``, ``status`` or ``cursor``.
            StoreUnavailable: Postgres cannot be reached.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        where: list[str] = []
        args: list[Any] = []

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        if project is not None:
            where.append(f"project = {arg(project)}")
        if domain is not None:
            where.append(f"domain = {arg(domain)}")
        if workflow is not None:
            where.append(f"workflow = {arg(workflow)}")
        statuses = normalize_statuses(status)
        if statuses is not None:
            where.append(f"status = ANY({arg(statuses)}::text[])")
        if cursor is not None:
            created_at, execution_id = decode_cursor(cursor)
            where.append(f"(created_at, execution_id) < ({arg(created_at)}::timestamptz, {arg(execution_id)})")
        query = (
            f"SELECT {_SUMMARY_COLUMNS} FROM executions"
            + (" WHERE " + " AND ".join(where) if where else "")
            + f" ORDER BY created_at DESC, execution_id DESC LIMIT {arg(limit + 1)}"
        )
        return page_of([_summary(r) for r in await self._fetch(query, *args)], limit)

    # --- change notifications ------------------------------------------------------------------------

    async def wait_for_changes(self, timeout: float | None = None, *, executions_only: bool = False) -> None:
        """Return when events were appended by anyone since the calling task's last return, or
        after ``timeout``; each task has its own wake-ups. ``executions_only``: only when an
        execution was created or its status changed.

        Wake-ups come from ``LISTEN slipstream_executions``, and from ``LISTEN slipstream_events``
        once a task waits for every append: the listening session then registers as a tailer,
        for appends notify only while one is registered (migration 0010). Its first such wait
        returns at once (appends before the LISTEN were not heard), and every waiter is woken
        again once the appends that may have missed the registration have ended. While the
        listener connection is down (it reconnects by itself) every call wakes spuriously, which
        the contract allows.
        """
        signal = self._execution_changes if executions_only else self._changes
        if not executions_only and not self._every_append:
            await self._listen_to_every_append()
        if self._listener is None or self._listener.is_closed():
            signal.notify()
        await signal.wait(timeout)
        signal.take()

    async def _listen_to_every_append(self) -> None:
        self._every_append = True  # a listener connected from now on LISTENs on both channels
        listener = self._listener
        if listener is not None and not listener.is_closed():
            # the lease queries share the connection, and it runs one command at a time; if it
            # fails, the listener is lost and its replacement LISTENs on both channels
            with contextlib.suppress(*_UNAVAILABLE, asyncpg.PostgresError, StoreUnavailable):
                await self._leases.exclusive(self._tail)
        self._changes.notify()

    async def _tail(self, session: asyncpg.Connection) -> None:
        """LISTEN to every append on ``session`` (the listener) and register it as a tailer."""
        await session.add_listener(NOTIFY_CHANNEL, self._on_notify)
        await session.execute("SELECT slipstream_tail(true)")
        # an append that looked for tailers before the registration committed sent no NOTIFY, and
        # its transaction id is below this snapshot's xmax (migration 0010)
        xmax = int(await session.fetchval("SELECT pg_snapshot_xmax(pg_current_snapshot())"))
        if self._catch_up is not None:
            self._catch_up.cancel()
        self._catch_up = asyncio.create_task(self._catch_up_after(xmax), name="slipstream-store-catch-up")

    async def _catch_up_after(self, xmax: int) -> None:
        """Wake every consumer of appends once no transaction below ``xmax`` is in progress (or
        after `_CATCH_UP_LIMIT_S`, or when asking fails): then the appends that missed the
        registration are readable."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _CATCH_UP_LIMIT_S
        delay = 0.002
        try:
            while loop.time() < deadline:
                rows = await self._fetch("SELECT pg_snapshot_xmin(pg_current_snapshot()) >= $1::xid8", xmax)
                if rows[0][0]:
                    break
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.1)
        except Exception as exc:  # a wake-up too early is only spurious
            log.debug("catching up with the appends before a tailer registered: %r", exc)
        finally:
            self._changes.notify()

    def _wake_all(self) -> None:
        """Wake every consumer, whatever it waits for (notifications may have been missed)."""
        self._changes.notify()
        self._execution_changes.notify()

    # --- durable cursors --------------------------------------------------------------------------

    async def read_cursor(self, name: str) -> int:
        """The durable cursor ``name`` (0 if never written).

        Raises:
            StoreUnavailable: Postgres cannot be reached.
        """
        rows = await self._fetch("SELECT seq FROM cursors WHERE name = $1", name)
        return int(rows[0][0]) if rows else 0

    async def write_cursor(self, name: str, seq: int) -> None:
        """Move the durable cursor ``name`` forward to ``seq`` (a lower ``seq`` is ignored).

        Raises:
            ValueError: an empty ``name`` or a negative ``seq``.
            StoreUnavailable: Postgres cannot be reached.
        """
        check_reader_cursor(name, seq)
        # idempotent (a forward-only upsert), so the read path's retry after a dead connection is safe
        await self._fetch(_WRITE_CURSOR, name, seq)

    # --- leases -----------------------------------------------------------------------------------

    async def claim(self, execution_id: str) -> bool:
        """Own ``execution_id`` (or a singleton's name, such as ``"relay:<stream>"``): a session
        advisory lock on the listener connection, dropped when that session is lost. Concurrent
        claims share one round trip.

        Raises:
            StoreUnavailable: the listener session is down (the caller retries later).
        """
        return await self._leases.claim(execution_id)

    async def release(self, execution_id: str) -> None:
        """Give up ownership of ``execution_id`` (errors ignored: a lost session already released it)."""
        await self._leases.release(execution_id)

    def prefers(self, execution_id: str, project: str | None = None, domain: str | None = None) -> bool:
        """Whether this store's process is the execution's preferred owner among the serving
        processes alive that run its project and domain (rendezvous hashing over the sessions
        holding leases; a loop scoped to a project says so in its member name)."""
        return self._leases.prefers(execution_id, project, domain)

    async def announce_loop(self, project: str | None = None, domain: str | None = None) -> None:
        """Count this store's process among the serving loops (`prefers`, `serving_loops`), as one
        that runs only ``project``/``domain``'s executions when given.

        Raises:
            StoreUnavailable: the listener session is down (the caller retries later).
        """
        await self._leases.join(project, domain)

    async def serving_loops(self, project: str | None = None, domain: str | None = None) -> int:
        """How many control loops (``slipstream serve``, serving engines) share the store now;
        with ``project`` and ``domain``, how many of them run that scope's executions.

        Raises:
            StoreUnavailable: Postgres cannot be reached.
        """
        return await self._leases.count_members(project, domain)

    def lease_epoch(self) -> int:
        """Moves on when a serving process sharing the store went away (its leases are free)."""
        return self._leases.epoch

    async def _note_own_session(self, conn: asyncpg.Connection) -> None:
        # NOTIFYs sent by these sessions are this store's own appends (`changed_by_others`)
        self._own_sessions.add(conn.get_server_pid())

    def _note_sender(self, pid: int, execution_id: str) -> None:
        if self._tracking and pid not in self._own_sessions:
            self._foreign.add(execution_id)

    def _on_notify(self, _conn: object, pid: int, _channel: str, execution_id: str) -> None:
        self._note_sender(pid, execution_id)
        self._changes.notify()

    def _on_execution_notify(self, _conn: object, pid: int, _channel: str, execution_id: str) -> None:
        # whoever waits for every append is woken by that append's own slipstream_events notification
        self._note_sender(pid, execution_id)
        self._execution_changes.notify()

    def changed_by_others(self) -> set[str] | None:
        """The executions other processes created, changed the status of (an abort) or, while this
        store listens to every append, appended to since the previous call, from the senders of
        the ``NOTIFY``s; ``None`` on the first call and after the listener was lost (notifications
        may have been missed). A foreign append it does not name costs its loop a conflict and a
        fresh read at its next append, as the contract allows.
        """
        if not self._tracking or self._missed_notifications:
            self._tracking, self._missed_notifications = True, False
            self._foreign = set()
            return None
        found, self._foreign = self._foreign, set()
        return found

    def _on_listener_lost(self, conn: object) -> None:
        if conn is self._listener:
            self._leases.clear()  # the session that held them is gone, and so are its locks
            self._missed_notifications = True
            self._listener_lost.set()
            self._wake_all()  # notifications may be missed until it is back: wake spuriously

    async def _connect_listener(self) -> asyncpg.Connection:
        conn: asyncpg.Connection = await asyncpg.connect(self._dsn, server_settings=self._server_settings())
        try:
            await conn.add_listener(EXECUTIONS_CHANNEL, self._on_execution_notify)
            if self._every_append:
                await self._tail(conn)
            else:  # rows of tailers gone without unregistering cost every append a NOTIFY
                await conn.execute("SELECT slipstream_tail(NULL)")
        except BaseException:
            conn.terminate()
            raise
        self._listener_lost.clear()
        self._listener = conn
        conn.add_termination_listener(self._on_listener_lost)
        return conn

    async def _listen_forever(self) -> None:
        """Keep a LISTEN connection up: after it is lost, reconnect with back-off."""
        delay = 0.05
        while not self._closing:
            await self._listener_lost.wait()
            old, self._listener = self._listener, None
            if old is not None:
                old.terminate()
            while not self._closing:
                try:
                    await self._connect_listener()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # keep trying whatever the server does
                    self._reach.lost(_reason(exc))  # logged once per outage, not per try
                    log.debug("event store listener lost (%s); reconnecting in %.2fs", exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                self._reach.back()
                delay = 0.05
                self._wake_all()  # appends may have happened while no listener was up
                break


_LEAST_MEMBER_TIMEOUT = 2.0  # four beats: a busy loop may miss one or two


def _member_timeout_from_environment() -> float:
    """``$SLIPSTREAM_MEMBER_TIMEOUT`` in seconds, or the default."""
    text = os.environ.get("SLIPSTREAM_MEMBER_TIMEOUT", "").strip()
    if not text:
        return DEFAULT_MEMBER_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not seconds >= _LEAST_MEMBER_TIMEOUT:
        raise ConfigError(
            f"SLIPSTREAM_MEMBER_TIMEOUT={text!r}: give the seconds a serving process may stay silent before the "
            f"others take its executions over, at least {_LEAST_MEMBER_TIMEOUT:g} (default {DEFAULT_MEMBER_TIMEOUT:g})"
        )
    return seconds


# An append call: the query, its arguments, and the (execution_id, version, checksum) heads to
# remember once it has succeeded.
_Call = tuple[str, tuple[Any, ...], list[tuple[str, int, bytes]]]


def _lean_append(
    batches: Sequence[tuple[str, int, Sequence[StoredEvent]]],
    change: ProjectionChange,
    chained_from: dict[str, bytes | None],
) -> _Call:
    """The ``slipstream_append_one`` call for one existing execution (versions follow from the
    expected one: `EventStore.append` has checked they are consecutive)."""
    execution_id, expected = change.execution_id, change.expected_version
    records = next(r for e, _, r in batches if e == execution_id)
    previous = chained_from[execution_id]
    checksums = chain_checksums(execution_id, previous, records)
    args = (
        execution_id,
        expected,
        previous,
        change.status,
        [r.kind for r in records],
        [r.node_id for r in records],
        [r.attempt for r in records],
        [r.payload for r in records],
        checksums,
    )
    return _APPEND_ONE, args, [(execution_id, records[-1].version, checksums[-1])]


def _append_call(
    batches: Sequence[tuple[str, int, Sequence[StoredEvent]]],
    changes: list[ProjectionChange],
    chained_from: dict[str, bytes | None],
) -> _Call:
    """The ``slipstream_append`` call for any append: several executions, new ones included."""
    columns: tuple[list[Any], ...] = ([], [], [], [], [], [], [])
    heads: list[tuple[str, int, bytes]] = []
    for execution_id, _, records in batches:
        if not records:
            continue
        checksums = chain_checksums(execution_id, chained_from.get(execution_id), records)
        for r, checksum in zip(records, checksums, strict=True):
            columns[0].append(r.execution_id)
            columns[1].append(r.version)
            columns[2].append(r.kind)
            columns[3].append(r.node_id)
            columns[4].append(r.attempt)
            columns[5].append(r.payload)
            columns[6].append(checksum)
        heads.append((execution_id, records[-1].version, checksums[-1]))
    check = sorted(chained_from)
    expected_of = {execution_id: expected for execution_id, expected, _ in batches}
    new = [c for c in changes if c.created is not None]
    old = sorted((c for c in changes if c.created is None), key=lambda c: c.execution_id)
    ids = sorted(c.execution_id for c in changes)

    created = [c.created for c in new if c.created is not None]
    now = datetime.now(UTC)
    args = (
        *columns,
        [c.execution_id for c in new],
        [str(f["project"]) for f in created],
        [str(f["domain"]) for f in created],
        [str(f["workflow"]) for f in created],
        [c.status for c in new],
        [c.new_version for c in new],
        [f["created_at"] or now for f in created],
        [f["parent"] for f in created],
        [c.execution_id for c in old],
        [c.expected_version for c in old],
        [c.new_version for c in old],
        [c.status for c in old],
        check,
        [expected_of[e] for e in check],
        [chained_from[e] for e in check],
        ids,
    )
    return _APPEND, args, heads


def _usable(conn: asyncpg.Connection) -> bool:
    """Whether a connection taken from the pool is still open and still ours (the pool takes
    back, and detaches, one whose session was lost)."""
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:
        return False


def _end_session(conn: asyncpg.Connection) -> None:
    """Close ``conn``'s session at once (the server drops its session locks); the pool opens a
    fresh connection in its place. One already closed or detached is left as it is."""
    with contextlib.suppress(asyncpg.InterfaceError):
        conn.terminate()


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Hand a connection back to the pool without asyncpg's reset query (``RESET ALL``, unlock all,
    ...): a round trip on every release, and so on every append. The store leaves no session state
    behind: no SET, no LISTEN on pooled connections, and the append unlocks the sequence lock
    itself if its function failed, or ends the session if the call stopped midway (`_write`; an
    open transaction is still rolled back by asyncpg)."""


def _dsn_parts(dsn: str) -> dict[str, str]:
    """The user and database a URL DSN names, for messages (whatever parses)."""
    parts: dict[str, str] = {}
    with contextlib.suppress(ValueError):
        url = urlsplit(dsn)
        query = parse_qs(url.query)
        for key, value in (
            ("user", url.username or query.get("user", [""])[0]),
            ("database", url.path.lstrip("/") or query.get("dbname", query.get("database", [""]))[0]),
        ):
            if value:
                parts[key] = unquote(value)
    return parts


def _reason(exc: BaseException) -> str:
    """A short cause for a connection failure: the OS's words rather than errno tuples."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"host name not found ({exc.strerror})"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _summary(row: asyncpg.Record) -> ExecutionSummary:
    return ExecutionSummary(
        execution_id=row["execution_id"],
        project=row["project"],
        domain=row["domain"],
        workflow=row["workflow"],
        status=row["status"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        version=row["version"],
        parent=row["parent"],
    )
