"""The outbox relay (plugins/nats/relay.py) against the real Postgres and NATS: every committed event
published once, in order per execution, with its Msg-Id; across a SIGKILL of the relay, a NATS
outage (a server of the test's own), a lease handed over, and two `serve` processes."""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from engine import ConfigError, Engine
from engine._postgres_store import PostgresEventStore
from engine.events import ExecutionSucceeded
from engine.interfaces import ServiceContext
from plugins.local import LocalExecutor
from plugins.nats import NatsRelay, relay_cursor
from tests.engine import _workflows as wf
from tests.engine.test_serve import Server, client

from ._stream import (
    Message,
    OwnNats,
    check_stream,
    delete_stream,
    log_of,
    read_stream,
    relay_names,
    stream_count,
    wait_for_stream,
)

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "relay-tests"


@pytest.fixture
def names(nats_url: str) -> Iterator[tuple[str, str]]:
    stream, prefix = relay_names()
    yield stream, prefix
    asyncio.run(delete_stream(nats_url, stream))


@pytest.fixture
def side_effects(tmp_path: Path) -> Path:
    """Where the servers' tasks record their runs (one line per run; see tests/engine/_workflows.py)."""
    directory = tmp_path / "side-effects"
    directory.mkdir()
    return directory


@pytest.fixture
def store(postgres_database: str, postgres_schema: str) -> PostgresEventStore:
    return PostgresEventStore(postgres_database, schema=postgres_schema)


def engine(store: PostgresEventStore, *services: NatsRelay, run_loop: bool = True) -> Engine:
    return Engine(store, {"local": LocalExecutor()}, services=services, retry_delay=0.05, run_loop=run_loop)


def spawn(argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL)


async def launch_many(eng: Engine, count: int) -> list[str]:
    handles = await asyncio.gather(*(eng.launch(wf.diamond, project=PROJECT, x=i) for i in range(count)))
    return [handle.execution_id for handle in handles]


async def wait_done(eng: Engine, ids: list[str], timeout: float = 120) -> None:
    with anyio.fail_after(timeout):
        for execution_id in ids:
            assert await eng.handle(execution_id).outputs() is not None


@pytest.mark.timeout(240)
async def test_300_concurrent_executions_every_event_once_in_order(
    store: PostgresEventStore, nats_url: str, names: tuple[str, str]
) -> None:
    stream, prefix = names
    relay = NatsRelay(nats_url, stream=stream, prefix=prefix)
    async with engine(store, relay) as eng:
        ids = await launch_many(eng, 300)
        await wait_done(eng, ids)
        log = await log_of(store)
        await wait_for_stream(nats_url, stream, len(log), 60)
        assert relay.health().ok, relay.health()
        with anyio.fail_after(10):
            while await store.read_cursor(relay_cursor(stream)) != log[-1][0]:  # noqa: ASYNC110
                await anyio.sleep(0.05)
    messages = await read_stream(nats_url, stream, prefix)
    check_stream(messages, log, prefix, PROJECT)
    assert sum(isinstance(m.event, ExecutionSucceeded) for m in messages) == 300
    assert relay.published == len(log) and relay.duplicates == 0


