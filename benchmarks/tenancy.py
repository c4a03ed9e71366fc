"""What Postgres row-level security costs (event store migration 0006): the owner's path and a tenant's.

``python -m benchmarks tenancy [--executions 500] [--events 10] [--rounds 5] [--reads 200] [--postgres-dsn DSN]``

The DSN must be a superuser's on a server that lets new local roles in without a password (trust),
as the test server does: the suite creates two roles and a throw-away schema, and drops them after.

- ``owner``: a non-superuser role that ran the migrations and owns the tables, as ``slipstream
  serve`` does. Row security is enabled but does not apply to it (no FORCE); the one extra cost on
  its path is the deferred trigger's ``WHEN (current_user <> owner)`` test per inserted event.
- ``owner_rls_off``: the same role with row security disabled on ``events`` and ``executions``
  (``ALTER TABLE ... DISABLE ROW LEVEL SECURITY``), the baseline for ``owner``.
- ``tenant``: a role granted the project (``slipstream admin grant``): every row read passes the
  policies (a grants lookup per execution row, an executions lookup per event row), every
  appended event the append check (a SECURITY DEFINER function) and, at commit, the trigger.

Each mode appends ``--rounds`` rounds of ``--executions`` new executions of ``--events`` events with
one ``append_many`` each (the control loop's batched round; the modes take turns, round by round,
on the same growing tables), then reads ``--reads`` executions one by one (``read``: one query
each), lists them a page of 100 at a time, and reads the whole log with ``read_all``. Ratios are
of median append times. Target: the owner's path within 5% of the baseline (it is what `serve` and the
relay run).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from benchmarks._common import rate_summary
from benchmarks.store import DEFAULT_DSN, make_round
from engine._pg_tenancy import grant
from engine._postgres_store import PostgresEventStore

OWNER_TARGET = 1.05  # owner / owner_rls_off time, at most


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse the suite's options."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks tenancy", description=__doc__.split("\n")[0])
    parser.add_argument("--executions", type=int, default=500, help="executions per append round")
    parser.add_argument("--events", type=int, default=10, help="events per execution (>= 1)")
    parser.add_argument("--rounds", type=int, default=5, help="append rounds per mode")
    parser.add_argument("--reads", type=int, default=200, help="executions read one by one per mode")
    parser.add_argument(
        "--postgres-dsn",
        default=os.environ.get("SLIPSTREAM_TEST_POSTGRES_DSN") or DEFAULT_DSN,
        help="a superuser's DSN; roles and a schema are created and dropped",
    )
    args = parser.parse_args(argv)
    if min(args.executions, args.events, args.rounds, args.reads) < 1:
        parser.error("--executions, --events, --rounds and --reads must be at least 1")
    return args


def as_role(dsn: str, role: str) -> str:
    """``dsn`` with its user replaced by ``role`` (no password: the server trusts local roles)."""
    parts = urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, f"{role}@{host}", parts.path, parts.query, parts.fragment))


async def append_round(store: PostgresEventStore, args: argparse.Namespace) -> tuple[float, list[str]]:
    """One ``append_many`` of ``--executions`` new executions; its time and their ids."""
    batches = make_round(args.executions, args.events)
    start = time.perf_counter()
    await store.append_many(batches)
    return time.perf_counter() - start, [execution_id for execution_id, _, _ in batches]


async def reads(store: PostgresEventStore, ids: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Per-execution reads of ``ids``, listing pages and ``read_all`` of the whole log."""
    times: list[float] = []
    for execution_id in ids:
        start = time.perf_counter()
        events = await store.read(execution_id)
        times.append(time.perf_counter() - start)
        assert len(events) == args.events
    pages: list[float] = []
    cursor = None
    for _ in range(10):
        start = time.perf_counter()
        page = await store.list_executions(limit=100, cursor=cursor)
        pages.append(time.perf_counter() - start)
        cursor = page.next_cursor
        if cursor is None:
            break
    start = time.perf_counter()
    after, total = 0, 0
    while True:
        page_all = await store.read_all(after, limit=10_000)
        if not page_all:
            break
        total += len(page_all)
        after = page_all[-1].seq
    read_all_s = time.perf_counter() - start
    ordered = sorted(times)
    return {
        "read_ms": {
            "p50": round(statistics.median(ordered) * 1000, 3),
            "p99": round(ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1000, 3),
        },
        "list_page_ms_p50": round(statistics.median(pages) * 1000, 3),
        "read_all_events_per_s": round(total / read_all_s) if read_all_s > 0 else None,
        "read_all_events": total,
    }


