"""Event store throughput: batched appends and read + fold, for SQLite and Postgres.

``python -m benchmarks store [--executions 1000] [--events 10] [--rounds 5] [--stores sqlite,postgres]``

- append: each round appends ``--executions`` new executions of ``--events`` events each with one
  ``append_many`` call (one transaction), as the control loop does with a round's events. The
  store's time includes msgpack-encoding the events; the baselines get the bytes pre-encoded.
  Baseline, same run, same bytes: Postgres ``COPY`` (asyncpg ``copy_records_to_table``) into a
  bare table with the same columns and unique key; SQLite ``executemany`` in one transaction into
  such a table. ``ratio_to_baseline`` = store rate / baseline rate.
- read + fold: read the whole log back through ``read_all`` (pages of 10,000), decode, and fold
  each execution with ``engine.state.ExecutionState``. Also per-execution ``read`` + fold for a
  sample of executions (one query each: latency-bound), and the fold alone over already-decoded
  events.
  Baseline: fetching the same payloads without decoding.

Targets: Postgres batched append >= 20,000 events/s; fold >= 200,000 events/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from benchmarks._common import rate_summary
from engine.events import (
    Event,
    ExecutionCreated,
    ExecutionStarted,
    NodeQueued,
    NodeRunning,
    NodeSucceeded,
    decode_event,
)
from engine.interfaces import EventStore, to_records
from engine.models import LiteralBinding, TaskNode, TaskRef, TypedName, WorkflowSpec
from engine.state import ExecutionState

APPEND_TARGET = 20_000.0
FOLD_TARGET = 200_000.0
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
_PAGE = 10_000

Folder = Callable[[Sequence[Any]], Any]
FOLD_NAME = "engine.state.ExecutionState.fold"


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse the suite's options."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks store", description=__doc__.split("\n")[0])
    parser.add_argument("--executions", type=int, default=1000, help="executions per append round")
    parser.add_argument("--events", type=int, default=10, help="events per execution (>= 1)")
    parser.add_argument("--rounds", type=int, default=5, help="append rounds")
    parser.add_argument("--stores", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    parser.add_argument(
        "--postgres-dsn",
        default=os.environ.get("SLIPSTREAM_POSTGRES_DSN")
        or os.environ.get("SLIPSTREAM_TEST_POSTGRES_DSN")
        or DEFAULT_DSN,
        help="Postgres to measure; a throw-away schema is created and dropped",
    )
    parser.add_argument("--read-sample", type=int, default=200, help="executions read one by one")
    args = parser.parse_args(argv)
    if args.events < 1 or args.executions < 1 or args.rounds < 1:
        parser.error("--executions, --events and --rounds must be at least 1")
    return args


# --- workload ------------------------------------------------------------------------------------


def make_spec(nodes: int) -> WorkflowSpec:
    """A workflow of ``nodes`` independent tasks with literal inputs (all ready at once)."""
    ref = TaskRef(name="t", module="bench", qualname="t", source_hash="0" * 16)
    literal = msgspec.msgpack.encode(1)
    return WorkflowSpec(
        name="bench",
        inputs=[],
        outputs=[],
        nodes=[
            TaskNode(
                id=f"n{i}", task=ref, inputs={"x": LiteralBinding(literal)}, interface_outputs=[TypedName("o0", "int")]
            )
            for i in range(max(nodes, 1))
        ],
        output_bindings={},
        version="bench",
    )


def history(execution_id: str, count: int, spec: WorkflowSpec, at: datetime) -> list[Event]:
    """A valid event history of exactly ``count`` events (a running execution, cut anywhere).

    Created, Started, then Queued / Running / Succeeded for node after node.
    """
    events: list[Event] = [
        ExecutionCreated(
            execution_id=execution_id,
            version=1,
            at=at,
            project="bench",
            domain="development",
            workflow="bench",
            workflow_version="v1",
            spec=spec,
            inputs={},
        )
    ]
    output = {"o0": msgspec.msgpack.encode(42)}
    node = 0
    while len(events) < count:
        v = len(events) + 1
        if v == 2:
            events.append(ExecutionStarted(execution_id=execution_id, version=v, at=at))
            continue
        step = (v - 3) % 3
        node_id = f"n{node}"
        if step == 0:
            events.append(NodeQueued(execution_id=execution_id, version=v, at=at, node_id=node_id, attempt=1))
        elif step == 1:
            events.append(
                NodeRunning(
                    execution_id=execution_id,
                    version=v,
                    at=at,
                    node_id=node_id,
                    attempt=1,
                    executor="local",
                    worker="w",
                )
            )
        else:
            events.append(
                NodeSucceeded(execution_id=execution_id, version=v, at=at, node_id=node_id, attempt=1, outputs=output)
            )
            node += 1
    return events


def make_round(executions: int, events: int) -> list[tuple[str, int, Sequence[Event]]]:
    """One round of new executions, ready for ``append_many``."""
    spec = make_spec((events - 2 + 2) // 3)
    at = datetime.now(UTC)
    prefix = uuid.uuid4().hex[:10]
    return [(f"{prefix}-{i}", 0, history(f"{prefix}-{i}", events, spec, at)) for i in range(executions)]


def fold(events: Sequence[Any]) -> ExecutionState:
    """The fold over one execution's events."""
    return ExecutionState.fold(events)


