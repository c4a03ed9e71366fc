"""``python -m benchmarks <suite> [options]``: run one benchmark suite and record its figures.

A suite is the module ``benchmarks.<suite>`` with a ``main`` taking the remaining command-line
arguments (a list of strings): either ``async def main(argv) -> dict`` or ``def main(argv)``
returning a dict or ``None``. A returned dict is written to ``benchmarks/results/<suite>.json``
(with machine info and a timestamp) and printed. ``python -m benchmarks`` lists the suites.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import pkgutil
import sys
from pathlib import Path
from typing import Any

from benchmarks._common import write_results


def suites() -> list[str]:
    """The names of the benchmark suites in this package (modules not starting with ``_``)."""
    here = Path(__file__).resolve().parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_"))


def run(argv: list[str]) -> int:
    """Run the suite named by ``argv[0]`` with the rest of ``argv``; return the exit status.

    Args:
        argv: ``[suite, *suite_arguments]``.

    Returns:
        0 on success, 2 on a usage error.
    """
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        print("\nsuites: " + ", ".join(suites()))
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if not name.isidentifier() or name.startswith("_"):
        print(f"unknown benchmark suite {name!r}; suites: {', '.join(suites())}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(f"benchmarks.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"benchmarks.{name}":
            raise
        print(f"unknown benchmark suite {name!r}; suites: {', '.join(suites())}", file=sys.stderr)
        return 2
    main = getattr(module, "main", None)
    if main is None:
        print(f"benchmarks.{name} has no main(argv)", file=sys.stderr)
        return 2
    result: Any = asyncio.run(main(rest)) if inspect.iscoroutinefunction(main) else main(rest)
    if isinstance(result, dict):
        path = write_results(name, result)
        print(json.dumps(result, indent=2, default=str))
        print(f"results written to {path}", file=sys.stderr)
    elif isinstance(result, int):
        return result
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
