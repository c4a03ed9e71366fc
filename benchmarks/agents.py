"""``python -m benchmarks agents``: what running work as agent jobs costs, against raw processes.

Figures (each next to a baseline measured in the same run, on the same machine):
- ``one_job``: the wall time of a one-task workflow whose task is a shell job (``true``) on the
  built-in shell agent, through an embedded engine; baseline: starting the same command as a
  detached process and waiting for it. The difference is the engine's round trips plus, on
  average, half a poll interval.
- ``many_jobs``: a map of N shell jobs, all in flight at once; baseline: N detached processes
  started at once and waited for. Reported as jobs/s and the ratio of the two wall times.
- ``local_map``: the same map (N elements, as many chunks) of no-op tasks on the local executor,
  through the same engine: how much of ``many_jobs`` is the engine's map rather than the agent.
- ``threads``: the most threads the process had while the N jobs were in flight, against the
  count before (jobs are polled from the event loop, so it must not grow with N).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks import _agent_workflows as flows


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks agents", description=__doc__)
    parser.add_argument("--jobs", type=int, default=500, help="shell jobs in the map")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median reported)")
    parser.add_argument("--poll-interval", type=float, default=0.05, help="seconds between two looks at a job")
    args = parser.parse_args(argv)
    if not 1 <= args.jobs <= flows.MAX_JOBS:
        parser.error(f"--jobs must be between 1 and {flows.MAX_JOBS}")
    return args


def _engine(directory: Path, poll_interval: float) -> Any:
    from engine import Engine
    from engine._sqlite_store import SqliteEventStore
    from plugins.agents import AgentExecutor, ShellAgent
    from plugins.local import LocalExecutor

    agents = AgentExecutor([ShellAgent(directory / "jobs")], poll_interval=poll_interval)
    return Engine(SqliteEventStore(directory / "events.db"), {"local": LocalExecutor(), "agents": agents})


def _raw(count: int) -> float:
    """Seconds to start ``count`` detached ``sh -c true`` processes at once and wait for them all."""
    start = time.perf_counter()
    children = [
        subprocess.Popen(["sh", "-c", "true"], start_new_session=True, stdin=subprocess.DEVNULL) for _ in range(count)
    ]
    for child in children:
        child.wait()
    return time.perf_counter() - start


async def _through_engine(poll_interval: float, workflow: Any, **inputs: Any) -> tuple[float, int, int]:
    """Wall seconds of one execution, the threads of the running engine before it, and the most
    threads seen while it ran."""
    with tempfile.TemporaryDirectory(prefix="slipstream-bench-agents-") as tmp:
        async with _engine(Path(tmp), poll_interval) as eng:
            before = most = threading.active_count()
            start = time.perf_counter()
            handle = await eng.launch(workflow, **inputs)
            waiting = asyncio.ensure_future(handle.outputs(timeout=600))
            while not waiting.done():
                most = max(most, threading.active_count())
                await asyncio.wait([waiting], timeout=0.01)
            await waiting
            return time.perf_counter() - start, before, most


async def main(argv: list[str]) -> dict[str, Any]:
    args = parse_args(argv)
    one = [await _through_engine(args.poll_interval, flows.one_job) for _ in range(args.repeat)]
    one_raw = [_raw(1) for _ in range(args.repeat)]
    items = list(range(args.jobs))
    many = [await _through_engine(args.poll_interval, flows.many_jobs, items=items) for _ in range(args.repeat)]
    many_raw = [_raw(args.jobs) for _ in range(args.repeat)]
    local = [await _through_engine(args.poll_interval, flows.many_local, items=items) for _ in range(args.repeat)]
    engine_one, raw_one = statistics.median(r[0] for r in one), statistics.median(one_raw)
    engine_many, raw_many = statistics.median(r[0] for r in many), statistics.median(many_raw)
    return {
        "poll_interval_s": args.poll_interval,
        "one_job": {
            "engine_s": round(engine_one, 4),
            "baseline_s": round(raw_one, 4),
            "overhead_ms": round((engine_one - raw_one) * 1000, 1),
        },
        "many_jobs": {
            "jobs": args.jobs,
            "engine_s": round(engine_many, 3),
            "baseline_s": round(raw_many, 3),
            "engine_jobs_per_s": round(args.jobs / engine_many, 1),
            "baseline_jobs_per_s": round(args.jobs / raw_many, 1),
            "ratio_to_baseline": round(engine_many / raw_many, 2),
        },
        "local_map": {
            "elements": args.jobs,
            "engine_s": round(statistics.median(r[0] for r in local), 3),
        },
        "threads": {
            "jobs_in_flight": args.jobs,
            "engine_before": min(r[1] for r in many),
            "most_while_in_flight": max(r[2] for r in many),
        },
    }
