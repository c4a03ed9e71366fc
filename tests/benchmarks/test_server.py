"""``python -m benchmarks server``'s sweep figure runs end to end on a tiny workload (the whole
benchmark starts serve processes and takes minutes: the real sizes are for a person to run)."""

from __future__ import annotations

from benchmarks import server as bench_server


async def test_sweep_figure_runs_small(postgres_dsn: str) -> None:
    async with bench_server.database(postgres_dsn) as dsn:
        figures = await bench_server.bench_sweep(dsn, running=20, repeat=1)
    assert figures["running"] == 20
    assert figures["one_task_alone_ms"] > 0 and figures["one_task_during_sweep_ms"] > 0
    assert figures["sweep_drain_ms"] > 0 and figures["ratio_to_alone"] > 0
