"""``python -m benchmarks engine``: control-loop overhead against a plain-asyncio baseline.

Figures (each engine figure next to a baseline measured in the same run, because this machine is
shared and noisy):
- a chain of 100 no-op tasks: per-node latency, embedded (SQLite) and Postgres;
  baseline: the same 100 coroutines awaited one after another;
- maps of 1k and 10k no-op elements: elements/s; baseline: ``asyncio.gather`` of the same coroutines;
- a 100k-element map: peak RSS of the whole process (measured in a subprocess);
- the wall time of a whole ``python script.py`` process running a one-task workflow;
  baseline: ``python -c "import asyncio, sqlite3"``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import _engine_workflows as flows
from benchmarks._common import drop_schema

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {
    "overhead_ms_per_node_embedded": 1.0,
    "chain_ms_per_node_embedded": 5.0,
    "chain_ms_per_node_postgres": 10.0,
    "map_100k_peak_rss_mib": 1024.0,
    "one_task_process_s": 0.6,
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks engine", description=__doc__)
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median reported)")
    parser.add_argument("--maps", type=int, nargs="*", default=[1_000, 10_000], help="map sizes for elements/s")
    parser.add_argument("--big-map", type=int, default=100_000, help="map size for the peak-RSS figure (0: skip)")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("SLIPSTREAM_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"),
        help="Postgres DSN for the Postgres chain ('' to skip)",
    )
    return parser.parse_args(argv)


def _engine(store_kind: str, directory: Path, dsn: str):
    from engine import Engine
    from engine._postgres_store import PostgresEventStore
    from engine._sqlite_store import SqliteEventStore
    from plugins.local import LocalExecutor

    if store_kind == "sqlite":
        store = SqliteEventStore(directory / "events.db")
    else:
        store = PostgresEventStore(dsn, schema=f"bench_{os.getpid()}")
    return Engine(store, {"local": LocalExecutor()})


async def _run(engine: Any, workflow: Any, **inputs: Any) -> float:
    start = time.perf_counter()
    handle = await engine.launch(workflow, **inputs)
    await handle.outputs(timeout=600)
    return time.perf_counter() - start


async def _chain_baseline(repeat: int) -> float:
    """Seconds for 100 sequential awaits of the same no-op coroutine."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        value = 0
        for _ in range(flows.CHAIN_LENGTH):
            value = await flows.noop.fn(x=value)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


async def _gather_baseline(size: int, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        await asyncio.gather(*(flows.element.fn(x=i) for i in range(size)))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


async def bench_chain(store_kind: str, dsn: str, repeat: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory:
        async with _engine(store_kind, Path(directory), dsn) as engine:
            await _run(engine, flows.chain)  # warm-up: imports, connections, thread pools
            times = [await _run(engine, flows.chain) for _ in range(repeat)]
        if store_kind == "postgres":
            await drop_schema(dsn, f"bench_{os.getpid()}")
    wall = statistics.median(times)
    baseline = await _chain_baseline(repeat)
    per_node_ms = wall / flows.CHAIN_LENGTH * 1000
    baseline_ms = baseline / flows.CHAIN_LENGTH * 1000
    return {
        "nodes": flows.CHAIN_LENGTH,
        "wall_s": round(wall, 4),
        "ms_per_node": round(per_node_ms, 3),
        "baseline_ms_per_node": round(baseline_ms, 5),
        "overhead_ms_per_node": round(per_node_ms - baseline_ms, 3),
        "ratio_to_baseline": round(wall / baseline, 1) if baseline else None,
    }


async def bench_map(size: int, repeat: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory:
        async with _engine("sqlite", Path(directory), "") as engine:
            await _run(engine, flows.wide_map, xs=list(range(min(size, 100))))
            times = [await _run(engine, flows.wide_map, xs=list(range(size))) for _ in range(repeat)]
    wall = statistics.median(times)
    baseline = await _gather_baseline(size, repeat)
    return {
        "elements": size,
        "wall_s": round(wall, 3),
        "elements_per_s": round(size / wall, 1),
        "ms_per_element": round(wall / size * 1000, 4),
        "baseline_elements_per_s": round(size / baseline, 1),
        "ratio_to_baseline": round(wall / baseline, 1) if baseline else None,
    }


def bench_big_map(size: int) -> dict[str, Any]:
    """Run the map in a fresh process so its peak RSS is the engine's alone."""
    code = (
        "import asyncio, resource, sys, tempfile, time\n"
        "from pathlib import Path\n"
        "from benchmarks.engine import _engine, _run\n"
        "from benchmarks import _engine_workflows as flows\n"
        "async def main():\n"
        "    with tempfile.TemporaryDirectory() as d:\n"
        "        async with _engine('sqlite', Path(d), '') as engine:\n"
        f"            wall = await _run(engine, flows.wide_map, xs=list(range({size})))\n"
        "    print(wall, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        return {"elements": size, "error": done.stderr[-2000:]}
    wall, rss_kib = done.stdout.split()
    baseline = subprocess.run(
        [
            sys.executable,
            "-c",
            "import resource, engine, engine._engine, plugins.local, propeller;"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return {
        "elements": size,
        "wall_s": round(float(wall), 2),
        "elements_per_s": round(size / float(wall), 1),
        "peak_rss_mib": round(int(rss_kib) / 1024, 1),
        "baseline_rss_mib_engine_imported": round(int(baseline.stdout.strip()) / 1024, 1),
    }


def _process_time(argv: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, check=True, capture_output=True, timeout=60)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


ONE_TASK_SCRIPT = """\
from engine import task, workflow


@task
def hello(name: str) -> str:
    return f"hello {name}"


@workflow
def wf(name: str = "world") -> str:
    return hello(name=name)


if __name__ == "__main__":
    print(wf(name="slipstream"))
"""


def bench_one_task_process(repeat: int) -> dict[str, Any]:
    """A whole ``python script.py`` of a one-task workflow: what a data scientist's first try costs."""
    with tempfile.TemporaryDirectory() as directory:
        # a directory of its own: next to benchmarks/engine.py, `import engine` would find the wrong module
        script = Path(directory) / "one_task.py"
        script.write_text(ONE_TASK_SCRIPT)
        wall = _process_time([sys.executable, str(script)], max(repeat, 5))
    baseline = _process_time([sys.executable, "-c", "import asyncio, sqlite3"], max(repeat, 5))
    return {
        "wall_s": round(wall, 3),
        "baseline_s_python_asyncio_sqlite": round(baseline, 3),
        "engine_cost_s": round(wall - baseline, 3),
    }


async def main(argv: list[str]) -> dict[str, Any]:
    args = parse_args(argv)
    figures: dict[str, Any] = {"targets": TARGETS}
    figures["chain_embedded"] = await bench_chain("sqlite", "", args.repeat)
    if args.postgres:
        figures["chain_postgres"] = await bench_chain("postgres", args.postgres, args.repeat)
    figures["maps"] = [await bench_map(size, args.repeat) for size in args.maps]
    if args.big_map:
        figures["map_big"] = bench_big_map(args.big_map)
    figures["one_task_process"] = bench_one_task_process(args.repeat)
    figures["verdict"] = {
        "overhead_ms_per_node_embedded": figures["chain_embedded"]["overhead_ms_per_node"],
        "chain_ms_per_node_embedded": figures["chain_embedded"]["ms_per_node"],
        "chain_ms_per_node_postgres": figures.get("chain_postgres", {}).get("ms_per_node"),
        "map_100k_peak_rss_mib": figures.get("map_big", {}).get("peak_rss_mib"),
        "one_task_process_s": figures["one_task_process"]["wall_s"],
    }
    return figures
