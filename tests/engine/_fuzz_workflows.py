"""A workflow with an input of each kind of type, for the fuzzed launches of test_bad_input."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from engine import task, workflow


@dataclass
class Point:
    x: float
    y: float


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@task
def describe(n: int, xs: list[int], weights: dict[str, float], at: Point, color: Color, note: str | None) -> str:
    return f"{n} {xs} {weights} {at} {color} {note}"


@workflow
def typed_wf(n: int, xs: list[int], weights: dict[str, float], at: Point, color: Color, note: str | None = None) -> str:
    return describe(n=n, xs=xs, weights=weights, at=at, color=color, note=note)
