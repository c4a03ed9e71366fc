"""Server mode at scale (Postgres): serve processes share the work and take over a killed one's,
appends of many writers keep `read_all` commit-safe, and leases are exclusive under batching.

Figures (executions/s, takeover time) are measured by ``python -m benchmarks server``; the bounds
here are loose on purpose (the machine is shared).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from engine import Engine
from engine._pg_leases import LEASE_BUCKETS, lease_bucket, member_name, serving_processes
from engine._postgres_store import PostgresEventStore
from engine.errors import ConcurrencyConflict, ConfigError
from plugins.local import LocalExecutor
from tests.engine.test_store_contract import created, new_id, queued

from . import _scale_workflows as flows

ROOT = Path(__file__).resolve().parents[2]
SERVE = ("--path", str(ROOT), "--executor", "local", "--grace", "1")


@pytest.fixture
async def store(postgres_database: str, postgres_schema: str) -> AsyncIterator[PostgresEventStore]:
    async with PostgresEventStore(postgres_database, schema=postgres_schema, max_size=4) as s:
        yield s


# --- appends and leases ------------------------------------------------------------------------------


async def _tailed_while(store: PostgresEventStore, *writers: Coroutine[Any, Any, None]) -> tuple[list[int], list[int]]:
    """The seqs a `read_all` tailer saw while ``writers`` ran, and the whole log's seqs after."""
    tailed: list[int] = []
    done = asyncio.Event()

    async def tail() -> None:
        after = 0
        while True:
            finished = done.is_set()  # read once more after the writers are done
            for event in await store.read_all(after, limit=50):
                tailed.append(event.seq)
                after = event.seq
            if finished and not await store.read_all(after, limit=1):
                return
            await asyncio.sleep(0)

    tailer = asyncio.create_task(tail())
    await asyncio.gather(*writers)
    done.set()
    await asyncio.wait_for(tailer, timeout=60)
    return tailed, [g.seq for g in await store.read_all(0, limit=10_000)]


async def test_read_all_never_skips_an_event_while_many_writers_append(
    postgres_database: str, postgres_schema: str
) -> None:
    stores = [PostgresEventStore(postgres_database, schema=postgres_schema, max_size=4) for _ in range(3)]
    for s in stores:
        await s.start()

    async def write(s: PostgresEventStore, n: int) -> None:
        for _ in range(n):
            ids = [new_id() for _ in range(3)]
            await s.append_many([(eid, 0, [created(eid)]) for eid in ids])

    try:
        tailed, everything = await _tailed_while(stores[0], *(write(s, 40) for s in stores for _ in range(4)))
    finally:
        for s in stores:
            await s.close()
    assert len(everything) == 3 * 4 * 40 * 3
    assert tailed == everything, "the tailer skipped or reordered events that committed late"


async def test_read_all_never_skips_an_event_while_many_writers_append_rounds(
    postgres_database: str, postgres_schema: str
) -> None:
    """The appends of running executions (one existing execution per call: the lean function of
    migration 0007) keep read_all commit-safe as creations do."""
    stores = [PostgresEventStore(postgres_database, schema=postgres_schema, max_size=4) for _ in range(3)]
    for s in stores:
        await s.start()

    async def write(s: PostgresEventStore, rounds: int) -> None:
        eid = new_id()
        await s.append(eid, 0, [created(eid)])
        for version in range(1, 2 * rounds, 2):
            await s.append(eid, version, [queued(eid, version + 1), queued(eid, version + 2)])

    try:
        tailed, everything = await _tailed_while(stores[0], *(write(s, 30) for s in stores for _ in range(4)))
    finally:
        for s in stores:
            await s.close()
    assert len(everything) == 3 * 4 * (1 + 2 * 30)
    assert tailed == everything, "the tailer skipped or reordered events that committed late"


