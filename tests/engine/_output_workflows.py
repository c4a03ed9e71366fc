"""Workflows whose outputs have types worth decoding (importable, so readers elsewhere get them typed)."""

from __future__ import annotations

import dataclasses

from engine import map_task, task, workflow


@dataclasses.dataclass
class Score:
    name: str
    value: float


@task
def score(name: str, value: float) -> Score:
    return Score(name, value)


@task
def halve(x: int) -> float:
    return x / 2


@task
def fails(x: int) -> int:
    raise ValueError(f"no output for {x}")


@task
def total(xs: list[float]) -> float:
    return sum(xs)


@workflow
def scored(name: str = "knn", xs: list[int] = [2, 4, 6]) -> Score:  # noqa: B006
    halves = map_task(halve)(x=xs)
    return score(name=name, value=total(xs=halves))


@workflow
def failing(x: int = 1) -> int:
    return fails(x=x)
