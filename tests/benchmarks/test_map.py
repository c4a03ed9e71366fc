"""``python -m benchmarks map`` runs end to end on tiny maps (the real sizes are for a person to run)."""

from __future__ import annotations

from benchmarks import map as bench_map


def test_suite_runs_on_tiny_maps() -> None:
    figures = bench_map.main(["--sizes", "20", "60", "--repeat", "1", "--ratio", "20", "60"])

    rows = {(f["mode"], f["elements"]): f for f in figures["figures"]}
    assert set(rows) == {("async", 20), ("sync", 20), ("async", 60), ("sync", 60)}
    for row in rows.values():
        assert "errors" not in row, row["errors"]
        assert row["status"] == "succeeded"
        assert row["events"] == sum(row["events_by_kind"].values()) > 0
        assert row["wall_s"] > 0 and row["peak_rss_mib"] > 0 and row["reload_s"] >= 0
        assert row["baseline"]["wall_s"] >= 0 and row["ratio_to_baseline"] is not None
    assert [r["mode"] for r in figures["per_element_ratio"]] == ["async", "sync"]
    assert all(r["ratio"] is not None for r in figures["per_element_ratio"])
    # no 1,000,000-element map here: only the ratio checks have a value
    assert {c["figure"] for c in figures["verdict"]} == {"per_element_ratio"}


def test_a_failed_run_is_reported_not_counted() -> None:
    runs = [{"error": "engine sync map of 10 exited 1: boom"}]

    figure = bench_map.summarize("sync", 10, runs, [])

    assert figure == {"mode": "sync", "elements": 10, "errors": ["engine sync map of 10 exited 1: boom"]}
    assert bench_map.per_element_ratio([figure], "sync", 10, 20)["ratio"] is None


def test_verdict_checks_the_million_element_targets() -> None:
    million = {"mode": "sync", "elements": 1_000_000, "peak_rss_mib": 900.0, "wall_s": 61.0, "reload_s": 1.0}

    checks = bench_map.verdict([million], [{"mode": "sync", "ratio": 1.3}])

    assert {c["figure"]: c["ok"] for c in checks} == {
        "per_element_ratio": False,
        "map_1m_peak_rss_mib": True,
        "map_1m_wall_s": False,
        "map_1m_reload_s": True,
    }


def test_peak_rss_is_this_process_not_its_parent() -> None:
    # a child of this (pytest-sized) process must not report this process's RSS as its own
    child = bench_map.spawn("baseline", "sync", 10, timeout=60)

    assert 0 < child["peak_rss_mib"] < 200
