"""The ``slipstream`` CLI, run as a real process against a throw-away embedded state dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import get_args

import pytest

from engine._cli import _STATUSES, BadInput, input_options
from engine.interfaces import ExecutionStatus
from tests.conftest import with_database

FLOWS = textwrap.dedent(
    """
    import os
    from dataclasses import dataclass
    from pathlib import Path

    from engine import map_task, task, workflow


    @dataclass
    class Report:
        total: int
        squares: list[int]


    @task
    def numbers(x: int) -> list[int]:
        return list(range(1, x + 1))


    @task
    def square(n: int) -> int:
        return n * n


    @task
    def report(squares: list[int]) -> Report:
        return Report(total=sum(squares), squares=squares)


    @workflow
    def squares(x: int) -> Report:
        return report(squares=map_task(square)(n=numbers(x=x)))


    @task
    def flaky(x: int) -> int:
        marker = Path(os.environ["CLI_TEST_MARKER"])
        if not marker.exists():
            marker.write_text("failed once")
            raise ValueError(f"flaky fails the first time (x={x})")
        return x + 100


    @workflow
    def fragile(x: int) -> int:
        return flaky(x=square(n=x))


    not_a_workflow = 42
    """
)


class Cli:
    """Runs ``slipstream`` in a subprocess with its own state dir, from a directory of its own."""

    def __init__(self, tmp_path: Path) -> None:
        self.state_dir = tmp_path / "state"
        self.flows = tmp_path / "flows" / "cli_flows.py"
        self.flows.parent.mkdir()
        self.flows.write_text(FLOWS)
        self.marker = tmp_path / "marker"
        self.cwd = tmp_path / "elsewhere"  # not the flows' directory: `recover` must be told --path
        self.cwd.mkdir()

    def __call__(self, *args: str, state: bool = True) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLIPSTREAM_")}
        env["CLI_TEST_MARKER"] = str(self.marker)
        argv = [*args, "--state-dir", str(self.state_dir)] if state else list(args)
        return subprocess.run(
            [sys.executable, "-c", "from engine._cli import main; main()", *argv],
            capture_output=True,
            text=True,
            env=env,
            cwd=self.cwd,
            timeout=60,
        )

    def target(self, name: str) -> str:
        return f"{self.flows}:{name}"

    def run_json(self, name: str, *args: str) -> dict:
        result = self("run", self.target(name), *args, "--json")
        return json.loads(result.stdout)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]


# -- run --------------------------------------------------------------------------------------------


def test_run_prints_progress_lines_and_outputs(cli: Cli) -> None:
    result = cli("run", cli.target("squares"), "--x", "3")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # stdout is not a TTY: one line per change instead of the live view
    assert "(squares): running" in out
    assert "node map_square: succeeded [3/3]" in out
    assert "(squares): succeeded; nodes 3 done, 0 running, 0 queued, 0 failed" in out
    assert "Report(total=14, squares=[1, 4, 9])" in " ".join(out.split())


def test_run_no_progress_prints_only_the_result(cli: Cli) -> None:
    result = cli("run", cli.target("squares"), "--x=2", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "node " not in result.stdout
    assert "Report(total=5, squares=[1, 4])" in " ".join(result.stdout.split())


def test_run_json(cli: Cli) -> None:
    result = cli("run", cli.target("squares"), "--x", "3", "--json", "--project", "p1", "--domain", "staging")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["status"] == "succeeded"
    assert payload["outputs"] == {"total": 14, "squares": [1, 4, 9]}
    assert payload["error"] is None
    listed = json.loads(cli("executions", "list", "--json", "--project", "p1").stdout)["executions"]
    assert [(e["execution_id"], e["domain"]) for e in listed] == [(payload["execution_id"], "staging")]


def test_failing_task_exits_1_with_the_remote_traceback(cli: Cli) -> None:
    result = cli("run", cli.target("fragile"), "--x", "3")
    assert result.returncode == 1
    assert "failed" in result.stderr and "at node 'flaky'" in result.stderr
    assert "ValueError: flaky fails the first time (x=9)" in result.stderr
    assert "Traceback (most recent call last)" in result.stderr
    assert 'raise ValueError(f"flaky fails the first time (x={x})")' in result.stderr


def test_failing_task_json(cli: Cli) -> None:
    result = cli("run", cli.target("fragile"), "--x", "2", "--json")
    assert result.returncode == 1
    payload = json.loads(result.stdout)
    assert payload["status"] == "failed"
    assert payload["outputs"] is None
    assert payload["error"]["node_id"] == "flaky"
    assert "flaky fails the first time (x=4)" in payload["error"]["message"]
    assert "Traceback" in payload["error"]["traceback"]


# -- bad input --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["missing.py:wf", "--x", "1"], ["'missing.py' not found", "check the path"]),
        (["{flows}", "--x", "1"], ["names no workflow", "FILE:WORKFLOW"]),
        (["{flows}:nope", "--x", "1"], ["no workflow 'nope'", "fragile, squares"]),
        (["{flows}:not_a_workflow"], ["'not_a_workflow'", "not a workflow", "@workflow"]),
        (["{flows}:squares", "--y", "1"], ["no input 'y'", "--x (int)"]),
        (["{flows}:squares", "--x", "three"], ["input 'x'", "cannot parse 'three' as int"]),
        (["{flows}:squares"], ["needs input(s) --x"]),
        (["{flows}:squares", "--x", "1", "stray"], ["unexpected argument 'stray'", "--x"]),
        (["{flows}:squares", "--x", "1", "--x", "2"], ["--x given twice"]),
    ],
)
def test_bad_run_input_is_one_line_and_exit_2(cli: Cli, args: list[str], fragments: list[str]) -> None:
    result = cli("run", *[a.format(flows=cli.flows) for a in args])
    assert_one_line_error(result, *fragments)
    assert not (cli.state_dir / "events.db").exists()  # rejected before any store was opened


def test_a_file_that_fails_to_import_is_one_line(cli: Cli) -> None:
    broken = cli.flows.parent / "broken_flows.py"
    broken.write_text("import no_such_module_for_slipstream\n")
    assert_one_line_error(cli("run", f"{broken}:wf"), "broken_flows.py failed to import", "no_such_module")


def test_bad_settings_are_one_line(cli: Cli, tmp_path: Path) -> None:
    a_file = tmp_path / "not-a-dir"
    a_file.write_text("")
    assert_one_line_error(
        cli("executions", "list", "--state-dir", str(a_file / "sub"), state=False), "state directory", "--state-dir"
    )
    assert_one_line_error(cli("executions", "list", "--postgres", "notadsn", state=False), "invalid Postgres DSN")


def test_missing_database_is_one_line_and_exit_2(cli: Cli, postgres_dsn: str) -> None:
    name = f"does_not_exist_{uuid.uuid4().hex[:8]}"
    dsn = with_database(postgres_dsn, name)
    result = cli("executions", "list", "--postgres", dsn, state=False)
    assert_one_line_error(result, f"Postgres database {name!r} does not exist", f'CREATE DATABASE "{name}"')


def test_unreachable_postgres_is_one_line_and_exit_2(cli: Cli) -> None:
    result = cli("executions", "list", "--postgres", "postgresql://postgres:pw@127.0.0.1:1/test", state=False)
    assert_one_line_error(
        result, "cannot reach Postgres at postgresql://postgres:***@127.0.0.1:1/test", "connection refused"
    )
    assert "pw@" not in result.stderr


def test_statuses_are_the_engine_s() -> None:
    assert _STATUSES == get_args(ExecutionStatus)


def test_usage_errors_are_one_line(cli: Cli) -> None:
    assert_one_line_error(cli("run", cli.target("squares"), "--state-dir", state=False), "--state-dir")
    assert_one_line_error(cli("executions", "show"), "ID")
    assert_one_line_error(cli("executions", "list", "--status", "bogus"), "bogus", "succeeded")


def test_unknown_execution_is_exit_2(cli: Cli) -> None:
    for command in (["show", "nope"], ["history", "nope"], ["abort", "nope"], ["recover", "nope"]):
        assert_one_line_error(cli("executions", *command), "execution 'nope' not found", "executions list")


# -- executions -------------------------------------------------------------------------------------


def test_list_show_history_after_a_run(cli: Cli) -> None:
    execution_id = cli.run_json("squares", "--x", "3")["execution_id"]

    listed = cli("executions", "list")
    assert listed.returncode == 0
    row = next(line for line in listed.stdout.splitlines() if execution_id in line)
    assert row.split()[1:5] == ["squares", "succeeded", "default", "development"]
    assert cli("executions", "list", "--status", "failed,aborted").stdout.strip() == "no executions"

    shown = cli("executions", "show", execution_id)
    assert shown.returncode == 0
    assert execution_id in shown.stdout and "succeeded" in shown.stdout
    assert "map_square" in shown.stdout and "3/3" in shown.stdout
    assert "map_square/0" not in shown.stdout  # elements are folded into the map's progress
    details = json.loads(cli("executions", "show", execution_id, "--json").stdout)
    assert details["status"] == "succeeded"
    assert {n["node_id"]: n["phase"] for n in details["nodes"]}["report"] == "succeeded"
    assert next(n for n in details["nodes"] if n["node_id"] == "map_square")["size"] == 3

    history = cli("executions", "history", execution_id)
    assert history.returncode == 0
    kinds = [line.split()[2] for line in history.stdout.splitlines()[1:] if line.strip()]
    assert kinds[0] == "ExecutionCreated" and kinds[-1] == "ExecutionSucceeded"
    assert "ArrayExpanded" in kinds
    assert "size=3" in history.stdout
    events = [json.loads(line) for line in cli("executions", "history", execution_id, "--json").stdout.splitlines()]
    assert [e["version"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["kind"] == "ExecutionCreated" and events[-1]["kind"] == "ExecutionSucceeded"


def test_abort_of_a_finished_execution_is_a_no_op(cli: Cli) -> None:
    execution_id = cli.run_json("squares", "--x", "1")["execution_id"]
    result = cli("executions", "abort", execution_id)
    assert result.returncode == 0
    assert "already succeeded; nothing to abort" in result.stdout
    assert json.loads(cli("executions", "show", execution_id, "--json").stdout)["status"] == "succeeded"


def test_recover_reruns_only_what_failed(cli: Cli) -> None:
    failed = cli.run_json("fragile", "--x", "3")
    assert failed["status"] == "failed"

    # the task modules live beside the flows file, which is not on this process's path
    assert_one_line_error(cli("executions", "recover", failed["execution_id"]), "'cli_flows'", "--path")

    result = cli("executions", "recover", failed["execution_id"], "--path", str(cli.flows.parent))
    assert result.returncode == 0, result.stderr
    new_id = result.stdout.splitlines()[0].split()[-1]
    assert new_id != failed["execution_id"]
    assert "succeeded" in result.stdout and "109" in result.stdout

    details = json.loads(cli("executions", "show", new_id, "--json").stdout)
    assert details["status"] == "succeeded"
    assert details["parent"] == failed["execution_id"]
    history = [json.loads(line) for line in cli("executions", "history", new_id, "--json").stdout.splitlines()]
    assert {"kind": "NodeRecovered", "node_id": "square"}.items() <= next(
        e for e in history if e.get("node_id") == "square"
    ).items()


def test_recover_no_wait_then_abort(cli: Cli) -> None:
    failed = cli.run_json("fragile", "--x", "1")
    result = cli("executions", "recover", failed["execution_id"], "--no-wait")
    assert result.returncode == 0, result.stderr
    new_id = result.stdout.strip()
    assert "embedded mode" in result.stderr
    # recorded, not run: nothing of it was handed to an executor
    kinds = [json.loads(line)["kind"] for line in cli("executions", "history", new_id, "--json").stdout.splitlines()]
    assert kinds[0] == "ExecutionCreated" and "NodeRecovered" in kinds and "NodeQueued" not in kinds

    aborted = cli("executions", "abort", new_id, "--reason", "changed my mind")
    assert aborted.returncode == 0 and f"aborted execution {new_id}" in aborted.stdout
    listed = json.loads(cli("executions", "list", "--status", "aborted", "--json").stdout)["executions"]
    assert [e["execution_id"] for e in listed] == [new_id]
    last = json.loads(cli("executions", "history", new_id, "--json").stdout.splitlines()[-1])
    assert last == {**last, "kind": "ExecutionAborted", "reason": "changed my mind"}


# -- the shell itself -------------------------------------------------------------------------------


def test_help_is_quick_to_import() -> None:
    code = (
        "import sys, engine._cli; "
        "heavy = [m for m in ('engine._engine', 'propeller', 'rich', 'asyncpg', 'msgspec') if m in sys.modules]; "
        "print(heavy)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
    helped = subprocess.run(
        [sys.executable, "-c", "from engine._cli import main; main()", "run", "--help"],
        capture_output=True,
        text=True,
    )
    assert helped.returncode == 0 and "FILE:WORKFLOW" in helped.stdout


def test_input_options() -> None:
    names = ["x", "learning_rate", "verbose", "tags"]
    assert input_options(["--x", "-3", "--learning-rate=0.5", "--verbose", "--tags", '["a"]'], names) == {
        "x": "-3",
        "learning_rate": "0.5",
        "verbose": "true",
        "tags": '["a"]',
    }
    assert input_options(["--verbose"], names) == {"verbose": "true"}
    with pytest.raises(BadInput, match="unexpected argument 'oops'"):
        input_options(["oops"], names)


def test_run_and_list_against_postgres(cli: Cli, postgres_database: str) -> None:
    payload = cli.run_json("squares", "--x", "2", "--postgres", postgres_database)
    assert payload["status"] == "succeeded" and payload["outputs"]["total"] == 5
    listed = cli("executions", "list", "--json", "--postgres", postgres_database, state=False)
    assert payload["execution_id"] in [e["execution_id"] for e in json.loads(listed.stdout)["executions"]]
    assert not (cli.state_dir / "events.db").exists()  # --postgres wins over --state-dir


# -- interrupted runs, watch ----------------------------------------------------------------------

SLOW_FLOW = textwrap.dedent(
    """
    import time
    from pathlib import Path

    from engine import task, workflow


    @task
    def slow(started: str) -> int:
        Path(started).write_text("started")
        time.sleep(60)
        return 1


    @workflow
    def sleepy(started: str) -> int:
        return slow(started=started)
    """
)


def test_an_interrupted_run_aborts_its_execution_and_says_so(cli: Cli, tmp_path: Path) -> None:
    import signal
    import time

    flows = cli.flows.parent / "slow_flows.py"
    flows.write_text(SLOW_FLOW)
    started = tmp_path / "started"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLIPSTREAM_")}
    process = subprocess.Popen(
        [
            *(sys.executable, "-c", "from engine._cli import main; main()", "run", f"{flows}:sleepy"),
            *("--started", str(started), "--state-dir", str(cli.state_dir), "--no-progress"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=cli.cwd,
    )
    deadline = time.monotonic() + 30
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "interrupted: aborted execution" in stderr and "executions recover" in stderr
    listed = json.loads(cli("executions", "list", "--json").stdout)["executions"]
    assert [row["status"] for row in listed] == ["aborted"]


def test_watch_follows_an_execution_and_reports_its_outputs(cli: Cli) -> None:
    execution_id = cli.run_json("squares", "--x", "3")["execution_id"]
    watched = cli("executions", "watch", execution_id)
    assert watched.returncode == 0, watched.stderr
    assert f"execution {execution_id} succeeded" in watched.stdout
    assert "squares=[1, 4, 9]" in watched.stdout.replace("\n", " ") or "[1, 4, 9]" in watched.stdout
    as_json = json.loads(cli("executions", "watch", execution_id, "--json").stdout)
    assert as_json["status"] == "succeeded"
    assert as_json["outputs"] == {"total": 14, "squares": [1, 4, 9]}


def test_list_pages_with_a_cursor_and_abort_speaks_json(cli: Cli) -> None:
    ids = [cli.run_json("squares", "--x", "1")["execution_id"] for _ in range(3)]
    first = json.loads(cli("executions", "list", "--limit", "2", "--json").stdout)
    assert [e["execution_id"] for e in first["executions"]] == ids[::-1][:2]
    second = json.loads(cli("executions", "list", "--limit", "2", "--cursor", first["next_cursor"], "--json").stdout)
    assert [e["execution_id"] for e in second["executions"]] == ids[:1]
    assert second["next_cursor"] is None
    human = cli("executions", "list", "--limit", "2")
    assert f"--cursor {first['next_cursor']}" in human.stderr
    assert_one_line_error(cli("executions", "list", "--cursor", "garbage"), "--cursor", "next_cursor")
    done = json.loads(cli("executions", "abort", ids[0], "--json").stdout)
    assert done == {"execution_id": ids[0], "aborted": False, "status": "succeeded"}


def test_version_help_with_inputs_and_completion(cli: Cli) -> None:
    from importlib.metadata import version

    assert cli("--version", state=False).stdout.strip() == f"slipstream {version('slipstream')}"
    helped = cli("run", cli.target("squares"), "--help", state=False)
    assert helped.returncode == 0, helped.stderr
    assert "Inputs of workflow 'squares'" in helped.stdout
    assert "--x  int  [required]" in helped.stdout
    env = {**os.environ, "_SLIPSTREAM_COMPLETE": "complete_bash", "COMP_WORDS": "slipstream executions wa"}
    completed = subprocess.run(
        [sys.executable, "-c", "from engine._cli import main; main()"],
        env={**env, "COMP_CWORD": "2"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert completed.stdout.split() == ["watch"]
    assert_one_line_error(cli("run", state=False), "missing FILE:WORKFLOW")


@pytest.mark.parametrize(
    ("option", "fragments"),
    [
        (["--domain", "prodution"], ["domain 'prodution'", "did you mean 'production'"]),
        (["--project", ""], ["project ''", "letters, digits"]),
        (["--project", "a b"], ["project 'a b'"]),
    ],
)
def test_run_refuses_a_domain_or_project_that_is_not_one(cli: Cli, option: list[str], fragments: list[str]) -> None:
    assert_one_line_error(cli("run", cli.target("squares"), "--x", "2", *option), *fragments)
    assert json.loads(cli("executions", "list", "--json").stdout)["executions"] == []


def test_history_shows_values_not_msgpack(cli: Cli) -> None:
    execution_id = cli.run_json("squares", "--x", "3")["execution_id"]
    history = cli("executions", "history", execution_id).stdout
    assert "inputs={'x': 3}" in history
    assert "outputs={'o0': {'total': 14, 'squares': [1, 4, 9]}}" in history
    events = [json.loads(line) for line in cli("executions", "history", execution_id, "--json").stdout.splitlines()]
    assert events[0]["inputs"] == {"x": 3}
    assert events[-1]["outputs"] == {"o0": {"squares": [1, 4, 9], "total": 14}}
    finished = [e for e in events if e["kind"] == "ChunkFinished"]
    assert sorted(r[2] for e in finished for r in e["results"]) == [1, 4, 9]


def test_run_runs_its_own_execution_and_leaves_the_others(cli: Cli) -> None:
    """An unfinished execution in the state dir is left to serving engines: `run` neither runs
    it nor waits for it."""
    failed = cli.run_json("fragile", "--x", "1")  # fails once (the marker), so recover has work
    pending = cli("executions", "recover", failed["execution_id"], "--no-wait").stdout.strip()
    assert cli.run_json("squares", "--x", "2")["status"] == "succeeded"
    kinds = [json.loads(line)["kind"] for line in cli("executions", "history", pending, "--json").stdout.splitlines()]
    assert kinds == ["ExecutionCreated", "ExecutionStarted", "NodeRecovered"]  # recorded, not taken up by `run`
