"""Helpers every benchmark suite shares: machine description and the results file."""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["RESULTS_DIR", "drop_schema", "machine_info", "rate_summary", "write_results"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def machine_info() -> dict[str, Any]:
    """What the figures were measured on: host, CPU, memory, Python, platform, git commit."""
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "git_commit": _git_commit(),
    }


def rate_summary(events: int, seconds: Sequence[float]) -> dict[str, float]:
    """Events per second of repeated runs of ``events`` events: median, best and worst run.

    Args:
        events: events handled by each run.
        seconds: wall time of each run.

    Returns:
        ``median``, ``best`` and ``worst`` events/s, rounded.
    """
    rates = [events / s for s in seconds if s > 0]
    if not rates:
        return {"median": 0.0, "best": 0.0, "worst": 0.0}
    return {
        "median": round(statistics.median(rates), 1),
        "best": round(max(rates), 1),
        "worst": round(min(rates), 1),
    }


def write_results(suite: str, figures: dict[str, Any], directory: Path | None = None) -> Path:
    """Write ``benchmarks/results/<suite>.json`` with machine info, a timestamp and ``figures``.

    Args:
        suite: the suite's name (the file name).
        figures: what the suite measured (JSON-serialisable).
        directory: where to write; ``benchmarks/results`` by default.

    Returns:
        The path written.
    """
    out_dir = directory or RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{suite}.json"
    document = {
        "suite": suite,
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "figures": figures,
    }
    path.write_text(json.dumps(document, indent=2, sort_keys=False, default=str) + "\n")
    return path


async def drop_schema(dsn: str, schema: str) -> None:
    """Remove a schema a benchmark's Postgres store or catalog made."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()
