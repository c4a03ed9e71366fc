"""``@agent``: declare that a task's work runs on an agent, with the agent's settings.

The declaration lives on the task's function, so it travels wherever the task's code does (by
import, or cloudpickled) and its settings are part of the task's source hash (a changed command is
a new workflow version). The control loop never sees it: the ``agents`` executor reads it when it
gets an attempt.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from engine.errors import ConfigError

__all__ = ["AgentDeclaration", "agent", "declaration_of"]

F = TypeVar("F", bound=Callable[..., Any])

_ATTRIBUTE = "__slipstream_agent__"


@dataclass(frozen=True)
class AgentDeclaration:
    """Which agent runs a task, and the settings it gets in `engine.interfaces.AgentJob.config`."""

    name: str
    config: dict[str, Any] = field(default_factory=dict)


def agent(name: str, **config: Any) -> Callable[[F], F]:
    """Declare that the decorated task runs as a job on the agent ``name``.

    Put it under ``@task(executor="agents")``; the function's signature types the task's inputs
    and outputs, and its body is not run: the agent's job produces the outputs::

        @task(executor="agents", timeout=600, retries=2)
        @agent("shell", command="wc -l < {path}")
        def count_lines(path: str) -> str:
            \"\"\"The line count of ``path``, by the shell agent.\"\"\"

    Args:
        name: the agent's entry-point name in ``slipstream.agents`` (``shell``, ``file_sensor``, or
            a plugin's).
        **config: the agent's settings (each agent documents its own and rejects unknown ones).

    Raises:
        ConfigError: ``name`` is empty.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"@agent needs the agent's name, such as 'shell' or 'file_sensor', got {name!r}")
    declaration = AgentDeclaration(name, dict(config))

    def decorate(fn: F) -> F:
        if not inspect.isfunction(fn):
            raise ConfigError(
                f"@agent({name!r}) decorates a function, got {type(fn).__name__}: put it under @task, "
                "as in @task(executor='agents') then @agent(...) then def"
            )

        @functools.wraps(fn)
        def runs_on_agent(*args: Any, **kwargs: Any) -> Any:
            raise ConfigError(
                f"task {fn.__qualname__!r} runs on agent {name!r}, not in this process: give it "
                "@task(executor='agents') and the engine the agents executor (executors=['local', 'agents'])"
            )

        setattr(runs_on_agent, _ATTRIBUTE, declaration)
        return runs_on_agent  # type: ignore[return-value]

    return decorate


def declaration_of(fn: Callable[..., Any]) -> AgentDeclaration | None:
    """The `agent` declaration of a task's function, or None if it has none."""
    found = getattr(fn, _ATTRIBUTE, None)
    return found if isinstance(found, AgentDeclaration) else None
