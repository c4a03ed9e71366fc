"""Tasks for tests/plugins/test_entry_points.py: plain tasks (run by whatever executor is the
engine's default) and one on the third-party ``countdown`` agent."""

from __future__ import annotations

from engine import task, workflow
from plugins.agents import agent


@task
def square(x: int) -> int:
    return x * x


@task
async def plus_one(x: int) -> int:
    return x + 1


@task(executor="agents")
@agent("countdown", seconds=0.2)
def doubled(n: int) -> int:
    """Twice ``n``, by the countdown agent of the third-party plugin."""


@workflow
def pipeline(x: int) -> int:
    return doubled(n=plus_one(x=square(x=x)))


@task
def upper(text: str) -> str:
    return text.upper()


@workflow
def shout_back(text: str) -> str:
    return upper(text=text)
