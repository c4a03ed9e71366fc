"""``python -m benchmarks peers``: the same workloads on Slipstream and on flytekit's local mode.

``python -m benchmarks peers [--sizes 1000 10000 100000] [--repeat 3] [--no-flytekit] [--flytekit-cap-s 300]``

Workloads (`benchmarks._peer_workflows`, and `benchmarks._peer_workflows_flyte` for flytekit):
- W1: ``total(xs=map_task(noop)(x=xs))`` with a sync no-op task, for each of ``--sizes``;
- W2: a chain of 50 sync no-op tasks;
- W3: a whole ``python script.py`` process that defines one task and one workflow and runs it
  (a script file, not ``python -c``: flytekit reads each task's source, which ``-c`` has none of).

Systems:
- ``slipstream_local``: calling the ``@workflow`` (``w1(xs=...)``), which runs an ephemeral
  embedded engine (event log in a temporary directory), as a user's first try does;
- ``slipstream_embedded``: ``launch`` and ``outputs`` on an `Engine.embedded` already entered
  (its start-up is ``start_s``, not counted in ``wall_s``); W3 enters and leaves it in the script;
- ``flytekit_local``: calling the flytekit ``@workflow``: flytekit's local mode, which records
  nothing; measured when flytekit is installed (``pip install -e '.[peers]'``), else reported as
  not installed.

Every W1 and W2 figure is measured in a fresh process (the call alone: imports and interpreter
start are W3's business), every W3 figure is a whole process's wall time. Each repeat runs every
workload on every system back to back, the systems' order alternating between repeats, because
this machine is shared and noisy; figures are medians. ``ratio_*`` is Slipstream / flytekit (below
1.0: Slipstream is faster; the issue's target is W1 at 10k and 100k <= 1.0). A flytekit run past
``--flytekit-cap-s`` is killed and its figure skipped, with a note, in every later repeat too.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.map import peak_rss_mib

ROOT = Path(__file__).resolve().parents[1]
SLIPSTREAM = ("slipstream_local", "slipstream_embedded")
FLYTEKIT = "flytekit_local"
TARGETS = {"w1_ratio_at": [10_000, 100_000], "w1_ratio_max": 1.0, "w1_ratio_aim": 0.5}
MARKER = "@@benchmarks.peers@@"
CHILD = "import sys; from benchmarks.peers import child; child(sys.argv[1:])"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks peers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000], help="W1 map sizes")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure, each in a fresh process (median)")
    parser.add_argument("--no-flytekit", action="store_true", help="measure Slipstream only")
    parser.add_argument(
        "--flytekit-cap-s", type=float, default=300.0, help="a flytekit run taking longer is killed and skipped"
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds one Slipstream run may take")
    return parser.parse_args(argv)


def flytekit_version() -> str | None:
    """flytekit's installed version, or ``None`` when it is not installed (it is not imported here)."""
    if importlib.util.find_spec("flytekit") is None:
        return None
    try:
        return importlib.metadata.version("flytekit")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# --- the child process: one W1 or W2 call, figures printed as JSON -----------------------------------


def _expected(workload: str, size: int) -> int:
    # noop is x + 1: W1 sums 1..size, W2 counts the chain's links
    return size * (size + 1) // 2 if workload == "w1" else 50


async def _embedded_call(flows: Any, workload: str, inputs: dict[str, Any]) -> tuple[Any, float, float]:
    from engine import Engine

    with tempfile.TemporaryDirectory(prefix="slipstream-bench-peers-") as state_dir:
        start = time.perf_counter()
        async with Engine.embedded(state_dir=state_dir) as engine:
            start_s = time.perf_counter() - start
            start = time.perf_counter()
            handle = await engine.launch(getattr(flows, workload), **inputs)
            result = await handle.outputs(timeout=3600)
            return result, time.perf_counter() - start, start_s


def child(argv: list[str]) -> None:
    """Entry point of a measuring process: ``child([system, workload, size])`` prints figures as JSON.

    Args:
        argv: the system (``slipstream_local``, ``slipstream_embedded``, ``flytekit_local``), the
            workload (``w1`` or ``w2``) and W1's size.
    """
    system, workload, size = argv[0], argv[1], int(argv[2])
    if system == FLYTEKIT:
        from benchmarks import _peer_workflows_flyte as flows
    else:
        from benchmarks import _peer_workflows as flows  # type: ignore[no-redef]
    inputs: dict[str, Any] = {"xs": list(range(size))} if workload == "w1" else {"x": 0}
    figures: dict[str, Any] = {}
    if system == "slipstream_embedded":
        result, wall, figures["start_s"] = asyncio.run(_embedded_call(flows, workload, inputs))
    else:
        start = time.perf_counter()
        result = getattr(flows, workload)(**inputs)
        wall = time.perf_counter() - start
    if result != _expected(workload, size):
        raise RuntimeError(f"{system} {workload}({size}) returned {result!r}, expected {_expected(workload, size)}")
    figures.update(wall_s=wall, peak_rss_mib=peak_rss_mib())
    print(MARKER + json.dumps(figures), flush=True)


# --- the parent: spawn, interleave, summarise --------------------------------------------------------


def _w3_script(system: str) -> str:
    if system == FLYTEKIT:
        from benchmarks import _peer_workflows_flyte as flyte_flows

        return flyte_flows.W3
    from benchmarks import _peer_workflows as flows

    return flows.W3_LOCAL if system == "slipstream_local" else flows.W3_EMBEDDED


