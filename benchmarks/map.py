"""``python -m benchmarks map``: one wide map in one execution, then a sum, on the embedded engine.

``python -m benchmarks map [--sizes 10000 100000 200000 1000000] [--repeat 3] [--modes async sync]``

The workflow is ``total(xs=map_task(noop)(x=xs))`` (`benchmarks._engine_workflows`): ``map_sum``
maps an async no-op task (gathered on the event loop), ``map_sum_sync`` a sync one (the local
executor's threads). Every run is a FRESH process, so its peak RSS is that run's
alone, on `Engine.embedded` with a temporary state directory. Per run:

- ``wall_s``: ``launch`` to ``outputs`` (encoding the input list included; engine start-up and a
  100-element warm-up map in the same engine are not);
- ``elements_per_s`` and ``us_per_element`` from it;
- ``peak_rss_mib``: the process's peak RSS when the outputs arrive (``peak_rss_mib_after_reload``:
  after the reloads below too), read from ``VmHWM`` (see `peak_rss_mib` for why not ``ru_maxrss``);
- ``events``: ``len(await engine.history(id))``, and ``events_by_kind``;
- ``reload_s``: ``ExecutionState.fold(await store.read(id))`` of the finished execution, timed in
  the same process after the run (``read_s`` + ``fold_s``); ``get_s``: a fresh engine's
  ``get(id)`` on the same state directory (what a restarted engine or the CLI pays);
- ``state_dir_mib``: what the run left in its state directory (event log, blobs).

Baselines, each in a fresh process too, interleaved with the engine's runs in the same run because
this machine is shared and noisy: ``asyncio.gather`` of the same number of no-op coroutines then
``sum`` (async), a plain loop calling the task's function then ``sum`` (sync). Figures are medians
over ``--repeat`` runs. ``per_element_ratio`` is the engine's per-element cost at the larger
``--ratio`` size over that at the smaller (the issue's target: 200k within 1.25x of 10k).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# mode -> the workflow in benchmarks._engine_workflows, and the task whose function the baseline calls
MODES = {"async": ("map_sum", "element"), "sync": ("map_sum_sync", "sync_element")}
DEFAULT_SIZES = [10_000, 100_000, 200_000, 1_000_000]
TARGETS = {
    "per_element_ratio": 1.25,  # per-element cost at 200k / at 10k
    "map_1m_peak_rss_mib": 1024.0,
    "map_1m_wall_s": 60.0,
    "map_1m_reload_s": 5.0,
}
# the line the child prints its figures after, so stray output on stdout cannot be mistaken for them
MARKER = "@@benchmarks.map@@"
CHILD = "import sys; from benchmarks.map import child; child(sys.argv[1:])"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks map", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=DEFAULT_SIZES, help="elements per map")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure, each in a fresh process (median)")
    parser.add_argument("--modes", nargs="+", choices=sorted(MODES), default=["async", "sync"], help="task kinds")
    parser.add_argument(
        "--ratio",
        type=int,
        nargs=2,
        default=[10_000, 200_000],
        metavar=("SMALL", "LARGE"),
        help="sizes whose per-element costs are compared (both must be among --sizes)",
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds one run may take")
    return parser.parse_args(argv)


# --- the child process: one run, figures printed as JSON ---------------------------------------------


def peak_rss_mib() -> float:
    """This process's peak RSS in MiB: ``VmHWM`` on Linux, else ``ru_maxrss``.

    Not ``ru_maxrss`` where ``VmHWM`` can be had: on Linux a child's ``ru_maxrss`` starts at its
    parent's RSS when it was spawned (it survives the exec), so a small run spawned by a big parent
    would report the parent's size.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    scale = 2**20 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale, 1)


def _dir_mib(directory: Path) -> float:
    return round(sum(p.stat().st_size for p in directory.rglob("*") if p.is_file()) / 2**20, 2)