@pytest.mark.timeout(120)
async def test_an_event_that_can_never_be_read_is_skipped_with_one_line_and_the_stream_goes_on(
    store: PostgresEventStore, nats_url: str, names: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """A corrupt payload (its execution is quarantined) is moved past, in order, with one error
    line: the relay publishes every other event and its cursor reaches the end of the log."""
    import asyncpg

    caplog.set_level(logging.ERROR, logger="slipstream.nats")
    stream, prefix = names
    async with engine(store) as eng:
        ids = await launch_many(eng, 3)
        await wait_done(eng, ids)
        log = await log_of(store)
    victim_seq, victim = next((seq, e) for seq, e in log if e.execution_id == ids[0] and e.version == 3)
    conn = await asyncpg.connect(
        store._dsn, server_settings={"session_replication_role": "replica", "search_path": store.schema}
    )
    try:  # past the append-only trigger, as an operator could
        await conn.execute("UPDATE events SET payload = '\\xc1'::bytea WHERE seq = $1", victim_seq)
    finally:
        await conn.close()
    relay = NatsRelay(nats_url, stream=stream, prefix=prefix)
    async with engine(store, relay):
        await wait_for_stream(nats_url, stream, len(log) - 1, 60)
        with anyio.fail_after(10):
            while await store.read_cursor(relay_cursor(stream)) != log[-1][0]:  # noqa: ASYNC110
                await anyio.sleep(0.05)
    messages = await read_stream(nats_url, stream, prefix)
    published = {(m.event.execution_id, m.event.version) for m in messages}
    assert len(messages) == len(published) == len(log) - 1
    assert published == {(e.execution_id, e.version) for seq, e in log if seq != victim_seq}
    said = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
    assert len(said) == 1 and f"seq {victim_seq}" in said[0] and victim.execution_id in said[0], said


@pytest.mark.timeout(240)
async def test_the_relay_sigkilled_mid_stream_and_restarted_loses_nothing(
    store: PostgresEventStore, postgres_database: str, postgres_schema: str, nats_url: str, names: tuple[str, str]
) -> None:
    stream, prefix = names
    async with engine(store) as eng:
        await wait_done(eng, await launch_many(eng, 60))
        log = await log_of(store)
    argv = [sys.executable, "-m", "tests.plugins._relay_runner", postgres_database, postgres_schema, nats_url, *names]
    first = spawn(argv)
    try:
        with anyio.fail_after(60):
            while await stream_count(nats_url, stream) < len(log) // 3:
                assert first.poll() is None, "the relay exited"
                await anyio.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    published = await stream_count(nats_url, stream)
    assert 0 < published < len(log), "the relay was not killed mid-stream: the test proves nothing"
    second = spawn(argv)
    try:
        await wait_for_stream(nats_url, stream, len(log), 120)
        await anyio.sleep(0.5)  # a message too many would show here
    finally:
        second.kill()
        second.wait(10)
    check_stream(await read_stream(nats_url, stream, prefix), log, prefix, PROJECT)


@pytest.mark.timeout(240)
async def test_nats_down_for_seconds_and_back_loses_nothing(store: PostgresEventStore, own_nats: OwnNats) -> None:
    stream, prefix = relay_names()
    relay = NatsRelay(own_nats.url, stream=stream, prefix=prefix, ack_timeout=1.0)
    async with engine(store, relay) as eng:
        ids = await launch_many(eng, 50)
        await wait_done(eng, ids)
        await wait_for_stream(own_nats.url, stream, len(await log_of(store)), 30)
        own_nats.stop()
        ids += await launch_many(eng, 50)  # committed while NATS is down
        await wait_done(eng, ids)
        with anyio.fail_after(10):
            while relay.health().ok:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        assert "retrying" in relay.health().detail
        await anyio.sleep(2)
        own_nats.start()
        ids += await launch_many(eng, 50)
        await wait_done(eng, ids)
        log = await log_of(store)
        await wait_for_stream(own_nats.url, stream, len(log), 60)
        with anyio.fail_after(10):
            while not relay.health().ok:  # noqa: ASYNC110
                await anyio.sleep(0.05)
    check_stream(await read_stream(own_nats.url, stream, prefix), log, prefix, PROJECT)


async def test_one_relay_at_a_time_and_another_takes_over(
    postgres_database: str, postgres_schema: str, nats_url: str, names: tuple[str, str]
) -> None:
    stream, prefix = names
    stores = [PostgresEventStore(postgres_database, schema=postgres_schema) for _ in range(2)]
    relays = [NatsRelay(nats_url, stream=stream, prefix=prefix, lease_poll=0.1) for _ in range(2)]
    async with engine(stores[0], relays[0]) as first, engine(stores[1], relays[1]) as second:
        await wait_done(first, await launch_many(first, 10))
        await wait_for_stream(nats_url, stream, len(await log_of(stores[0])), 30)
        active = [r for r in relays if "publishing" in r.health().detail]
        standby = [r for r in relays if "standing by" in r.health().detail]
        assert len(active) == 1 and len(standby) == 1, [r.health() for r in relays]
        # the active one stops (its engine closes): the other takes the lease and goes on
        leaving, staying = (first, second) if active[0] is relays[0] else (second, first)
        await leaving.__aexit__(None, None, None)
        await wait_done(staying, await launch_many(staying, 10))
        log = await log_of(staying.store)
        await wait_for_stream(nats_url, stream, len(log), 30)
        assert "publishing" in standby[0].health().detail
    check_stream(await read_stream(nats_url, stream, prefix), log, prefix, PROJECT)
    assert active[0].published + standby[0].published == len(log)


async def test_unreachable_nats_is_an_error_for_a_client_and_a_retry_for_a_server(
    store: PostgresEventStore,
) -> None:
    with pytest.raises(ConfigError, match=r"cannot reach NATS at 'nats://127.0.0.1:1' to publish events"):
        async with engine(store, NatsRelay("nats://127.0.0.1:1", connect_timeout=1), run_loop=False):
            pass
    relay = NatsRelay("nats://127.0.0.1:1", connect_timeout=1)
    async with engine(store, relay) as eng:
        health = eng.health()["nats-relay"]
        assert not health.ok
        assert "cannot reach NATS at 'nats://127.0.0.1:1'" in health.detail and "retrying" in health.detail


def test_bad_relay_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=re.escape("invalid JetStream stream name 'a.b'")):
        NatsRelay("nats://x", stream="a.b")
    with pytest.raises(ConfigError, match=re.escape("invalid subject prefix 'a.*'")):
        NatsRelay("nats://x", prefix="a.*")
    with pytest.raises(ConfigError, match="must be at least 1"):
        NatsRelay("nats://x", window=0)


