"""``python -m benchmarks peers`` runs end to end on tiny workloads, with or without flytekit."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import peers


def test_suite_runs_without_flytekit(monkeypatch: pytest.MonkeyPatch) -> None:
    # CI need not have flytekit: the suite says so and still measures Slipstream
    monkeypatch.setattr(peers, "flytekit_version", lambda: None)

    figures = peers.main(["--sizes", "20", "--repeat", "1"])

    assert figures["systems"]["flytekit_local"] == "not installed"
    rows = {row["workload"]: row for row in figures["workloads"]}
    assert set(rows) == {"W1", "W2", "W3"}
    assert rows["W1"]["elements"] == 20
    for row in rows.values():
        assert row["flytekit_local"] == "not installed"
        for system in peers.SLIPSTREAM:
            assert "error" not in row[system], row[system]["error"]
            assert row[system]["wall_s"] > 0
            assert row[f"ratio_{system}"] is None
    assert rows["W1"]["slipstream_embedded"]["start_s"] > 0
    assert figures["verdict"] == []  # no W1 at 10k or 100k, and nothing to compare with


def test_a_run_past_its_cap_is_skipped_with_a_note(tmp_path: Path) -> None:
    capped = peers.spawn("slipstream_local", "w1", 10, timeout=0.01, scripts=tmp_path)

    assert "took over" in capped["capped"]
    figure = peers.summarize([capped])
    assert "wall_s" not in figure and "killed, skipped" in figure["capped"]


def test_ratios_and_verdict() -> None:
    row = {
        "workload": "W1",
        "elements": 10_000,
        "slipstream_local": {"wall_s": 0.5},
        "slipstream_embedded": {"wall_s": 1.5},
        "flytekit_local": {"wall_s": 1.0},
    }
    for system in peers.SLIPSTREAM:
        row[f"ratio_{system}"] = peers._ratio(row[system], row["flytekit_local"])

    assert peers.verdict([row]) == [
        {"figure": "W1 10000", "system": "slipstream_local", "ratio": 0.5, "ok": True},
        {"figure": "W1 10000", "system": "slipstream_embedded", "ratio": 1.5, "ok": False},
    ]
    assert peers._ratio({"wall_s": 1.0}, "not installed") is None
    assert peers._ratio({"wall_s": 1.0}, {"capped": "took over 300 s"}) is None
