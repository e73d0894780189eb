"""Arrow arrays built without pandas: equal to ``pyarrow.array``'s, and pandas stays unloaded."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from stalesgd import arrow


def same(got: pa.Array, want: pa.Array) -> bool:
    """Equal type, nulls and values, NaN equal to NaN (``Array.equals`` says NaN != NaN)."""
    got.validate(full=True)
    return got.type == want.type and ([repr(v) for v in got.to_pylist()]
                                      == [repr(v) for v in want.to_pylist()])


@pytest.mark.parametrize("a", [
    np.arange(7, dtype=np.int64),
    np.arange(7, dtype=np.int32) - 3,
    np.array([0.5, math.nan, -math.inf, 1e300]),
    np.array([True, False, True, True, False, False, True, True, False, True]),
    np.arange(20, dtype=np.float32)[::3],      # strided
    np.zeros(0, dtype=np.int64),
    np.array([1, 2, 3], dtype=np.uint8),
    np.array(["a", "bc"]),                     # handed to pyarrow.array
])
def test_from_numpy_equals_pyarrow(a):
    assert same(arrow.from_numpy(a), pa.array(a))


@pytest.mark.parametrize("values,typ", [
    (["r0000", "ä€𝄞", ""], pa.string()),
    (["x", None, "y"], pa.string()),
    ([1, None, -(2**63)], pa.int64()),
    ([3, 4], pa.int32()),
    ([2**53, -(2**53), 0.25], pa.float64()),
    ([2**24, 1.5], pa.float32()),
    ([255, None], pa.uint8()),
    ([1.5, math.nan, None, 2], pa.float64()),
    ([True, None, False], pa.bool_()),
    ([None, None], pa.int64()),
    ([], pa.float64()),
])
def test_from_values_with_type_equals_pyarrow(values, typ):
    assert same(arrow.from_values(values, typ), pa.array(values, type=typ))


@pytest.mark.parametrize("values", [
    [1, 2, None], [1, 2.5], [True, False], ["a", None], [None, None], [0.1],
    [2**70],            # beyond int64: pyarrow.array decides
    [{"a": 1}],         # not a scalar kind: pyarrow.array decides
])
def test_from_values_inferred_equals_pyarrow(values):
    try:
        want = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
        with pytest.raises(type(exc)):
            arrow.from_values(values)
        return
    assert same(arrow.from_values(values), want)


@pytest.mark.parametrize("values,typ", [([2**40], pa.int32()), (["x"], pa.int64()),
                                        ([1.5], pa.string()), ([-1], pa.uint8()),
                                        ([2**53 + 1], pa.float64()), ([2**24 + 1], pa.float32())])
def test_from_values_rejects_what_pyarrow_rejects(values, typ):
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError)) as want:
        pa.array(values, type=typ)
    with pytest.raises(want.type):
        arrow.from_values(values, typ)


def test_empty_table():
    schema = pa.schema([("a", pa.string()), ("b", pa.int32()), ("c", pa.bool_())])
    assert arrow.empty_table(schema).equals(schema.empty_table())


_WRITE = """
import sys
import numpy as np
import stalesgd.real.engine, stalesgd.app.runner
assert "pyarrow" not in sys.modules, "pyarrow imported by the engine or runner"
from stalesgd.records import ResultsFolder, RunRecord, summarize
rec = RunRecord(summary={"run_id": "r0000", "engine": "real", "peak_rss_bytes": 5,
                         "stop_reason": "updates", "mean_tau": 0.5, "index": 0},
                updates={"k": np.arange(3), "worker": np.zeros(3, np.int32),
                         "t_read": np.zeros(3), "t_apply": np.ones(3),
                         "tau": np.zeros(3, np.int64), "eta": np.ones(3)},
                evals={"t": np.zeros(1), "k": np.zeros(1, np.int64), "loss": np.ones(1),
                       "accuracy": np.ones(1), "active_workers": np.ones(1, np.int32)})
with ResultsFolder.create("x", sys.argv[1]) as folder:
    folder.write_run(summarize(rec), rec)
print("pandas" in sys.modules, "pyarrow.compute" in sys.modules, folder.path)
"""


def test_a_run_is_written_without_importing_pandas_or_arrow_compute(tmp_path):
    out = subprocess.run([sys.executable, "-c", _WRITE, str(tmp_path)], env=dict(os.environ),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    pandas_loaded, compute_loaded, path = out.stdout.split()
    assert pandas_loaded == "False"
    assert compute_loaded == "False"  # no casts needed: ~13 MB not loaded
    from stalesgd.records import load_results

    res = load_results(path)
    assert list(res.updates["k"]) == [0, 1, 2]
    assert list(res.updates["dropped"]) == [False] * 3
    assert res.runs["stop_reason"].iloc[0] == "updates"
    assert res.runs["peak_rss_bytes"].iloc[0] == 5


@pytest.mark.parametrize("value", ["r0000", "", "ρ-run·7"])
@pytest.mark.parametrize("n", [0, 1, 5, 100_003])
def test_a_repeated_string_is_the_array_of_the_list(value, n):
    fast = arrow.repeated_string(value, n)
    assert fast.equals(arrow.strings([value] * n))
    assert fast.to_pylist()[:3] == [value] * min(n, 3) and len(fast) == n
