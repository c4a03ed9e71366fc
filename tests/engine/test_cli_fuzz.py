"""Fuzzed command lines: whatever the arguments (ids, project and domain names, ``run`` inputs),
``slipstream`` ends with exit 0, or with exit 2 and one line ``error: ...`` on stderr, never a
traceback. The categories of what was refused are hypothesis events: run with
``--hypothesis-show-statistics`` to see them and the number of examples."""

from __future__ import annotations

import asyncio
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from engine import Engine
from engine._cli import _main

from . import _workflows as wf

FLOWS = textwrap.dedent(
    """
    from dataclasses import dataclass

    from engine import task, workflow


    @dataclass
    class Config:
        rate: float
        tags: list[str]


    @task
    def score(n: int, xs: list[float], cfg: Config, flag: bool, name: str) -> float:
        return n + sum(xs) + cfg.rate + len(cfg.tags) + flag + len(name)


    @workflow
    def fuzzed(n: int, xs: list[float], cfg: Config, flag: bool = False, name: str = "x") -> float:
        return score(n=n, xs=xs, cfg=cfg, flag=flag, name=name)
    """
)

_CATEGORIES = (
    ("malformed execution id", r"is not an execution id"),
    ("malformed project name", r"project .* is not a name"),
    ("unknown domain", r"domain .* is not one of"),
    ("execution not found (unknown or another project's)", r"not found"),
    ("usage error (option, argument)", r"No such option|Missing argument|requires an argument|unexpected extra"),
    ("run argument that is not an --option", r"unexpected argument"),
    ("input given twice", r"given twice"),
    ("unknown input", r"has no input"),
    ("missing required input", r"needs input"),
    ("input value does not parse as its type", r"cannot parse|does not fit|expected"),
)


def category(err: str) -> str:
    for name, pattern in _CATEGORIES:
        if re.search(pattern, err):
            return name
    return "other: " + err[:60]


def check_one_line(code: int, err: str) -> None:
    """The CLI's promise for bad input: exit 2 and exactly one ``error:`` line, no traceback."""
    assert "Traceback" not in err
    if code == 0:
        event("accepted")
        return
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    event(f"refused: {category(err)}")


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A state dir holding one finished execution of project ``a``; yields it and the id."""
    directory = tmp_path_factory.mktemp("fuzz-state")

    async def one() -> str:
        async with Engine.embedded(directory, project="a") as engine:
            handle = await engine.launch(wf.diamond, x=1)
            await handle.wait(timeout=60)
            return handle.execution_id

    yield directory, asyncio.run(one())


IDS = (
    st.text(max_size=40)
    | st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,30}", fullmatch=True)
    | st.sampled_from(["", "-", "--json", "a b", "x" * 129, "../etc", "é"])
)
NAMES = (
    st.text(max_size=20)
    | st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,12}", fullmatch=True)
    | st.sampled_from(["a", "b", "default", "", " ", "a/b", "x" * 64, "-x", "*", "a.b", "a\nb"])
)
DOMAIN_NAMES = st.sampled_from(["development", "staging", "production", "prod", "", "Development"]) | st.text(
    max_size=12
)
VERBS = st.sampled_from(
    [
        ["executions", "show"],
        ["executions", "history"],
        ["executions", "outputs"],
        ["executions", "abort"],
        ["executions", "recover", "--no-wait", "--json"],
        ["executions", "watch", "--no-progress"],
        ["logs"],
    ]
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    verb=VERBS,
    execution_id=IDS,
    real=st.booleans(),
    project=st.none() | NAMES,
    domain=st.none() | DOMAIN_NAMES,
)
def test_fuzzed_ids_and_scopes_are_refused_in_one_line(
    state_dir: tuple[Path, str],
    capsys: pytest.CaptureFixture[str],
    verb: list[str],
    execution_id: str,
    real: bool,
    project: str | None,
    domain: str | None,
) -> None:
    directory, known = state_dir
    argv = [*verb, known if real else execution_id, "--state-dir", str(directory)]
    if project is not None:
        argv += ["--project", project]
    if domain is not None:
        argv += ["--domain", domain]
    code = _main(argv)
    check_one_line(code, capsys.readouterr().err)
    if real and code == 0:  # the one execution is project a's: no other scope sees it
        assert project in (None, "a") and domain in (None, "development")


@pytest.fixture(scope="module")
def flows(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fuzz-flows") / "fuzz_flows.py"
    path.write_text(FLOWS)
    return path


VALUES = (
    st.text(max_size=15)
    | st.integers().map(str)
    | st.floats(allow_nan=True).map(str)
    | st.sampled_from(["[]", "[1, 2.5]", '["a"]', '{"rate": 1, "tags": []}', '{"rate": "x"}', "true", "null", "{"])
    | st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=3).map(str)
)
# the workflow's options three times as often as the malformed ones
OPTIONS = st.sampled_from(["--n", "--xs", "--cfg", "--flag", "--name"] * 3 + ["--nope", "-n", "n", "--n=1", "--"])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    complete=st.booleans(),
    args=st.lists(st.tuples(OPTIONS, st.none() | VALUES), max_size=4, unique_by=lambda pair: pair[0]),
    repeat=st.booleans(),
)
def test_fuzzed_run_inputs_are_refused_in_one_line_before_anything_runs(
    flows: Path,
    tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
    complete: bool,
    args: list,
    repeat: bool,
) -> None:
    argv = ["run", f"{flows}:fuzzed"]
    if repeat and args and args[0][0].startswith("--"):  # an option given twice, now and then
        args = [*args, args[0]]
    if complete:  # the required inputs the fuzzed arguments leave out, well formed
        given = {option for option, _ in args}
        for option, value in (("--n", "1"), ("--xs", "[0.5]"), ("--cfg", '{"rate": 1, "tags": ["t"]}')):
            if option not in given:
                argv += [option, value]
    for option, value in args:
        argv += [option] if value is None else [option, value]
    # an empty state dir per example: a refused run must leave it without any execution
    directory = tmp_path_factory.mktemp("run")
    code = _main([*argv, "--state-dir", str(directory), "--json"])
    check_one_line(code, capsys.readouterr().err)
    if code == 2:
        assert not (directory / "events.db").exists(), "a refused run opened the store"
