"""Checks of bench/fidelity_matrix.py: its cells are medians with their spread, the targets
summary keeps problems and batches apart, and a smoke run writes a page (slow)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "fidelity_matrix.py"


@pytest.fixture(scope="module")
def fm():
    spec = importlib.util.spec_from_file_location("fidelity_matrix", BENCH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclass looks its module up
    spec.loader.exec_module(mod)
    return mod


def _x(tv: float, ups: float = 1.0) -> dict:
    return {"tv": tv, "ks": tv / 2, "w1": 10 * tv, "ups": ups}


def test_a_cell_is_the_median_and_its_range(fm):
    rows = [("lock", 4, s, "in", _x(tv)) for s, tv in enumerate((0.3, 0.1, 0.2))]
    rows += [("lock", 4, 0, "out", _x(0.05, 1.2))]
    lines = fm.table(rows, ["lock"], [4])
    assert lines[-1].startswith("| lock | 4 | 0.200 (0.100–0.300) | 1.00 (1.00–1.00) | 0.050 |")
    assert "pooled" not in lines[0]  # no column for a model that was not run
    assert fm._cell([], ".3f") == "–"


def test_the_summary_judges_each_problem_and_batch_apart(fm):
    # the same (algorithm, m) in two blocks: one meets the in-sample target, one misses it
    rows = [("a b16", "lock", 2, 0, "in", _x(0.01)), ("a b128", "lock", 2, 0, "in", _x(0.2)),
            ("a b16", "lock", 4, 0, "out", _x(0.05, 1.05)),
            ("a b128", "lock", 4, 0, "out", _x(0.3, 1.5))]
    text = "\n".join(fm.summary(rows, fit_workers=2, cores=2))
    assert "in sample, m ≤ 2 (target TV ≤ 0.05): 1 of 2 cells" in text
    assert "out of sample, m > 2 (target TV ≤ 0.10): 1 of 2 cells" in text
    assert "updates/s within 10 % in 1 of 2" in text


def test_repetitions_are_compared_with_each_other(fm):
    import numpy as np
    import pandas as pd

    # three repetitions of lock m = 4: two alike (τ 0/1), one all τ = 1
    taus = {"r0": [0, 1] * 50, "r1": [0, 1] * 50, "r2": [1] * 100}
    runs = pd.DataFrame({"run_id": list(taus), "algorithm": "lock", "workers": 4,
                         "seed": [0, 1, 2]})
    updates = pd.concat(pd.DataFrame({"run_id": rid, "tau": t, "dropped": False})
                        for rid, t in taus.items())
    res = type("Res", (), {"runs": runs, "updates": updates})()
    rows = fm.repetitions(res)
    assert sorted(round(x["tv"], 3) for *_r, x in rows) == [0.0, 0.5, 0.5]
    assert all(kind == "reps" for _a, _m, _s, kind, _x in rows)
    lines = fm.table(rows + [("lock", 4, 0, "in", _x(0.2))], ["lock"], [4])
    assert lines[0].endswith("| TV between repetitions | real runs unsteady / CPUs apart |")
    assert lines[-1].endswith("| 0.500 (0.000–0.500) | – |")
    text = "\n".join(fm.summary([("a b16", *r) for r in rows], fit_workers=2, cores=2))
    assert "repetitions of one configuration, m > 2: median TV between them 0.500" in text
    assert not np.isnan(rows[0][4]["tv"])


def test_cells_say_how_many_real_runs_had_an_unsteady_machine(fm):
    import numpy as np
    import pandas as pd

    # lock m = 4: run r0 steady, r1 halves its speed half-way, r2 ran with its CPUs apart
    t = np.arange(8000) * 1e-4
    slowed = np.r_[t[:4000], t[4000] + np.arange(4000) * 2e-4]
    runs = pd.DataFrame({"run_id": ["r0", "r1", "r2"], "algorithm": "lock", "workers": 4,
                         "seed": [0, 1, 2], "engine": "real",
                         "core_round_trip_ns_start": [60.0, 60.0, 340.0],
                         "core_round_trip_ns_end": [60.0, 60.0, 330.0]})
    updates = pd.concat(pd.DataFrame({"run_id": rid, "t_apply": ta, "dropped": False})
                        for rid, ta in (("r0", t), ("r1", slowed), ("r2", t)))
    res = type("Res", (), {"runs": runs, "updates": updates})()
    rows = fm.steadiness(res)
    assert [x["unsteady"] for *_r, x in rows] == [0.0, 1.0, 0.0]
    assert [x["apart"] for *_r, x in rows] == [0.0, 0.0, 1.0]
    lines = fm.table(rows + [("lock", 4, 0, "in", _x(0.2))], ["lock"], [4])
    assert lines[-1].endswith("| 1 / 1 of 3 |")
    text = "\n".join(fm.summary([("a b16", *r) for r in rows + [("lock", 4, 0, "in", _x(0.2))]],
                                fit_workers=2, cores=2))
    assert "1 of the 1 cells that miss and 0 of the 0 that meet it had a real run on an " \
        "unsteady machine; run by run, steady runs: median TV 0.200, 0 of 1 within 0.1" in text
    more = rows + [("lock", 4, 1, "in", _x(0.05)), ("lock", 4, 2, "in", _x(0.3))]
    text = "\n".join(fm.summary([("a b16", *r) for r in more], fit_workers=2, cores=2))
    assert "unsteady runs: median TV 0.050, 1 of 1 within 0.1; CPUs apart runs: median TV " \
        "0.300, 0 of 1 within 0.1" in text


@pytest.mark.slow
def test_a_quick_run_writes_the_page(fm, tmp_path):
    page = tmp_path / "fidelity.md"
    assert fm.main(["--quick", "--algorithms", "lock", "--workers", "1,2,4", "--seconds",
                    "0.5", "--out", str(tmp_path / "runs"), "--page", str(page)]) == 0
    text = page.read_text()
    assert "## MLP 784-128-10, synthetic, batch 16" in text and "| lock | 4 |" in text
    assert "out of sample, m > 2" in text


def test_blocks_of_one_problem_name_keep_their_own_calibrations(fm, tmp_path):
    # two MLP widths share the problem name: each block's prediction must come from its own
    # runs (the second took the first's m <= 1 file and stopped on its parameter count)
    for hidden in ([8], [8, 8]):
        problem = fm.Problem(f"MLP {hidden}", "mlp-synthetic",
                             {"hidden": hidden, "n_features": 20, "n_train": 500})
        rows = fm.measure(problem, 16, ["lock"], [1, 3], 1, 0.3, 1, tmp_path, None)
        kinds = sorted((m, kind) for _alg, m, _seed, kind, _x in rows)
        assert kinds == [(1, "in"), (1, "steady"), (3, "in"), (3, "out"), (3, "steady")]
    assert len(list(tmp_path.glob("cal-*-lock-s0-m1.json"))) == 2
