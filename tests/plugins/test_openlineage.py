"""The OpenLineage sink (plugins/openlineage) with the file transport: RunEvents of real executions,
checked against the RunEvent structure of the OpenLineage 2-0-2 JSON schema (with the datasets and the
facets the sink writes), datasets from the catalog's artifacts, resumed from its cursor, and run
alone as ``slipstream lineage run``."""

from __future__ import annotations

import json
import logging
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

from catalog import SqliteCatalog
from engine import Engine, TaskFailed
from engine._sqlite_store import SqliteEventStore
from engine.interfaces import ServiceContext
from plugins.openlineage import OpenLineageSink, execution_run_id, node_run_id
from tests.catalog import _workflows as cwf
from tests.catalog.conftest import EngineFactory, flushed
from tests.catalog.conftest import backend_kind as backend_kind  # fixtures
from tests.catalog.conftest import make_engine as make_engine
from tests.engine import _workflows as wf

ROOT = Path(__file__).resolve().parents[2]

# The RunEvent of the OpenLineage 2-0-2 spec (https://openlineage.io/spec/2-0-2/OpenLineage.json) and
# of the facets the sink writes (spec/facets/*.json), their required fields and formats, written out
# here from the spec's documentation: no installed package ships the spec's files, and the tests run
# without a network.
_FACET = {
    "type": "object",
    "properties": {"_producer": {"type": "string", "format": "uri"}, "_schemaURL": {"type": "string", "format": "uri"}},
    "required": ["_producer", "_schemaURL"],
}


def _facet(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"allOf": [_FACET, {"type": "object", "properties": properties, "required": required}]}


_TAG = {
    "type": "object",
    "properties": {"key": {"type": "string"}, "value": {"type": "string"}, "source": {"type": "string"}},
    "required": ["key", "value"],
}
_DATASET_FACETS = {
    "type": "object",
    "properties": {
        "version": _facet({"datasetVersion": {"type": "string"}}, ["datasetVersion"]),
        "schema": _facet(
            {
                "fields": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"name": {"type": "string"}, "type": {"type": "string"}},
                        "required": ["name"],
                    },
                }
            },
            [],
        ),
        "tags": _facet({"tags": {"type": "array", "items": _TAG}}, []),
    },
    "additionalProperties": _FACET,
}


def _dataset(extra: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "namespace": {"type": "string"},
            "name": {"type": "string"},
            "facets": _DATASET_FACETS,
            extra: {"type": "object", "additionalProperties": _FACET},
        },
        "required": ["namespace", "name"],
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
        "inputs": {"type": "array", "items": _dataset("inputFacets")},
        "outputs": {"type": "array", "items": _dataset("outputFacets")},
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
    good = {
        "eventTime": "2026-12-04T00:00:00+00:00",
        "producer": "urn:slipstream:test",
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
        "run": {"runId": "6f1c2a6e-3b1d-5e0a-9a61-5c1b0f3a7d42"},
        "job": {"namespace": "a.b", "name": "wf.node"},
        "outputs": [
            {"namespace": "a.b", "name": "t", "facets": {"version": {"_producer": "urn:x", "_schemaURL": "urn:y"}}}
        ],
    }
    with pytest.raises(jsonschema.ValidationError, match="datasetVersion"):
        _VALIDATOR.validate(good)  # a version facet without its version


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


