"""Tasks that run on the built-in agents, for tests/plugins/test_agents.py (importable by module
path, as the agents executor loads a task's declaration from its code)."""

from __future__ import annotations

from engine import map_task, task, workflow
from plugins.agents import agent


@task
def greeting(name: str) -> str:
    return f"hello {name}"


@task(executor="agents")
@agent("shell", command="printf '%s' {text} | tr a-z A-Z")
def shout(text: str) -> str:
    """The text in capitals, by the shell agent."""


@workflow
def shout_greeting(name: str) -> str:
    return shout(text=greeting(name=name))


@task(executor="agents", retries=2)
@agent("shell", command="echo attempt >> {log}; echo 'disk full' >&2; exit 3")
def fails_retryably(log: str) -> None:
    """Exits 3 every time: a retryable failure."""


@workflow
def retryable_failure(log: str) -> None:
    fails_retryably(log=log)


@task(executor="agents", retries=2)
@agent("shell", command="echo attempt >> {log}; exit 5", fatal_exit_codes=[5])
def fails_for_good(log: str) -> None:
    """Exits 5, declared fatal: no retry."""


@workflow
def fatal_failure(log: str) -> None:
    fails_for_good(log=log)


@task(executor="agents", retries=2)
@agent("shell", command="slipstream-no-such-command-anywhere")
def not_found() -> None:
    """Exits 127 (command not found): no retry can help."""


@workflow
def command_not_found() -> None:
    not_found()


@task(executor="agents")
@agent("shell", command="echo $$ >> {log}; while [ ! -e {gate} ]; do sleep 0.05; done; echo done")
def wait_for_gate(log: str, gate: str) -> str:
    """Records its pid, then waits until ``gate`` exists."""


@workflow
def gated(log: str, gate: str) -> str:
    return wait_for_gate(log=log, gate=gate)


@task(executor="agents", timeout=1.0, retries=1)
@agent("shell", command="echo $$ >> {log}; sleep 60")
def sleeps(log: str) -> None:
    """Outlives its timeout."""


@workflow
def timing_out(log: str) -> None:
    sleeps(log=log)


@task(executor="agents", secrets=["SLIPSTREAM_AGENT_TOKEN"])
@agent("shell", command="printf '%s' \"$SLIPSTREAM_AGENT_TOKEN\"")
def print_token() -> str:
    """Prints the declared secret, which the agent puts in the job's environment."""


@workflow
def token() -> str:
    return print_token()


@task(executor="agents", timeout=30.0)
@agent("file_sensor")
def arrives(path: str) -> str:
    """Waits for ``path`` to exist."""


@workflow
def sensed(path: str) -> str:
    return arrives(path=path)


@task(executor="agents")
@agent("no_such_agent", query="select 1")
def on_missing_agent() -> None:
    """Declares an agent that is not installed."""


@workflow
def missing_agent() -> None:
    on_missing_agent()


@task(executor="agents")
@agent("shell", command="true", colour="blue")
def bad_setting() -> None:
    """Gives the shell agent a setting it does not take."""


@workflow
def bad_settings() -> None:
    bad_setting()


@workflow
def shout_all(texts: list[str]) -> list[str]:
    return map_task(shout)(text=texts)


@task(executor="agents")
@agent("shell", command="echo $$ >> {gate}.pids; while [ ! -e {gate} ]; do sleep 0.05; done; printf '%s' {gate}")
def wait_for_own_gate(gate: str) -> str:
    """Records its pid beside ``gate``, waits until ``gate`` exists, then prints it."""


@workflow
def gated_map(gates: list[str]) -> list[str]:
    return map_task(wait_for_own_gate)(gate=gates)


@workflow
def sensed_all(paths: list[str]) -> list[str]:
    return map_task(arrives, concurrency=200)(path=paths)


@task(executor="agents", retries=2)
@agent("shell", command="true", cwd="/slipstream/no/such/directory")
def in_missing_directory() -> None:
    """Runs in a directory that does not exist."""


@workflow
def missing_directory() -> None:
    in_missing_directory()
