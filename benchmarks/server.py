"""``python -m benchmarks server``: server mode (Postgres) against the floor of the same database.

``python -m benchmarks server [--executions 1000] [--repeat 3] [--takeover 1000] [--workers N] [--no-dbos]
[--postgres DSN]``

Every figure runs on a database created for the run (``slipstream_bench_<hex>``, dropped after),
on the Postgres at ``--postgres`` (``$SLIPSTREAM_TEST_POSTGRES_DSN``, else the local test server):

- floor: one round trip (``SELECT 1``) and one durable single-row commit (an autocommitted
  ``INSERT`` into a logged table, so a WAL flush) on one connection, medians of ``--samples``;
  and the same commit after the client has left the connection idle for as long as the engine
  works on a chain node (``commit_after_idle_ms``): a server backend that has gone to sleep costs
  a wake-up, more on a virtual machine, which a chain pays at every node and commits back to
  back do not.
- chain: a chain of 100 async no-op tasks in one engine on Postgres (the local executor), per
  node; ``ratio_to_commit`` = ms per node / a durable commit (target <= 2, goal 1.0 ms per node).
  The same chain embedded (SQLite) in the same run gives the engine's own cost per node;
  ``over_embedded_ratio_to_commit`` is what Postgres adds to it, against a commit. The floor is
  measured before and after the chain (``floor_after``); ratios use the lower commit.
- engine only: the same chain on the in-memory store of ``engine.testing`` (no I/O at all), per
  node: the engine's own work. With ``commit_after_idle_ms`` it makes ``least_ms_per_node``, what
  a node would cost here if the append cost no more than a one-row commit, and
  ``ratio_to_least``, how far the Postgres chain is from that.
- sweep: one engine on Postgres with ``--sweep`` executions each running one long task; a resync
  sweep (what the loop does every ``resync_interval``) and, at once, a one-task execution. Its
  latency against the same execution launched with no sweep (``one_task_alone_ms``, same run),
  and how long the sweep's rounds took to drain and what CPU they used; medians of ``--repeat``.
- executions/s: ``--executions`` one-task executions launched at once by a client engine
  (``run_loop=False``), run by one and by two ``slipstream serve --executor local`` processes;
  from the first launch to the last success. ``share`` is each server's part of the attempts.
- takeover: two serve processes, ``--takeover`` executions of 20 naps of 0.1 s; once every
  execution runs, one server is SIGKILLed (``leases_before_kill``: each server's leases;
  ``held_by_killed``: the killed one's). ``takeover_s`` is the longest wait, over the executions
  left unfinished, from the kill to their first event written after it (measured on the
  database's clock); every execution must still succeed with no node run twice.
  ``takeover_stopped``: the same with SIGSTOP (a hung server, or one whose host vanished): its
  session, and its leases, stay until the survivor sees it silent for the member timeout
  (``$SLIPSTREAM_MEMBER_TIMEOUT``, 10 s by default) and ends it.
- append replay: a chain node's append (one existing execution, three events) replayed on one
  connection through each append function of the store, ``slipstream_append`` (any append) and
  ``slipstream_append_one`` (one existing execution: what a chain uses), in rotating order with
  the floor's durable commit, medians of ``--samples``: the server's share of a node.
- notification lock: with ``pgbench`` (when installed), commits/s of 16 clients committing a
  one-row insert, with and without a ``pg_notify`` in the same transaction, in alternating runs:
  what a commit that notifies costs the server (appends notify only while a reader tails the log).
- sequence lock: appends/s of 16 concurrent writers (a store each, as 16 processes) with the
  store's append function and with a copy of it without the sequence lock (what the lock that
  keeps ``read_all`` commit-safe costs).
- DBOS Transact (``pip install -e '.[peers]'``), when installed, on its own database: a workflow of
  100 sequential async no-op steps, per step, and ``--executions`` one-step workflows started at
  once (``DBOS.start_workflow_async``), in this process.

The machine is shared and small: quote ratios against the floor measured in the same run.
Targets (issue 15): chain <= 2x a durable commit; >= 400 executions/s on one server (goal 1,000);
takeover <= 5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import importlib.util
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
SERVE_OPTIONS = ("--path", str(ROOT), "--executor", "local", "--grace", "1")
TARGETS = {"chain_ratio_to_commit": 2.0, "chain_ms_per_node_goal": 1.0, "executions_per_s": 400, "takeover_s": 5.0}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--executions", type=int, default=1000, help="one-task executions launched at once")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--samples", type=int, default=500, help="round trips and commits for the floor")
    parser.add_argument("--takeover", type=int, default=1000, help="executions running when a server is killed")
    parser.add_argument("--sweep", type=int, default=3000, help="executions running while a resync sweep is timed")
    parser.add_argument(
        "--workers", type=int, default=None, help="reconcile workers of each serve process (default: serve's own)"
    )
    parser.add_argument("--no-dbos", action="store_true", help="skip DBOS even when installed")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("SLIPSTREAM_TEST_POSTGRES_DSN") or DEFAULT_DSN,
        help="a Postgres the benchmark may create databases on",
    )
    args = parser.parse_args(argv)
    if args.executions < 1 or args.repeat < 1 or args.samples < 1 or args.takeover < 1 or args.sweep < 1:
        parser.error("--executions, --repeat, --samples, --takeover and --sweep must be at least 1")
    return args


def with_database(dsn: str, name: str) -> str:
    """``dsn`` pointing at database ``name`` (URL DSNs)."""
    from urllib.parse import urlsplit, urlunsplit

    url = urlsplit(dsn)
    return urlunsplit((url.scheme, url.netloc, f"/{name}", url.query, url.fragment))


@contextlib.asynccontextmanager
async def database(admin_dsn: str, prefix: str = "slipstream_bench") -> AsyncIterator[str]:
    """A fresh database on the server of ``admin_dsn``; yields its DSN, drops it after."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield with_database(admin_dsn, name)
    finally:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