async def test_an_event_that_can_never_be_read_is_skipped_with_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A corrupt payload (its execution is quarantined) does not stop the sink for good: it moves
    past it, saying so once, and emits what comes after."""
    from tests.engine.test_tamper import Target

    caplog.set_level(logging.ERROR, logger="slipstream.openlineage")
    target = Target("sqlite", tmp_path / "state", None)
    async with Engine.embedded(tmp_path / "state") as eng:
        first = await eng.launch(wf.diamond, x=1)
        await first.outputs(timeout=30)
        second = await eng.launch(wf.diamond, x=2)
        await second.outputs(timeout=30)
    await target.rewrite(first.execution_id, 3, payload=b"\xc1")
    path = tmp_path / "lineage.jsonl"
    sink = OpenLineageSink(f"file:{path}")
    async with Engine.embedded(tmp_path / "state", services=[sink]):
        run = execution_run_id(second.execution_id)
        events = await wait_for_events(
            path, lambda evs: any(e["run"]["runId"] == run and e["eventType"] == "COMPLETE" for e in evs)
        )
        assert sink.health().ok, sink.health()
    assert execution_run_id(first.execution_id) in {e["run"]["runId"] for e in events}
    said = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
    assert len(said) == 1 and "the event at seq 3" in said[0] and "corrupt event log at version 3" in said[0], said


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


def _datasets(events: list[dict[str, Any]], job: str, side: str) -> list[dict[str, Any]]:
    (complete,) = [e for e in events if e["job"]["name"] == job and e["eventType"] == "COMPLETE"]
    return complete[side]


def _versions(datasets: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(d["name"], d["facets"]["version"]["datasetVersion"]) for d in datasets}


async def test_node_runs_list_the_catalog_artifacts_they_consumed_and_produced(
    make_engine: EngineFactory, tmp_path: Path
) -> None:
    path = tmp_path / "lineage.jsonl"
    async with make_engine(services=[OpenLineageSink(f"file:{path}")]) as eng:
        pipeline = await eng.launch(cwf.pipeline_wf, project="ml", domain="staging", n=4)
        await pipeline.outputs(timeout=30)
        published = await eng.launch(cwf.publish_wf, project="ml", domain="staging", region="eu", n=3)
        await published.outputs(timeout=30)
        await flushed(eng)  # the publication, before a launch asks for it
        consumer = await eng.launch(cwf.consume_wf, project="ml", domain="staging")
        assert await consumer.outputs(timeout=30) == 3
        done = {execution_run_id(h.execution_id) for h in (pipeline, published, consumer)}
        events = await wait_for_events(
            path, lambda evs: done <= {e["run"]["runId"] for e in evs if e["eventType"] == "COMPLETE"}
        )
        assert eng.catalog is not None
        catalog = eng.catalog

        async def artifact_of(execution_id: str, node_id: str) -> tuple[str, str]:
            (edge,) = [
                e for e in await catalog.edges(execution_id=execution_id, node_id=node_id) if e.direction == "out"
            ]
            artifact = await catalog.get(edge.artifact)
            assert artifact is not None
            return artifact.dataset.name, artifact.id

        load = await artifact_of(pipeline.execution_id, "load")
        featurize = await artifact_of(pipeline.execution_id, "featurize")
        fit = await artifact_of(pipeline.execution_id, "fit")
        features = await artifact_of(published.execution_id, "make_features")
    for event in events:
        _VALIDATOR.validate(event)
    # cached tasks produce their artifact and read their cached upstream's
    assert _versions(_datasets(events, "pipeline_wf.load", "outputs")) == {load}
    assert _versions(_datasets(events, "pipeline_wf.load", "inputs")) == set()
    assert _versions(_datasets(events, "pipeline_wf.featurize", "inputs")) == {load}
    assert _versions(_datasets(events, "pipeline_wf.featurize", "outputs")) == {featurize}
    assert _versions(_datasets(events, "pipeline_wf.fit", "inputs")) == {featurize}
    assert _versions(_datasets(events, "pipeline_wf.fit", "outputs")) == {fit}
    # a task that is not cached still names the cached artifact it read, and produces none
    assert _versions(_datasets(events, "pipeline_wf.count", "inputs")) == {load}
    assert _datasets(events, "pipeline_wf.count", "outputs") == []
    (output,) = _datasets(events, "pipeline_wf.load", "outputs")
    assert output["namespace"] == "ml.staging"
    assert [f["name"] for f in output["facets"]["schema"]["fields"]] == ["o0"]
    # a published artifact carries its name and partitions; a launch input taken from it is an input
    (made,) = _datasets(events, "publish_wf.make_features", "outputs")
    tags = {(t["key"], t["value"]) for t in made["facets"]["tags"]["tags"]}
    assert {("name", "features"), ("partition.region", "eu")} <= tags
    assert _versions(_datasets(events, "consume_wf.summarize", "inputs")) == {features}
    # START events name no datasets: the catalog records them when the run succeeded
    assert all(not e["inputs"] and not e["outputs"] for e in events if e["eventType"] == "START")


async def test_a_catalog_without_the_artifacts_is_waited_for_once_per_execution(tmp_path: Path) -> None:
    async with Engine.embedded(tmp_path / "state") as eng:
        first = await eng.launch(cwf.pipeline_wf, n=2)
        second = await eng.launch(cwf.pipeline_wf, n=3)
        await first.outputs(timeout=30)
        await second.outputs(timeout=30)
    # a sink reading another (empty) catalog: the edges the fold expects never come
    path = tmp_path / "lineage.jsonl"
    sink = OpenLineageSink(f"file:{path}", lineage_wait=0.2)
    store = SqliteEventStore(tmp_path / "state" / "events.db")
    async with store, SqliteCatalog(tmp_path / "empty-catalog.db") as empty:
        asked: list[str] = []
        edges = empty.edges

        async def counted(**where: Any) -> Any:
            asked.append(where["execution_id"])
            return await edges(**where)

        empty.edges = counted  # type: ignore[method-assign]
        await sink.start(ServiceContext(store=store, wake=lambda _: None, catalog=empty))
        while await sink.step(wait=False):
            pass
        await sink.stop()
    events = read_events(path)
    done = {execution_run_id(first.execution_id), execution_run_id(second.execution_id)}
    assert done <= {e["run"]["runId"] for e in events if e["eventType"] == "COMPLETE"}
    assert all(not e["inputs"] and not e["outputs"] for e in events)
    # one wait (several reads) for the first expected run of each execution, one read for each other run
    runs = len([e for e in events if e["eventType"] == "COMPLETE" and _parent(e)])
    assert runs == 8
    assert len(asked) < runs + 2 * 8  # 0.2 s of back-off from 20 ms is at most 5 reads per wait
    assert set(asked) == {first.execution_id, second.execution_id}


def test_the_facade_exports_the_mapper_and_the_types_of_its_signature() -> None:
    import plugins.openlineage as facade
    from plugins.openlineage import _mapping

    assert facade.__all__ == [
        "RUN_ID_NAMESPACE",
        "LineageMapper",
        "LineageWanted",
        "NatsConfig",
        "NatsTransport",
        "OpenLineageSink",
        "RunLineage",
        "client_for",
        "execution_run_id",
        "node_run_id",
    ]
    assert all(getattr(facade, name) is not None for name in facade.__all__)
    # what map(event, lineage=) and lineage_wanted exchange is nameable from the facade
    assert (facade.RunLineage, facade.LineageWanted) == (_mapping.RunLineage, _mapping.LineageWanted)
