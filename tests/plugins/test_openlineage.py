"""The OpenLineage sink (plugins/openlineage) with the file transport: RunEvents of real executions,
checked against the RunEvent structure of the OpenLineage 2-0-2 JSON schema, resumed from its cursor,
and run alone as ``slipstream lineage run``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import jsonschema
import pytest

from engine import Engine, TaskFailed
from plugins.openlineage import OpenLineageSink, execution_run_id, node_run_id
from tests.engine import _workflows as wf

ROOT = Path(__file__).resolve().parents[2]

# The RunEvent of the OpenLineage 2-0-2 spec (https://openlineage.io/spec/2-0-2/OpenLineage.json), its
# required fields and formats, written out here: the tests run without a network.
_FACET = {
    "type": "object",
    "properties": {"_producer": {"type": "string", "format": "uri"}, "_schemaURL": {"type": "string", "format": "uri"}},
    "required": ["_producer", "_schemaURL"],
}
RUN_EVENT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "eventType": {"enum": ["START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"]},
        "eventTime": {"type": "string", "format": "date-time"},
        "producer": {"type": "string", "format": "uri"},
        "schemaURL": {"type": "string", "format": "uri"},
        "run": {
            "type": "object",
            "properties": {
                "runId": {"type": "string", "format": "uuid"},
                "facets": {"type": "object", "additionalProperties": _FACET},
            },
            "required": ["runId"],
        },
        "job": {
            "type": "object",
            "properties": {
                "namespace": {"type": "string"},
                "name": {"type": "string"},
                "facets": {"type": "object", "additionalProperties": _FACET},
            },
            "required": ["namespace", "name"],
        },
        "inputs": {"type": "array", "items": {"type": "object", "required": ["namespace", "name"]}},
        "outputs": {"type": "array", "items": {"type": "object", "required": ["namespace", "name"]}},
    },
    "required": ["eventTime", "producer", "schemaURL", "run", "job"],
}
_VALIDATOR = jsonschema.Draft202012Validator(
    RUN_EVENT_SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
)


def read_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def wait_for_events(path: Path, done: Any, timeout: float = 30) -> list[dict[str, Any]]:
    with anyio.fail_after(timeout):
        while not done(events := read_events(path)):  # noqa: ASYNC110 - polled: the file is the interface
            await anyio.sleep(0.05)
    return events


def _parent(event: dict[str, Any]) -> str | None:
    return event["run"].get("facets", {}).get("parent", {}).get("run", {}).get("runId")


def test_the_schema_catches_a_broken_run_event() -> None:
    with pytest.raises(jsonschema.ValidationError):
        _VALIDATOR.validate({"eventTime": "now", "producer": "x", "run": {"runId": "not-a-uuid"}, "job": {}})


async def test_node_runs_become_valid_run_events_in_a_file(tmp_path: Path) -> None:
    path = tmp_path / "lineage.jsonl"
    sink = OpenLineageSink(f"file:{path}")
    async with Engine.embedded(tmp_path / "state", services=[sink], retry_delay=0.05) as eng:
        good = await eng.launch(wf.diamond, project="ml", domain="staging", x=3)
        assert await good.outputs(timeout=30) == 16
        bad = await eng.launch(wf.retries_exhausted, project="ml", domain="staging", x=1)
        with pytest.raises(TaskFailed):
            await bad.outputs(timeout=30)
        finished = {execution_run_id(good.execution_id), execution_run_id(bad.execution_id)}
        events = await wait_for_events(
            path, lambda evs: finished <= {e["run"]["runId"] for e in evs if e["eventType"] in ("COMPLETE", "FAIL")}
        )
    for event in events:
        _VALIDATOR.validate(event)
    assert {e["job"]["namespace"] for e in events} == {"ml.staging"}
    by_run: dict[str, list[str]] = {}
    for event in events:
        by_run.setdefault(event["run"]["runId"], []).append(event["eventType"])
    # every run starts once and ends once
    for run_id, types in by_run.items():
        assert types[0] == "START" and Counter(types)["START"] == 1, (run_id, types)
        assert len(types) == 2 and types[1] in ("COMPLETE", "FAIL"), (run_id, types)
    assert by_run[execution_run_id(good.execution_id)] == ["START", "COMPLETE"]
    assert by_run[execution_run_id(bad.execution_id)] == ["START", "FAIL"]
    good_run = execution_run_id(good.execution_id)
    good_nodes = {e["job"]["name"] for e in events if _parent(e) == good_run}
    assert good_nodes == {"diamond.add", "diamond.double", "diamond.double-2", "diamond.add-2"}
    failed = [e for e in events if e["eventType"] == "FAIL" and e["run"]["runId"] != execution_run_id(bad.execution_id)]
    assert failed, "the failed attempts have FAIL events"
    assert all(e["run"]["facets"].get("errorMessage") for e in failed)
    assert node_run_id(bad.execution_id, failed[0]["job"]["name"].rsplit(".", 1)[-1], 1) in {
        e["run"]["runId"] for e in failed
    }


async def test_a_sink_resumes_from_its_cursor(tmp_path: Path) -> None:
    path = tmp_path / "lineage.jsonl"
    async with Engine.embedded(tmp_path / "state", services=[OpenLineageSink(f"file:{path}")]) as eng:
        handle = await eng.launch(wf.diamond, x=1)
        await handle.outputs(timeout=30)
        run = execution_run_id(handle.execution_id)
        before = await wait_for_events(
            path, lambda evs: any(e["run"]["runId"] == run and e["eventType"] == "COMPLETE" for e in evs)
        )
    # the same durable name: nothing is emitted twice; another execution's events follow
    async with Engine.embedded(tmp_path / "state", services=[OpenLineageSink(f"file:{path}")]) as eng:
        second = await eng.launch(wf.diamond, x=2)
        await second.outputs(timeout=30)
        run = execution_run_id(second.execution_id)
        after = await wait_for_events(
            path, lambda evs: any(e["run"]["runId"] == run and e["eventType"] == "COMPLETE" for e in evs)
        )
    assert after[: len(before)] == before
    ids = [(e["run"]["runId"], e["eventType"]) for e in after]
    assert len(ids) == len(set(ids)), "an event was emitted twice"


def _lineage_run(state_dir: Path, path: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLIPSTREAM_")}
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from engine._cli import main; main()",
            "lineage",
            "run",
            "--transport",
            f"file:{path}",
            "--state-dir",
            str(state_dir),
        ],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_lineage_run_alone_follows_the_log_and_stops_on_sigterm(tmp_path: Path) -> None:
    state, path = tmp_path / "state", tmp_path / "lineage.jsonl"
    async with Engine.embedded(state) as eng:
        handle = await eng.launch(wf.diamond, x=1)
        await handle.outputs(timeout=30)
    process = _lineage_run(state, path)
    try:
        run = execution_run_id(handle.execution_id)
        events = await wait_for_events(
            path, lambda evs: any(e["run"]["runId"] == run and e["eventType"] == "COMPLETE" for e in evs)
        )
        for event in events:
            _VALIDATOR.validate(event)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, stderr = await anyio.to_thread.run_sync(lambda: process.communicate(timeout=20))
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert time.monotonic() - started < 10
    assert "Traceback" not in stderr
