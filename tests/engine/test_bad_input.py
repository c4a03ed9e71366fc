"""Bad input is refused with a typed error that names the limit or the rule, before anything is
written: malformed execution ids, launch inputs and workflow specs (fuzzed), inputs too large, too
deep or holding themselves."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from engine import Engine, ExecutionNotFound, InputLimitExceeded, InvalidExecutionId
from engine._validation import check_execution_id
from engine.models import WorkflowSpec

from . import _fuzz_workflows as fw
from . import _workflows as wf


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=200) | st.binary(max_size=50).map(lambda b: b.decode("latin-1")))
def test_an_execution_id_is_accepted_only_if_well_formed(candidate: str) -> None:
    ok = (
        0 < len(candidate) <= 128
        and candidate[0].isascii()
        and candidate[0].isalnum()
        and all(c.isascii() and (c.isalnum() or c in "._:-") for c in candidate)
    )
    if ok:
        check_execution_id(candidate)
    else:
        with pytest.raises(InvalidExecutionId, match="not an execution id"):
            check_execution_id(candidate)


@pytest.mark.parametrize("bad", ["", "a" * 129, "bad\x00id", "ünïcode", "a b", "../x", "x\n", "x" * 1_000_000])
async def test_every_verb_refuses_a_malformed_id_before_the_store_sees_it(eng: Engine, bad: str) -> None:
    with pytest.raises(InvalidExecutionId):
        await eng.launch(wf.diamond, execution_id=bad)
    for verb in (eng.get, eng.history, eng.abort, eng.recover, eng.outputs):
        with pytest.raises(InvalidExecutionId):
            await verb(bad)
    with pytest.raises(InvalidExecutionId):
        await eng.handle(bad).wait()
    with pytest.raises(InvalidExecutionId):
        eng.logs(bad)
    assert await eng.list_executions() == []
    with pytest.raises(ExecutionNotFound):  # well formed but unknown: not found, as before
        await eng.get("no-such-execution")


async def test_inputs_too_large_too_deep_or_cyclic_are_refused_naming_the_limit(make_engine) -> None:
    async with make_engine(max_input_bytes=1024, max_input_depth=5) as eng:
        with pytest.raises(InputLimitExceeded, match=r"input 'xs' is .* MiB encoded; the limit is 0 MiB"):
            await eng.launch(wf.strict_map, xs=list(range(10_000)))
        nested: list = [1]
        for _ in range(10):
            nested = [nested]
        with pytest.raises(InputLimitExceeded, match="more than 5 levels deep"):
            await eng.launch(wf.strict_map, xs=nested)
        cyclic: list = []
        cyclic.append(cyclic)
        with pytest.raises(InputLimitExceeded, match="contains itself"):
            await eng.launch(wf.strict_map, xs=cyclic)
        assert await eng.list_executions() == []
        assert await (await eng.launch(wf.strict_map, xs=[1, 2])).outputs(timeout=30) == [101, 102]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.recursive(st.integers() | st.text(max_size=5) | st.none(), lambda inner: st.lists(inner, max_size=4)))
def test_fuzzed_launch_inputs_encode_or_are_refused_with_a_typed_error(value: object) -> None:
    """Any value for a ``list[int]`` input either fits or is refused with a typed error, never a
    crash (the workflow compiles the inputs; nothing runs)."""
    from engine import SlipstreamError
    from engine._validation import check_input_depth

    try:
        check_input_depth({"xs": value}, 100)
        wf.strict_map.encode_inputs({"xs": value})
    except SlipstreamError:
        pass


def test_the_cli_refuses_a_malformed_id_in_one_line(tmp_path: Path) -> None:
    for verb in ("show", "history", "abort", "outputs"):
        done = subprocess.run(
            [sys.executable, "-m", "engine._cli", "executions", verb, "bad\tid", "--state-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1 and "is not an execution id" in done.stderr


# -- fuzzed launches, ids and specs against one engine ---------------------------------------------------
#
# One client engine (no loop: nothing runs) on a loop of its own thread serves every example, so that
# hundreds of launches cost milliseconds each. What was refused is recorded as hypothesis events
# (``--hypothesis-show-statistics`` prints them with the number of examples).


class EngineThread:
    """An engine opened on an event loop in a thread; `call` runs a coroutine there."""

    def __init__(self, engine: Engine) -> None:
        import asyncio
        import threading

        self.engine = engine
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-engine", daemon=True)
        self.thread.start()
        self.call(engine.__aenter__())

    def call(self, coro: Any) -> Any:
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def close(self) -> None:
        self.call(self.engine.__aexit__(None, None, None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineThread]:
    engine = Engine.embedded(tmp_path_factory.mktemp("fuzz-client"), run_loop=False)
    thread = EngineThread(engine)
    yield thread
    thread.close()


async def _count(engine: Engine) -> int:
    return len(await engine.list_executions(limit=100_000))


_ANY = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8)
    | st.sampled_from([fw.Color.RED, fw.Point(1.0, 2.0), "red", "blue", object(), 1 + 2j, 2**70]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=4) | st.integers(), inner, max_size=3)
        | st.tuples(inner, inner)
        | st.builds(fw.Point, inner, inner)
    ),
    max_leaves=8,
)
_GOOD = {
    "n": st.integers(-(2**63), 2**63 - 1),
    "xs": st.lists(st.integers(-(2**63), 2**63 - 1), max_size=4),
    "weights": st.dictionaries(st.text(max_size=4), st.floats(allow_nan=False), max_size=3),
    "at": st.builds(fw.Point, st.floats(allow_nan=False), st.floats(allow_nan=False)),
    "color": st.sampled_from(list(fw.Color)),
    "note": st.none() | st.text(max_size=8),
}


@st.composite
def launch_inputs(draw: st.DrawFn) -> dict[str, Any]:
    """Inputs of typed_wf: each well typed, of any other shape, or left out; sometimes an unknown one."""
    inputs: dict[str, Any] = {}
    for name, good in _GOOD.items():
        choice = draw(st.sampled_from(["good", "good", "any", "missing"]))
        if choice != "missing":
            inputs[name] = draw(good if choice == "good" else _ANY)
    if draw(st.booleans()) and draw(st.booleans()):
        inputs[draw(st.sampled_from(["extra", "N", "xs_", "__class__"]))] = draw(_ANY)
    return inputs


@settings(max_examples=300, deadline=None)
@given(inputs=launch_inputs())
def test_fuzzed_launch_inputs_start_an_execution_or_are_refused_before_it(
    client: EngineThread, inputs: dict[str, Any]
) -> None:
    """Any inputs: the launch writes ExecutionCreated, or raises a typed error (naming the input)
    and writes nothing."""
    from engine import SlipstreamError

    engine = client.engine
    before = client.call(_count(engine))
    try:
        client.call(engine.launch(fw.typed_wf, **inputs))
    except SlipstreamError as exc:
        event(f"refused: {type(exc).__name__}")
        assert str(exc) and client.call(_count(engine)) == before
        return
    event("launched")
    assert client.call(_count(engine)) == before + 1


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60) | st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,40}", fullmatch=True))
def test_fuzzed_ids_are_malformed_or_not_found_for_every_verb(client: EngineThread, candidate: str) -> None:
    engine = client.engine
    for verb in (engine.get, engine.history, engine.abort, engine.recover, engine.outputs):
        try:
            client.call(verb(candidate))
        except InvalidExecutionId:
            event("refused: InvalidExecutionId")
        except ExecutionNotFound:
            event("refused: ExecutionNotFound")
        else:
            raise AssertionError(f"{verb.__name__}({candidate!r}) found an execution")


def _mutations(spec: WorkflowSpec) -> list[tuple[str, WorkflowSpec]]:
    """Ways a hand-made or tampered spec can fail to hold together, each as (category, spec)."""
    from msgspec.structs import replace

    from engine.models import InputBinding, OutputRef

    first, later = spec.nodes[0], spec.nodes[-1]
    second = spec.nodes[1] if len(spec.nodes) > 1 else first
    reordered = replace(spec, nodes=list(reversed(spec.nodes)))
    several = [("binding to a later node", reordered)] if len(spec.nodes) > 1 else []
    return [
        *several,
        ("duplicate node id", replace(spec, nodes=[first, replace(second, id=first.id), *spec.nodes[2:]])),
        ("binding to an unknown node", replace(spec, nodes=[
            *spec.nodes[:-1], replace(later, inputs={**later.inputs, "a": OutputRef("ghost", "o0")})])),
        ("binding to an unknown output", replace(spec, nodes=[
            *spec.nodes[:-1], replace(later, inputs={**later.inputs, "a": OutputRef(first.id, "o9")})])),
        ("binding to an undeclared workflow input", replace(spec, nodes=[
            replace(first, inputs={**first.inputs, "a": InputBinding("nope")}), *spec.nodes[1:]])),
        ("node removed", replace(spec, nodes=spec.nodes[1:])),
        ("output left unbound", replace(spec, output_bindings={})),
        ("output bound to an unknown node", replace(spec, output_bindings={"o0": OutputRef("ghost", "o0")})),
        ("default of an unknown input", replace(spec, defaults={**spec.defaults, "ghost": b"\x01"})),
        ("empty name", replace(spec, name="")),
        ("node id with a slash", replace(spec, nodes=[replace(first, id="a/b"), *spec.nodes[1:]])),
        ("negative retries", replace(spec, nodes=[
            replace(first, options=replace(first.options, retries=-1)), *spec.nodes[1:]])),
        ("zero timeout", replace(spec, nodes=[
            replace(first, options=replace(first.options, timeout=0.0)), *spec.nodes[1:]])),
    ]  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_fuzzed_malformed_specs_are_refused_before_execution_created(client: EngineThread, data: st.DataObject) -> None:
    """A workflow whose spec was built by hand or changed after compiling: launching it raises a
    CompileError naming what is wrong, and nothing is written (the planner trusts stored specs)."""
    import copy

    from engine import CompileError

    engine = client.engine
    base = data.draw(st.sampled_from([wf.diamond, fw.typed_wf]), label="workflow")
    name, spec = data.draw(st.sampled_from(_mutations(base.spec)), label="mutation")
    event(f"mutation: {name}")
    if spec.nodes and data.draw(st.booleans(), label="twice"):  # a second change on top of the first
        name, spec = data.draw(st.sampled_from(_mutations(spec)), label="second mutation")
        event(f"mutation: {name}")
    assume(spec != base.spec)  # the second change undid the first (the nodes reversed twice)
    tampered = copy.copy(base)
    tampered.spec = spec
    before = client.call(_count(engine))
    inputs = {"x": 1} if base is wf.diamond else {}
    with pytest.raises(CompileError, match="is malformed"):
        client.call(engine.launch(tampered, **inputs))
    assert client.call(_count(engine)) == before


def test_compiled_specs_hold_together() -> None:
    from engine._validation import check_spec

    for workflow in (wf.diamond, wf.foreach_join, fw.typed_wf):
        check_spec(workflow.spec)
