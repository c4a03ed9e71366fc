"""End to end through `Engine`: the control loop, the local executor and both event stores."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import Engine, ExecutionAborted, ExecutionNotFound, TaskFailed, TypeMismatch, UnknownInput
from engine.events import ElementsReused, NodeRecovered, NodeSucceeded
from engine.state import SUCCEEDED

from . import _workflows as wf
from .conftest import EngineFactory, runs, wait_until


def kinds(events: list) -> list[str]:
    return [type(e).__name__ for e in events]


def assert_log_is_sane(events: list) -> None:
    """Versions 1..n without gaps; no node succeeded twice."""
    assert [e.version for e in events] == list(range(1, len(events) + 1))
    succeeded = [e.node_id for e in events if isinstance(e, NodeSucceeded)]
    assert len(succeeded) == len(set(succeeded)), "duplicate NodeSucceeded"


async def test_diamond(eng: Engine) -> None:
    handle = await eng.launch(wf.diamond, x=3)
    assert await handle.outputs(timeout=30) == 16
    history = await eng.history(handle.execution_id)
    assert_log_is_sane(history)
    assert kinds(history)[:2] == ["ExecutionCreated", "ExecutionStarted"]
    assert kinds(history)[-1] == "ExecutionSucceeded"


async def test_foreach_and_join(eng: Engine) -> None:
    handle = await eng.launch(wf.foreach_join, n=6)
    assert await handle.outputs(timeout=30) == sum(i * i for i in range(6))
    details = await eng.get(handle.execution_id)
    assert {n.node_id for n in details.nodes} >= {"squares", "squares/total"}


async def test_nested_dynamic(eng: Engine) -> None:
    handle = await eng.launch(wf.nested, n=3)
    assert await handle.outputs(timeout=30) == sum(k * k + (k + 1) ** 2 for k in range(3))
    history = await eng.history(handle.execution_id)
    expanded = [e.node_id for e in history if type(e).__name__ == "DynamicExpanded"]
    assert "outer" in expanded and "outer/inner-2" in expanded


async def test_map_min_success_ratio_tolerates_one_failure(eng: Engine) -> None:
    handle = await eng.launch(wf.tolerant_map, xs=list(range(10)))
    values = await handle.outputs(timeout=30)
    assert values[3] is None
    assert values[:3] == [100, 101, 102] and values[9] == 109


async def test_map_without_tolerance_fails(eng: Engine) -> None:
    handle = await eng.launch(wf.strict_map, xs=list(range(10)))
    with pytest.raises(TaskFailed) as failure:
        await handle.outputs(timeout=30)
    assert failure.value.node_id == "map_picky"
    assert "element 3 is bad" in str(failure.value)


async def test_fail_fast_stops_the_execution(eng: Engine, side_effects: Path) -> None:
    handle = await eng.launch(wf.fail_fast_wf)
    with pytest.raises(TaskFailed) as failure:
        await handle.outputs(timeout=30)
    assert failure.value.node_id == "explode"
    assert "exploded on purpose" in failure.value.remote_traceback
    details = await eng.get(handle.execution_id)
    assert {n.node_id: n.phase for n in details.nodes}["add"] == "waiting"


async def test_finish_executable_runs_independent_branches(eng: Engine, side_effects: Path) -> None:
    handle = await eng.launch(wf.finish_executable_wf)
    with pytest.raises(TaskFailed):
        await handle.outputs(timeout=30)
    phases = {n.node_id: n.phase for n in (await eng.get(handle.execution_id)).nodes}
    assert phases == {"explode": "failed", "slow_ok": "succeeded", "double": "succeeded", "add": "skipped"}
    assert runs(side_effects, "slow_ok", handle.execution_id) == 1


async def test_user_retries_count_attempts(eng: Engine, side_effects: Path) -> None:
    handle = await eng.launch(wf.retrying, x=7)
    assert await handle.outputs(timeout=30) == 7
    assert runs(side_effects, "flaky", handle.execution_id) == 3  # one run per attempt
    history = await eng.history(handle.execution_id)
    assert [e.attempt for e in history if type(e).__name__ == "NodeQueued"] == [1, 2, 3]
    assert kinds(history).count("NodeFailed") == 2


async def test_retries_exhausted_fails_with_traceback(eng: Engine) -> None:
    handle = await eng.launch(wf.retries_exhausted)
    with pytest.raises(TaskFailed) as failure:
        await handle.outputs(timeout=30)
    assert failure.value.node_id == "always_fails"
    assert 'raise ValueError("nope")' in failure.value.remote_traceback
    history = await eng.history(handle.execution_id)
    assert kinds(history).count("NodeQueued") == 2  # retries=1: two attempts


async def test_timeout_fails_each_attempt_then_the_execution(eng: Engine) -> None:
    handle = await eng.launch(wf.timing_out, seconds=30.0)
    with pytest.raises(TaskFailed) as failure:
        await handle.outputs(timeout=30)
    assert failure.value.error_kind == "timeout"
    history = await eng.history(handle.execution_id)
    timeouts = [e for e in history if type(e).__name__ == "NodeFailed" and e.error.kind == "timeout"]
    assert [e.attempt for e in timeouts] == [1, 2]


async def test_timeout_not_reached(eng: Engine) -> None:
    handle = await eng.launch(wf.timing_out, seconds=0.01)
    assert await handle.outputs(timeout=30) == 0.01


async def test_abort_cancels_running_attempt(eng: Engine, side_effects: Path) -> None:
    handle = await eng.launch(wf.abortable)
    await wait_until(lambda: runs(side_effects, "wait_forever_started") >= 1)
    await eng.abort(handle.execution_id, reason="test says stop")
    with pytest.raises(ExecutionAborted, match="test says stop"):
        await handle.outputs(timeout=10)
    await wait_until(lambda: runs(side_effects, "wait_forever_cancelled") >= 1)
    await eng.abort(handle.execution_id)  # aborting a finished execution is a no-op
    assert kinds(await eng.history(handle.execution_id))[-1] == "ExecutionAborted"


# task side-effect log name -> the node that runs it in `recoverable`
RECOVERABLE_NODES = {
    "counted_100": "counted",
    "counted_0": "fan/counted",
    "counted_1": "fan/counted-2",
    "counted_2": "fan/counted-3",
    **{f"element_{i}": f"map_element/{i}" for i in range(4)},
}


async def test_recover_reruns_only_what_failed(eng: Engine, side_effects: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    first = await eng.launch(wf.recoverable, n=3, marker=str(marker))
    with pytest.raises(TaskFailed):
        await first.outputs(timeout=30)
    source = await eng._state(first.execution_id)
    succeeded = {node_id for node_id, node in source.nodes.items() if node.phase == "succeeded"}
    elements = source.arrays["map_element"]  # map elements live in compact arrays, not nodes
    succeeded |= {f"map_element/{i}" for i in range(elements.size) if elements.phases[i] == SUCCEEDED}
    marker.touch()
    second = await eng.recover(first.execution_id)
    assert await second.outputs(timeout=30) == 100 + (0 + 1 + 2) + (0 + 10 + 20 + 30)
    history = await eng.history(second.execution_id)
    assert_log_is_sane(history)
    recovered = {e.node_id for e in history if isinstance(e, NodeRecovered)}
    recovered |= {f"{e.node_id}/{r.index}" for e in history if isinstance(e, ElementsReused) for r in e.results}
    # every node that succeeded before, dynamic children and map elements included, was recovered
    # (or sits under a recovered ancestor) and its task did not run again in the new execution
    for node_id in succeeded:
        assert any(node_id == r or node_id.startswith(r + "/") for r in recovered), node_id
    for name, node_id in RECOVERABLE_NODES.items():
        if node_id in succeeded:
            assert runs(side_effects, name, second.execution_id) == 0, f"{node_id} ran again"
    assert {"counted", "fan/counted", "map_element/0", "map_element/3"} <= recovered
    assert "map_element/2" not in recovered and "fan/gate" not in recovered
    summary = (await eng.list_executions(limit=1))[0]
    assert summary.execution_id == second.execution_id and summary.parent == first.execution_id


async def test_bad_inputs_are_rejected_before_anything_is_written(eng: Engine) -> None:
    with pytest.raises(TypeMismatch, match="x"):
        await eng.launch(wf.diamond, x="three")
    with pytest.raises(UnknownInput, match="nope"):
        await eng.launch(wf.diamond, nope=1)
    assert await eng.list_executions() == []


async def test_unknown_execution_raises(eng: Engine) -> None:
    for call in (eng.get, eng.history, eng.abort, eng.recover):
        with pytest.raises(ExecutionNotFound, match="missing-id"):
            await call("missing-id")


async def test_list_executions_filters(eng: Engine) -> None:
    first = await eng.launch(wf.diamond, project="alpha", x=1)
    second = await eng.launch(wf.foreach_join, project="beta", n=2)
    await first.wait(timeout=30)
    await second.wait(timeout=30)
    alpha = await eng.list_executions(project="alpha")
    assert [s.execution_id for s in alpha] == [first.execution_id]
    assert alpha[0].workflow == wf.diamond.spec.name and alpha[0].status == "succeeded"
    assert {s.execution_id for s in await eng.list_executions(status="succeeded")} == {
        first.execution_id,
        second.execution_id,
    }


async def test_reopened_engine_resumes_unfinished_executions(make_engine: EngineFactory, side_effects: Path) -> None:
    async with make_engine() as first:
        handle = await first.launch(wf.abortable)
        await wait_until(lambda: runs(side_effects, "wait_forever_started") >= 1)
    # the first engine stopped mid-attempt: its start was durable, so the new engine finds it lost
    # (a system failure, on the system-retry budget) and runs attempt 2
    async with make_engine() as second:
        await wait_until(lambda: runs(side_effects, "wait_forever_started") >= 2)
        await second.abort(handle.execution_id)
        await second.handle(handle.execution_id).wait(timeout=10)
        history = await second.history(handle.execution_id)
        assert [e.attempt for e in history if type(e).__name__ == "NodeQueued"] == [1, 2]
        lost = [e for e in history if type(e).__name__ == "NodeFailed"]
        assert len(lost) == 1 and lost[0].error.kind == "system" and "lost" in lost[0].error.message


def test_calling_a_workflow_runs_it_locally() -> None:
    assert wf.diamond(x=3) == 16
    assert wf.nested(n=2) == sum(k * k + (k + 1) ** 2 for k in range(2))


async def test_embedded_engine_with_a_process_pool(tmp_path: Path) -> None:
    async with Engine.embedded(tmp_path, executor_options={"mode": "process"}) as eng:
        handle = await eng.launch(wf.foreach_join, n=4)
        assert await handle.outputs(timeout=60) == sum(i * i for i in range(4))


async def test_connect_runs_on_postgres(postgres_database: str) -> None:
    async with Engine.connect(postgres=postgres_database, retry_delay=0.05) as eng:
        handle = await eng.launch(wf.diamond, x=1)
        assert await handle.outputs(timeout=30) == 8
        assert (await eng.list_executions(limit=1))[0].execution_id == handle.execution_id


def test_connect_without_a_dsn_says_how_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine import ConfigError

    monkeypatch.delenv("SLIPSTREAM_POSTGRES_DSN", raising=False)
    with pytest.raises(ConfigError, match="SLIPSTREAM_POSTGRES_DSN"):
        Engine.connect()


def test_unknown_executor_backend_is_a_config_error(tmp_path: Path) -> None:
    from engine import ConfigError

    with pytest.raises(ConfigError, match=r"'warp'.*installed"):
        Engine.embedded(tmp_path, executor="warp")


async def test_a_second_engine_on_the_same_store_does_not_run_the_attempt_again(
    make_engine: EngineFactory, side_effects: Path
) -> None:
    async with make_engine() as owner:
        handle = await owner.launch(wf.abortable)
        await wait_until(lambda: runs(side_effects, "wait_forever_started") >= 1)
        async with make_engine() as bystander:
            # a round of the bystander's own: it finds the execution owned and leaves it alone
            await bystander.controller.reconcile(handle.execution_id)
            assert not bystander.controller.attempts.tracked(handle.execution_id)
        assert runs(side_effects, "wait_forever_started") == 1
        await owner.abort(handle.execution_id)


async def test_abort_from_another_process_cancels_the_running_attempt(
    make_engine: EngineFactory, side_effects: Path
) -> None:
    async with make_engine(revisit_interval=0.2) as owner:
        handle = await owner.launch(wf.abortable)
        await wait_until(lambda: runs(side_effects, "wait_forever_started") >= 1)
        # another process writes the abort straight to the log, as `slipstream executions abort` does
        other = make_engine()
        await other.store.start()
        try:
            await other.abort(handle.execution_id, reason="from the CLI")
        finally:
            await other.store.close()
        await wait_until(lambda: runs(side_effects, "wait_forever_cancelled") >= 1)
        with pytest.raises(ExecutionAborted, match="from the CLI"):
            await handle.outputs(timeout=10)


async def test_recovering_a_running_execution_is_refused(eng: Engine, side_effects: Path) -> None:
    from engine import ExecutionNotFinished

    handle = await eng.launch(wf.abortable)
    await wait_until(lambda: runs(side_effects, "wait_forever_started") >= 1)
    with pytest.raises(ExecutionNotFinished, match="still running"):
        await eng.recover(handle.execution_id)
    await eng.abort(handle.execution_id)


async def test_an_engine_leaves_alone_executions_whose_code_it_lacks(make_engine: EngineFactory) -> None:
    """Opening an engine for one workflow file must not take over (and fail) another file's runs."""
    from datetime import UTC, datetime

    import msgspec

    from engine.events import ExecutionCreated

    foreign_ref = msgspec.structs.replace(wf.diamond.spec.nodes[0].task, module="not_here_mod", qualname="add")
    foreign = msgspec.structs.replace(
        wf.diamond.spec, nodes=[msgspec.structs.replace(wf.diamond.spec.nodes[0], task=foreign_ref)]
    )
    async with make_engine() as eng:
        created = ExecutionCreated(
            execution_id="foreign-1", version=1, at=datetime.now(UTC), project="p", domain="d",
            workflow="diamond", workflow_version="v", spec=foreign, inputs=wf.diamond.encode_inputs({"x": 1}),
        )  # fmt: skip
        await eng.store.append("foreign-1", 0, [created])
        await eng.controller.resync()
        await eng.controller.reconcile("foreign-1")
        assert (await eng.get("foreign-1")).status == "created"  # untouched, not failed
        mine = await eng.launch(wf.diamond, x=1)
        assert await mine.outputs(timeout=30) == 8