def test_the_relay_is_the_nats_event_sink(postgres_database: str) -> None:
    eng = Engine.connect(postgres=postgres_database, nats="nats://127.0.0.1:4222", executor="local")
    relays = [s for s in eng.services if isinstance(s, NatsRelay)]
    assert len(relays) == 1 and relays[0].url == "nats://127.0.0.1:4222"
    assert eng.nats_url == "nats://127.0.0.1:4222"


async def test_a_stream_taken_by_other_subjects_is_a_clear_error(
    store: PostgresEventStore, nats_url: str, names: tuple[str, str]
) -> None:
    stream, prefix = names
    async with store:
        first = NatsRelay(nats_url, stream=stream, prefix=prefix)
        await first.start(ServiceContext(store=store, wake=lambda _: None))
        await first.stop()
        other = NatsRelay(nats_url, stream=f"{stream}_2", prefix=prefix)  # the same subjects
        with pytest.raises(ConfigError, match=f"refused the stream '{stream}_2'"):
            await other.start(ServiceContext(store=store, wake=lambda _: None))


def _relay_state(server: Server) -> str:
    """What the server's relay last said it does: ``publishing``, ``standing by`` (it lost the
    lease), ``retrying`` (it failed, and publishes nothing until it holds the lease again) or ``""``."""
    for line in reversed(server.lines):
        if "event relay: publishing" in line:
            return "publishing"
        if "event relay: lost the lease" in line or "event relay: stopped" in line:
            return "standing by"
        if "event relay: " in line and "retrying" in line:
            return "retrying"
    return ""