async def _toggle(conn: asyncpg.Connection, schema: str, on: bool) -> None:
    for table in ("events", "executions"):
        await conn.execute(f'ALTER TABLE "{schema}".{table} {"ENABLE" if on else "DISABLE"} ROW LEVEL SECURITY')


async def _run(args: argparse.Namespace, dsn: str, schema: str, owner: str, tenant: str) -> dict[str, Any]:
    """Rounds interleaved across the modes (each appends to the same growing tables in turn), then
    the reads of each mode over the same log."""
    owner_dsn, tenant_dsn = as_role(dsn, owner), as_role(dsn, tenant)
    modes = ("owner_rls_off", "owner", "tenant")
    appends: dict[str, list[float]] = {mode: [] for mode in modes}
    ids: list[str] = []
    async with PostgresEventStore(owner_dsn, schema=schema) as owned:  # migrations run as the owner
        await grant(owner_dsn, tenant, "bench", schema=schema)
        conn = await asyncpg.connect(owner_dsn)
        try:
            async with PostgresEventStore(tenant_dsn, schema=schema) as tenants:
                for _ in range(args.rounds):
                    for mode in modes:
                        await _toggle(conn, schema, on=mode != "owner_rls_off")
                        seconds, written = await append_round(tenants if mode == "tenant" else owned, args)
                        appends[mode].append(seconds)
                        ids += written
                sample = ids[:: max(1, len(ids) // args.reads)][: args.reads]
                results: dict[str, Any] = {}
                for mode in modes:
                    await _toggle(conn, schema, on=mode != "owner_rls_off")
                    store = tenants if mode == "tenant" else owned
                    results[mode] = {
                        "append_events_per_s": rate_summary(args.executions * args.events, appends[mode]),
                        **await reads(store, sample, args),
                    }
                assert results["tenant"]["read_all_events"] == len(ids) * args.events, "the tenant sees every event"
        finally:
            await conn.close()
    median = {mode: statistics.median(appends[mode]) for mode in modes}
    results["owner_over_rls_off"] = round(median["owner"] / median["owner_rls_off"], 3)
    results["tenant_over_owner"] = round(median["tenant"] / median["owner"], 3)
    results["owner_target_met"] = results["owner_over_rls_off"] <= OWNER_TARGET
    return results


async def main(argv: list[str]) -> dict[str, Any]:
    """Run the suite; return its figures."""
    args = parse_args(argv)
    suffix = uuid.uuid4().hex[:8]
    schema, owner, tenant = f"bench_tenancy_{suffix}", f"bench_owner_{suffix}", f"bench_tenant_{suffix}"
    admin = await asyncpg.connect(args.postgres_dsn)
    database = await admin.fetchval("SELECT current_database()")
    try:
        await admin.execute(f'CREATE ROLE "{owner}" LOGIN; CREATE ROLE "{tenant}" LOGIN')
        await admin.execute(f'GRANT CREATE ON DATABASE "{database}" TO "{owner}"')
        figures = await _run(args, args.postgres_dsn, schema, owner, tenant)
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        for role in (tenant, owner):
            await admin.execute(f'DROP OWNED BY "{role}"; DROP ROLE "{role}"')
        await admin.close()
    return {
        "workload": {
            "executions_per_round": args.executions,
            "events_per_execution": args.events,
            "rounds": args.rounds,
            "reads": args.reads,
        },
        **figures,
    }
