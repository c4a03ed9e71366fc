"""`slipstream serve` runs what client engines (run_loop=False) launch, on both stores."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from engine import Engine
from plugins.local import LocalExecutor

from . import _workflows as wf

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def store_args(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> list[str]:
    if store_kind == "sqlite":
        return ["--state-dir", str(tmp_path / "state")]
    return ["--postgres", request.getfixturevalue("postgres_database")]


def client(store_args: list[str]) -> Engine:
    flag, value = store_args
    options = {"run_loop": False}
    if flag == "--postgres":
        return Engine.connect(postgres=value, **options)
    return Engine.embedded(value, **options)


def start_server(store_args: list[str]) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLIPSTREAM_")}
    return subprocess.Popen(
        [sys.executable, "-c", "from engine._cli import main; main()", "serve", *store_args, "--path", str(ROOT)],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_serve_runs_what_a_client_launches(store_args: list[str]) -> None:
    server = start_server(store_args)
    try:
        async with client(store_args) as eng:
            assert eng.executors  # configured, but this engine runs no loop
            first = await eng.launch(wf.diamond, x=3)
            second = await eng.launch(wf.foreach_join, n=4)
            assert await first.outputs(timeout=60) == 16
            assert await second.outputs(timeout=60) == sum(i * i for i in range(4))
    finally:
        server.send_signal(signal.SIGINT)
        _, stderr = server.communicate(timeout=30)
    assert "serving executions" in stderr
    assert "Traceback" not in stderr


async def test_a_client_engine_runs_nothing_itself(tmp_path: Path) -> None:
    async with Engine.embedded(tmp_path, run_loop=False) as eng:
        handle = await eng.launch(wf.diamond, x=1)
        assert (await eng.get(handle.execution_id)).status == "created"
    async with Engine(eng.store, {"local": LocalExecutor()}) as runner:  # a serving engine picks it up
        assert await runner.handle(handle.execution_id).outputs(timeout=30) == 8