@pytest.mark.timeout(300)
async def test_two_servers_with_nats_one_stopped_mid_run_one_relay_at_a_time(
    postgres_database: str, own_nats: OwnNats, side_effects: Path
) -> None:
    """200 executions on two `serve --nats` processes sharing Postgres; the one whose relay is
    active is SIGTERMed mid-run: it exits 0, the other finishes everything and takes over the
    relay, never two relays at once, and the stream holds every event once, in order."""
    store_args = ["--postgres", postgres_database]
    env = {"SLIPSTREAM_TEST_SIDE_EFFECTS": str(side_effects)}
    options = ("--nats", own_nats.url, "--resync-interval", "1", "--workers", "8", "--executor", "local")
    servers = [Server(store_args, *options, env=env), Server(store_args, *options, env=env)]
    overlaps: list[list[str]] = []

    async def watch() -> None:
        while True:
            states = [_relay_state(s) for s in servers if s.process.poll() is None]
            if states.count("publishing") > 1:
                overlaps.append(states)
            await anyio.sleep(0.02)

    try:
        for server in servers:
            await server.wait_for("serving executions")
        with anyio.fail_after(30):
            while not any(_relay_state(s) == "publishing" for s in servers):  # noqa: ASYNC110
                await anyio.sleep(0.05)
        async with anyio.create_task_group() as watching:
            watching.start_soon(watch)
            async with client(store_args) as eng:
                handles = [await eng.launch(wf.crashable, project=PROJECT, n=3) for _ in range(200)]
                ids = {handle.execution_id for handle in handles}

                async def finished() -> int:
                    done = await eng.list_executions(workflow="crashable", status="succeeded", limit=1000)
                    return len(ids & {summary.execution_id for summary in done})

                with anyio.move_on_after(60):
                    while await finished() < 30:  # noqa: ASYNC110 - polled: the servers are other processes
                        await anyio.sleep(0.1)
                if await finished() < 30:
                    statuses = Counter([(await eng.get(i)).status for i in ids])
                    tails = "\n---\n".join(s.stderr[-2000:] for s in servers)
                    pytest.fail(f"{await finished()} of 200 finished in 60s: {statuses}\n{tails}")
                assert await finished() < 200, "everything finished before the stop: the test proves nothing"
                active = [s for s in servers if _relay_state(s) == "publishing"]
                assert len(active) == 1, [s.stderr for s in servers]
                stopped, staying = active[0], next(s for s in servers if s is not active[0])
                code, took = await stopped.stop(signal.SIGTERM)
                assert code == 0, stopped.stderr
                assert took < 15, f"the stopped server took {took:.1f}s"
                assert "Traceback" not in stopped.stderr
                await staying.wait_for("event relay: publishing", timeout=30)
                with anyio.move_on_after(120):
                    while await finished() < 200:  # noqa: ASYNC110
                        await anyio.sleep(0.2)
                if await finished() < 200:
                    statuses = {i: (await eng.get(i)).status for i in ids}
                    stuck = {i: s for i, s in statuses.items() if s != "succeeded"}
                    pytest.fail(f"{len(stuck)} executions did not finish: {stuck}\n{staying.stderr[-3000:]}")
                for handle in handles:
                    assert await handle.outputs(timeout=10) == 3 + sum(x + 1 for x in (10, 20, 30, 40))
                log = [(0, event) for execution_id in sorted(ids) for event in await eng.history(execution_id)]
            # the relays publish the whole database's log: this module's other tests share it
            with anyio.fail_after(60):
                while len(messages := await _messages_of(own_nats.url, ids)) < len(log):  # noqa: ASYNC110
                    await anyio.sleep(0.2)
            watching.cancel_scope.cancel()
        relay_lines = "\n---\n".join("\n".join(line for line in s.lines if "slipstream.nats" in line) for s in servers)
        assert not overlaps, f"two relays published at once: {overlaps[:3]}\n{relay_lines}"
        for name in ("step_0", "step_1", "step_2", "step_10", "step_20", "step_30", "step_40"):
            per_execution = Counter(line.split()[0] for line in (side_effects / f"{name}.log").read_text().splitlines())
            assert set(per_execution.values()) == {1}, f"{name} ran twice in some execution"
        check_stream(messages, log, "slipstream.events", PROJECT)
        code, _ = await staying.stop(signal.SIGTERM)
        assert code == 0, staying.stderr
    finally:
        for server in servers:
            server.kill()


async def _messages_of(url: str, ids: set[str]) -> list[Message]:
    """The messages of the default stream that belong to the executions ``ids``."""
    return [m for m in await read_stream(url, "SLIPSTREAM", "slipstream.events") if m.event.execution_id in ids]