# --- the floor -------------------------------------------------------------------------------------


async def bench_floor(dsn: str, samples: int, idle_s: float | None = None) -> dict[str, Any]:
    """Round trips and commits back to back; with ``idle_s``, also commits each after the
    connection was left idle that long (the client sleeping, as between two appends of a chain)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE floor_commits (id bigserial PRIMARY KEY, v integer NOT NULL)")
        trips, commits, after_idle = [], [], []
        for i in range(samples):
            start = time.perf_counter()
            await conn.fetchval("SELECT 1")
            trips.append(time.perf_counter() - start)
            start = time.perf_counter()
            await conn.execute("INSERT INTO floor_commits (v) VALUES ($1)", i)
            commits.append(time.perf_counter() - start)
            if idle_s is not None:
                await asyncio.sleep(idle_s)
                start = time.perf_counter()
                await conn.execute("INSERT INTO floor_commits (v) VALUES ($1)", i)
                after_idle.append(time.perf_counter() - start)
        synchronous_commit = await conn.fetchval("SHOW synchronous_commit")
        await conn.execute("DROP TABLE floor_commits")
    finally:
        await conn.close()
    figures = {
        "round_trip_ms": round(statistics.median(trips) * 1000, 3),
        "durable_commit_ms": round(statistics.median(commits) * 1000, 3),
        "synchronous_commit": synchronous_commit,
        "samples": samples,
    }
    if idle_s is not None:
        figures["idle_ms"] = round(idle_s * 1000, 3)
        figures["commit_after_idle_ms"] = round(statistics.median(after_idle) * 1000, 3)
    return figures


# --- Slipstream ------------------------------------------------------------------------------------


async def bench_chain(dsn: str | None, repeat: int) -> dict[str, Any]:
    """The chain on Postgres at ``dsn``, or embedded (SQLite in a temporary directory) without."""
    from benchmarks import _engine_workflows as flows
    from engine import Engine
    from engine._postgres_store import PostgresEventStore
    from engine._sqlite_store import SqliteEventStore
    from plugins.local import LocalExecutor

    with tempfile.TemporaryDirectory() as directory:
        store = PostgresEventStore(dsn, schema="chain") if dsn else SqliteEventStore(Path(directory) / "events.db")
        async with Engine(store, {"local": LocalExecutor()}) as engine:
            await (await engine.launch(flows.chain)).outputs(timeout=600)  # warm-up
            times = []
            for _ in range(repeat):
                start = time.perf_counter()
                await (await engine.launch(flows.chain)).outputs(timeout=600)
                times.append(time.perf_counter() - start)
    wall = statistics.median(times)
    return {
        "nodes": flows.CHAIN_LENGTH,
        "wall_s": round(wall, 4),
        "ms_per_node": round(wall / flows.CHAIN_LENGTH * 1000, 3),
    }


async def bench_engine_only(repeat: int) -> dict[str, Any]:
    """The chain on the in-memory store of ``engine.testing``: the engine's own work per node."""
    from benchmarks import _engine_workflows as flows
    from engine import Engine
    from engine.testing import InMemoryEventStore
    from plugins.local import LocalExecutor

    async with Engine(InMemoryEventStore(), {"local": LocalExecutor()}) as engine:
        await (await engine.launch(flows.chain)).outputs(timeout=600)  # warm-up
        times = []
        for _ in range(repeat * 3):  # cheap, and the figure other figures are built on
            start = time.perf_counter()
            await (await engine.launch(flows.chain)).outputs(timeout=600)
            times.append(time.perf_counter() - start)
    wall = statistics.median(times)
    return {"nodes": flows.CHAIN_LENGTH, "ms_per_node": round(wall / flows.CHAIN_LENGTH * 1000, 3)}


