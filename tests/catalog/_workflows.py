"""Cached workflows for the catalog tests; importable by module path. Each task body appends a line
to ``$SLIPSTREAM_TEST_SIDE_EFFECTS/<name>.log``, so a test counts how often a body really ran."""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

from engine import ArtifactQuery, current_context, dynamic, map_task, task, workflow


def record(name: str, detail: object = "") -> None:
    directory = os.environ.get("SLIPSTREAM_TEST_SIDE_EFFECTS")
    if directory:
        with open(Path(directory) / f"{name}.log", "a") as log:
            log.write(f"{current_context().execution_id} {detail}\n")


@task(cache=True, cache_version="1", cache_ignore_inputs=["note"])
def slow_square(x: int, note: str = "") -> int:
    record("slow_square", x)
    return x * x


@workflow
def square_wf(x: int = 3, note: str = "") -> int:
    return slow_square(x=x, note=note)


@task(cache=True, cache_version="1")
def scaled(x: int, factor: float) -> float:
    record("scaled", x)
    return x * factor


@workflow
def map_wf(xs: list[int], factor: float = 2.0) -> list[float]:
    return map_task(functools.partial(scaled, factor=factor))(x=xs)


@task
def total(xs: list[int]) -> int:
    return sum(xs)


@dynamic
def squares(n: int) -> int:
    return total(xs=[slow_square(x=i) for i in range(n)])


@workflow
def dynamic_wf(n: int = 3) -> int:
    return squares(n=n)


@task(cache=True, cache_version="1", cache_serialize=True)
def expensive(x: int) -> int:
    time.sleep(0.4)  # long enough for the other executions to find the key reserved
    record("expensive", x)
    return x + 100


@workflow
def serialized_wf(x: int = 1) -> int:
    return expensive(x=x)


@task(cache=True, cache_version="1", cache_ttl=3600)
def dated(x: int) -> int:
    record("dated", x)
    return x


@workflow
def ttl_wf(x: int = 1) -> int:
    return dated(x=x)


def versioned(version: str) -> object:
    """The same task under another cache_version (one qualname, so one catalog name)."""

    @task(cache=True, cache_version=version)
    def bumped(x: int) -> int:
        record("bumped", version)
        return x

    @workflow
    def bumped_wf(x: int = 1) -> int:
        return bumped(x=x)

    return bumped_wf


@task(cache=True)
def load(n: int) -> list[int]:
    return list(range(n))


@task(cache=True)
def featurize(rows: list[int]) -> list[int]:
    return [r * r for r in rows]


@task
def count(rows: list[int]) -> int:
    return len(rows)


@task(cache=True)
def fit(features: list[int], size: int) -> float:
    return sum(features) / max(size, 1)


@workflow
def pipeline_wf(n: int = 4) -> float:
    rows = load(n=n)
    return fit(features=featurize(rows=rows), size=count(rows=rows))


@task(publish="features", partitions=["region"])
def make_features(region: str, n: int) -> list[int]:
    return list(range(n))


@workflow
def publish_wf(region: str, n: int) -> list[int]:
    return make_features(region=region, n=n)


@task(publish="features", partitions=["region"])
def wrong_features(region: str) -> str:
    return "not a list"


@workflow
def publish_wrong_wf(region: str) -> str:
    return wrong_features(region=region)


@task
def summarize(features: list[int]) -> int:
    return sum(features)


@workflow
def consume_wf(features: list[int] = ArtifactQuery("features", {"region": "eu"})) -> int:
    return summarize(features=features)