def spawn(system: str, workload: str, size: int, timeout: float, scripts: Path) -> dict[str, Any]:
    """Measure one workload on one system in a fresh process.

    Args:
        system: ``slipstream_local``, ``slipstream_embedded`` or ``flytekit_local``.
        workload: ``w1``, ``w2`` or ``w3``.
        size: W1's elements (ignored otherwise).
        timeout: seconds before the process is killed.
        scripts: the directory holding W3's scripts (``<system>.py``).

    Returns:
        ``wall_s`` and, for W1 and W2, ``peak_rss_mib`` (``start_s`` on the embedded engine); or
        ``{"capped": ...}`` past ``timeout``, ``{"error": ...}`` on a failure.
    """
    if workload == "w3":
        argv, cwd = [sys.executable, str(scripts / f"{system}.py")], scripts
    else:
        argv, cwd = [sys.executable, "-c", CHILD, system, workload, str(size)], ROOT
    start = time.perf_counter()
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"capped": f"{system} {workload} ({size}) took over {timeout:.0f} s: killed, skipped from now on"}
    wall = time.perf_counter() - start
    if done.returncode != 0:
        return {"error": f"{system} {workload} ({size}) exited {done.returncode}: {done.stderr[-2000:]}"}
    if workload == "w3":
        return {"wall_s": wall}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER) :])
    return {"error": f"{system} {workload} ({size}) printed no figures: {done.stdout[-1000:]}"}


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of one system's runs of one workload (errors and caps are reported as such)."""
    good = [run for run in runs if "wall_s" in run]
    figure: dict[str, Any] = {}
    if good:
        figure["wall_s"] = round(statistics.median(run["wall_s"] for run in good), 4)
        figure["wall_s_each"] = [round(run["wall_s"], 4) for run in good]
        for key in ("peak_rss_mib", "start_s"):
            if key in good[0]:
                figure[key] = round(statistics.median(run[key] for run in good), 4)
    for key in ("capped", "error"):
        notes = [run[key] for run in runs if key in run]
        if notes:
            figure[key] = notes[0] if key == "capped" else notes
    return figure


def _ratio(ours: dict[str, Any], theirs: dict[str, Any] | str) -> float | None:
    if isinstance(theirs, str) or "wall_s" not in ours or not theirs.get("wall_s"):
        return None
    return round(ours["wall_s"] / theirs["wall_s"], 3)


def verdict(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """W1's ratios at the target sizes, Slipstream (local and embedded) over flytekit."""
    checks = []
    for row in rows:
        if row["workload"] != "W1" or row["elements"] not in TARGETS["w1_ratio_at"]:
            continue
        for system in SLIPSTREAM:
            ratio = row.get(f"ratio_{system}")
            ok = None if ratio is None else ratio <= TARGETS["w1_ratio_max"]
            checks.append({"figure": f"W1 {row['elements']}", "system": system, "ratio": ratio, "ok": ok})
    return checks


def main(argv: list[str]) -> dict[str, Any]:
    """Run the suite; the returned figures are what ``benchmarks/results/peers.json`` records.

    Args:
        argv: the command-line arguments after ``peers``.

    Returns:
        ``systems`` (versions), ``workloads`` (one row per workload and size, each system's figure
        and the ratios Slipstream / flytekit) and ``verdict``.
    """
    args = parse_args(argv)
    version = None if args.no_flytekit else flytekit_version()
    systems = [*SLIPSTREAM, FLYTEKIT] if version else list(SLIPSTREAM)
    workloads = [("w1", size) for size in args.sizes] + [("w2", 0), ("w3", 0)]
    runs: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="slipstream-bench-peers-w3-") as tmp:
        scripts = Path(tmp)
        for system in systems:
            (scripts / f"{system}.py").write_text(_w3_script(system))
        for repeat in range(args.repeat):
            order = systems if repeat % 2 == 0 else systems[::-1]
            for workload, size in workloads:
                for system in order:
                    key = (workload, size, system)
                    done = runs.setdefault(key, [])
                    if any("capped" in run for run in done):
                        continue
                    timeout = args.flytekit_cap_s if system == FLYTEKIT else args.timeout
                    done.append(spawn(system, workload, size, timeout, scripts))
                    last = done[-1]
                    shown = f"{last['wall_s']:.3f} s" if "wall_s" in last else next(iter(last.values()))[:200]
                    label = f"{workload} {size}" if workload == "w1" else workload
                    print(f"peers {label} {system}: run {repeat + 1}/{args.repeat}: {shown}", file=sys.stderr)
    rows = []
    for workload, size in workloads:
        row: dict[str, Any] = {"workload": workload.upper()}
        if workload == "w1":
            row["elements"] = size
        for system in systems:
            row[system] = summarize(runs[(workload, size, system)])
        if FLYTEKIT not in systems:
            row[FLYTEKIT] = "not installed" if not args.no_flytekit else "not measured (--no-flytekit)"
        for system in SLIPSTREAM:
            row[f"ratio_{system}"] = _ratio(row[system], row[FLYTEKIT])
        rows.append(row)
    return {
        "targets": TARGETS,
        "command": "python -m benchmarks peers " + " ".join(argv),
        "repeat": args.repeat,
        "systems": {
            "slipstream": importlib.metadata.version("slipstream"),
            FLYTEKIT: version or ("not measured (--no-flytekit)" if args.no_flytekit else "not installed"),
        },
        "workloads": rows,
        "verdict": verdict(rows),
    }