# --- measurements --------------------------------------------------------------------------------


async def measure_appends(store: EventStore, rounds: list[list[tuple[str, int, Sequence[Event]]]]) -> list[float]:
    """Time each round's single ``append_many``."""
    times: list[float] = []
    for batches in rounds:
        start = time.perf_counter()
        await store.append_many(batches)
        times.append(time.perf_counter() - start)
    return times


def group_by_execution(events: Sequence[Any]) -> dict[str, list[Any]]:
    """Events of the whole log grouped per execution, in order."""
    grouped: dict[str, list[Any]] = {}
    for event in events:
        grouped.setdefault(event.execution_id, []).append(event)
    return grouped


async def measure_reads(store: EventStore, folder: Folder, total: int, sample_ids: list[str]) -> dict[str, Any]:
    """read_all + decode (+ fold), per-execution read + fold, and the fold alone."""
    start = time.perf_counter()
    after, decoded = 0, []
    while True:
        page = await store.read_all(after, limit=_PAGE)
        if not page:
            break
        decoded.extend(g.event for g in page)
        after = page[-1].seq
    read_decode_s = time.perf_counter() - start
    assert len(decoded) == total, f"read back {len(decoded)} of {total} events"
    grouped = group_by_execution(decoded)
    fold_error = None
    start = time.perf_counter()
    try:
        for events in grouped.values():
            folder(events)
    except Exception as exc:  # report a fold failure instead of losing the append figures
        fold_error = f"{type(exc).__name__}: {exc}"
    fold_s = time.perf_counter() - start
    start = time.perf_counter()
    per_exec_events = 0
    for execution_id in sample_ids:
        events = await store.read(execution_id)
        per_exec_events += len(events)
        if fold_error is None:
            folder(events)
    per_exec_s = time.perf_counter() - start
    out: dict[str, Any] = {
        "events": total,
        "read_all_decode_events_per_s": round(total / read_decode_s, 1),
        "read_all_decode_fold_events_per_s": (
            round(total / (read_decode_s + fold_s), 1) if fold_s and fold_error is None else None
        ),
        "fold_only_events_per_s": round(total / fold_s, 1) if fold_s and fold_error is None else None,
        "per_execution_read_fold_events_per_s": round(per_exec_events / per_exec_s, 1) if per_exec_s else None,
        "per_execution_sample": len(sample_ids),
    }
    if fold_error:
        out["fold_error"] = fold_error
    return out


# --- backends ------------------------------------------------------------------------------------


def _raw_rows(rounds: list[list[tuple[str, int, Sequence[Event]]]]) -> list[list[tuple[Any, ...]]]:
    return [
        [
            (r.execution_id, r.version, r.kind, r.node_id, r.attempt, r.payload)
            for eid, expected, events in batches
            for r in to_records(eid, expected, events)
        ]
        for batches in rounds
    ]


async def bench_sqlite(args: argparse.Namespace, folder: Folder) -> dict[str, Any]:
    """Both measurements and the baseline on a temporary SQLite file."""
    from engine._sqlite_store import SqliteEventStore

    workdir = Path(tempfile.mkdtemp(prefix="slipstream-bench-"))
    try:
        rounds = [make_round(args.executions, args.events) for _ in range(args.rounds)]
        per_round = args.executions * args.events
        async with SqliteEventStore(workdir / "events.db") as store:
            append_s = await measure_appends(store, rounds)
            sample = [b[0] for r in rounds for b in r][: args.read_sample]
            reads = await measure_reads(store, folder, per_round * args.rounds, sample)
        baseline_s = _sqlite_baseline(workdir / "baseline.db", _raw_rows(rounds))
        read_baseline = _sqlite_read_baseline(workdir / "events.db")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    append = rate_summary(per_round, append_s)
    baseline = rate_summary(per_round, baseline_s)
    return {
        "append_events_per_s": append,
        "append_baseline": {"what": "sqlite3 executemany, one transaction, bare table", **baseline},
        "append_ratio_to_baseline": round(append["median"] / baseline["median"], 3) if baseline["median"] else None,
        "read": reads,
        "read_baseline": {"what": "sqlite3 SELECT seq, payload (no decode)", "events_per_s": read_baseline},
    }


def _sqlite_baseline(path: Path, rounds: list[list[tuple[Any, ...]]]) -> list[float]:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, execution_id TEXT, version INTEGER,"
        " kind TEXT, node_id TEXT, attempt INTEGER, payload BLOB, UNIQUE (execution_id, version))"
    )
    times = []
    for rows in rounds:
        start = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO events (execution_id, version, kind, node_id, attempt, payload) VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.execute("COMMIT")
        times.append(time.perf_counter() - start)
    conn.close()
    return times


def _sqlite_read_baseline(path: Path) -> float:
    conn = sqlite3.connect(path)
    start = time.perf_counter()
    rows = conn.execute("SELECT seq, payload FROM events ORDER BY seq").fetchall()
    elapsed = time.perf_counter() - start
    conn.close()
    return round(len(rows) / elapsed, 1) if elapsed else 0.0


