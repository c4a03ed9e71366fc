"""Bad input is refused with a typed error that names the limit or the rule, before anything is
written: malformed execution ids (fuzzed), inputs too large, too deep or holding themselves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import Engine, ExecutionNotFound, InputLimitExceeded, InvalidExecutionId
from engine._validation import check_execution_id

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