async def engine_run(mode: str, size: int) -> dict[str, Any]:
    """One map of ``size`` elements on a fresh embedded engine, then its reload figures.

    Args:
        mode: ``async`` or ``sync`` (which no-op task the map runs).
        size: elements in the map.

    Returns:
        The run's figures (see the module docstring).
    """
    from benchmarks import _engine_workflows as flows
    from engine import Engine
    from engine.state import ExecutionState

    workflow = getattr(flows, MODES[mode][0])
    with tempfile.TemporaryDirectory(prefix="slipstream-bench-map-") as tmp:
        state_dir = Path(tmp)
        async with Engine.embedded(state_dir=state_dir) as engine:
            warm = await engine.launch(workflow, xs=list(range(100)))  # imports, threads, the store's first writes
            await warm.outputs(timeout=60)
            xs = list(range(size))
            start = time.perf_counter()
            handle = await engine.launch(workflow, xs=xs)
            result = await handle.outputs(timeout=3600)
            wall = time.perf_counter() - start
            peak_rss = peak_rss_mib()
            del xs
            execution_id = handle.execution_id
            history = await engine.history(execution_id)
            events = len(history)
            by_kind = dict(Counter(type(event).__name__ for event in history).most_common())
            del history
            start = time.perf_counter()
            stored = await engine.store.read(execution_id)
            read_s = time.perf_counter() - start
            start = time.perf_counter()
            state = ExecutionState.fold(stored)
            fold_s = time.perf_counter() - start
            phase = state.phase
            del stored, state
        async with Engine.embedded(state_dir=state_dir, run_loop=False) as fresh:
            start = time.perf_counter()
            details = await fresh.get(execution_id)
            get_s = time.perf_counter() - start
        state_mib = _dir_mib(state_dir)
    expected = size * (size - 1) // 2
    if result != expected:
        raise RuntimeError(f"map_sum of {size} elements returned {result!r}, expected {expected}")
    return {
        "wall_s": wall,
        "peak_rss_mib": peak_rss,
        "peak_rss_mib_after_reload": peak_rss_mib(),
        "events": events,
        "events_by_kind": by_kind,
        "read_s": read_s,
        "fold_s": fold_s,
        "reload_s": read_s + fold_s,
        "get_s": get_s,
        "phase": str(phase),
        "status": str(details.status),
        "state_dir_mib": state_mib,
    }


async def baseline_run(mode: str, size: int) -> dict[str, Any]:
    """The same elements without the engine: ``asyncio.gather`` (async) or a plain loop (sync), then ``sum``.

    Args:
        mode: ``async`` or ``sync``.
        size: elements.

    Returns:
        ``wall_s`` and ``peak_rss_mib`` of the run.
    """
    from benchmarks import _engine_workflows as flows

    fn = getattr(flows, MODES[mode][1]).fn
    xs = list(range(size))
    start = time.perf_counter()
    if mode == "async":
        result = sum(await asyncio.gather(*(fn(x=x) for x in xs)))
    else:
        result = sum([fn(x=x) for x in xs])
    wall = time.perf_counter() - start
    if result != size * (size - 1) // 2:
        raise RuntimeError(f"baseline of {size} elements summed to {result!r}")
    return {"wall_s": wall, "peak_rss_mib": peak_rss_mib()}


def child(argv: list[str]) -> None:
    """Entry point of a measuring process: ``child([kind, mode, size])`` prints the figures as JSON.

    Args:
        argv: ``engine`` or ``baseline``, the mode, the size.
    """
    kind, mode, size = argv[0], argv[1], int(argv[2])
    run = engine_run if kind == "engine" else baseline_run
    figures = asyncio.run(run(mode, size))
    print(MARKER + json.dumps(figures), flush=True)


# --- the parent: spawn, interleave, summarise --------------------------------------------------------


