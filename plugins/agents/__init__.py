"""Agents: task attempts as jobs that run somewhere else (a long query, a deployment, a sensor).

Declare a task with ``@task(executor="agents")`` and ``@agent(name, ...)``; give the engine the
``agents`` executor (``executors=["local", "agents"]``). `AgentExecutor` creates one job per
attempt on the agent, polls it from the event loop without holding a worker, and records the job
id in the attempt's handle, so that a restarted engine resumes polling the job instead of creating
another. Agents are found by name in the entry-point group ``slipstream.agents``; two are built in:
`ShellAgent` (``shell``) and `FileSensor` (``file_sensor``).
"""

from __future__ import annotations

from plugins.agents._declare import AgentDeclaration, agent, declaration_of
from plugins.agents._executor import AGENT_GROUP, AgentExecutor
from plugins.agents._sensor import FileSensor
from plugins.agents._shell import ShellAgent

__all__ = ["AGENT_GROUP", "AgentDeclaration", "AgentExecutor", "FileSensor", "ShellAgent", "agent", "declaration_of"]
