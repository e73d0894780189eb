"""The sparse input form: the CSR container, the seeded text-like ``sparse`` set and its
option checks, and the svmlight reader."""

from __future__ import annotations

import numpy as np
import pytest

from stalesgd.data import check_dataset, load_dataset
from stalesgd.data.cli import data_command
from stalesgd.data.csr import CSRMatrix, csr_from_coo
from stalesgd.validation import OptionError

SMALL = {"n_train": 600, "n_test": 200, "n_features": 3000, "nnz": 30}


def test_csr_matrix_checks_and_densifies():
    X = csr_from_coo(np.array([0, 0, 2]), np.array([1, 3, 0]), np.array([1.0, 2.0, 3.0]),
                     3, 4, np.float64)
    assert X.shape == (3, 4) and X.nnz == 3 and X.max_row_nnz == 2
    np.testing.assert_array_equal(X.toarray(), [[0, 1, 0, 2], [0, 0, 0, 0], [3, 0, 0, 0]])
    np.testing.assert_array_equal(X.toarray(2), [3, 0, 0, 0])
    tail = X.row_range(1, 3)
    np.testing.assert_array_equal(tail.toarray(), X.toarray()[1:])
    with pytest.raises(ValueError, match="column indices"):
        CSRMatrix(X.indptr, np.array([1, 3, 4], dtype=np.int32), X.values, 4)
    with pytest.raises(ValueError, match="int32"):
        CSRMatrix(X.indptr, X.indices.astype(np.int64), X.values, 4)


def test_sparse_set_is_seeded_and_shaped_like_text():
    a = load_dataset("sparse", seed=3, **SMALL)
    b = load_dataset("sparse", seed=3, **SMALL)
    c = load_dataset("sparse", seed=4, **SMALL)
    for name in ("indptr", "indices", "values"):
        np.testing.assert_array_equal(getattr(a.X_train, name), getattr(b.X_train, name))
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert not np.array_equal(a.X_train.indices, c.X_train.indices)
    X = a.X_train
    assert a.sparse and X.shape == (600, 3000) and a.X_test.shape == (200, 3000)
    lengths = np.diff(X.indptr)
    assert lengths.min() >= 1 and lengths.max() <= 30 and lengths.mean() > 20
    for r in range(0, 600, 97):  # strictly increasing columns, unit-length rows
        cols = X.indices[X.indptr[r]:X.indptr[r + 1]]
        assert np.all(np.diff(cols) > 0)
        v = X.values[X.indptr[r]:X.indptr[r + 1]]
        assert abs(float(v @ v) - 1.0) < 1e-12
    # Zipf: a few terms appear in most rows, most terms in few
    counts = np.sort(np.bincount(X.indices, minlength=3000))[::-1]
    assert counts[0] > 0.5 * 600 and np.median(counts) < 0.02 * 600
    # 1/r: the 10th term is drawn 10 times as often as the 100th (rows holding it: ~8.6×)
    assert 6 < counts[9] / counts[99] < 12
    assert a.nbytes() < 0.05 * (800 * 3000 * 8)  # proportional to non-zeros, not to d


def test_sparse_labels_follow_the_planted_separator_with_the_noise_asked():
    d = load_dataset("sparse", seed=1, noise=0.1, **SMALL)
    scores = d.X_train.toarray() @ d.meta["w_true"]
    agree = float(np.mean(scores.argmax(axis=1) == d.y_train))
    # a flipped label is redrawn uniformly: half of them keep their class (2 classes)
    assert abs(agree - (1 - 0.1 / 2)) < 0.03
    assert 0.4 < d.y_train.mean() < 0.6
    multi = load_dataset("sparse", seed=1, n_classes=5, noise=0.0, **SMALL)
    assert set(np.unique(multi.y_train)) == set(range(5))
    scores = multi.X_train.toarray() @ multi.meta["w_true"]
    np.testing.assert_array_equal(scores.argmax(axis=1), multi.y_train)


def test_sparse_float32_values():
    d = load_dataset("sparse", dtype="float32", seed=0, **SMALL)
    assert d.dtype == np.float32 and d.X_train.values.dtype == np.float32
    assert d.inputs("train")[2].dtype == np.float32 and d.inputs("test")[3] == 3000


@pytest.mark.parametrize(("options", "key"), [
    ({"nnz": 0}, "nnz"), ({"nnz": 5000, "n_features": 3000}, "nnz"), ({"noise": 1.5}, "noise"),
    ({"n_classes": 1}, "n_classes"), ({"zipf": -1}, "zipf"), ({"kind": "images"}, "kind"),
    ({"n_train": 10**7, "nnz": 100}, "n_train"), ({"n_features": 1}, "n_features"),
])
def test_sparse_options_are_checked(options, key):
    with pytest.raises(OptionError) as info:
        check_dataset("sparse", **options)
    assert info.value.key == key


def test_sparse_shape_without_generating():
    shape, opts = check_dataset("sparse", n_train=100, n_test=10, nnz=7, n_features=500)
    assert (shape.n_train, shape.n_test, shape.n_features, shape.n_classes) == (100, 10, 500, 2)
    assert shape.nbytes("float64") == 110 * (7 * 12 + 8) and opts["zipf"] == 1.0
    with pytest.raises(OptionError, match="needs no files"):
        check_dataset("sparse", data_dir="/nowhere")


def test_data_command_knows_sparse_is_generated(capsys):
    assert data_command("verify", "sparse") == 0
    assert "generated from a seed" in capsys.readouterr().out
    assert data_command("path", "sparse") == 2
