"""Backends are found by entry point (DESIGN section 8): the built-ins register in the five groups,
and a third-party package that declares its own (tests/plugins/third_party_plugin) is used through
an unchanged `Engine`, by name."""

from __future__ import annotations

import json
import shutil
import sys
import tomllib
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from engine import ConfigError, Engine
from engine._wiring import backend
from tests.engine.conftest import wait_until

from . import _third_party_tasks as wf

PLUGIN = Path(__file__).parent / "third_party_plugin"
GROUPS = (
    "slipstream.executors",
    "slipstream.stores",
    "slipstream.blobstores",
    "slipstream.agents",
    "slipstream.event_sinks",
)


def install(project: Path, site: Path) -> None:
    """What ``pip install`` leaves for a pure-Python package: its modules and a dist-info whose
    ``entry_points.txt`` comes from the project's ``[project.entry-points]`` (no build, no network)."""
    meta = tomllib.loads((project / "pyproject.toml").read_text())
    name, version = meta["project"]["name"], meta["project"]["version"]
    for package in meta["tool"]["setuptools"]["packages"]:
        shutil.copytree(project / package, site / package)
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    sections = [
        f"[{group}]\n" + "".join(f"{key} = {value}\n" for key, value in points.items())
        for group, points in meta["project"]["entry-points"].items()
    ]
    (info / "entry_points.txt").write_text("\n".join(sections))


@pytest.fixture
def third_party_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    site = tmp_path / "site-packages"
    site.mkdir()
    install(PLUGIN, site)
    monkeypatch.syspath_prepend(str(site))
    yield site
    for module in [m for m in sys.modules if m == "slipstream_thirdparty" or m.startswith("slipstream_thirdparty.")]:
        del sys.modules[module]


def installed(group: str) -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=group)}


def test_the_built_in_backends_register_through_the_groups() -> None:
    assert {"sqlite", "postgres"} <= installed("slipstream.stores").keys()
    assert {"local", "agents"} <= installed("slipstream.executors").keys()
    assert {"local", "fsspec"} <= installed("slipstream.blobstores").keys()
    assert {"shell", "file_sensor"} <= installed("slipstream.agents").keys()
    assert "openlineage" in installed("slipstream.event_sinks")
    for group in GROUPS:  # every one loads (what Engine does with a name)
        for point in entry_points(group=group):
            if point.name != "ray" or _has("ray"):
                assert point.load() is not None


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def test_a_backend_that_is_not_installed_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no backend named 'inline' in entry-point group 'slipstream\.executors'"):
        Engine.embedded(tmp_path, executors=["local", "inline"])
    with pytest.raises(ConfigError, match=r"no backend named 'scratch' in entry-point group 'slipstream\.stores'"):
        Engine.embedded(tmp_path, store="scratch")
    with pytest.raises(ConfigError, match=r"no backend named 'scratch' in entry-point group 'slipstream\.stores'"):
        Engine.connect("postgresql://127.0.0.1/none", executor="local", store="scratch")
    with pytest.raises(ConfigError, match=r"executor 'agents' takes no option\(s\) \['mode'\]"):
        Engine.embedded(tmp_path, executors=["local", "agents"], executor_options={"mode": "process"})


async def test_a_third_party_executor_and_agent_run_through_an_unchanged_engine(
    third_party_plugin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLIPSTREAM_STATE_DIR", str(tmp_path))  # where the countdown agent keeps its jobs
    assert installed("slipstream.executors")["inline"] == "slipstream_thirdparty:InlineExecutor"
    assert installed("slipstream.agents")["countdown"] == "slipstream_thirdparty:CountdownAgent"
    async with Engine.embedded(tmp_path, executor="inline", executors=["inline", "agents"]) as eng:
        inline = eng.executors["inline"]
        assert type(inline).__module__ == "slipstream_thirdparty"
        handle = await eng.launch(wf.pipeline, x=3)
        assert await handle.outputs(timeout=30) == 2 * (3 * 3 + 1)
        history = await eng.history(handle.execution_id)
    ran = {e.node_id: e.executor for e in history if type(e).__name__ == "NodeRunning"}
    assert ran == {"square": "inline", "plus_one": "inline", "doubled": "agents"}
    assert sorted(key.node_id for key in inline.submitted) == ["plus_one", "square"]  # type: ignore[attr-defined]
    assert len(list((tmp_path / "agents" / "countdown").iterdir())) == 1  # one job, by the plugin's agent


async def test_a_third_party_store_and_blob_store_are_chosen_by_name(third_party_plugin: Path, tmp_path: Path) -> None:
    engine = Engine.embedded(tmp_path, store="scratch", blobs="scratch://demo", executor="inline", inline_limit=16)
    assert type(engine.store).__name__ == "ScratchEventStore" and engine.store.name.startswith("scratch:")
    assert type(engine.blobs).__name__ == "ScratchBlobStore"
    async with engine as eng:
        handle = await eng.launch(wf.shout_back, text="x" * 100)  # above the inline limit: offloaded
        assert await handle.outputs(timeout=30) == "X" * 100
    assert engine.blobs.blobs  # type: ignore[union-attr]
    assert not (tmp_path / "events.db").exists() and not (tmp_path / "blobs").exists()


async def test_a_third_party_event_sink_is_found_by_name_and_resumes_from_its_cursor(
    third_party_plugin: Path, tmp_path: Path
) -> None:
    written = tmp_path / "events.jsonl"

    def lines() -> list[dict[str, object]]:
        return [json.loads(line) for line in written.read_text().splitlines()] if written.exists() else []

    executions = []
    for text in ("hey", "you"):  # a second engine, with a fresh sink, goes on from the cursor
        sink = backend("slipstream.event_sinks", "jsonl")(str(written))
        async with Engine.embedded(tmp_path, executor="inline", services=[sink]) as eng:
            handle = await eng.launch(wf.shout_back, text=text)
            assert await handle.outputs(timeout=30) == text.upper()
            executions.append(handle.execution_id)
            await wait_until(lambda: sum(line["kind"] == "ExecutionSucceeded" for line in lines()) == len(executions))
            assert eng.health()["jsonl"].ok
            expected = [e for eid in executions for e in await eng.history(eid)]
    assert [(line["execution_id"], line["version"]) for line in lines()] == [
        (e.execution_id, e.version) for e in expected
    ]  # each event once, in commit order
