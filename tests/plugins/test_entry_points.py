"""Backends are found by entry point (DESIGN section 8): the built-ins register in the five groups,
and a third-party package that declares its own (tests/plugins/third_party_plugin) is used through
an unchanged `Engine`, by name."""

from __future__ import annotations

import shutil
import sys
import tomllib
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from engine import ConfigError, Engine

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


async def test_a_third_party_executor_and_agent_run_through_an_unchanged_engine(
    third_party_plugin: Path, tmp_path: Path
) -> None:
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
