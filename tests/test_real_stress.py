"""Reduced versions of the real engine's stress benchmarks (``bench/real_stress.py``,
``bench/real_long_run.py``): slow, run with ``make test-slow``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from stalesgd.app.cli import main
from stalesgd.real import control as C
from stalesgd.real.engine import RealRun
from stalesgd.real.pool import pool_size

from stalesgd.experiment import expand, experiment_from_flags

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("algorithm,persistence", [("lock", None), ("hogwild", None),
                                                   ("leashed", None), ("leashed", 1)])
def test_eight_threads_on_the_cores_record_every_update_once(algorithm, persistence):
    n = 1_000_000
    kw = {} if persistence is None else {"persistence": persistence}
    spec = expand(experiment_from_flags("real", problem="logreg-synthetic",
                                        algorithm=algorithm, workers=8, updates=n, **kw))[0]
    run = RealRun(spec, progress=False)
    rec = run.run()
    u = rec.updates
    applied = ~u["dropped"]
    assert np.array_equal(u["k"][applied], np.arange(n))
    assert int((~applied).sum()) == rec.summary["dropped"]
    assert rec.summary["workers_applied"] == 8
    if algorithm == "leashed":
        sh = run.shared
        latest = int(sh.ctrl[C.C_LATEST]) % sh.pool.shape[0]
        assert sh.refs[latest] == 1 and np.count_nonzero(sh.refs) == 1  # nothing leaked
        assert int(sh.ctrl[C.C_IN_USE]) == 1
        assert rec.summary["pool_high_water"] <= pool_size(8)


def test_a_command_line_run_puts_every_row_on_disk(tmp_path):
    n = 3_000_000
    assert main(["real", "--problem", "logreg-synthetic", "--algorithm", "hogwild",
                 "--workers", "2", "--updates", str(n), "--out", str(tmp_path),
                 "--no-progress"]) == 0
    (folder,) = tmp_path.iterdir()
    run = pd.read_parquet(folder / "runs.parquet").iloc[0]
    assert run["updates"] == n and run["stop_reason"] == "updates"
    pf = pq.ParquetFile(folder / "updates.parquet")
    expected = 0
    for i in range(pf.num_row_groups):  # one chunk at a time, in the order applied
        k = pf.read_row_group(i, columns=["k"]).column("k").to_numpy()
        assert np.array_equal(k, np.arange(expected, expected + len(k)))
        expected += len(k)
    assert expected == n