async def bench_sweep(dsn: str, running: int, repeat: int) -> dict[str, Any]:
    """A resync sweep over ``running`` executions with a task in flight, and a one-task execution
    launched as it starts (automatic sweeps and revisits are off, so only this one runs)."""
    import resource

    from benchmarks import _server_workflows as flows
    from engine import Engine
    from engine._postgres_store import PostgresEventStore
    from plugins.local import LocalExecutor

    def cpu_s() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    async def one_task_s(engine: Engine) -> float:
        start = time.perf_counter()
        await (await engine.launch(flows.one_task)).outputs(timeout=600)
        return time.perf_counter() - start

    store = PostgresEventStore(dsn, schema="sweep")
    alone: list[float] = []
    during: list[float] = []
    drain: list[float] = []
    cpu: list[float] = []
    async with Engine(store, {"local": LocalExecutor()}, resync_interval=3600, revisit_interval=3600) as engine:
        controller = engine.controller
        for i in range(running):
            await engine.launch(flows.held, x=i)
        deadline = time.monotonic() + 300
        while len(controller.attempts.busy()) < running or len(controller.queue):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{running} executions did not all start within 300 s")
            await asyncio.sleep(0.05)
        await one_task_s(engine)  # warm-up
        for _ in range(repeat):
            alone.append(statistics.median([await one_task_s(engine) for _ in range(5)]))
            used, start = cpu_s(), time.perf_counter()
            await controller.resync()
            during.append(await one_task_s(engine))
            while True:  # the queue has no event for "empty": look every millisecond
                if not len(controller.queue):
                    break
                await asyncio.sleep(0.001)
            drain.append(time.perf_counter() - start)
            cpu.append(cpu_s() - used)
    return {
        "running": running,
        "one_task_alone_ms": round(statistics.median(alone) * 1000, 1),
        "one_task_during_sweep_ms": round(statistics.median(during) * 1000, 1),
        "ratio_to_alone": round(statistics.median(during) / statistics.median(alone), 2),
        "sweep_drain_ms": round(statistics.median(drain) * 1000, 1),
        "sweep_cpu_ms": round(statistics.median(cpu) * 1000, 1),
    }