async def test_a_lost_race_is_a_conflict_and_leaves_no_lock_behind(store: PostgresEventStore) -> None:
    eid = new_id()
    await store.append(eid, 0, [created(eid)])
    with pytest.raises(ConcurrencyConflict) as caught:
        await store.append(eid, 0, [created(eid)])
    assert (caught.value.execution_id, caught.value.expected_version, caught.value.actual_version) == (eid, 0, 1)
    other = new_id()
    with pytest.raises(ConcurrencyConflict) as caught:  # one batch, the second execution stale
        await store.append_many([(other, 0, [created(other)]), (eid, 0, [created(eid)])])
    assert caught.value.execution_id == eid
    assert await store.read(other) == []  # all or nothing
    conn = await asyncpg.connect(store._dsn)
    try:
        held = await conn.fetchval(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE l.locktype = 'advisory'"
            " AND a.datname = current_database() AND a.application_name = 'slipstream-store'"
        )
    finally:
        await conn.close()
    assert held == 0, "an append left the sequence lock held on a pooled connection"


async def test_concurrent_appends_share_transactions_and_only_the_loser_conflicts(store: PostgresEventStore) -> None:
    taken = new_id()
    await store.append(taken, 0, [created(taken)])
    fresh = [new_id() for _ in range(50)]
    results = await asyncio.gather(
        *(store.append(eid, 0, [created(eid)]) for eid in fresh),
        store.append(taken, 0, [created(taken)]),  # stale: lands in a group with the others
        return_exceptions=True,
    )
    assert results[:-1] == [1] * len(fresh)
    assert isinstance(results[-1], ConcurrencyConflict) and results[-1].execution_id == taken
    assert all([len(await store.read(eid)) == 1 for eid in fresh])
    assert len(await store.read(taken)) == 1


async def test_batched_claims_give_each_execution_to_exactly_one_store(
    postgres_database: str, postgres_schema: str
) -> None:
    names = [new_id() for _ in range(300)]
    async with (
        PostgresEventStore(postgres_database, schema=postgres_schema) as one,
        PostgresEventStore(postgres_database, schema=postgres_schema) as two,
    ):
        first, second = await asyncio.gather(
            asyncio.gather(*(one.claim(n) for n in names)), asyncio.gather(*(two.claim(n) for n in names))
        )
        assert all(a != b for a, b in zip(first, second, strict=True))
        held_by_one = [n for n, got in zip(names, first, strict=True) if got]
        await asyncio.gather(*(one.release(n) for n in held_by_one))
        assert all(await asyncio.gather(*(two.claim(n) for n in held_by_one)))
        assert not any(await asyncio.gather(*(one.claim(n) for n in names)))
        # the same name claimed many times at once is locked once: one release frees it (a name in
        # a bucket that `two` does not hold: leases are per bucket)
        held = {lease_bucket(n) for n in names}
        shared = next(n for n in iter(new_id, None) if lease_bucket(n) not in held)
        assert all(await asyncio.gather(*(one.claim(shared) for _ in range(20))))
        await one.release(shared)
        assert await two.claim(shared)


async def test_leases_take_one_lock_per_bucket_not_per_execution(
    store: PostgresEventStore, postgres_database: str, postgres_schema: str
) -> None:
    """Postgres's lock table is shared by the whole server (6,400 locks by default): a store holds
    at most `LEASE_BUCKETS` locks however many executions it runs."""
    names = [new_id() for _ in range(5000)]
    assert all(await asyncio.gather(*(store.claim(n) for n in names)))
    conn = await asyncpg.connect(postgres_database)
    try:

        async def locks() -> int:
            assert store._listener is not None
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1",
                    store._listener.get_server_pid(),
                )
            )

        held = await locks()
        assert len({lease_bucket(n) for n in names}) == held <= LEASE_BUCKETS
        # a bucket's lock stays while one of its names is held, and goes with the last
        by_bucket: dict[int, list[str]] = {}
        for name in names:
            by_bucket.setdefault(lease_bucket(name), []).append(name)
        first, sharing = next(group[:2] for group in by_bucket.values() if len(group) > 1)
        rest = [n for n in names if n != first]
        async with PostgresEventStore(postgres_database, schema=postgres_schema) as other:
            await store.release(first)
            assert not await other.claim(first)  # its bucket is still held, through `sharing`
            for name in rest:
                await store.release(name)
            assert await locks() == 0
            assert await other.claim(first) and await other.claim(sharing)
    finally:
        await conn.close()


