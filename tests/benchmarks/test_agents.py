"""``python -m benchmarks agents`` runs end to end on a few jobs (the real size is for a person to run)."""

from __future__ import annotations

import asyncio

from benchmarks import agents as bench_agents


def test_suite_runs_on_a_few_jobs() -> None:
    figures = asyncio.run(bench_agents.main(["--jobs", "5", "--repeat", "1"]))

    assert figures["many_jobs"]["jobs"] == 5 and figures["many_jobs"]["ratio_to_baseline"] > 0
    assert figures["one_job"]["engine_s"] > 0 and figures["one_job"]["baseline_s"] > 0
    assert figures["threads"]["most_while_in_flight"] >= figures["threads"]["engine_before"]