async def bench_postgres(args: argparse.Namespace, folder: Folder) -> dict[str, Any]:
    """Both measurements and the baselines in a throw-away schema of ``--postgres-dsn``."""
    import asyncpg

    from engine._postgres_store import PostgresEventStore

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(args.postgres_dsn)
    server_version = await admin.fetchval("SHOW server_version")
    try:
        rounds = [make_round(args.executions, args.events) for _ in range(args.rounds)]
        per_round = args.executions * args.events
        async with PostgresEventStore(args.postgres_dsn, schema=schema) as store:
            append_s = await measure_appends(store, rounds)
            sample = [b[0] for r in rounds for b in r][: args.read_sample]
            reads = await measure_reads(store, folder, per_round * args.rounds, sample)
        raw_rounds = _raw_rows(rounds)
        copy_s, unnest_s = await _postgres_baselines(admin, schema, raw_rounds)
        start = time.perf_counter()
        rows = await admin.fetch(f'SELECT seq, payload FROM "{schema}".events ORDER BY seq')
        read_baseline = round(len(rows) / (time.perf_counter() - start), 1)
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()
    append = rate_summary(per_round, append_s)
    copy = rate_summary(per_round, copy_s)
    unnest = rate_summary(per_round, unnest_s)
    return {
        "server_version": server_version,
        "append_events_per_s": append,
        "append_baseline_copy": {"what": "asyncpg COPY, same rows, bare table with the unique key", **copy},
        "append_baseline_unnest": {"what": "one INSERT ... SELECT FROM unnest, bare table", **unnest},
        "append_ratio_to_copy": round(append["median"] / copy["median"], 3) if copy["median"] else None,
        "append_ratio_to_unnest": round(append["median"] / unnest["median"], 3) if unnest["median"] else None,
        "append_target_events_per_s": APPEND_TARGET,
        "append_meets_target": append["median"] >= APPEND_TARGET,
        "read": reads,
        "read_baseline": {"what": "asyncpg fetch seq, payload (no decode)", "events_per_s": read_baseline},
    }


async def _postgres_baselines(
    conn: Any, schema: str, rounds: list[list[tuple[Any, ...]]]
) -> tuple[list[float], list[float]]:
    columns = ["execution_id", "version", "kind", "node_id", "attempt", "payload"]
    times: dict[str, list[float]] = {"copy": [], "unnest": []}
    for name in times:
        table = f"baseline_{name}"
        await conn.execute(
            f'CREATE TABLE "{schema}".{table} (seq bigserial PRIMARY KEY, execution_id text NOT NULL,'
            " version int NOT NULL, kind text NOT NULL, node_id text NOT NULL, attempt int NOT NULL,"
            " payload bytea NOT NULL, UNIQUE (execution_id, version))"
        )
        for rows in rounds:
            start = time.perf_counter()
            if name == "copy":
                await conn.copy_records_to_table(table, records=rows, columns=columns, schema_name=schema)
            else:
                cols = list(zip(*rows, strict=True))
                await conn.execute(
                    f'INSERT INTO "{schema}".{table} (execution_id, version, kind, node_id, attempt, payload)'
                    " SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::int[], $6::bytea[])",
                    *[list(c) for c in cols],
                )
            times[name].append(time.perf_counter() - start)
    return times["copy"], times["unnest"]


def fold_only(folder: Folder, events: int) -> dict[str, Any]:
    """The fold alone over in-memory decoded events (no store)."""
    batches = make_round(1000, events)
    decoded = [[decode_event(r.payload) for r in to_records(e, x, evs)] for e, x, evs in batches]
    start = time.perf_counter()
    for events_of_one in decoded:
        folder(events_of_one)
    elapsed = time.perf_counter() - start
    rate = round(1000 * events / elapsed, 1)
    return {"events_per_s": rate, "target_events_per_s": FOLD_TARGET, "meets_target": rate >= FOLD_TARGET}


async def main(argv: list[str]) -> dict[str, Any]:
    """Run the store benchmark; return the figures (the dispatcher writes them to results/store.json)."""
    args = parse_args(argv)
    figures: dict[str, Any] = {
        "parameters": {
            "executions_per_round": args.executions,
            "events_per_execution": args.events,
            "rounds": args.rounds,
            "events_per_round": args.executions * args.events,
        },
        "fold": FOLD_NAME,
        "targets": {"postgres_append_events_per_s": APPEND_TARGET, "fold_events_per_s": FOLD_TARGET},
        "fold_in_memory": fold_only(fold, args.events),
    }
    for name in [s.strip() for s in args.stores.split(",") if s.strip()]:
        if name == "sqlite":
            figures["sqlite"] = await bench_sqlite(args, fold)
        elif name == "postgres":
            figures["postgres"] = await bench_postgres(args, fold)
        else:
            raise SystemExit(f"unknown store {name!r}: use sqlite and/or postgres")
    return figures


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(asyncio.run(main(sys.argv[1:])), indent=2, default=str))
