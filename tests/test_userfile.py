"""The data set ``file``: .npz and .csv files, their checks, the hold-out, the checksum, and
the file's identity in the results."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pandas as pd
import pytest
from stalesgd.app.cli import main

from stalesgd.data import DataCorruptError, DataNotFoundError, DataReadError, load_dataset
from stalesgd.experiment import loads_experiment
from stalesgd.problems import make_problem
from stalesgd.problems.registry import check_problem
from stalesgd.validation import OptionError


def _classes(n=50, d=3, k=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = np.arange(n) % k
    return X, y


@pytest.fixture
def npz(tmp_path):
    """Write an .npz file of the given arrays; returns its path."""
    def write(name="d.npz", **arrays):
        path = tmp_path / name
        np.savez(path, **arrays)
        return path
    return write


def _csv(tmp_path, rows, name="d.csv", header=None):
    path = tmp_path / name
    lines = ([header] if header else []) + [",".join(f"{v:g}" for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_npz_with_a_test_split_is_read_as_given(npz):
    X, y = _classes(40)
    Xt, yt = _classes(10, seed=1)
    path = npz(X=X, y=y, X_test=Xt, y_test=yt)
    d = load_dataset("file", file=str(path), dtype="float32")
    assert (d.n_train, d.n_test, d.n_classes, d.input_shape) == (40, 10, 2, (3,))
    assert d.X_train.dtype == np.float32 and d.y_train.dtype == np.int64
    np.testing.assert_array_equal(d.X_test, Xt.astype(np.float32))
    np.testing.assert_array_equal(d.y_train, y)
    assert d.meta["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert d.meta["held_out"] is False


def test_without_a_test_split_a_seeded_hold_out_is_taken(npz):
    X, y = _classes(53)
    X[:, 0] = np.arange(53)  # row ids
    path = npz(X=X, y=y)
    a = load_dataset("file", file=str(path))
    b = load_dataset("file", file=str(path))
    c = load_dataset("file", file=str(path), seed=7)
    n_test = math.ceil(0.2 * 53)
    assert (a.n_train, a.n_test) == (53 - n_test, n_test)
    ids = np.concatenate([a.X_train[:, 0], a.X_test[:, 0]])
    assert sorted(ids) == list(range(53))  # a partition of the rows
    assert np.all(np.diff(a.X_train[:, 0]) > 0)  # in file order
    np.testing.assert_array_equal(a.X_test, b.X_test)  # the same seed, the same split
    assert not np.array_equal(a.X_test, c.X_test)
    perm = np.random.default_rng(0).permutation(53)
    np.testing.assert_array_equal(a.X_test[:, 0], np.sort(perm[:n_test]))  # as documented
    d = load_dataset("file", file=str(path), test_fraction=0.5, n_train=10)
    assert (d.n_train, d.n_test) == (10, 27)


def test_csv_label_column_and_header(tmp_path):
    X, y = _classes(20)
    last = _csv(tmp_path, np.column_stack([X, y]))
    first = _csv(tmp_path, np.column_stack([y, X]), name="first.csv", header="label,a,b,c")
    a = load_dataset("file", file=str(last))
    b = load_dataset("file", file=str(first), label_column=0, header=True)
    np.testing.assert_array_equal(a.X_train, b.X_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    with pytest.raises(DataCorruptError, match="not comma-separated numbers.*header = true"):
        load_dataset("file", file=str(first), label_column=0)
    with pytest.raises(OptionError, match=r"label_column = 4 .*-4\.\.3"):
        load_dataset("file", file=str(last), label_column=4)


def test_regression_targets_for_linreg(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 2))
    path = _csv(tmp_path, np.column_stack([X, X @ [1.5, -2.0] + 0.25]))
    p = make_problem("linreg-file", file=str(path))
    assert p.dataset.n_classes == 0 and p.dataset.y_train.dtype == np.float64
    with pytest.raises(DataCorruptError, match="labels must be the integers 0..K-1"):
        check_problem("logreg-file", {"file": str(path)})


@pytest.mark.parametrize("arrays,message", [
    ({"X": np.zeros((4, 2)), "Y": np.zeros(4)}, "holds the arrays X, Y; a data file holds X and y"),
    ({"X": np.zeros(4), "y": np.zeros(4)}, r"X has shape \(4,\); expected \(rows, features\)"),
    ({"X": np.zeros((4, 2)), "y": np.zeros(3)}, r"y has shape \(3,\); expected \(4,\)"),
    ({"X": np.zeros((0, 2)), "y": np.zeros(0)}, "X has no rows"),
    ({"X": np.ones((4, 2)), "y": np.array([0, 1, 0, 1]), "X_test": np.ones((0, 2)),
      "y_test": np.zeros(0)}, "X_test has no rows"),
    ({"X": np.ones((4, 2)), "y": np.array([0, 1, 0, 1]), "X_test": np.ones((2, 3)),
      "y_test": np.zeros(2)}, "X_test has 3 features, X has 2"),
    ({"X": np.ones((4, 2)), "y": np.array([0, 1, 0, 1]), "X_test": np.ones((2, 2))},
     "only one of X_test and y_test"),
    ({"X": np.array([[1.0, 2.0], [3.0, np.nan], [0, 0], [1, 1]]), "y": np.array([0, 1, 0, 1])},
     "X has 1 non-finite values .*first at row 1, column 1"),
    ({"X": np.ones((4, 2)), "y": np.array([0, 1, 0.5, 1])}, "labels must be the integers 0..K-1"
                                                            ".*found 0.5"),
    ({"X": np.ones((4, 2)), "y": np.array([1, 2, 1, 2])}, r"missing \[0\]"),
    ({"X": np.ones((4, 2)), "y": np.zeros(4)}, "every class present and K >= 2"),
    ({"X": np.array([["a", "b"]] * 4), "y": np.zeros(4)}, "X holds <U1 values"),
])
def test_bad_arrays_are_refused_naming_the_file_and_the_problem(npz, arrays, message):
    path = npz(**arrays)
    with pytest.raises(DataCorruptError, match=message) as err:
        check_problem("softmax-file", {"file": str(path)})
    assert str(path) in str(err.value)


def test_missing_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(DataNotFoundError, match="no such data file"):
        check_problem("logreg-file", {"file": str(tmp_path / "none.npz")})
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(DataReadError, match="is a folder"):
        check_problem("logreg-file", {"file": str(tmp_path / "dir.csv")})
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataCorruptError, match="not a readable NumPy .npz archive"):
        check_problem("logreg-file", {"file": str(tmp_path / "junk.npz")})
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(DataCorruptError, match="not UTF-8 text"):
        check_problem("logreg-file", {"file": str(tmp_path / "bin.csv")})
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataCorruptError, match="holds no examples"):
        check_problem("logreg-file", {"file": str(tmp_path / "empty.csv")})
    (tmp_path / "one.csv").write_text("1\n0\n")
    with pytest.raises(DataCorruptError, match="at least one feature and the label"):
        check_problem("logreg-file", {"file": str(tmp_path / "one.csv")})
    (tmp_path / "row.csv").write_text("1,0\n")
    with pytest.raises(DataCorruptError, match="a hold-out test split needs at least 2"):
        check_problem("linreg-file", {"file": str(tmp_path / "row.csv")})


@pytest.mark.parametrize("options,message", [
    ({}, "file = None is missing"),
    ({"file": "data.svm"}, r"unsupported suffix '.svm'; allowed: a file ending in .npz, .csv"),
    ({"file": "data.npz", "sha256": "abc"}, "sha256 = 'abc' is not allowed; allowed: 64 hex"),
    ({"file": "data.npz", "header": True}, "header = true is set for a .npz file"),
    ({"file": "data.npz", "test_fraction": 1.0}, "test_fraction = 1.0"),
    ({"file": "data.npz", "data_dir": "."}, "no data_dir"),
    ({"file": "data.npz", "normalize": "unit"}, "normalize = 'unit' is an unknown option"),
])
def test_bad_options_are_refused_before_reading(options, message):
    with pytest.raises(OptionError, match=message):
        check_problem("logreg-file", options)


def test_the_checksum_is_verified_and_the_models_fit_is_checked(npz):
    X, y = _classes(30, k=3)
    path = npz(X=X, y=y)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert check_problem("softmax-file", {"file": str(path), "sha256": digest.upper()}
                         ).data.n_classes == 3
    with pytest.raises(DataCorruptError, match=f"sha256 {digest}, expected 0+ "):
        check_problem("softmax-file", {"file": str(path), "sha256": "0" * 64})
    with pytest.raises(OptionError, match="logreg needs 2 classes; data set 'file' has 3"):
        check_problem("logreg-file", {"file": str(path)})
    # a file replaced after it was checked is refused when it is loaded
    X2, y2 = _classes(30, k=3, seed=5)
    np.savez(path, X=X2, y=y2)
    with pytest.raises(DataCorruptError, match="not the one the experiment names"):
        make_problem("softmax-file", file=str(path), sha256=digest)


def test_cli_run_records_the_files_path_and_checksum(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    X, y = _classes(60)
    _csv(tmp_path, np.column_stack([X, y]), name="train.csv")
    digest = hashlib.sha256((tmp_path / "train.csv").read_bytes()).hexdigest()
    argv = ["real", "--problem", "logreg-file", "--data-file", "train.csv", "--algorithm",
            "lock", "--workers", "1", "--updates", "50", "--batch", "4", "--out", "out",
            "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    (folder,) = (tmp_path / "out").iterdir()
    runs = pd.read_parquet(folder / "runs.parquet")
    assert runs["data_file"].tolist() == [str(tmp_path / "train.csv")]
    assert runs["data_sha256"].tolist() == [digest]
    assert main([*argv, "--data-sha256", "1" * 64]) == 2
    err = capsys.readouterr().err
    assert "sha256" in err and "not the one the experiment names" in err
    assert "Traceback" not in err
    assert len(list((tmp_path / "out").iterdir())) == 1  # the refused run left no folder


def test_an_experiment_file_names_the_file_and_its_checksum(npz):
    X, y = _classes(40, k=3)
    path = npz(X=X, y=y)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    exp = loads_experiment(f"""
[problem]
name = "mlp-file"
batch = 8
options = {{file = "{path}", sha256 = "{digest}", hidden = [4], test_fraction = 0.25}}
[stop]
updates = 10
""")
    assert exp.problem.options["sha256"] == digest
    with pytest.raises(OptionError, match=r"problem.batch = 64 .*1\.\.32 \(the training examples"):
        loads_experiment(f"[problem]\nname = 'mlp-file'\nbatch = 64\n"
                         f"options = {{file = '{path}'}}\n[stop]\nupdates = 10\n")
