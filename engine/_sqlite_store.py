"""`SqliteEventStore`: the embedded event store, one WAL-mode SQLite file (DESIGN section 5).

Calls run one at a time (``CapacityLimiter(1)``) on a single connection. sqlite3 blocks, but most
calls are short and never wait: in WAL mode with ``synchronous = NORMAL`` a commit writes to the
WAL without an fsync, and readers do not wait for writers. So a call runs on the event loop's
thread when the connection is free, with ``busy_timeout = 0``; one that would wait (another
process holds the write lock) or finds the connection busy goes to a worker thread, where it may
wait up to ``busy_timeout``. Checkpoints, the only fsyncs, run on the worker thread too (every
`_CHECKPOINT_EVERY` writes; SQLite's own, which the committing call would run, are off). A hop to a
worker thread and back costs more than the append itself on a small machine: the embedded chain
went from 0.54-0.64 to 0.33-0.42 ms per node (alternating runs on 2 vCPUs).

Appends are one ``BEGIN IMMEDIATE`` transaction per call, which also makes SQLite's single writer
order ``seq`` by commit, so ``read_all`` is commit-safe as is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from engine._chain import chain_checksums
from engine._leases import FileLeases
from engine._projection import (
    ProjectionChange,
    check_reader_cursor,
    decode_cursor,
    from_micros,
    normalize_statuses,
    page_of,
    plan_projection,
    to_micros,
)
from engine._store_common import load_migrations
from engine._wakeups import ChangeSignal
from engine.errors import ConcurrencyConflict, ConfigError, CorruptEvent, StoreUnavailable
from engine.interfaces import EventStore, ExecutionPage, ExecutionStatus, ExecutionSummary, StoredEvent

__all__ = ["SqliteEventStore"]

T = TypeVar("T")

log = logging.getLogger(__name__)

# How often wait_for_changes looks at PRAGMA data_version for commits by other connections.
_POLL_INTERVAL = 0.2
# Writes between two WAL checkpoints on the worker thread (a passive checkpoint copies what the
# WAL holds into the database file and fsyncs both; its frames are then reused).
_CHECKPOINT_EVERY = 200
_SUMMARY_COLUMNS = "execution_id, project, domain, workflow, status, created_at, updated_at, version, parent"
_SUMMARY_INSERT_COLUMNS = "execution_id, project, domain, workflow, status, version, created_at, updated_at, parent"


class _ProjectionWriter:
    """``slipstream_writer()`` in SQL: true only inside ``with writer:``, around the store's own
    writes of the executions projection (the guard triggers of migration 0005 ask it). Calls run
    one at a time on the store's connection (its limiter), so one flag is enough."""

    def __init__(self) -> None:
        self.active = False

    def __call__(self) -> int:
        return int(self.active)

    def __enter__(self) -> None:
        self.active = True

    def __exit__(self, *exc: object) -> None:
        self.active = False