def start_server(dsn: str, state_dir: Path, workers: int | None = None) -> subprocess.Popen[bytes]:
    """A ``slipstream serve --executor local`` process on ``dsn``; returns once it serves.

    Its stderr goes to a file (a pipe nobody reads would fill up with its log lines and stop it).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLIPSTREAM_")}
    state_dir.mkdir(parents=True)
    env["SLIPSTREAM_STATE_DIR"] = str(state_dir)
    log_path = state_dir / "serve.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [
                *(sys.executable, "-c", "from engine._cli import main; main()", "serve", "--postgres", dsn),
                *SERVE_OPTIONS,
                *(("--workers", str(workers)) if workers is not None else ()),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    deadline = time.monotonic() + 60
    while b"serving executions" not in log_path.read_bytes():
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise RuntimeError(f"slipstream serve did not start: {log_path.read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)
    return server


@contextlib.asynccontextmanager
async def _state_dirs() -> AsyncIterator[Path]:
    """A temporary directory for the serve processes' state directories (blobs, logs)."""
    with tempfile.TemporaryDirectory(prefix="slipstream-bench-") as directory:
        yield Path(directory)


def stop_servers(servers: list[subprocess.Popen[bytes]]) -> None:
    for server in servers:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
    for server in servers:
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


async def _count(conn: asyncpg.Connection, status: str) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM executions WHERE status = $1", status))


async def _share(client: Any, execution_ids: list[str], pids: list[int]) -> list[float]:
    """Each server's part of ``execution_ids`` (one-task executions return their server's pid)."""
    ran = Counter(await asyncio.gather(*(client.outputs(e) for e in execution_ids)))
    return [round(ran[pid] / len(execution_ids), 3) for pid in pids]


async def _leases_by_member(conn: asyncpg.Connection) -> dict[int, int]:
    """Leases held by each serving loop's session (its backend pid) in this database."""
    rows = await conn.fetch(
        "SELECT a.pid, count(l.pid) FROM pg_stat_activity a LEFT JOIN pg_locks l"
        " ON l.pid = a.pid AND l.locktype = 'advisory'"
        " WHERE a.datname = current_database() AND a.application_name LIKE 'slipstream-serve:%' GROUP BY a.pid"
    )
    return {int(pid): int(n) for pid, n in rows}


