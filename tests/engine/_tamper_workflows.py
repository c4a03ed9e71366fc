"""Workflows of the tamper tests (importable by module path, so a resumed engine finds them)."""

from __future__ import annotations

from engine import task, workflow


@task
def add(a: int, b: int) -> int:
    return a + b


@workflow
def six(a: int = 2, b: int = 4) -> int:
    return add(a=a, b=b)