class SqliteEventStore(EventStore):
    """Event store in one SQLite file (WAL mode), for one machine and for tests.

    Several store instances, in one process or several, may share the file: SQLite serialises the
    writers (``busy_timeout`` waits for the lock) and ``wait_for_changes`` notices their commits
    by polling ``PRAGMA data_version``. Leases (`claim`, for executions and for singletons such as
    the relay's ``"relay:<stream>"``) are ``flock``s on files beside the database.

    Args:
        path: the database file; its directory is created if missing.
        busy_timeout: seconds a write waits for another process's write lock before failing with
            `StoreUnavailable`.
    """

    name = "sqlite"

    def __init__(self, path: str | Path, *, busy_timeout: float = 10.0) -> None:
        self._path = Path(path)
        self._busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        self._limiter = anyio.CapacityLimiter(1)
        self._changes = ChangeSignal()
        self._data_version = 0
        self._leases = FileLeases(self._path.with_name(self._path.name + ".leases"))
        self._writer = _ProjectionWriter()
        self._writes = 0  # since the last checkpoint
        self._checkpoint: asyncio.Task[None] | None = None

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    # --- thread plumbing -------------------------------------------------------------------------

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)``, on the loop's thread if the connection is free and SQLite answers at
        once, else on a worker thread (see the module's docstring). ``fn`` must leave no
        transaction open when it raises: a call SQLite refused as busy runs again there."""
        conn = self._conn
        if conn is None:
            raise RuntimeError("SqliteEventStore is not started: `await store.start()` (or `async with`) first")
        try:
            self._limiter.acquire_nowait()
        except anyio.WouldBlock:
            pass
        else:
            busy = False
            try:
                result = fn(conn)
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise self._failed(exc) from exc
                busy = True
            finally:
                self._limiter.release()
            if not busy:
                # a turn of the loop, as the worker thread gave: a caller that appends or reads in
                # a loop must not keep every other task (the control loop, a checkpoint) waiting
                await asyncio.sleep(0)
                return result
        timeout_ms = int(self._busy_timeout * 1000)

        def waiting(conn: sqlite3.Connection) -> T:
            conn.execute(f"PRAGMA busy_timeout = {timeout_ms}")
            try:
                return fn(conn)
            finally:
                conn.execute("PRAGMA busy_timeout = 0")

        try:
            return await anyio.to_thread.run_sync(waiting, conn, limiter=self._limiter)
        except sqlite3.OperationalError as exc:
            raise self._failed(exc) from exc

    def _failed(self, exc: sqlite3.OperationalError) -> StoreUnavailable:
        # Locked by another process past busy_timeout, disk full, file gone: retryable, not a bug.
        return StoreUnavailable(f"SQLite event store {self._path} failed: {exc}")

    def _wrote(self) -> None:
        """Count a write; every `_CHECKPOINT_EVERY`, checkpoint the WAL on the worker thread."""
        self._writes += 1
        if self._writes >= _CHECKPOINT_EVERY and self._checkpoint is None and self._conn is not None:
            self._writes = 0
            self._checkpoint = asyncio.create_task(self._checkpoint_wal(self._conn))

    async def _checkpoint_wal(self, conn: sqlite3.Connection) -> None:
        try:
            await anyio.to_thread.run_sync(
                lambda: conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall(), limiter=self._limiter
            )
        except sqlite3.Error as exc:  # the next one catches up
            log.debug("WAL checkpoint of %s failed: %s", self._path, exc)
        finally:
            self._checkpoint = None

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the file, switch it to WAL mode and apply pending migrations.

        Raises:
            ConfigError: the state directory cannot be created or written, or the file is not a
                SQLite database.
            StoreUnavailable: the file is locked by another process past ``busy_timeout``, or the
                disk is full; starting again later may work.
        """
        if self._conn is not None:
            return
        try:
            self._conn = await anyio.to_thread.run_sync(self._open, limiter=self._limiter)
        except (OSError, sqlite3.Error) as exc:
            raise self._start_error(exc) from exc

    def _start_error(self, exc: OSError | sqlite3.Error) -> ConfigError | StoreUnavailable:
        """The typed error for a failure to open the store: a setting to fix, or a passing condition."""
        fix = "point --state-dir or SLIPSTREAM_STATE_DIR (Engine.embedded(state_dir=...)) at a writable directory"
        if isinstance(exc, OSError):  # creating the directory failed
            why = exc.strerror or str(exc)
            if isinstance(exc, FileExistsError | NotADirectoryError):
                directory = self._path.parent
                # error path only: a few stat calls to name the file that blocks the directory
                blocker = next((p for p in (directory, *directory.parents) if p.is_file()), directory)
                why = f"{blocker} is a file, where a directory should be"
            return ConfigError(f"cannot use {self._path.parent} as the state directory: {why}; {fix}")
        name = getattr(exc, "sqlite_errorname", "")
        if _is_busy(exc):
            return StoreUnavailable(
                f"SQLite event store {self._path} is locked by another process ({exc}); try again once it is "
                "done, or raise busy_timeout"
            )
        if name == "SQLITE_FULL":
            return StoreUnavailable(f"SQLite event store {self._path}: {exc}; free disk space and try again")
        if name == "SQLITE_NOTADB":
            return ConfigError(
                f"{self._path} in the state directory is not a SQLite database ({exc}); move it away, or {fix}"
            )
        return ConfigError(f"cannot use {self._path} as the SQLite event store ({exc}); {fix}")

    def _open(self) -> sqlite3.Connection:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        # check_same_thread=False: anyio may use a different worker thread per call, but the
        # limiter guarantees one call at a time, which is all sqlite3 needs.
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            # the projection's guard triggers (migration 0005) let only this store's writes through
            conn.create_function("slipstream_writer", 0, self._writer)
            self._migrate(conn)
            self._data_version = conn.execute("PRAGMA data_version").fetchone()[0]
            # from now on calls try the loop's thread first, where nothing may wait (`_run`), and
            # checkpoints run on the worker thread (`_wrote`)
            conn.execute("PRAGMA busy_timeout = 0")
            conn.execute("PRAGMA wal_autocheckpoint = 0")
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        # BEGIN IMMEDIATE takes the write lock first, so concurrent openers apply each migration once.
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)"
            )
            applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for migration in load_migrations("sqlite"):
                if migration.version in applied:
                    continue
                for statement in _statements(migration.sql):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, to_micros(datetime.now(UTC))),
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        """Close the connection and drop every lease (idempotent); everything committed stays."""
        self._leases.release_all()
        conn, self._conn = self._conn, None
        if self._checkpoint is not None:
            with contextlib.suppress(Exception):
                await self._checkpoint
        if conn is not None:
            # the last connection to close checkpoints the WAL into the database file itself
            await anyio.to_thread.run_sync(conn.close, limiter=self._limiter)

    # --- leases ----------------------------------------------------------------------------------

    async def claim(self, execution_id: str) -> bool:
        """Own ``execution_id`` among all processes using this file (an ``flock``; see `FileLeases`)."""
        return self._leases.claim(execution_id)

    async def release(self, execution_id: str) -> None:
        """Give up ownership of ``execution_id``."""
        self._leases.release(execution_id)

    # --- append ----------------------------------------------------------------------------------

    async def _append_records(self, batches: Sequence[tuple[str, int, Sequence[StoredEvent]]]) -> None:
        changes = plan_projection(batches)
        if not changes:
            return
        writer = self._writer
        conflict = await self._run(lambda conn: _append_sync(conn, changes, batches, writer))
        if conflict is not None:
            raise ConcurrencyConflict(*conflict)
        self._wrote()
        self._changes.notify()

    # --- reads -----------------------------------------------------------------------------------

    async def _read_records(self, execution_id: str, after: int) -> list[StoredEvent]:
        def read(conn: sqlite3.Connection) -> list[StoredEvent]:
            cur = conn.execute(
                "SELECT version, kind, node_id, attempt, payload, checksum FROM events"
                " WHERE execution_id = ? AND version >= ? ORDER BY version",
                (execution_id, after),
            )
            return [StoredEvent(execution_id, *row) for row in cur]

        return await self._run(read)

    async def _read_all_records(self, after_seq: int, limit: int) -> list[tuple[int, str, int, bytes]]:
        if limit <= 0:
            return []

        def read(conn: sqlite3.Connection) -> list[tuple[int, str, int, bytes]]:
            cur = conn.execute(
                "SELECT seq, execution_id, version, payload FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            )
            return cur.fetchall()

        return await self._run(read)

    async def execution_ids(self, after: str = "", limit: int = 1000) -> list[str]:
        """Ids of the executions that have events, in id order, after ``after``."""

        def read(conn: sqlite3.Connection) -> list[str]:
            cur = conn.execute(
                "SELECT DISTINCT execution_id FROM events WHERE execution_id > ? ORDER BY execution_id LIMIT ?",
                (after, limit),
            )
            return [row[0] for row in cur]

        return await self._run(read)

    async def quarantine(self, execution_id: str) -> None:
        """Mark the execution ``quarantined`` in the projection (its events are not touched)."""
        now = to_micros(datetime.now(UTC))

        def write(conn: sqlite3.Connection) -> None:
            with self._writer:
                conn.execute(
                    "UPDATE executions SET status = 'quarantined', updated_at = ? WHERE execution_id = ?",
                    (now, execution_id),
                )

        await self._run(write)
        self._wrote()

    async def replace_summaries(self, summaries: Sequence[ExecutionSummary], remove: Sequence[str] = ()) -> list[str]:
        """Write projection rows as given and delete those of ``remove``, in one transaction,
        skipping the executions whose log moved on (checked under the write lock); returns their ids."""
        rows = [
            (
                s.execution_id,
                s.project,
                s.domain,
                s.workflow,
                s.status,
                s.version,
                to_micros(s.created_at),
                to_micros(s.updated_at),
                s.parent,
            )
            for s in summaries
        ]

        def write(conn: sqlite3.Connection) -> list[str]:
            def newest(execution_id: str) -> int:
                row = conn.execute("SELECT max(version) FROM events WHERE execution_id = ?", (execution_id,)).fetchone()
                return int(row[0] or 0)

            conn.execute("BEGIN IMMEDIATE")
            try:
                skipped = [e for e in remove if newest(e) != 0]
                skipped += [row[0] for row in rows if newest(row[0]) != row[5]]
                with self._writer:
                    conn.executemany(
                        "DELETE FROM executions WHERE execution_id = ?", [(e,) for e in remove if e not in skipped]
                    )
                    conn.executemany(
                        f"INSERT OR REPLACE INTO executions ({_SUMMARY_INSERT_COLUMNS})"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [row for row in rows if row[0] not in skipped],
                    )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return skipped

        skipped = await self._run(write)
        self._wrote()
        return skipped

    async def current_version(self, execution_id: str) -> int:
        """The execution's latest version (0 if unknown)."""

        def read(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT max(version) FROM events WHERE execution_id = ?", (execution_id,)).fetchone()
            return int(row[0] or 0)

        return await self._run(read)

    async def get_summary(self, execution_id: str) -> ExecutionSummary | None:
        """The projection row of one execution, or ``None`` if unknown."""

        def read(conn: sqlite3.Connection) -> ExecutionSummary | None:
            row = conn.execute(
                f"SELECT {_SUMMARY_COLUMNS} FROM executions WHERE execution_id = ?", (execution_id,)
            ).fetchone()
            return None if row is None else _summary(row)

        return await self._run(read)

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
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        where: list[str] = []
        args: list[Any] = []
        for column, value in (("project", project), ("domain", domain), ("workflow", workflow)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        statuses = normalize_statuses(status)
        if statuses is not None:
            where.append(f"status IN ({', '.join('?' * len(statuses))})")
            args.extend(statuses)
        if cursor is not None:
            created_at, execution_id = decode_cursor(cursor)
            where.append("(created_at, execution_id) < (?, ?)")
            args.extend((to_micros(created_at), execution_id))
        query = (
            f"SELECT {_SUMMARY_COLUMNS} FROM executions"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY created_at DESC, execution_id DESC LIMIT ?"
        )
        args.append(limit + 1)

        def read(conn: sqlite3.Connection) -> list[ExecutionSummary]:
            return [_summary(row) for row in conn.execute(query, args)]

        return page_of(await self._run(read), limit)

    # --- change notifications --------------------------------------------------------------------

    async def wait_for_changes(self, timeout: float | None = None, *, executions_only: bool = False) -> None:
        """Return when events were appended since the calling task's last return, or after
        ``timeout`` seconds; each task has its own wake-ups. ``executions_only`` changes nothing:
        every append wakes (the interface allows it).

        Appends through this instance wake it at once; commits by other connections to the same
        file are noticed within about 0.2 s (``PRAGMA data_version``; their cursor writes too,
        a spurious wake-up).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if await self._poll_data_version():
                self._changes.notify()
            if self._changes.take():
                return
            wait = _POLL_INTERVAL if deadline is None else min(_POLL_INTERVAL, deadline - time.monotonic())
            if wait <= 0:
                return
            await self._changes.wait(wait)

    # --- durable cursors -------------------------------------------------------------------------

    async def read_cursor(self, name: str) -> int:
        """The durable cursor ``name`` (0 if never written).

        Raises:
            StoreUnavailable: the file cannot be read.
        """

        def read(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT seq FROM cursors WHERE name = ?", (name,)).fetchone()
            return 0 if row is None else int(row[0])

        return await self._run(read)

    async def write_cursor(self, name: str, seq: int) -> None:
        """Move the durable cursor ``name`` forward to ``seq`` (a lower ``seq`` is ignored).

        Raises:
            ValueError: an empty ``name`` or a negative ``seq``.
            StoreUnavailable: the file is locked by another writer past ``busy_timeout``.
        """
        check_reader_cursor(name, seq)
        now = to_micros(datetime.now(UTC))

        def write(conn: sqlite3.Connection) -> None:
            # one statement: autocommitted, and the max is taken under SQLite's write lock
            conn.execute(
                "INSERT INTO cursors (name, seq, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at"
                " WHERE excluded.seq > cursors.seq",
                (name, seq, now),
            )

        await self._run(write)
        self._wrote()

    async def _poll_data_version(self) -> bool:
        if self._conn is None:
            return False
        version = await self._run(lambda conn: int(conn.execute("PRAGMA data_version").fetchone()[0]))
        changed = version != self._data_version
        self._data_version = version
        return changed


def _append_sync(
    conn: sqlite3.Connection,
    changes: list[ProjectionChange],
    batches: Sequence[tuple[str, int, Sequence[StoredEvent]]],
    writer: _ProjectionWriter,
) -> tuple[str, int, int] | None:
    """Write one append in a transaction; return ``(execution_id, expected, actual)`` on a conflict."""
    now = to_micros(datetime.now(UTC))
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Under the write lock the versions cannot move, so checking first is race-free. The same
        # statement reads the checksum the append chains from (NULL: a legacy event, or no event).
        chained_from: dict[str, tuple[bool, bytes | None]] = {}
        for change in changes:
            row = conn.execute(
                "SELECT x.version, e.version IS NOT NULL, e.checksum FROM executions x"
                " LEFT JOIN events e ON e.execution_id = x.execution_id AND e.version = x.version"
                " WHERE x.execution_id = ?",
                (change.execution_id,),
            ).fetchone()
            actual = 0 if row is None else int(row[0])
            if actual != change.expected_version:
                conn.execute("ROLLBACK")
                return change.execution_id, change.expected_version, actual
            if row is not None:
                chained_from[change.execution_id] = (bool(row[1]), row[2])
        rows: list[tuple[Any, ...]] = []
        for execution_id, expected, records in batches:
            if not records:
                continue
            previous: bytes | None = None
            if expected > 0:
                exists, previous = chained_from[execution_id]
                if not exists:
                    raise CorruptEvent(
                        execution_id, expected, "the event is missing, though the projection says the log reaches it"
                    )
            checksums = chain_checksums(execution_id, previous, records)
            rows.extend(
                (r.execution_id, r.version, r.kind, r.node_id, r.attempt, r.payload, c)
                for r, c in zip(records, checksums, strict=True)
            )
        conn.executemany(
            "INSERT INTO events (execution_id, version, kind, node_id, attempt, payload, checksum, recorded_at)"
            f" VALUES (?, ?, ?, ?, ?, ?, ?, {now})",
            rows,
        )
        conn.executemany(
            "INSERT INTO executions (execution_id, project, domain, workflow, status, version, created_at,"
            " updated_at, parent) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    c.execution_id,
                    c.created["project"],
                    c.created["domain"],
                    c.created["workflow"],
                    c.status,
                    c.new_version,
                    to_micros(c.created["created_at"]) if c.created["created_at"] is not None else now,  # type: ignore[arg-type]
                    now,
                    c.created["parent"],
                )
                for c in changes
                if c.created is not None
            ],
        )
        with writer:
            conn.executemany(
                "UPDATE executions SET version = ?, status = coalesce(?, status), updated_at = ?"
                " WHERE execution_id = ?",
                [(c.new_version, c.status, now, c.execution_id) for c in changes if c.created is None],
            )
        conn.execute("COMMIT")
    except sqlite3.IntegrityError as exc:
        conn.execute("ROLLBACK")
        # Unreachable after the version check unless the file was written by something else.
        raise ConcurrencyConflict(changes[0].execution_id, changes[0].expected_version) from exc
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return None


def _statements(script: str) -> list[str]:
    """Split a SQL script into statements (trigger bodies contain ``;``, so not on ``;`` alone)."""
    statements: list[str] = []
    current: list[str] = []
    for line in script.splitlines(keepends=True):
        if not current and (not line.strip() or line.lstrip().startswith("--")):
            continue
        current.append(line)
        if sqlite3.complete_statement("".join(current)):
            statements.append("".join(current).strip())
            current = []
    if "".join(current).strip():
        raise ValueError(f"incomplete SQL statement at the end of a migration: {''.join(current)!r}")
    return statements


def _summary(row: tuple[Any, ...]) -> ExecutionSummary:
    execution_id, project, domain, workflow, status, created_at, updated_at, version, parent = row
    return ExecutionSummary(
        execution_id=execution_id,
        project=project,
        domain=domain,
        workflow=workflow,
        status=status,
        created_at=from_micros(created_at),
        updated_at=from_micros(updated_at),
        version=version,
        parent=parent,
    )


def _is_busy(exc: sqlite3.Error) -> bool:
    """Whether SQLite refused ``exc``'s call only because another connection holds a lock."""
    return getattr(exc, "sqlite_errorname", "").startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))
