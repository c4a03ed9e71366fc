"""``python -m benchmarks ray`` runs end to end on a tiny map (the real size is for a person to run)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from benchmarks import ray as bench_ray
from tests.plugins.ray._session import ensure_ray, ray_session


@pytest.fixture(scope="module", autouse=True)
def _ray() -> Iterator[None]:
    yield from ray_session()


async def test_suite_runs_on_a_tiny_map() -> None:
    ensure_ray()  # two logical GPUs; the suite uses the Ray this process runs
    figures = await bench_ray.main(["--elements", "200", "--repeat", "1", "--gpu-repeat", "1"])

    mapped, gpu = figures["map"], figures["gpu_start"]
    assert mapped["elements"] == 200 and mapped["actors"] >= 1
    assert mapped["engine_over_raw"] > 0 and len(mapped["engine_s"]) == len(mapped["raw_s"]) == 1
    assert gpu["cold_ms_median"] > 0 and gpu["warm_ms_median"] > 0 and gpu["gpu_ids"] in (["0"], ["1"])
    assert set(figures["met"]) == {"engine_over_raw", "cold_over_warm"}
    assert figures["gpus"] == "as initialised by the caller"