async def test_stores_prefer_disjoint_shares_and_see_a_member_go(postgres_database: str, postgres_schema: str) -> None:
    names = [new_id() for _ in range(400)]
    async with PostgresEventStore(postgres_database, schema=postgres_schema) as one:
        two = PostgresEventStore(postgres_database, schema=postgres_schema)
        await two.start()
        try:
            assert await one.serving_loops() == 0
            await one.announce_loop()
            await two.announce_loop()
            assert await two.serving_loops() == 2
            deadline = time.monotonic() + 10
            while not (set(one.prefers(n) for n in names) == {True, False}):
                assert time.monotonic() < deadline, "the stores never saw each other"
                await asyncio.sleep(0.05)
            while any(one.prefers(n) == two.prefers(n) for n in names):
                assert time.monotonic() < deadline, "the stores disagree on who prefers what"
                await asyncio.sleep(0.05)
            share = sum(one.prefers(n) for n in names) / len(names)
            assert 0.35 < share < 0.65, share
            epoch = one.lease_epoch()
        finally:
            await two.close()
        deadline = time.monotonic() + 10
        while one.lease_epoch() == epoch:
            assert time.monotonic() < deadline, "the store never noticed the other one left"
            await asyncio.sleep(0.05)
        assert all(one.prefers(n) for n in names)
        assert await one.serving_loops() == 1


