"""Fast checks of bench/elastic_savings.py: the savings table pairs runs by seed with the static
baseline, counts non-convergence, and the sim plan adds the static baselines to elastic.toml."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "elastic_savings.py"


@pytest.fixture(scope="module")
def es():
    spec = importlib.util.spec_from_file_location("elastic_savings", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _row(controller: str, seed: int, t: float, cpu: float, reached: bool = True,
         diverged: bool = False) -> dict:
    return {"engine": "sim", "algorithm": "lock", "M": 16, "controller": controller,
            "seed": seed, "reached": reached, "diverged": diverged,
            "time_to_target": t if reached else np.nan, "time": t, "updates": 1,
            "cpu_seconds": cpu, "mean_active": 4.0, "changes": 0, "final_loss": 0.1,
            "peak_param_bytes": 100.0, "peak_rss_bytes": np.nan, "target": 0.2}


def test_savings_pairs_by_seed_and_counts_failures(es):
    df = pd.DataFrame([
        _row("static", 0, 2.0, 10.0), _row("static", 1, 4.0, 20.0),
        _row("static", 2, 9.0, 90.0, reached=False, diverged=True),
        # seed 0 saves 80 %, seed 1 saves 60 %; seed 2 has no static reference
        _row("window", 0, 1.0, 2.0), _row("window", 1, 2.0, 8.0), _row("window", 2, 3.0, 5.0),
    ])
    out = es.savings(df).set_index("controller")
    assert out.loc["static", "not_conv"] == "1/3 (1 div)"
    assert out.loc["window", "not_conv"] == "0/3 (0 div)"
    # mean of 80 % and 60 % with sd 14 %, over the two paired seeds only
    assert out.loc["window", "cpu_saved"] == "70% ± 14 (n=2)"
    assert out.loc["window", "time_ratio"] == "0.50 ± 0.00 (n=2)"
    assert out.loc["window", "cpu_to_target"] == "5 [2–8]"


def test_sim_plan_adds_static_baselines(es):
    specs = es.sim_specs([16], [0], oracle=8)
    labels = [es._label(s) for s in specs]
    assert labels == ["static", "fixed-8", "window", "ternary", "model"]
    assert all(s.workers == 16 and s.seed == 0 for s in specs)
    assert specs[0].controller.options == {}
    assert specs[1].controller.options == {"m": 8}
