"""``--project``/``--domain`` (or ``$SLIPSTREAM_PROJECT``/``$SLIPSTREAM_DOMAIN``) scope every CLI
command that reads or changes executions, on both stores: another project's execution is not
found (exit 2, one line), and malformed names are refused before any store is opened."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import Engine
from engine._cli import _main

from . import _workflows as wf


@pytest.fixture(params=["sqlite", "postgres"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    if request.param == "sqlite":
        return ("--state-dir", str(tmp_path / "state"))
    return ("--postgres", request.getfixturevalue("postgres_database"))


def _open(where: tuple[str, str], **options: object) -> Engine:
    option, value = where
    if option == "--state-dir":
        return Engine.embedded(value, **options)  # type: ignore[arg-type]
    return Engine.connect(value, executor="local", **options)  # type: ignore[arg-type]


def _one_run_per_project(where: tuple[str, str]) -> dict[str, str]:
    async def body() -> dict[str, str]:
        ids = {}
        async with _open(where) as engine:
            for project in ("a", "b"):
                handle = await engine.launch(wf.diamond, project=project, x=1)
                await handle.wait(timeout=60)
                ids[project] = handle.execution_id
        return ids

    return asyncio.run(body())


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = _main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


VERBS = [
    ("executions", "show"),
    ("executions", "history"),
    ("executions", "outputs"),
    ("executions", "abort"),
    ("executions", "recover", "--no-wait"),
    ("executions", "watch", "--no-progress"),
    ("logs",),
]


def test_every_verb_is_scoped(
    where: tuple[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = _one_run_per_project(where)
    for verb in VERBS:
        code, _, err = cli(capsys, *verb, ids["a"], *where, "--project", "b")
        assert code == 2 and err.count("\n") == 1 and f"execution {ids['a']!r} not found" in err, (verb, err)
        code, _, err = cli(capsys, *verb, ids["a"], *where, "--project", "a", "--domain", "staging")
        assert code == 2 and "not found" in err, verb
    for verb in VERBS[:3]:
        code, out, err = cli(capsys, *verb, ids["b"], *where, "--project", "b")
        assert code == 0 and out, (verb, err)
    code, out, _ = cli(capsys, "executions", "list", *where, "--project", "b", "--json")
    assert [e["execution_id"] for e in json.loads(out)["executions"]] == [ids["b"]]
    monkeypatch.setenv("SLIPSTREAM_PROJECT", "a")  # the environment scopes as the option does
    code, out, _ = cli(capsys, "executions", "list", *where, "--json")
    assert [e["execution_id"] for e in json.loads(out)["executions"]] == [ids["a"]]
    code, _, err = cli(capsys, "executions", "show", ids["b"], *where)
    assert code == 2 and "not found" in err


@pytest.mark.parametrize(
    ("option", "value", "fragment"),
    [
        ("--project", "", "project '' is not a name"),
        ("--project", "a b", "project 'a b' is not a name"),
        ("--project", "x" * 64, "1 to 63"),
        ("--project", "-a", "project '-a' is not a name"),
        ("--domain", "", "domain '' is not one of"),
        ("--domain", "prod", "did you mean 'production'"),
    ],
)
def test_malformed_names_are_refused_before_the_store_is_opened(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str, fragment: str
) -> None:
    state = tmp_path / "never-created"
    commands = [*VERBS, ("executions", "list"), ("catalog", "ls"), ("events", "tail"), ("catalog", "show")]
    for command in commands:
        needs_id = command in VERBS or command == ("catalog", "show")
        args = [*command, *(["some-id"] if needs_id else []), f"{option}={value}", "--state-dir", str(state)]
        code, _, err = cli(capsys, *args)
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and fragment in err, (command, err)
    assert not state.exists()


def test_events_tail_is_scoped(where: tuple[str, str], tmp_path: Path) -> None:
    """``events tail --project b`` prints project b's events, never project a's (logged before)."""
    ids = _one_run_per_project(where)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    tail = subprocess.Popen(
        [sys.executable, "-m", "engine._cli", "events", "tail", "--from-start", "--json", "--project", "b", *where],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    seen: list[dict] = []
    try:
        deadline = time.monotonic() + 60
        assert tail.stdout is not None
        while time.monotonic() < deadline:
            line = tail.stdout.readline()
            if not line:
                break
            seen.append(json.loads(line))
            if seen[-1]["kind"] == "ExecutionSucceeded" and seen[-1]["execution_id"] == ids["b"]:
                break
    finally:
        tail.send_signal(signal.SIGTERM)
        tail.wait(timeout=30)
    shown = {event["execution_id"] for event in seen}
    assert ids["b"] in shown and ids["a"] not in shown, seen

    async def projects() -> set[str]:
        async with _open(where, run_loop=False) as engine:
            return {(await engine.get(execution_id)).project for execution_id in shown}

    assert asyncio.run(projects()) == {"b"}  # the store may hold earlier tests' executions too


def test_verify_checks_only_the_scope_and_rebuild_refuses_one(
    where: tuple[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = _one_run_per_project(where)
    code, out, err = cli(capsys, "executions", "verify", *where, "--project", "b", "--json")
    assert code == 0, err
    checked = {json.loads(line)["execution_id"] for line in out.splitlines()}
    assert ids["b"] in checked and ids["a"] not in checked  # the database may hold other tests' runs
    code, _, err = cli(capsys, "executions", "verify", ids["a"], *where, "--project", "b")
    assert code == 2 and err.count("\n") == 1 and f"execution {ids['a']!r} not found" in err, err
    code, out, _ = cli(capsys, "executions", "verify", ids["a"], *where, "--project", "a")
    assert code == 0 and out.startswith(f"ok {ids['a']}: ")
    code, out, err = cli(capsys, "executions", "verify", *where, "--project", "nobody", "--domain", "staging")
    assert code == 0 and out == "" and "checked 0 executions" in err
    monkeypatch.setenv("SLIPSTREAM_PROJECT", "a")
    code, out, _ = cli(capsys, "executions", "verify", *where, "--json")
    checked = {json.loads(line)["execution_id"] for line in out.splitlines()}
    assert ids["a"] in checked and ids["b"] not in checked
    code, out, err = cli(capsys, "admin", "rebuild-projections", *where)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "rebuild-projections rewrites the whole store: unset SLIPSTREAM_PROJECT/SLIPSTREAM_DOMAIN" in err
    monkeypatch.delenv("SLIPSTREAM_PROJECT")
    code, _, err = cli(capsys, "admin", "rebuild-projections", *where)
    assert code == 0, err