def spawn(kind: str, mode: str, size: int, timeout: float) -> dict[str, Any]:
    """Run one measurement in a fresh process.

    Args:
        kind: ``engine`` or ``baseline``.
        mode: ``async`` or ``sync``.
        size: elements.
        timeout: seconds before the process is killed.

    Returns:
        The child's figures, or ``{"error": ...}`` with the tail of its output.
    """
    argv = [sys.executable, "-c", CHILD, kind, mode, str(size)]
    try:
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"{kind} {mode} map of {size} took over {timeout:.0f} s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER) :])
    return {"error": f"{kind} {mode} map of {size} exited {done.returncode}: {done.stderr[-2000:]}"}


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def summarize(mode: str, size: int, runs: list[dict[str, Any]], baselines: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of one (mode, size) figure's runs next to its baseline's.

    Args:
        mode: ``async`` or ``sync``.
        size: elements.
        runs: the engine's runs (those with ``error`` are reported, not counted).
        baselines: the baseline's runs.

    Returns:
        The figure.
    """
    figure: dict[str, Any] = {"mode": mode, "elements": size}
    errors = [run["error"] for run in runs + baselines if "error" in run]
    runs = [run for run in runs if "error" not in run]
    baselines = [run for run in baselines if "error" not in run]
    if errors:
        figure["errors"] = errors
    if not runs:
        return figure
    wall = _median(runs, "wall_s")
    figure.update(
        {
            "runs": len(runs),
            "wall_s": round(wall, 3),
            "wall_s_each": [round(run["wall_s"], 3) for run in runs],
            "elements_per_s": round(size / wall, 1),
            "us_per_element": round(wall / size * 1e6, 2),
            "peak_rss_mib": _median(runs, "peak_rss_mib"),
            "peak_rss_mib_after_reload": _median(runs, "peak_rss_mib_after_reload"),
            "events": runs[0]["events"],
            "events_by_kind": runs[0]["events_by_kind"],
            "reload_s": round(_median(runs, "reload_s"), 3),
            "read_s": round(_median(runs, "read_s"), 3),
            "fold_s": round(_median(runs, "fold_s"), 3),
            "get_s": round(_median(runs, "get_s"), 3),
            "state_dir_mib": _median(runs, "state_dir_mib"),
            "status": runs[0]["status"],
        }
    )
    if baselines:
        base = _median(baselines, "wall_s")
        figure["baseline"] = {
            "what": "asyncio.gather of the coroutines, then sum" if mode == "async" else "a loop calling fn, then sum",
            "wall_s": round(base, 6),
            "elements_per_s": round(size / base, 1) if base else None,
            "us_per_element": round(base / size * 1e6, 3),
            "peak_rss_mib": _median(baselines, "peak_rss_mib"),
        }
        figure["ratio_to_baseline"] = round(wall / base, 1) if base else None
        figure["overhead_us_per_element"] = round((wall - base) / size * 1e6, 2)
    return figure


def per_element_ratio(figures: list[dict[str, Any]], mode: str, small: int, large: int) -> dict[str, Any]:
    """The per-element cost at ``large`` elements over that at ``small``, for ``mode``."""
    cost = {f["elements"]: f.get("us_per_element") for f in figures if f["mode"] == mode}
    low, high = cost.get(small), cost.get(large)
    ratio = round(high / low, 3) if low and high else None
    return {"mode": mode, "small": small, "large": large, "us_small": low, "us_large": high, "ratio": ratio}


def verdict(figures: list[dict[str, Any]], ratios: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target of the issue next to the measured value (``ok`` is ``None`` where not measured)."""

    def check(name: str, mode: str, value: float | None, target: float, below: bool) -> dict[str, Any]:
        ok = None if value is None else (value < target if below else value <= target)
        return {"figure": name, "mode": mode, "value": value, "target": target, "ok": ok}

    checks = [check("per_element_ratio", r["mode"], r["ratio"], TARGETS["per_element_ratio"], False) for r in ratios]
    for figure in figures:
        if figure["elements"] != 1_000_000:
            continue
        for name, key in (
            ("map_1m_peak_rss_mib", "peak_rss_mib"),
            ("map_1m_wall_s", "wall_s"),
            ("map_1m_reload_s", "reload_s"),
        ):
            checks.append(check(name, figure["mode"], figure.get(key), TARGETS[name], True))
    return checks


def main(argv: list[str]) -> dict[str, Any]:
    """Run the suite; the returned figures are what ``benchmarks/results/map.json`` records.

    Args:
        argv: the command-line arguments after ``map``.

    Returns:
        ``targets``, ``figures`` (one per mode and size), ``per_element_ratio`` and ``verdict``.
    """
    args = parse_args(argv)
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    baselines: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for repeat in range(args.repeat):
        for size in args.sizes:
            for mode in args.modes:
                # engine and baseline back to back, so a noisy minute hits both
                runs.setdefault((mode, size), []).append(spawn("engine", mode, size, args.timeout))
                baselines.setdefault((mode, size), []).append(spawn("baseline", mode, size, args.timeout))
                last = runs[(mode, size)][-1]
                shown = f"{last['wall_s']:.2f} s, {last['peak_rss_mib']} MiB" if "wall_s" in last else last["error"]
                print(f"map {mode} {size}: run {repeat + 1}/{args.repeat}: {shown}", file=sys.stderr, flush=True)
    figures = [
        summarize(mode, size, runs[(mode, size)], baselines[(mode, size)]) for size in args.sizes for mode in args.modes
    ]
    small, large = args.ratio
    ratios = [per_element_ratio(figures, mode, small, large) for mode in args.modes]
    return {
        "targets": TARGETS,
        "command": "python -m benchmarks map " + " ".join(argv),
        "repeat": args.repeat,
        "figures": figures,
        "per_element_ratio": ratios,
        "verdict": verdict(figures, ratios),
    }
