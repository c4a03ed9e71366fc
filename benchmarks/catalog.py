"""``python -m benchmarks catalog``: what the cache saves and what it costs.

``python -m benchmarks catalog [--repeat 3] [--map-size 10000] [--lookups 500] [--postgres DSN]``

- ``feature_pruning``: ``examples/feature_pruning.py``'s ``wf(depth=3)`` run on a fresh embedded
  engine (its first run computes everything), then again on the same engine (fully cached: every
  ``train`` element and ``prepare`` come from the catalog). ``cached_over_uncached`` is the second
  run's wall time over the first's (lower is better). scikit-learn is imported before timing.
- ``lookup_latency_ms``: single-key `Catalog.lookup` hits on a catalog holding 1000 artifacts, on
  SQLite (a file in a temporary directory) and Postgres (a throw-away schema), p50 and p99.
- ``map_10k``: a map of ``--map-size`` elements of a cached no-op task, on embedded engines with
  and without a catalog (the baseline: the same workflow, caching off), then again with the
  catalog (every element a hit). ``overhead_ratio`` is the first run with the catalog over the
  baseline (the cost of looking up and recording every element); ``hit_ratio`` the all-hits rerun
  over the baseline.

Figures are medians over ``--repeat`` runs, measured in this process against baselines taken in the
same run (the machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks._common import drop_schema

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks catalog", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--map-size", type=int, default=10_000)
    parser.add_argument("--lookups", type=int, default=500)
    parser.add_argument(
        "--postgres",
        default=os.environ.get("SLIPSTREAM_TEST_POSTGRES_DSN")
        or os.environ.get("SLIPSTREAM_POSTGRES_DSN")
        or DEFAULT_DSN,
    )
    return parser.parse_args(argv)


async def main(argv: list[str]) -> dict[str, Any]:
    args = parse_args(argv)
    return {
        "suite": "catalog",
        "feature_pruning": await feature_pruning(args.repeat),
        "lookup_latency_ms": {
            "sqlite": await lookup_latency("sqlite", args.lookups, args.postgres),
            "postgres": await lookup_latency("postgres", args.lookups, args.postgres),
        },
        "map_10k": await map_cost(args.map_size, args.repeat),
    }


async def _timed_run(engine: Any, workflow: Any, **inputs: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    handle = await engine.launch(workflow, **inputs)
    await handle.wait()
    outputs = await handle.outputs()
    return time.perf_counter() - started, outputs


async def feature_pruning(repeat: int) -> dict[str, Any]:
    import sklearn.linear_model
    import sklearn.model_selection  # noqa: F401

    from engine import Engine
    from engine._cli import load_workflow

    wf = load_workflow(str(ROOT / "examples" / "feature_pruning.py") + ":wf")
    uncached, cached = [], []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix="bench-catalog-") as state_dir:
            async with Engine.embedded(state_dir) as engine:
                first_s, first = await _timed_run(engine, wf, depth=3)
                second_s, second = await _timed_run(engine, wf, depth=3)
                assert first == second
                uncached.append(first_s)
                cached.append(second_s)
    return {
        "uncached_s": round(statistics.median(uncached), 4),
        "cached_s": round(statistics.median(cached), 4),
        "cached_over_uncached": round(statistics.median(cached) / statistics.median(uncached), 4),
        "runs": repeat,
    }


async def lookup_latency(kind: str, lookups: int, dsn: str) -> dict[str, Any]:
    from catalog import PostgresCatalog, SqliteCatalog
    from engine.interfaces import ArtifactDraft, CacheKey

    with tempfile.TemporaryDirectory(prefix="bench-catalog-") as directory:
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        catalog = (
            SqliteCatalog(Path(directory) / "catalog.db") if kind == "sqlite" else PostgresCatalog(dsn, schema=schema)
        )
        async with catalog:
            try:
                now = datetime.now(UTC)
                keys = [CacheKey("bench", "development", "bench.task", "1", "sig", f"in{n}") for n in range(1000)]
                await catalog.put_many(
                    [ArtifactDraft(k, {"o0": b"\x01"}, "e", f"n{i}", 1) for i, k in enumerate(keys)], now=now
                )
                for key in keys[:20]:  # warm the connection and the statement caches
                    await catalog.lookup(key, now=now)
                times = []
                for n in range(lookups):
                    key = keys[(n * 7919) % len(keys)]
                    started = time.perf_counter()
                    found = await catalog.lookup(key, now=now)
                    times.append((time.perf_counter() - started) * 1000)
                    assert found is not None
            finally:
                if kind == "postgres":
                    await drop_schema(dsn, schema)
    times.sort()
    return {
        "p50": round(times[len(times) // 2], 3),
        "p99": round(times[min(len(times) - 1, int(len(times) * 0.99))], 3),
        "lookups": lookups,
    }


async def map_cost(size: int, repeat: int) -> dict[str, Any]:
    from benchmarks._catalog_workflows import cached_map
    from catalog import LocalBlobStore, SqliteCatalog
    from engine import Engine
    from engine._sqlite_store import SqliteEventStore
    from plugins.local import LocalExecutor

    xs = list(range(size))
    expected = sum(xs)
    baseline, first, hits = [], [], []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix="bench-catalog-") as directory:
            root = Path(directory)

            def engine(catalog: bool, root: Path = root) -> Engine:
                return Engine(
                    SqliteEventStore(root / "events.db"),
                    {"local": LocalExecutor()},
                    blobs=LocalBlobStore(root / "blobs"),
                    catalog=SqliteCatalog(root / "catalog.db") if catalog else None,
                )

            async with engine(catalog=False) as plain:
                await _timed_run(plain, cached_map, xs=list(range(100)))  # warm-up
                seconds, out = await _timed_run(plain, cached_map, xs=xs)
                assert out == expected
                baseline.append(seconds)
            async with engine(catalog=True) as cached:
                seconds, out = await _timed_run(cached, cached_map, xs=xs)
                assert out == expected
                first.append(seconds)
                seconds, out = await _timed_run(cached, cached_map, xs=xs)
                assert out == expected
                hits.append(seconds)
    base = statistics.median(baseline)
    return {
        "elements": size,
        "uncached_baseline_s": round(base, 4),
        "with_catalog_first_run_s": round(statistics.median(first), 4),
        "with_catalog_all_hits_s": round(statistics.median(hits), 4),
        "overhead_ratio": round(statistics.median(first) / base, 4),
        "hit_ratio": round(statistics.median(hits) / base, 4),
        "extra_us_per_element": round((statistics.median(first) - base) / size * 1e6, 2),
        "runs": repeat,
    }
