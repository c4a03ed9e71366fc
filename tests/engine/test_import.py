"""Importing ``engine`` stays fast and pulls in no backend (DESIGN section 2)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_sdk_imports_no_backend() -> None:
    code = (
        "import sys, engine, engine._task, engine._workflow, engine._map, engine.runtime;"
        "from engine import task, workflow, dynamic, map_task, File, Dir, Promise;"
        "print(sorted(m for m in ('ray', 'asyncpg', 'nats') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT, timeout=60)
    assert out.stdout.strip() == "[]"


def test_import_engine_is_fast() -> None:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import engine"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=60,
    )
    # lines look like: "import time:  self [us] | cumulative | imported package"
    cumulative = [
        int(m.group(1)) for m in re.finditer(r"import time:\s+\d+ \|\s+(\d+) \| engine\s*$", out.stderr, re.MULTILINE)
    ]
    assert cumulative, out.stderr[-2000:]
    assert cumulative[0] < 200_000, f"import engine took {cumulative[0] / 1e6:.3f} s"


def test_the_loop_and_the_embedded_engine_import_no_server_client() -> None:
    """propeller, catalog and plugins, and an embedded engine (SQLite, local executor) need none of
    Ray, asyncpg or nats: a user without those servers can run workflows."""
    code = (
        "import sys, tempfile, propeller, catalog, plugins, plugins.local, engine._engine, engine._sqlite_store;"
        "from engine import Engine;"
        "Engine.embedded(tempfile.mkdtemp());"
        "print(sorted(m for m in ('ray', 'asyncpg', 'nats') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT, timeout=60)
    assert out.stdout.strip() == "[]"