async def test_a_silent_member_has_its_session_ended_and_its_leases_move(
    postgres_database: str, postgres_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A serving process that stops beating (hung, stopped, its host gone without closing its
    socket) keeps its session, and so its leases, until the others end that session."""
    async with (
        PostgresEventStore(postgres_database, schema=postgres_schema, member_timeout=2) as one,
        PostgresEventStore(postgres_database, schema=postgres_schema, member_timeout=2) as two,
    ):
        await one.announce_loop()
        await two.announce_loop()
        assert await two.claim("held")
        silent_pid = two._listener.get_server_pid()  # type: ignore[union-attr]
        await asyncio.sleep(3)  # longer than the timeout: beating members are left alone
        assert not await one.claim("held")
        epoch = one.lease_epoch()
        watcher = two._leases._watcher  # stop its beats, as a hung process would
        assert watcher is not None
        watcher.cancel()
        started = time.monotonic()
        while not await one.claim("held"):
            assert time.monotonic() - started < 10, "the silent member kept its lease"
            await asyncio.sleep(0.1)
        assert 1.5 < time.monotonic() - started < 6
        assert one.lease_epoch() != epoch
        said = [r.getMessage() for r in caplog.records if "silent" in r.getMessage()]
        assert said and f"session {silent_pid}" in said[0] and "member timeout 2.0 s" in said[0]


async def test_a_steady_stream_of_claims_does_not_hold_up_the_beats(store: PostgresEventStore) -> None:
    """Beats (and a tailer's registration) run on the lease session between two batches of claims:
    a flush that never runs out of claims must not keep them waiting, or a busy serve would be
    taken for silent."""
    await store.announce_loop()
    stop = asyncio.Event()

    async def claimer() -> None:
        while not stop.is_set():  # a lock and an unlock each time: the flush never runs out
            name = new_id()
            await store.claim(name)
            await store.release(name)
            await asyncio.sleep(0)

    claimers = [asyncio.create_task(claimer()) for _ in range(100)]
    try:
        await asyncio.sleep(0.2)
        for _ in range(5):
            answer = store._leases.exclusive(lambda session: session.fetchval("SELECT 1"))
            assert await asyncio.wait_for(answer, timeout=2) == 1
    finally:
        stop.set()
        await asyncio.gather(*claimers)


async def test_a_claim_made_while_the_flush_runs_an_action_is_answered(
    store: PostgresEventStore, postgres_database: str, postgres_schema: str
) -> None:
    """A claim of a bucket that was in the batch just answered, made while the flush runs an action
    on the lease session (a beat) before its next batch, waits for that next batch: it must not
    join the batch already answered, where nobody would answer it."""
    taken = new_id()
    same_bucket = next(n for n in iter(new_id, None) if lease_bucket(n) == lease_bucket(taken))
    async with PostgresEventStore(postgres_database, schema=postgres_schema) as other:
        assert await other.claim(taken)
        # this task runs the flush: its first batch (refused), then the slow action queued meanwhile
        first = asyncio.create_task(store.claim(taken))
        for _ in range(3):
            await asyncio.sleep(0)  # its lock query is in flight
        slow = asyncio.create_task(store._leases.exclusive(lambda session: session.fetchval("SELECT pg_sleep(0.5)")))
        await asyncio.sleep(0.2)  # the first batch is answered; the flush runs the slow action
        assert await asyncio.wait_for(store.claim(same_bucket), timeout=3) is False
        assert not await first
        await slow


async def test_a_claim_given_up_mid_flight_fails_no_other_claim_and_keeps_its_lock_known(
    store: PostgresEventStore, postgres_database: str, postgres_schema: str
) -> None:
    """Claims share one lock query (and one answer per name): a caller that gives up (a round
    cancelled at shutdown) must not break the answers of the others in the batch, and the lock
    the server granted it is still known here, so a release frees it."""
    buckets: dict[int, str] = {}
    for name in iter(new_id, None):  # in five buckets: a lease is a bucket's
        buckets.setdefault(lease_bucket(name), name)
        if len(buckets) == 5:
            break
    names = list(buckets.values())
    blocker = asyncio.create_task(store._leases.exclusive(lambda session: session.fetchval("SELECT pg_sleep(0.3)")))
    await asyncio.sleep(0.05)  # the flush runs the slow action: the claims below wait for one batch
    claims = [asyncio.create_task(store.claim(name)) for name in names]
    await asyncio.sleep(0.05)
    claims[0].cancel()
    assert await asyncio.gather(*claims[1:]) == [True] * 4
    await blocker
    with pytest.raises(asyncio.CancelledError):
        await claims[0]
    await store.release(names[0])
    async with PostgresEventStore(postgres_database, schema=postgres_schema) as other:
        assert await other.claim(names[0])
        assert not await other.claim(names[1])


async def test_a_member_that_never_beat_is_left_alone_and_warned_about(
    postgres_database: str, postgres_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A serving process of a version before beats is never taken for silent; its leases (a lock
    per execution) do not exclude this version's (a lock per bucket), which is said once."""
    async with PostgresEventStore(postgres_database, schema=postgres_schema, member_timeout=2) as one:
        await one.announce_loop()
        older = await asyncpg.connect(
            postgres_database, server_settings={"application_name": member_name(postgres_schema)}
        )
        try:
            await asyncio.sleep(3.5)
            assert await older.fetchval("SELECT 1") == 1
            assert await one.serving_loops() == 2
        finally:
            await older.close()
    said = [r.getMessage() for r in caplog.records if "does not beat" in r.getMessage()]
    assert len(said) == 1 and f"session {older.get_server_pid()}" in said[0] and "Stop it" in said[0]


async def test_the_serving_processes_are_listed_with_their_scope_beat_and_leases(
    postgres_database: str, postgres_schema: str
) -> None:
    async with (
        PostgresEventStore(postgres_database, schema=postgres_schema) as every,
        PostgresEventStore(postgres_database, schema=postgres_schema) as scoped,
    ):
        await every.announce_loop()
        await scoped.announce_loop("a", "development")
        for name in ("x", "y", "z"):
            assert await every.claim(name)
        older = await asyncpg.connect(
            postgres_database, server_settings={"application_name": member_name(postgres_schema)}
        )
        conn = await asyncpg.connect(postgres_database, server_settings={"search_path": postgres_schema})
        try:
            listed = {p.pid: p for p in await serving_processes(conn, postgres_schema)}
        finally:
            await conn.close()
            await older.close()
        assert every._listener is not None and scoped._listener is not None
        mine, theirs, old = (
            listed[every._listener.get_server_pid()],
            listed[scoped._listener.get_server_pid()],
            listed[older.get_server_pid()],
        )
        assert len(listed) == 3
        assert mine.scope is None and mine.leases == 3 and mine.quiet_s is not None and mine.quiet_s < 2
        assert theirs.scope is not None and theirs.leases == 0
        assert old.quiet_s is None  # never beat: a serve of a version before 0011


async def test_admin_serves_says_who_serves(
    postgres_database: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``slipstream admin serves`` (the store of the database's public schema, as the CLI's)."""
    import json

    from engine._cli import _main

    monkeypatch.delenv("SLIPSTREAM_POSTGRES_DSN", raising=False)
    async with PostgresEventStore(postgres_database) as store:
        await asyncio.to_thread(_main, ["admin", "serves", "--postgres", postgres_database])
        assert "no serving process" in capsys.readouterr().out
        await store.announce_loop()
        assert await store.claim("held")
        await asyncio.to_thread(_main, ["admin", "serves", "--postgres", postgres_database, "--json"])
        listed = json.loads(capsys.readouterr().out)
        assert store._listener is not None
        assert [(p["pid"], p["leases"]) for p in listed] == [(store._listener.get_server_pid(), 1)]
        await asyncio.to_thread(_main, ["admin", "serves", "--postgres", postgres_database])
        line = capsys.readouterr().out
        assert f"session {store._listener.get_server_pid()}" in line and "every project" in line
        assert "beat" in line and "1 leases" in line
    assert await asyncio.to_thread(_main, ["admin", "serves"]) == 2
    assert "needs --postgres DSN" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["soon", "1", "-3", "nan"])
def test_a_bad_member_timeout_is_refused_with_the_fix(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLIPSTREAM_MEMBER_TIMEOUT", value)
    with pytest.raises(ConfigError, match=r"SLIPSTREAM_MEMBER_TIMEOUT.*at least 2"):
        PostgresEventStore("postgresql://nobody@127.0.0.1/none")
    monkeypatch.delenv("SLIPSTREAM_MEMBER_TIMEOUT")
    with pytest.raises(ValueError, match=r"member_timeout=0\.5: give at least 2 seconds"):
        PostgresEventStore("postgresql://nobody@127.0.0.1/none", member_timeout=0.5)


async def test_fair_shares_count_only_the_loops_that_run_an_executions_project(
    postgres_database: str, postgres_schema: str
) -> None:
    """Loops scoped to a project (``serve --project``) say so in their member name: an execution
    of project ``a`` is shared between the unscoped loop and ``a``'s, never preferred by ``b``'s
    (which would leave it unclaimed for the claim delay)."""
    names = [new_id() for _ in range(300)]
    stores = [PostgresEventStore(postgres_database, schema=postgres_schema) for _ in range(3)]
    for store in stores:
        await store.start()
    try:
        anyone, only_a, only_b = stores
        await anyone.announce_loop()
        await only_a.announce_loop("a")
        await only_b.announce_loop("b", "production")
        assert await anyone.serving_loops() == 3

        def shares(project: str, domain: str) -> list[int]:
            return [sum(s.prefers(n, project, domain) for n in names) for s in stores]

        deadline = time.monotonic() + 10
        while sum(shares("a", "development")) != len(names) or sum(shares("b", "production")) != len(names):
            assert time.monotonic() < deadline, "the stores never agreed on one owner per execution"
            await asyncio.sleep(0.05)
        of_a = shares("a", "development")
        assert of_a[2] == 0 and 0.3 < of_a[0] / len(names) < 0.7, of_a
        of_b = shares("b", "production")
        assert of_b[1] == 0 and 0.3 < of_b[0] / len(names) < 0.7, of_b
        assert shares("b", "staging") == [len(names), 0, 0]  # b's loop runs production only
        assert shares("c", "development") == [len(names), 0, 0]
        # what `slipstream run --postgres` asks before handing a run over
        counts = [await anyone.serving_loops(p, d) for p, d in (("a", "development"), ("b", "staging"))]
        assert counts == [2, 1]
        await anyone.close()  # only scoped loops are left: none runs project c
        while await only_a.serving_loops("c", "development") != 0:  # its session ends a moment later
            assert time.monotonic() < deadline + 10, "the closed loop is still counted"
            await asyncio.sleep(0.05)
        assert await only_a.serving_loops("a", "development") == 1
    finally:
        for store in stores:
            await store.close()


async def test_the_loops_of_a_schema_with_a_long_name_still_find_each_other(postgres_database: str) -> None:
    """Postgres keeps 63 bytes of the application_name that names a serving loop: a 60-character
    schema (and a scope tag after it) must not cut two loops' names to something neither matches."""
    schema = "long_" + "s" * 55
    stores = [PostgresEventStore(postgres_database, schema=schema) for _ in range(2)]
    try:
        for store in stores:
            await store.start()
        await stores[0].announce_loop()
        await stores[1].announce_loop("a")
        assert await stores[0].serving_loops() == 2
        names = [new_id() for _ in range(100)]
        deadline = time.monotonic() + 10
        while sum(s.prefers(n, "a", "development") for s in stores for n in names) != len(names):
            assert time.monotonic() < deadline, "the loops never saw each other"
            await asyncio.sleep(0.05)
    finally:
        for store in stores:
            await store.close()
        admin = await asyncpg.connect(postgres_database)
        try:
            await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await admin.close()


async def test_a_store_tells_the_appends_of_other_processes_from_its_own(
    postgres_database: str, postgres_schema: str
) -> None:
    async with (
        PostgresEventStore(postgres_database, schema=postgres_schema) as mine,
        PostgresEventStore(postgres_database, schema=postgres_schema) as other,
    ):
        assert mine.changed_by_others() is None  # before the first call nothing was tracked
        own, theirs = new_id(), new_id()
        await mine.append(own, 0, [created(own)])
        await other.append(theirs, 0, [created(theirs)])  # notified after ours (commit order)
        seen: set[str] = set()
        deadline = time.monotonic() + 10
        while theirs not in seen:
            assert time.monotonic() < deadline, "the other store's append was never seen"
            seen |= mine.changed_by_others() or set()
            await asyncio.sleep(0.02)
        assert own not in seen
        assert mine.changed_by_others() == set()  # forgotten once returned


# --- serve processes -------------------------------------------------------------------------------


def start_server(dsn: str, log: Path, *extra: str, env_extra: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLIPSTREAM_")}
    env["SLIPSTREAM_STATE_DIR"] = str(log.parent / f"state-{log.stem}")
    env.update(env_extra or {})
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-c", "from engine._cli import main; main()", "serve", "--postgres", dsn, *SERVE, *extra],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=out,
        )


def _text(log: Path) -> str:
    return log.read_text(errors="replace")


async def wait_serving(server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while "serving executions" not in _text(log):
        assert server.poll() is None, _text(log)
        assert time.monotonic() < deadline, "serve did not start in 60 s"
        await asyncio.sleep(0.05)


async def test_two_servers_share_a_thousand_executions_and_survive_a_kill(
    postgres_database: str, tmp_path: Path
) -> None:
    count = 1000
    logs = [tmp_path / "one.log", tmp_path / "two.log"]
    async with Engine(PostgresEventStore(postgres_database), [LocalExecutor()], run_loop=False) as client:
        servers = [start_server(postgres_database, log) for log in logs]
        conn = await asyncpg.connect(postgres_database)
        try:
            for server, log in zip(servers, logs, strict=True):
                await wait_serving(server, log)
            handles = await asyncio.gather(*(client.launch(flows.three_steps, x=i) for i in range(count)))
            # kill one server once both run executions and much is left to do
            deadline = time.monotonic() + 120
            while await conn.fetchval("SELECT count(*) FROM events WHERE kind = 'NodeSucceeded'") < count // 2:
                assert time.monotonic() < deadline, "the servers did not get going"
                await asyncio.sleep(0.02)
            # both servers hold a share (fair shares, not first-come-takes-all)
            shares = [
                r[1]
                for r in await conn.fetch(
                    "SELECT a.pid, count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
                    " WHERE l.locktype = 'advisory' AND a.datname = current_database()"
                    " AND a.application_name LIKE 'slipstream-serve:%' GROUP BY a.pid"
                )
            ]
            assert len(shares) == 2, shares
            servers[0].kill()
            servers[0].wait()
            killed_at = await conn.fetchval("SELECT clock_timestamp()")
            unfinished = {
                r[0]
                for r in await conn.fetch(
                    "SELECT execution_id FROM executions WHERE status NOT IN ('succeeded', 'failed', 'aborted')"
                )
            }
            results = await asyncio.wait_for(asyncio.gather(*(h.outputs() for h in handles)), timeout=300)
            assert results == [i + 3 for i in range(count)]
            # every node succeeded exactly once; no execution was created twice
            succeeded = Counter(
                tuple(r)
                for r in await conn.fetch("SELECT execution_id, node_id FROM events WHERE kind = 'NodeSucceeded'")
            )
            assert len(succeeded) == count * 3 and set(succeeded.values()) == {1}
            # the killed server's executions moved: each unfinished one had an event soon after the kill
            waits = await conn.fetch(
                "SELECT execution_id, extract(epoch FROM min(recorded_at) - $1)::float AS wait FROM events"
                " WHERE recorded_at > $1 GROUP BY execution_id",
                killed_at,
            )
            takeover = max(r["wait"] for r in waits if r["execution_id"] in unfinished)
            assert takeover < 15, f"the survivor took {takeover:.1f} s to take the killed server's executions over"
        finally:
            await conn.close()
            for server in servers:
                if server.poll() is None:
                    server.send_signal(signal.SIGTERM)
            for server in servers:
                server.wait(timeout=30)
    assert "Traceback" not in _text(logs[1])
    assert min(shares) > 0.2 * sum(shares), f"one server took nearly everything: leases held {shares}"


async def test_a_stopped_servers_executions_move_to_the_other(postgres_database: str, tmp_path: Path) -> None:
    """SIGSTOP, as a hung process or a vanished host: its socket stays open, so its session and
    leases stay too, until the survivor ends the session of a member that stopped beating
    (SLIPSTREAM_MEMBER_TIMEOUT, 3 s here). Before migration 0011 they stayed for good."""
    count = 100
    logs = [tmp_path / "stopped.log", tmp_path / "survivor.log"]
    env = {"SLIPSTREAM_MEMBER_TIMEOUT": "3"}
    async with Engine(PostgresEventStore(postgres_database), [LocalExecutor()], run_loop=False) as client:
        servers = [start_server(postgres_database, log, env_extra=env) for log in logs]
        conn = await asyncpg.connect(postgres_database)
        try:
            for server, log in zip(servers, logs, strict=True):
                await wait_serving(server, log)
            handles = await asyncio.gather(*(client.launch(flows.ten_slow_steps, x=i) for i in range(count)))
            deadline = time.monotonic() + 60
            while len(await _lease_holders(conn)) < 2 or await conn.fetchval(
                "SELECT count(*) FROM executions WHERE status = 'running'"
            ) < count:
                assert time.monotonic() < deadline, "the servers did not both get going"
                await asyncio.sleep(0.05)
            servers[0].send_signal(signal.SIGSTOP)
            stopped_at = await conn.fetchval("SELECT clock_timestamp()")
            results = await asyncio.wait_for(asyncio.gather(*(h.outputs() for h in handles)), timeout=120)
            assert results == [i + 10 for i in range(count)]
            waits = await conn.fetch(
                "SELECT execution_id, extract(epoch FROM min(recorded_at) - $1)::float AS wait FROM events"
                " WHERE recorded_at > $1 GROUP BY execution_id",
                stopped_at,
            )
            takeover = max(r["wait"] for r in waits)
            assert 2 < takeover < 12, f"the stopped server's executions moved after {takeover:.1f} s"
            assert "silent" in _text(logs[1]) and "ended its session" in _text(logs[1])
        finally:
            await conn.close()
            servers[0].send_signal(signal.SIGCONT)
            for server in servers:
                if server.poll() is None:
                    server.send_signal(signal.SIGTERM)
            codes = [server.wait(timeout=60) for server in servers]
    assert codes == [0, 0], [_text(log)[-2000:] for log in logs]


async def _lease_holders(conn: asyncpg.Connection) -> list[int]:
    rows = await conn.fetch(
        "SELECT DISTINCT a.pid FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE l.locktype = 'advisory'"
        " AND a.datname = current_database() AND a.application_name LIKE 'slipstream-serve:%'"
    )
    return [r[0] for r in rows]


async def test_run_hands_the_execution_to_a_serving_process(postgres_database: str, tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    # `run FILE:WF` imports the file as a module named after its stem: the server needs its directory
    server = start_server(postgres_database, log, "--path", str(ROOT / "tests" / "engine"))
    try:
        await wait_serving(server, log)
        deadline = time.monotonic() + 10
        async with PostgresEventStore(postgres_database) as probe:
            while await probe.serving_loops() < 1:  # counted once its loop announced itself
                assert time.monotonic() < deadline, "the server never announced its loop"
                await asyncio.sleep(0.05)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLIPSTREAM_")}
        argv = [sys.executable, "-c", "from engine._cli import main; main()", "run"]
        argv += ["tests/engine/_scale_workflows.py:three_steps", "--postgres", postgres_database, "--no-progress"]
        done = await asyncio.to_thread(
            subprocess.run, [*argv, "--x", "4"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().endswith("outputs:\n7"), done.stdout
        assert "handed execution" in done.stderr and "running it in this process" not in done.stderr, done.stderr
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
