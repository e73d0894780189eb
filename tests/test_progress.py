"""The run progress bar: rounded seconds, and an open-ended display for budgets no run
reaches (no astronomical total or remaining time)."""

from __future__ import annotations

from stalesgd.progress import OPEN_ENDED_SECONDS, RunProgress


def shown(capsys, updates, seconds, unit, at_updates, at_seconds) -> str:
    bar = RunProgress(True, updates, seconds, unit)
    bar.update(at_updates, at_seconds)
    bar.bar.refresh()
    bar.close()
    return capsys.readouterr().err


def test_a_time_budget_shows_rounded_seconds_of_the_total(capsys):
    err = shown(capsys, None, 5.0, "s", 10, 4.004177859000265)
    assert "4.0/5.0 s" in err and "4.004" not in err


def test_a_budget_no_run_reaches_shows_the_seconds_so_far_only(capsys):
    err = shown(capsys, None, 1e30, "sim-s", 10, 12.34)
    assert "12.3 sim-s" in err
    assert "e+30" not in err and "1000000" not in err and "/" not in err.split("sim-s")[0]
    err = shown(capsys, None, OPEN_ENDED_SECONDS / 2, "s", 10, 3.0)
    assert "3.0/500000.0 s" in err


def test_an_update_budget_counts_updates(capsys):
    err = shown(capsys, 1000, None, "s", 250, 1.0)
    assert "250/1000" in err
