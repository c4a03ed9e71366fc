"""A tamper-evident event log: every stored event chains a checksum to the one before it.

A log changed behind Slipstream's back (a payload byte flipped, an output re-encoded, a
projection row edited) is found by every read, reported by ``slipstream executions verify``,
quarantined by the control loop, and the projection is rebuilt from the log. Both SQL stores; the
events are changed the way an operator could: with the append-only trigger dropped (SQLite) or
``session_replication_role = replica`` (Postgres).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import asyncpg
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from catalog import LocalBlobStore
from engine import CorruptEvent, Engine
from engine._chain import chain_checksums
from engine._cli import _main
from engine._postgres_store import PostgresEventStore
from engine._projection import to_micros
from engine._sqlite_store import SqliteEventStore, _statements
from engine._store_common import load_migrations
from engine._verify import rebuild_projections, verify_execution
from engine.events import ExecutionSucceeded, NodeQueued, decode_event, encode_event
from engine.testing import InMemoryEventStore
from plugins.local import LocalExecutor
from propeller import Controller
from tests.engine._tamper_workflows import six
from tests.engine.test_store_contract import T0, created, new_id

_KEEP = object()


class Target:
    """One store (SQLite file, or the module database's public schema, which the CLI uses), with
    engines on it, the CLI against it, and raw access that bypasses the store's guards."""

    def __init__(self, kind: str, tmp_path: Path, dsn: str | None) -> None:
        self.kind = kind
        self.tmp_path = tmp_path
        self.dsn = dsn

    def store(self) -> SqliteEventStore | PostgresEventStore:
        if self.kind == "sqlite":
            return SqliteEventStore(self.tmp_path / "events.db")
        assert self.dsn is not None
        return PostgresEventStore(self.dsn)

    def engine(self, **options: Any) -> Engine:
        options.setdefault("retry_delay", 0.05)
        options.setdefault("blobs", LocalBlobStore(self.tmp_path / "blobs"))
        return Engine(self.store(), {"local": LocalExecutor()}, **options)

    async def cli(self, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
        where = ["--state-dir", str(self.tmp_path)] if self.kind == "sqlite" else ["--postgres", str(self.dsn)]
        capsys.readouterr()
        code = await anyio.to_thread.run_sync(_main, [*args, *where])
        out, err = capsys.readouterr()
        return code, out, err

    # -- raw access, past the guards --------------------------------------------------------------

    def _sqlite(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.tmp_path / "events.db", isolation_level=None)
        conn.create_function("slipstream_writer", 0, lambda: 0)
        return conn

    async def _pg(self, *, bypass: bool) -> asyncpg.Connection:
        settings = {"session_replication_role": "replica"} if bypass else {}
        return await asyncpg.connect(self.dsn, server_settings=settings)

    async def payload(self, eid: str, version: int) -> bytes:
        query = "SELECT payload FROM events WHERE execution_id = {0} AND version = {1}"
        if self.kind == "sqlite":
            conn = self._sqlite()
            try:
                return bytes(conn.execute(query.format("?", "?"), (eid, version)).fetchone()[0])
            finally:
                conn.close()
        pg = await self._pg(bypass=False)
        try:
            return bytes(await pg.fetchval(query.format("$1", "$2"), eid, version))
        finally:
            await pg.close()

    async def rewrite(self, eid: str, version: int, payload: bytes | object = _KEEP, checksum: object = _KEEP) -> None:
        """Change a stored event the way an operator could, past the append-only triggers."""
        sets, args = [], []
        if payload is not _KEEP:
            sets.append("payload")
            args.append(payload)
        if checksum is not _KEEP:
            sets.append("checksum")
            args.append(checksum)
        if self.kind == "sqlite":
            conn = self._sqlite()
            try:
                conn.execute("BEGIN")
                conn.execute("DROP TRIGGER events_no_update")
                assignments = ", ".join(f"{c} = ?" for c in sets)
                conn.execute(
                    f"UPDATE events SET {assignments} WHERE execution_id = ? AND version = ?", (*args, eid, version)
                )
                conn.execute(
                    "CREATE TRIGGER events_no_update BEFORE UPDATE ON events BEGIN SELECT RAISE(ABORT, 'no'); END"
                )
                conn.execute("COMMIT")
            finally:
                conn.close()
            return
        pg = await self._pg(bypass=True)
        try:
            assignments = ", ".join(f"{c} = ${i}" for i, c in enumerate(sets, start=1))
            n = len(sets)
            await pg.execute(
                f"UPDATE events SET {assignments} WHERE execution_id = ${n + 1} AND version = ${n + 2}",
                *args,
                eid,
                version,
            )
        finally:
            await pg.close()

    async def set_status(self, eid: str, status: str, *, bypass: bool) -> None:
        """UPDATE the projection row, as a script would (``bypass``: past the guard trigger)."""
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.tmp_path / "events.db", isolation_level=None)
            if bypass:
                conn.create_function("slipstream_writer", 0, lambda: 1)
            try:
                conn.execute("UPDATE executions SET status = ? WHERE execution_id = ?", (status, eid))
            finally:
                conn.close()
            return
        pg = await self._pg(bypass=bypass)
        try:
            await pg.execute("UPDATE executions SET status = $1 WHERE execution_id = $2", status, eid)
        finally:
            await pg.close()


@pytest.fixture
def target(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Target:
    dsn = request.getfixturevalue("postgres_database") if store_kind == "postgres" else None
    return Target(store_kind, tmp_path, dsn)


def flipped(payload: bytes, at: int | None = None) -> bytes:
    index = len(payload) // 2 if at is None else at
    return payload[:index] + bytes([payload[index] ^ 0x01]) + payload[index + 1 :]


def assert_one_line(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# -- reads ------------------------------------------------------------------------------------------


async def test_a_flipped_payload_byte_is_a_corrupt_event_naming_execution_and_version(
    target: Target, capsys: pytest.CaptureFixture[str]
) -> None:
    async with target.engine() as eng:
        handle = await eng.launch(six)
        assert await handle.outputs() == 6
        await target.rewrite(handle.execution_id, 2, payload=flipped(await target.payload(handle.execution_id, 2)))

        with pytest.raises(CorruptEvent) as caught:
            await eng.history(handle.execution_id)
        assert (caught.value.execution_id, caught.value.version) == (handle.execution_id, 2)
        assert f"slipstream executions verify {handle.execution_id}" in str(caught.value)
        with pytest.raises(CorruptEvent, match="at version 2"):
            await handle.outputs()

    for command in ("show", "history", "outputs"):
        code, _, err = await target.cli(capsys, "executions", command, handle.execution_id)
        assert_one_line(code, err, "error: ", handle.execution_id, "corrupt event log at version 2", "verify")

    code, out, _ = await target.cli(capsys, "executions", "verify", handle.execution_id)
    assert code == 1
    assert out.strip() == (
        f"CORRUPT {handle.execution_id} at version 2: its checksum does not match its contents: the payload, kind, "
        "node or attempt was changed after it was written, or the checksum of the event before it was"
    )


async def test_an_output_reencoded_as_a_valid_event_is_caught_by_the_chain(target: Target) -> None:
    async with target.engine() as eng:
        handle = await eng.launch(six)
        assert await handle.outputs() == 6
        last = len(await eng.history(handle.execution_id))
        event = decode_event(await target.payload(handle.execution_id, last))
        assert isinstance(event, ExecutionSucceeded)
        (name,) = event.outputs
        assert event.outputs[name] == msgspec.msgpack.encode(6)
        forged = encode_event(msgspec.structs.replace(event, outputs={name: msgspec.msgpack.encode(7)}))
        assert decode_event(forged).outputs[name] == msgspec.msgpack.encode(7)  # type: ignore[union-attr]
        await target.rewrite(handle.execution_id, last, payload=forged)

        with pytest.raises(CorruptEvent, match="checksum does not match") as caught:
            await handle.outputs()
        assert caught.value.version == last


async def test_a_forged_checksum_breaks_the_link_to_the_next_event(target: Target) -> None:
    """Rewriting an event and its own checksum moves the mismatch to the next event."""
    async with target.engine() as eng:
        handle = await eng.launch(six)
        await handle.outputs()
        eid = handle.execution_id
        events = await eng.history(eid)
        store = eng.store
        records = await store.read_records(eid)
        forged = encode_event(msgspec.structs.replace(events[1], at=T0))
        record = msgspec.structs.replace(records[1], payload=forged)
        (checksum,) = chain_checksums(eid, records[0].checksum, [record])
        await target.rewrite(eid, 2, payload=forged, checksum=checksum)
        with pytest.raises(CorruptEvent) as caught:
            await eng.history(eid)
        assert caught.value.version == 3


# -- tailing readers ---------------------------------------------------------------------------------


async def test_tailing_readers_move_past_an_event_that_can_never_be_read(
    target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    """An undecodable payload is where `read_all` stops a page, then raises with its ``seq``; a
    subscription (and the end-of-log search) moves past it with one error line instead of
    stopping the stream there for good."""
    from engine._subscribe import log_end

    caplog.set_level(logging.ERROR, logger="slipstream.subscribe")
    async with target.engine() as eng:
        first = await eng.launch(six)
        await first.outputs()
        second = await eng.launch(six)
        await second.outputs()
        store = eng.store
        seqs = {}  # (execution, version) -> seq, for the two executions
        after = 0
        while page := await store.read_all(after, 5000):
            seqs |= {(i.event.execution_id, i.event.version): i.seq for i in page}
            after = page[-1].seq
        end = after
        await target.rewrite(first.execution_id, 3, payload=b"\xc1")  # 0xc1: never valid msgpack
        victim = seqs[first.execution_id, 3]

        assert [i.seq for i in await store.read_all(seqs[first.execution_id, 1], 1000)] == [seqs[first.execution_id, 2]]
        with pytest.raises(CorruptEvent) as caught:
            await store.read_all(seqs[first.execution_id, 2], 1000)
        assert (caught.value.execution_id, caught.value.version, caught.value.seq) == (first.execution_id, 3, victim)
        rest = await store.read_all(victim, 5000)
        assert rest[0].seq == seqs[first.execution_id, 4] and rest[-1].seq == end
        assert await log_end(store) == end

        last = (second.execution_id, len(await eng.history(second.execution_id)))
        seen: list[tuple[str, int]] = []
        with anyio.fail_after(30):
            async with eng.subscribe(from_start=True) as sub:
                async for delivery in sub:
                    event = delivery.event
                    seen.append((event.execution_id, event.version))
                    if seen[-1] == last:
                        break
    assert (first.execution_id, 2) in seen and (first.execution_id, 4) in seen
    assert (first.execution_id, 3) not in seen
    said = [r.getMessage() for r in caplog.records if "skipping the event" in r.getMessage()]
    assert len(said) == 1 and f"seq {victim}" in said[0] and "corrupt event log at version 3" in said[0]


# -- the control loop -------------------------------------------------------------------------------


async def test_the_loop_quarantines_a_corrupt_execution_and_runs_the_others(
    target: Target,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with target.engine(run_loop=False) as client:
        bad = (await client.launch(six)).execution_id
        good = (await client.launch(six, a=3)).execution_id
    await target.rewrite(bad, 1, payload=flipped(await target.payload(bad, 1)))

    rounds: dict[str, int] = {}
    reconcile = Controller.reconcile

    async def counted(self: Controller, execution_id: str) -> None:
        rounds[execution_id] = rounds.get(execution_id, 0) + 1
        await reconcile(self, execution_id)

    monkeypatch.setattr(Controller, "reconcile", counted)
    caplog.set_level(logging.INFO, logger="propeller")
    async with target.engine() as eng:
        assert await eng.handle(good).outputs() == 7
        with pytest.raises(CorruptEvent, match="at version 1"):
            await eng.handle(bad).wait(timeout=5)
        await anyio.sleep(1.5)  # a retry storm would show as rounds here (retry_delay is 0.05 s)
        quarantined = {s.execution_id for s in await eng.list_executions(status="quarantined")}

    assert bad in quarantined and good not in quarantined
    lines = [r for r in caplog.records if bad in r.getMessage()]
    assert [(r.levelname, r.getMessage().splitlines()[0][:60]) for r in lines] == [
        ("ERROR", f"execution {bad} quarantined, its event log is corrupt: exe"[:60])
    ]
    assert all(r.exc_info is None for r in lines)
    assert rounds[bad] <= 2, rounds

    code, out, _ = await target.cli(capsys, "executions", "list", "--status", "quarantined")
    assert code == 0 and bad in out and "quarantined" in out
    code, _, err = await target.cli(capsys, "executions", "show", bad)
    assert_one_line(code, err, bad, "corrupt event log at version 1")


async def test_a_quarantined_execution_runs_again_once_its_log_is_restored_and_the_projection_rebuilt(
    target: Target,
) -> None:
    async with target.engine(run_loop=False) as client:
        eid = (await client.launch(six)).execution_id
    original = await target.payload(eid, 1)
    await target.rewrite(eid, 1, payload=flipped(original))
    async with target.engine() as eng:
        with pytest.raises(CorruptEvent):
            await eng.handle(eid).wait(timeout=5)
        await target.rewrite(eid, 1, payload=original)  # restored from a backup
        report = await rebuild_projections(eng.store)
        assert eid in report.rewritten
        assert eng._controller is not None
        await eng._controller.resync()  # what the periodic sweep does
        assert await eng.handle(eid).outputs() == 6


async def test_waiting_on_a_quarantined_execution_whose_log_was_restored_follows_the_log(
    target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with target.engine(run_loop=False) as client:
        eid = (await client.launch(six)).execution_id
    original = await target.payload(eid, 1)
    await target.rewrite(eid, 1, payload=flipped(original))
    async with target.engine() as eng:
        with pytest.raises(CorruptEvent):
            await eng.handle(eid).wait(timeout=5)
        await target.rewrite(eid, 1, payload=original)  # restored; rebuild-projections not run yet
        whole_reads = 0
        read = eng.store.read

        async def counted(execution_id: str, after: int = 0) -> list[Any]:
            nonlocal whole_reads
            whole_reads += after == 0
            return await read(execution_id, after)

        monkeypatch.setattr(eng.store, "read", counted)
        # like a running one: it waits (no CorruptEvent), reading the log whole once, then its tail
        with pytest.raises(TimeoutError):
            await eng.handle(eid).wait(timeout=1.3)
        assert whole_reads == 1
        async with anyio.create_task_group() as group:
            ended: list[Any] = []

            async def wait() -> None:
                ended.append(await eng.handle(eid).wait(timeout=5))

            group.start_soon(wait)
            await anyio.sleep(0.2)
            async with target.engine(run_loop=False) as other:  # another process ends it in the log
                await other.abort(eid)
    assert [(s.status, s.version) for s in ended] == [("aborted", 2)]


# -- verify and rebuild-projections -----------------------------------------------------------------


async def test_the_projection_refuses_updates_and_is_rebuilt_from_the_log(
    target: Target, capsys: pytest.CaptureFixture[str]
) -> None:
    async with target.engine() as eng:
        handle = await eng.launch(six)
        await handle.outputs()
    eid = handle.execution_id

    with pytest.raises((sqlite3.Error, asyncpg.PostgresError), match=r"slipstream_writer|derived from the events log"):
        await target.set_status(eid, "running", bypass=False)

    await target.set_status(eid, "running", bypass=True)
    code, out, _ = await target.cli(capsys, "executions", "verify", eid)
    assert code == 1
    assert out.strip() == f"PROJECTION {eid}: status is 'running' in the projection, 'succeeded' in the log"

    code, out, _ = await target.cli(capsys, "admin", "rebuild-projections")
    assert code == 0
    assert f"rewritten {eid}" in out.splitlines()

    code, out, err = await target.cli(capsys, "executions", "verify", eid, "--json")
    assert code == 0, err
    report = msgspec.json.decode(out)
    assert report["ok"] is True and report["events"] > 3 and report["legacy"] == 0 and len(report["head"]) == 64
    async with target.engine(run_loop=False) as eng:
        assert eid in [s.execution_id for s in await eng.list_executions(status="succeeded")]


async def test_verify_of_all_executions_reports_each_corrupt_one_in_one_line(
    target: Target, capsys: pytest.CaptureFixture[str]
) -> None:
    async with target.engine() as eng:
        ids = [(await eng.launch(six, a=i)).execution_id for i in range(3)]
        for eid in ids:
            await eng.handle(eid).wait()
    await target.rewrite(ids[1], 1, payload=b"\xc1 not msgpack")
    code, out, err = await target.cli(capsys, "executions", "verify")
    assert code == 1
    mine = [line for line in out.splitlines() if any(eid in line for eid in ids)]
    assert len(mine) == 1 and mine[0].startswith(f"CORRUPT {ids[1]} at version 1: its checksum does not match")
    assert "with a corrupt log" in err


# -- the chain's write side -------------------------------------------------------------------------


async def test_a_stale_head_cache_costs_a_conflict_never_a_wrong_chain(postgres_database: str) -> None:
    from engine import ConcurrencyConflict

    async with PostgresEventStore(postgres_database) as store:
        eid = new_id()
        await store.append(eid, 0, [created(eid)])
        store._heads[eid] = (1, b"\x00" * 32)  # what a cache that missed some change would hold
        queued = NodeQueued(execution_id=eid, version=2, at=T0, node_id="n")
        with pytest.raises(ConcurrencyConflict):
            await store.append(eid, 1, [queued])
        assert await store.append(eid, 1, [queued]) == 2  # the miss reads the stored checksum
        assert [e.version for e in await store.read(eid)] == [1, 2]


async def test_events_written_before_the_chain_read_as_legacy_and_the_chain_starts_after(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A database of schema version 4 (no checksums) is upgraded in place."""
    path = tmp_path / "events.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)"
    )
    for migration in load_migrations("sqlite")[:4]:
        for statement in _statements(migration.sql):
            conn.execute(statement)
        conn.execute("INSERT INTO schema_migrations VALUES (?, ?, 0)", (migration.version, migration.name))
    eid = new_id()
    conn.execute(
        "INSERT INTO events (execution_id, version, kind, node_id, attempt, payload, recorded_at)"
        " VALUES (?, 1, 'ExecutionCreated', '', 0, ?, 0)",
        (eid, encode_event(created(eid))),
    )
    conn.execute(
        "INSERT INTO executions VALUES (?, 'p', 'development', 'wf', 'created', 1, ?, 0, NULL)", (eid, to_micros(T0))
    )
    conn.close()

    async with SqliteEventStore(path) as store:
        assert [e.version for e in await store.read(eid)] == [1]
        await store.append(eid, 1, [NodeQueued(execution_id=eid, version=2, at=T0, node_id="n")])
        records = await store.read_records(eid)
        assert records[0].checksum is None and records[1].checksum is not None
        assert [e.version for e in await store.read(eid)] == [1, 2]
        assert [e.version for e in await store.read(eid, after=1)] == [2]

    code, out, _ = await Target("sqlite", tmp_path, None).cli(capsys, "executions", "verify", eid)
    assert code == 0, out
    assert out.startswith(f"ok {eid}: 2 events, 1 unchained legacy, head ")

    # a chained event whose checksum is removed looks like legacy after the chain began: corrupt
    async with SqliteEventStore(path) as store:
        await store.append(eid, 2, [NodeQueued(execution_id=eid, version=3, at=T0, node_id="m")])
    await Target("sqlite", tmp_path, None).rewrite(eid, 3, checksum=None)
    async with SqliteEventStore(path) as store:
        with pytest.raises(CorruptEvent, match="no checksum, though the event before") as caught:
            await store.read(eid)
        assert caught.value.version == 3


async def test_a_postgres_schema_of_version_4_is_upgraded_in_place_and_chains_after_its_events(
    postgres_database: str, postgres_schema: str
) -> None:
    conn = await asyncpg.connect(postgres_database)
    eid = new_id()
    try:
        async with conn.transaction():
            await conn.execute(f'CREATE SCHEMA "{postgres_schema}"')
            await conn.execute(f'SET LOCAL search_path TO "{postgres_schema}"')
            await conn.execute(
                "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for migration in load_migrations("postgres")[:4]:
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", migration.version, migration.name
                )
            await conn.execute(
                "INSERT INTO events (execution_id, version, kind, payload) VALUES ($1, 1, 'ExecutionCreated', $2)",
                eid,
                encode_event(created(eid)),
            )
            await conn.execute(
                "INSERT INTO executions VALUES ($1, 'p', 'development', 'wf', 'created', 1, $2, $2, NULL)", eid, T0
            )
    finally:
        await conn.close()

    async with PostgresEventStore(postgres_database, schema=postgres_schema) as store:
        assert [e.version for e in await store.read(eid)] == [1]
        await store.append(eid, 1, [NodeQueued(execution_id=eid, version=2, at=T0, node_id="n")])
    async with PostgresEventStore(postgres_database, schema=postgres_schema) as store:  # a cold head cache
        await store.append(eid, 2, [NodeQueued(execution_id=eid, version=3, at=T0, node_id="m")])
        assert [r.checksum is None for r in await store.read_records(eid)] == [True, False, False]
        assert [e.version for e in await store.read(eid)] == [1, 2, 3]
        check = await verify_execution(store, eid)
        assert (check.ok, check.events, check.legacy) == (True, 3, 1)


# -- any stored bytes: CorruptEvent or the right events, never a raw decode error -------------------


_EID = "ex-hypothesis"
_EVENTS = [
    created(_EID),
    *(NodeQueued(execution_id=_EID, version=v, at=T0, node_id=f"n{v}") for v in (2, 3, 4)),
]
_PAYLOADS = [encode_event(e) for e in _EVENTS]
EXAMPLES = 400  # the count the tamper-evidence work reports


def _changed(original: bytes) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=64),
        st.integers(0, len(original) - 1).map(lambda i: flipped(original, i)),
        st.integers(0, len(original) - 1).map(lambda i: original[:i]),
        st.binary(min_size=1, max_size=8).map(lambda extra: original + extra),
    )


async def _original_log() -> InMemoryEventStore:
    store = InMemoryEventStore()
    await store.start()
    await store.append(_EID, 0, _EVENTS)
    return store


@settings(max_examples=EXAMPLES, deadline=None)
@given(data=st.data())
def test_any_stored_payload_reads_as_the_events_or_as_a_corrupt_event(data: st.DataObject) -> None:
    """Random and mutated payloads fed through `EventStore.read`: each read gives the stored
    events, or raises CorruptEvent naming the changed version (or the next one, where the forger
    recomputed the changed event's checksum); never a raw msgspec error."""
    store = anyio.run(_original_log)
    log = store.log._by_execution[_EID]
    index = data.draw(st.integers(0, 3), label="changed event (0-based)")
    payload = data.draw(_changed(_PAYLOADS[index]), label="its payload")
    recompute = data.draw(st.booleans(), label="checksum recomputed")
    after = data.draw(st.integers(0, 3), label="read after")
    changed = msgspec.structs.replace(log[index], payload=payload)
    if recompute:
        previous = log[index - 1].checksum if index else None
        (checksum,) = chain_checksums(_EID, previous, [changed])
        changed = msgspec.structs.replace(changed, checksum=checksum)
    log[index] = changed

    async def read() -> Sequence[Any]:
        return await store.read(_EID, after=after)

    try:
        events = anyio.run(read)
    except CorruptEvent as exc:
        assert exc.execution_id == _EID
        assert exc.version in (index + 1, index + 2)
        return
    if payload == _PAYLOADS[index] or index < after:  # unchanged, or before what was read
        assert events == _EVENTS[after:]
    else:  # a forged last event with its checksum recomputed: nothing chains from it (verify's head)
        assert recompute and index == 3
        assert events == [*_EVENTS[after:3], decode_event(payload)]
