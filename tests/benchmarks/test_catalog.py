"""``python -m benchmarks catalog`` runs end to end on a tiny map (the real sizes are for a person to run)."""

from __future__ import annotations

from benchmarks import catalog as bench_catalog


async def test_suite_runs_small(postgres_dsn: str) -> None:
    figures = await bench_catalog.main(
        ["--repeat", "1", "--map-size", "200", "--lookups", "20", "--postgres", postgres_dsn]
    )

    pruning = figures["feature_pruning"]
    assert 0 < pruning["cached_s"] < pruning["uncached_s"] and pruning["cached_over_uncached"] < 1
    for store in ("sqlite", "postgres"):
        latency = figures["lookup_latency_ms"][store]
        assert 0 < latency["p50"] <= latency["p99"] and latency["lookups"] == 20
    map_cost = figures["map_10k"]
    assert map_cost["elements"] == 200 and map_cost["overhead_ratio"] > 0 and map_cost["hit_ratio"] > 0