async def bench_executions(
    admin_dsn: str, servers: int, executions: int, repeat: int, workers: int | None = None
) -> dict[str, Any]:
    from benchmarks import _server_workflows as flows
    from engine import Engine
    from engine._postgres_store import PostgresEventStore
    from plugins.local import LocalExecutor

    rates, shares = [], []
    for _ in range(repeat):
        async with database(admin_dsn) as dsn:
            client = Engine(PostgresEventStore(dsn), {"local": LocalExecutor()}, run_loop=False)
            # the client migrates the store before the servers start
            async with client, _state_dirs() as state:
                procs = [start_server(dsn, state / f"server-{i}", workers) for i in range(servers)]
                conn = await asyncpg.connect(dsn)
                try:
                    warm = await client.launch(flows.one_task)
                    await warm.outputs(timeout=60)
                    start = time.perf_counter()
                    handles = await asyncio.gather(*(client.launch(flows.one_task, x=i) for i in range(executions)))
                    while await _count(conn, "succeeded") < executions + 1:
                        if time.perf_counter() - start > 300:
                            raise TimeoutError("executions did not finish in 300 s")
                        await asyncio.sleep(0.01)
                    rates.append(executions / (time.perf_counter() - start))
                    sample = [h.execution_id for h in handles[:: max(1, executions // 200)]]
                    shares.append(await _share(client, sample, [p.pid for p in procs]))
                finally:
                    await conn.close()
                    stop_servers(procs)
    return {
        "servers": servers,
        "executions": executions,
        "per_s": round(statistics.median(rates), 1),
        "runs_per_s": [round(r, 1) for r in rates],
        "share": shares[len(shares) // 2],
    }


async def bench_takeover(
    admin_dsn: str, executions: int, workers: int | None = None, how: signal.Signals = signal.SIGKILL
) -> dict[str, Any]:
    """Two serve processes, ``executions`` running; one gets ``how``: SIGKILL (its socket closes,
    Postgres ends its session at once) or SIGSTOP (a hung process: its session stays until the
    survivor ends it, after the member timeout)."""
    from benchmarks import _server_workflows as flows
    from engine import Engine
    from engine._postgres_store import PostgresEventStore
    from plugins.local import LocalExecutor

    async with database(admin_dsn) as dsn:
        client = Engine(PostgresEventStore(dsn), {"local": LocalExecutor()}, run_loop=False)
        async with client, _state_dirs() as state:
            procs = [start_server(dsn, state / f"server-{i}", workers) for i in range(2)]
            conn = await asyncpg.connect(dsn)
            try:
                await asyncio.gather(*(client.launch(flows.naps, x=i) for i in range(executions)))
                deadline = time.perf_counter() + 120
                while await _count(conn, "running") < executions:
                    if time.perf_counter() > deadline:
                        raise TimeoutError("executions did not all start in 120 s")
                    await asyncio.sleep(0.02)
                await asyncio.sleep(flows.NAP_S * 3)
                held_before = await _leases_by_member(conn)
                victim = procs[0]
                victim.send_signal(how)
                if how == signal.SIGKILL:
                    victim.wait()
                killed_at = await conn.fetchval("SELECT clock_timestamp()")
                unfinished = {
                    r[0] for r in await conn.fetch("SELECT execution_id FROM executions WHERE status = 'running'")
                }
                while not (gone := set(held_before) - set(await _leases_by_member(conn))):
                    if time.perf_counter() > deadline + 60:  # Postgres, or the survivor, ends its session
                        raise TimeoutError(f"the {how.name} server's session was never ended")
                    await asyncio.sleep(0.05)
                while await _count(conn, "succeeded") < executions:
                    if time.perf_counter() > deadline + 300:
                        raise TimeoutError("executions did not finish in 300 s after the kill")
                    await asyncio.sleep(0.05)
                firsts = await conn.fetch(
                    "SELECT execution_id, extract(epoch FROM min(recorded_at) - $1) AS wait FROM events"
                    " WHERE recorded_at > $1 GROUP BY execution_id",
                    killed_at,
                )
                waits = sorted(float(r["wait"]) for r in firsts if r["execution_id"] in unfinished)
                duplicates = await conn.fetchval(
                    "SELECT count(*) FROM (SELECT execution_id, node_id FROM events WHERE kind = 'NodeSucceeded'"
                    " GROUP BY execution_id, node_id HAVING count(*) > 1) d"
                )
            finally:
                await conn.close()
                with contextlib.suppress(ProcessLookupError):
                    procs[0].send_signal(signal.SIGCONT)
                stop_servers(procs)
    return {
        "signal": how.name,
        "executions": executions,
        "unfinished_at_kill": len(unfinished),
        "leases_before_kill": sorted(held_before.values()),
        "held_by_killed": sum(held_before[m] for m in gone),
        "takeover_s": round(waits[-1], 3) if waits else None,
        "median_wait_s": round(statistics.median(waits), 3) if waits else None,
        "all_succeeded": True,
        "nodes_succeeded_twice": int(duplicates),
    }


async def bench_append_replay(dsn: str, samples: int) -> dict[str, Any]:
    """A chain node's append replayed on a held connection through each append function, with the
    arguments the store builds, in rotating order with a durable single-row commit."""
    from datetime import UTC, datetime

    import engine._postgres_store as pg
    from engine._projection import plan_projection
    from engine.events import Event, NodeQueued, NodeRunning, NodeSucceeded
    from engine.interfaces import to_records

    at = datetime.now(UTC)

    def node(execution_id: str, version: int) -> list[Event]:
        # what a chain round appends: a node's success, the next node queued and running
        return [
            NodeSucceeded(
                execution_id=execution_id, version=version + 1, at=at, node_id="n1", attempt=1, outputs={"o0": b"\x01"}
            ),
            NodeQueued(execution_id=execution_id, version=version + 2, at=at, node_id="n2", attempt=1),
            NodeRunning(
                execution_id=execution_id, version=version + 3, at=at, node_id="n2", attempt=1, executor="local"
            ),
        ]

    calls = {
        "slipstream_append": pg._append_call,
        "slipstream_append_one": lambda batches, changes, chained: pg._lean_append(batches, changes[0], chained),
    }
    times: dict[str, list[float]] = {"durable_commit": [], **{name: [] for name in calls}}
    heads: dict[str, tuple[int, bytes | None]] = {}
    async with pg.PostgresEventStore(dsn, schema="append_replay", max_size=1) as store:
        for name in calls:
            await store.append(name, 0, [created_event(name, at)])
            heads[name] = (1, store._heads[name][1])
    conn = await asyncpg.connect(dsn, server_settings={"search_path": "append_replay"})
    try:
        await conn.execute("CREATE TABLE floor_commits (id bigserial PRIMARY KEY, v integer NOT NULL)")
        for i in range(samples + 20):  # the first 20: statements prepared, caches warm
            names = list(times)
            for name in names[i % 3 :] + names[: i % 3]:
                start = time.perf_counter()
                if name == "durable_commit":
                    await conn.execute("INSERT INTO floor_commits (v) VALUES ($1)", i)
                else:
                    version, checksum = heads[name]
                    batches = [(name, version, to_records(name, version, node(name, version)))]
                    query, args, written = calls[name](batches, plan_projection(batches), {name: checksum})
                    start = time.perf_counter()
                    await conn.execute(query, *args)
                    heads[name] = written[0][1:]
                if i >= 20:
                    times[name].append(time.perf_counter() - start)
    finally:
        await conn.close()
    medians = {name: statistics.median(t) * 1000 for name, t in times.items()}
    commit = medians["durable_commit"]
    return {
        "samples": samples,
        "events_per_append": 3,
        **{f"{name}_ms": round(ms, 3) for name, ms in medians.items()},
        **{f"{name}_ratio_to_commit": round(medians[name] / commit, 2) for name in calls},
    }


def created_event(execution_id: str, at: Any) -> Any:
    """An ``ExecutionCreated`` of a one-node workflow (the replayed execution's first event)."""
    from benchmarks.store import history, make_spec

    return history(execution_id, 1, make_spec(1), at)[0]


def latest_append_function() -> str:
    """The ``CREATE [OR REPLACE] FUNCTION slipstream_append`` statement of the newest migration
    that defines it, as a ``CREATE FUNCTION``."""
    from engine._store_common import load_migrations

    heads = ("CREATE FUNCTION slipstream_append(", "CREATE OR REPLACE FUNCTION slipstream_append(")
    sql = [m.sql for m in load_migrations("postgres") if any(head in m.sql for head in heads)][-1]
    head = next(head for head in heads if head in sql)
    start = sql.index(head)
    function = sql[start : sql.index("$$;", sql.index("$$", start) + 2) + 3]
    return function.replace(head, heads[0], 1)


async def bench_sequence_lock(dsn: str, writers: int, appends: int, repeat: int) -> dict[str, Any]:
    """Appends/s of ``writers`` concurrent writers (one execution of 3 events per append), with the
    store's append function and with a copy of it without the sequence lock (measured only: the
    copy gives up read_all's commit-safety)."""
    from datetime import UTC, datetime

    import engine._postgres_store as pg
    from benchmarks.store import history, make_spec

    function = latest_append_function()
    unlocked = "\n".join(line for line in function.splitlines() if "pg_advisory_" not in line)
    unlocked = unlocked.replace("FUNCTION slipstream_append(", "FUNCTION slipstream_append_unlocked(")
    spec, at = make_spec(1), datetime.now(UTC)
    # a store per writer, as separate serve processes: one store's own appends share transactions
    stores = [pg.PostgresEventStore(dsn, schema="sequence_lock", max_size=1) for _ in range(writers)]
    rates: dict[str, list[float]] = {"with_lock": [], "without_lock": []}
    locked_call = pg._APPEND
    async with contextlib.AsyncExitStack() as stack:
        for store in stores:
            await stack.enter_async_context(store)
        async with stores[0]._connection() as conn:
            await conn.execute(unlocked)

        async def writer(store: pg.PostgresEventStore) -> None:
            for _ in range(appends):
                eid = uuid.uuid4().hex
                await store.append(eid, 0, history(eid, 3, spec, at))

        variants = [
            ("with_lock", locked_call),
            ("without_lock", locked_call.replace("slipstream_append(", "slipstream_append_unlocked(")),
        ]
        try:
            await asyncio.gather(*(writer(store) for store in stores))  # warm-up: connections, statements
            for i in range(repeat * 2):
                for name, call in variants if i % 2 == 0 else variants[::-1]:  # ABBA: no drift favours one
                    pg._APPEND = call
                    start = time.perf_counter()
                    await asyncio.gather(*(writer(store) for store in stores))
                    rates[name].append(writers * appends / (time.perf_counter() - start))
        finally:
            pg._APPEND = locked_call
    with_lock, without = statistics.median(rates["with_lock"]), statistics.median(rates["without_lock"])
    return {
        "writers": writers,
        "appends_per_s_with_lock": round(with_lock, 1),
        "appends_per_s_without_lock": round(without, 1),
        "ratio": round(with_lock / without, 3),
        "runs": {k: [round(r, 1) for r in v] for k, v in rates.items()},
    }


async def bench_notify_lock(dsn: str, clients: int = 16, seconds: int = 5, repeat: int = 2) -> dict[str, Any] | str:
    """Commits/s of ``clients`` pgbench clients committing a one-row insert, with and without a
    ``pg_notify`` in the transaction (nobody listening), in alternating runs."""
    import re
    import shutil
    from urllib.parse import urlsplit

    pgbench = shutil.which("pgbench")
    if pgbench is None:
        return "pgbench not installed"
    url = urlsplit(dsn)
    scripts = {
        "without_notify": "BEGIN;\nINSERT INTO notify_lock (v) VALUES (1);\nCOMMIT;\n",
        "with_notify": "BEGIN;\nINSERT INTO notify_lock (v) VALUES (1);\n"
        "SELECT pg_notify('slipstream_bench', 'x');\nCOMMIT;\n",
    }
    rates: dict[str, list[float]] = {name: [] for name in scripts}
    env = {**os.environ, "PGPASSWORD": url.password or ""}
    connection = ["-h", url.hostname or "127.0.0.1", "-p", str(url.port or 5432), "-U", url.username or "postgres"]
    database_name = url.path.lstrip("/")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE notify_lock (id bigserial PRIMARY KEY, v integer)")
    finally:
        await conn.close()
    with tempfile.TemporaryDirectory() as directory:
        for name, text in scripts.items():
            (Path(directory) / f"{name}.sql").write_text(text)
        for i in range(repeat * 2):
            for name in scripts if i % 2 == 0 else list(scripts)[::-1]:
                load = ["-n", "-c", str(clients), "-j", "2", "-T", str(seconds), "-f", f"{directory}/{name}.sql"]
                done = await asyncio.to_thread(
                    subprocess.run,
                    [pgbench, *connection, *load, database_name],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                found = re.search(r"tps = ([0-9.]+)", done.stdout)
                assert found is not None, done.stdout
                rates[name].append(float(found.group(1)))
    with_notify, without = statistics.median(rates["with_notify"]), statistics.median(rates["without_notify"])
    return {
        "clients": clients,
        "commits_per_s_without_notify": round(without),
        "commits_per_s_with_notify": round(with_notify),
        "ratio": round(with_notify / without, 3),
        "runs": {k: [round(r) for r in v] for k, v in rates.items()},
    }


# --- DBOS ------------------------------------------------------------------------------------------


def dbos_version() -> str | None:
    if importlib.util.find_spec("dbos") is None:
        return None
    return importlib.metadata.version("dbos")


async def bench_dbos(admin_dsn: str, executions: int, repeat: int) -> dict[str, Any]:
    from dbos import DBOS, DBOSConfig

    async with database(admin_dsn, "dbos_bench") as dsn:
        config: DBOSConfig = {"name": "slipstream-bench", "system_database_url": dsn}
        DBOS(config=config)

        @DBOS.step()
        async def noop(x: int) -> int:
            return x + 1

        @DBOS.workflow()
        async def chain(x: int) -> int:
            for _ in range(100):
                x = await noop(x)
            return x

        @DBOS.workflow()
        async def one_step(x: int) -> int:
            return await noop(x)

        DBOS.launch()
        try:
            await chain(0)  # warm-up
            times = []
            for _ in range(repeat):
                start = time.perf_counter()
                await chain(0)
                times.append(time.perf_counter() - start)
            await one_step(0)
            rates = []
            for _ in range(repeat):
                start = time.perf_counter()
                handles = await asyncio.gather(*(DBOS.start_workflow_async(one_step, i) for i in range(executions)))
                await asyncio.gather(*(h.get_result() for h in handles))
                rates.append(executions / (time.perf_counter() - start))
        finally:
            DBOS.destroy(destroy_registry=True)
    wall = statistics.median(times)
    return {
        "version": dbos_version(),
        "chain_ms_per_step": round(wall / 100 * 1000, 3),
        "executions_per_s": round(statistics.median(rates), 1),
        "runs_per_s": [round(r, 1) for r in rates],
    }


async def main(argv: list[str]) -> dict[str, Any]:
    args = parse_args(argv)
    figures: dict[str, Any] = {"targets": TARGETS}
    figures["chain_engine_only"] = engine_only = await bench_engine_only(args.repeat)
    idle_s = engine_only["ms_per_node"] / 1000
    async with database(args.postgres) as dsn:
        figures["floor"] = await bench_floor(dsn, args.samples, idle_s)
        figures["chain_postgres"] = await bench_chain(dsn, args.repeat)
        figures["floor_after"] = await bench_floor(dsn, args.samples, idle_s)
        figures["append_replay"] = await bench_append_replay(dsn, args.samples)
        figures["sequence_lock"] = await bench_sequence_lock(dsn, 16, 100, args.repeat)
        figures["notify_lock"] = await bench_notify_lock(dsn)
        figures["sweep"] = await bench_sweep(dsn, args.sweep, args.repeat)
    figures["chain_embedded"] = await bench_chain(None, args.repeat)
    # the machine is shared: the floor is measured before and after the chain, the lower one used
    commit = min(figures["floor"]["durable_commit_ms"], figures["floor_after"]["durable_commit_ms"])
    chain = figures["chain_postgres"]
    chain["ratio_to_commit"] = round(chain["ms_per_node"] / commit, 2)
    # what Postgres adds per node over the same engine on SQLite, against the commit it must pay
    chain["over_embedded_ms_per_node"] = round(chain["ms_per_node"] - figures["chain_embedded"]["ms_per_node"], 3)
    chain["over_embedded_ratio_to_commit"] = round(chain["over_embedded_ms_per_node"] / commit, 2)
    # the least a node could cost with this engine on this machine: its own work, then a commit
    # paid after that much idleness
    idle_commit = min(figures["floor"]["commit_after_idle_ms"], figures["floor_after"]["commit_after_idle_ms"])
    chain["least_ms_per_node"] = round(engine_only["ms_per_node"] + idle_commit, 3)
    chain["ratio_to_least"] = round(chain["ms_per_node"] / chain["least_ms_per_node"], 2)
    engine_only["ratio_to_commit"] = round(engine_only["ms_per_node"] / commit, 2)
    workers = args.workers
    figures["serve_workers"] = workers if workers is not None else "serve's default"
    figures["executions_one_server"] = await bench_executions(args.postgres, 1, args.executions, args.repeat, workers)
    figures["executions_two_servers"] = await bench_executions(args.postgres, 2, args.executions, args.repeat, workers)
    figures["takeover"] = await bench_takeover(args.postgres, args.takeover, workers)
    figures["takeover_stopped"] = await bench_takeover(args.postgres, args.takeover, workers, signal.SIGSTOP)
    if args.no_dbos:
        figures["dbos"] = "skipped (--no-dbos)"
    elif dbos_version() is None:
        figures["dbos"] = "not installed (pip install -e '.[peers]')"
    else:
        figures["dbos"] = await bench_dbos(args.postgres, args.executions, args.repeat)
    return figures
