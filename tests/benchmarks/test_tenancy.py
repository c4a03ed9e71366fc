"""``python -m benchmarks tenancy`` runs end to end on a tiny workload (the real sizes are for a person to run)."""

from __future__ import annotations

from benchmarks import tenancy as bench_tenancy


async def test_suite_runs_small(postgres_dsn: str) -> None:
    figures = await bench_tenancy.main(
        ["--executions", "20", "--events", "4", "--rounds", "1", "--reads", "5", "--postgres-dsn", postgres_dsn]
    )
    for mode in ("owner_rls_off", "owner", "tenant"):
        assert figures[mode]["append_events_per_s"]["median"] > 0 and figures[mode]["read_ms"]["p50"] > 0
    assert figures["tenant"]["read_all_events"] == 3 * 20 * 4  # it sees its project's events, all of them
    assert figures["owner_over_rls_off"] > 0 and figures["tenant_over_owner"] > 0
