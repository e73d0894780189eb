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
    with pytest.raises(DataCorruptError, match="example 1, column 1: 'label' is not a number; "
                                               ".*a first line of names needs header = true"):
        load_dataset("file", file=str(first), label_column=0)
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2,0\n\n3,x,1\n")  # (a blank line is not an example)
    with pytest.raises(DataCorruptError, match=r"bad.csv: example 2, column 2: 'x' is not a "
                                               r"number; a data file holds comma-separated "
                                               r"numbers$"):
        load_dataset("file", file=str(bad))
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
     r"X has 1 non-finite value .*first at X\[1, 1\] \(rows and columns counted from 0\)"),
    ({"X": np.ones((4, 2)), "y": np.array([0, 1, 0.5, 1])}, "labels must be the integers 0..K-1"
                                                            ".*y holds 0.5; a regression model"),
    ({"X": np.ones((4, 2)), "y": np.array([-1, 1, -1, 1])}, "y holds -1, -1; for labels -1 and "
                                                            r"\+1 write 0 and 1"),
    ({"X": np.ones((4, 2)), "y": np.array([0, 1, 0, 1]), "X_test": np.ones((2, 2)),
      "y_test": np.array([1, 3])}, r"missing \[2\]; y_test holds \[3\], which y does not"),
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
    with pytest.raises(DataCorruptError, match="not a NumPy .npz archive"):
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
    ({"file": "data.txt"}, r"unsupported suffix '.txt'; allowed: a file ending in .npz, .csv, "
                           r".svm, .svmlight, .libsvm \(.csv and svmlight files also with .gz or "
                           r".bz2 after it\), or the option format"),
    ({"file": "rcv1_train.binary.bz2"}, "unsupported suffix '.binary'"),
    ({"file": "data.npz.gz"}, r"a npz file without .gz \(only .csv and svmlight text"),
    ({"file": "data.bin", "format": "libsvm"}, "format = 'libsvm' is not allowed; allowed: npz, "
                                               "csv, svmlight"),
    ({"file": "d.svm", "label_column": 0}, "label_column = 0 is set for a svmlight file"),
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
    with pytest.raises(OptionError, match=r"logreg needs 2 classes \(labels 0 and 1\); data set "
                                          rf"'file {path}' has 3 \(labels 0..2\)"):
        check_problem("logreg-file", {"file": str(path)})
    # a file replaced after it was checked is refused when it is loaded
    X2, y2 = _classes(30, k=3, seed=5)
    np.savez(path, X=X2, y=y2)
    with pytest.raises(DataCorruptError,
                       match=r"not the one the experiment \(or --data-sha256\) names"):
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
    assert "sha256" in err and "not the one the experiment (or --data-sha256) names" in err
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


# --- svmlight files ---------------------------------------------------------------------

def _svmlight_text(X, labels):
    """svmlight lines (1-based indices) of the dense rows ``X`` with ``labels``."""
    lines = []
    for row, label in zip(X, labels, strict=True):
        entries = " ".join(f"{j + 1}:{float(v)!r}" for j, v in enumerate(row) if v != 0)
        lines.append(f"{label:g} {entries}")
    return "\n".join(lines) + "\n"


def _sparse_rows(n=40, d=12, seed=0):
    rng = np.random.default_rng(seed)
    X = np.round(rng.normal(size=(n, d)), 4) * (rng.random((n, d)) < 0.25)  # (as .csv keeps)
    X[:, 0] = 1.0  # every row holds something
    return X


@pytest.mark.parametrize("compression", [None, "gz", "bz2"])
def test_svmlight_files_run_as_sparse_sets_with_the_hold_out_of_a_csv(tmp_path, compression):
    import bz2
    import gzip

    X = _sparse_rows()
    y = np.arange(X.shape[0]) % 2
    text = _svmlight_text(X, 2 * y - 1)  # ±1 labels
    path = tmp_path / "d.svm"
    if compression is None:
        path.write_text(text)
    else:
        path = tmp_path / f"d.svm.{compression}"
        path.write_bytes((gzip if compression == "gz" else bz2).compress(text.encode()))
    prob = make_problem("logreg-file", file=str(path), test_fraction=0.25, seed=3)
    d = prob.dataset
    assert d.sparse and prob.sparse  # the linear model with the sparse gradient contract
    assert type(prob.model).__name__ == "LinearClassifier"
    assert d.meta["format"] == "svmlight" and d.meta["class_labels"] == [-1.0, 1.0]
    assert d.max_row_nnz == int((X != 0).sum(axis=1).max())
    # the same rows, read densely from a .csv, give the same hold-out split
    csv = _csv(tmp_path, np.column_stack([X, y]))
    dense = make_problem("logreg-file", file=str(csv), test_fraction=0.25, seed=3).dataset
    np.testing.assert_array_equal(d.features("train"), dense.features("train"))
    np.testing.assert_array_equal(d.features("test"), dense.features("test"))
    np.testing.assert_array_equal(d.y_train, dense.y_train)
    np.testing.assert_array_equal(d.y_test, dense.y_test)
    small = make_problem("logreg-file", file=str(path), n_train=5, n_test=3,
                         dtype="float32").dataset
    assert small.X_train.shape == (5, 12) and small.X_test.shape == (3, 12)
    assert small.X_train.dtype == np.float32


def test_svmlight_class_labels_are_numbered_in_ascending_order(tmp_path):
    X = _sparse_rows(30)
    path = tmp_path / "news.libsvm"
    path.write_text(_svmlight_text(X, 1 + np.arange(30) % 3))  # LIBSVM's classes 1..3
    d = make_problem("softmax-file", file=str(path)).dataset
    assert d.n_classes == 3 and d.meta["class_labels"] == [1.0, 2.0, 3.0]
    assert sorted(set(d.y_train) | set(d.y_test)) == [0, 1, 2]
    # a file whose name does not tell its format, named by the option format
    other = tmp_path / "rcv1_train.binary"
    other.write_text(_svmlight_text(X, np.where(np.arange(30) % 2, 4, 2)))  # 2/4 labels
    with pytest.raises(OptionError, match="unsupported suffix '.binary'"):
        check_problem("logreg-file", {"file": str(other)})
    shape = check_problem("logreg-file", {"file": str(other), "format": "svmlight"})
    assert shape.data.nnz_per_row == int((X != 0).sum(axis=1).max())
    # regression targets stay numbers
    path.write_text(_svmlight_text(X, np.linspace(-1, 1, 30)))
    reg = make_problem("linreg-file", file=str(path)).dataset
    assert reg.n_classes == 0 and reg.y_train.dtype == np.float64
    with pytest.raises(DataCorruptError, match="label -0.931034 of example 2 is not allowed; class "
                                               "labels are integers"):
        make_problem("logreg-file", file=str(path))


@pytest.mark.parametrize("content,message", [
    (b"BZh91AY&SY garbage", r"not a readable .bz2 file"),
    (b"1 1:x\n", r"d.svm.bz2, line 1: the value of index 1 'x' is not a number"),
])
def test_bad_svmlight_files_say_what_is_wrong(tmp_path, content, message):
    import bz2

    path = tmp_path / "d.svm.bz2"
    path.write_bytes(content if content.startswith(b"BZh") else bz2.compress(content))
    with pytest.raises(DataCorruptError, match=message):
        check_problem("logreg-file", {"file": str(path)})


def test_cli_runs_hogwild_sparsely_on_an_svmlight_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    X = _sparse_rows(200, d=60)
    (tmp_path / "t.svm").write_text(_svmlight_text(X, 2 * (X[:, 1] > 0) - 1))
    for engine in ("real", "sim"):
        argv = [engine, "--problem", "logreg-file", "--data-file", "t.svm", "--algorithm",
                "hogwild", "--workers", "2", "--updates", "300", "--batch", "1", "--out",
                engine, "--no-progress"]
        assert main(argv) == 0, capsys.readouterr().err
        (folder,) = (tmp_path / engine).iterdir()
        runs = pd.read_parquet(folder / "runs.parquet")
        assert runs["data_file"].tolist() == [str(tmp_path / "t.svm")]
        assert runs["updates"].tolist() == [300]
    real = pd.read_parquet(next((tmp_path / "real").iterdir()) / "runs.parquet")
    # a batch-1 update writes the row's coordinates and the bias, not all 61
    assert real["sparse"].tolist() == [True]
    assert 1 < real["coords_per_update"].iloc[0] < 61


@pytest.mark.parametrize("name,content,message", [
    ("d.svm.gz", b"\x1f\x8b\x08\x00garbage" * 4, "not a readable .gz file"),
    ("d.csv.gz", b"\x1f\x8b\x08\x00garbage" * 4, "not a readable .gz file"),
    ("one.svm", b"+1 1:1\n+1 2:1\n+1 3:1\n", "every example has the label 1; a classifier needs "
                                            "at least 2 classes"),
    ("text.svm", b"1 1:1\n0 2:1\n", "not a NumPy .npz archive"),
])
def test_damaged_and_misnamed_files_are_refused_in_one_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    options = {"file": str(path)} | ({"format": "npz"} if name == "text.svm" else {})
    with pytest.raises(DataCorruptError, match=message):
        check_problem("logreg-file", options)


def test_svmlight_lines_split_as_the_reader_splits_them(tmp_path):
    from stalesgd.data.svmlight import read_svmlight

    path = tmp_path / "ff.svm"
    # a form feed inside a line; \r alone
    path.write_bytes(b"1 1:1\x0c 2:2\r\n0 2:1\r0 3:1\n1 1:2\n")
    X, y = read_svmlight(path)
    d = make_problem("logreg-file", file=str(path), test_fraction=0.25).dataset
    assert X.shape == (4, 3) and d.n_train + d.n_test == 4


def test_a_model_too_big_for_memory_is_refused_before_it_runs(tmp_path, capsys, monkeypatch):
    from stalesgd.app.preflight import check_memory

    from stalesgd.experiment import ExperimentError, expand, experiment_from_flags

    monkeypatch.chdir(tmp_path)
    (tmp_path / "wide.svm").write_text("1 1:1 2147483646:1\n-1 2:1\n1 3:1\n-1 1:1\n")
    exp = experiment_from_flags("real", problem="logreg-file", algorithm="hogwild", workers=2,
                                updates=10, batch=1, problem_options={"file": "wide.svm"})
    (spec,) = expand(exp)
    # 2,147,483,647 parameters: θ, a snapshot and each Hogwild! worker's gradient, 16 GiB each
    with pytest.raises(ExperimentError, match=r"needs at least 64\.0 GiB: its data and 4 "
                                              r"parameter vectors of 16 GiB"):
        check_memory([spec], 24 * 2**30)
    check_memory([spec], 80 * 2**30)  # fits a bigger machine
    # and from the command line, one line, before anything runs
    argv = ["real", "--problem", "logreg-file", "--data-file", "wide.svm", "--algorithm",
            "hogwild", "--workers", "2", "--updates", "10", "--batch", "1", "--dry-run"]
    from stalesgd.machine import machine_info

    if (machine_info().get("memory_bytes") or 0) < 64 * 2**30:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "parameter vectors" in err and "Traceback" not in err


def test_leashed_real_runs_count_their_pool_of_vectors_before_they_run(tmp_path, monkeypatch):
    """The real engine's Leashed-SGD keeps a pool of 2m + 1 shared vectors (and a dense
    gradient row per worker), not θ and a snapshot: the memory check counts them."""
    from stalesgd.app.preflight import check_memory, parameter_vectors

    from stalesgd.experiment import ExperimentError, expand, experiment_from_flags

    monkeypatch.chdir(tmp_path)
    (tmp_path / "wide.svm").write_text("1 1:1 2147483646:1\n-1 2:1\n1 3:1\n-1 1:1\n")

    def spec(engine, algorithm, workers):
        exp = experiment_from_flags(engine, problem="logreg-file", algorithm=algorithm,
                                    workers=workers, updates=10, batch=1,
                                    problem_options={"file": "wide.svm"})
        return expand(exp)[0]

    leashed = spec("real", "leashed", 12)
    assert parameter_vectors(leashed, sparse=True) == 25  # the pool; gradients list coords
    assert parameter_vectors(leashed, sparse=False) == 37  # and a gradient row each
    assert parameter_vectors(spec("sim", "leashed", 12)) == 14  # no pool simulated
    assert parameter_vectors(spec("real", "lock", 12)) == 2 * 12 + 2
    # 25 vectors of 16 GiB: refused on a machine of 24 × 16 GiB (the old count, 14, fitted)
    with pytest.raises(ExperimentError, match=r"25 parameter vectors of 16 GiB .*a pool of "
                                              r"2m \+ 1"):
        check_memory([leashed], 24 * 16 * 2**30)
    check_memory([leashed], 26 * 16 * 2**30)


def test_a_run_that_runs_out_of_memory_ends_in_one_line(tmp_path, capsys, monkeypatch):
    """Past the checks (they count the data and the parameter vectors only) a run may still
    ask for more than the machine gives: one line naming the run and what needs less, exit
    1, and no results folder when no run was kept."""
    from stalesgd.real.engine import RealRun

    def too_big(self):
        raise MemoryError("Unable to allocate 37.3 GiB for an array with shape (40000000320,)")

    monkeypatch.setattr(RealRun, "run", too_big)
    argv = ["real", "--problem", "logreg-synthetic", "--algorithm", "leashed", "--workers",
            "3", "--updates", "10", "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert ("run r0000 (logreg-synthetic, real, leashed, 3 workers) ran out of memory (Unable "
            "to allocate 37.3 GiB") in err and "fewer workers" in err
    assert list(tmp_path.iterdir()) == []


def test_memory_running_out_outside_a_run_is_one_line_too(tmp_path, capsys, monkeypatch):
    import stalesgd.app.runner as runner

    def too_big(*args, **kwargs):
        raise MemoryError("Unable to allocate 9 GiB")

    monkeypatch.setattr(runner, "plan_sweep", too_big)
    argv = ["real", "--problem", "logreg-synthetic", "--algorithm", "lock", "--workers", "1",
            "--updates", "10", "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("stalesgd: out of memory (Unable to allocate 9 GiB)") and \
        "Traceback" not in err


def _zip(path, members):
    import zipfile

    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def test_damaged_npz_archives_are_refused_in_one_line(npz, tmp_path):
    """A member that does not inflate, and members that are not .npy arrays (numpy hands
    back their raw bytes), are refused, not a zlib or attribute error."""
    import zipfile

    X, y = _classes(400)
    good = tmp_path / "good.npz"
    np.savez_compressed(good, X=X, y=y)
    raw = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as z:
        start = z.getinfo("X.npy").header_offset + 30 + len("X.npy") + 40
    raw[start:start + 60] = bytes(60)  # zeros in the middle of X's deflated stream
    (tmp_path / "bad.npz").write_bytes(bytes(raw))
    with pytest.raises(DataCorruptError, match="bad.npz: not a readable NumPy .npz archive"):
        check_problem("logreg-file", {"file": str(tmp_path / "bad.npz")})
    text = _zip(tmp_path / "text.npz", {"X": "hello", "y": "world"})
    with pytest.raises(DataCorruptError, match="its member 'X' is not a NumPy array"):
        check_problem("logreg-file", {"file": str(text)})


def test_values_beyond_float32_are_refused_for_float32_runs_only(npz):
    X, y = _classes(40)
    X[5, 1] = 1e39
    path = npz(X=X, y=y)
    with pytest.raises(DataCorruptError, match=r"magnitude 1e\+39, beyond the largest float32"):
        check_problem("logreg-file", {"file": str(path)}, "float32")
    assert check_problem("logreg-file", {"file": str(path)}, "float64").data.n_classes == 2


def test_the_training_split_must_hold_every_class(npz, tmp_path):
    X, y = _classes(40)
    only_zeros = npz("given.npz", X=X, y=np.zeros(40, np.int64), X_test=X[:10],
                     y_test=np.ones(10, np.int64))
    with pytest.raises(DataCorruptError, match=r"class\(es\) 1 do not occur in X;"):
        check_problem("logreg-file", {"file": str(only_zeros)})
    two = _csv(tmp_path, [[1, 2, 0], [3, 4, 1]])  # the hold-out takes one of the two rows
    with pytest.raises(DataCorruptError, match="do not occur in the training rows left after "
                                               r"the hold-out \(option seed = 0\)"):
        check_problem("logreg-file", {"file": str(two)})
    with pytest.raises(DataCorruptError, match="within n_train = 1"):
        check_problem("logreg-file", {"file": str(npz(X=X, y=y)), "n_train": 1})


@pytest.mark.parametrize("content,message", [
    ("0\n1\n0\n1\n", "no line has an INDEX:VALUE entry; a data file needs at least one feature"),
    ("0 1:0 1:0.3\n1 2:1\n", "line 1: index 1 appears twice"),
])
def test_svmlight_without_features_or_with_a_repeated_zero_entry(tmp_path, content, message):
    path = tmp_path / "d.svm"
    path.write_text(content)
    with pytest.raises(DataCorruptError, match=message):
        check_problem("logreg-file", {"file": str(path)})


def test_huge_labels_are_refused_without_a_cast_warning(npz, recwarn):
    X, _ = _classes(4)
    path = npz(X=X, y=np.array([0, 1e300, 0, 1e300]))
    with pytest.raises(DataCorruptError,
                       match=r"labels must be the integers 0..K-1.*y holds 1e\+300"):
        check_problem("logreg-file", {"file": str(path)})
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_an_experiment_holds_its_data_files_absolute_paths(tmp_path, monkeypatch):
    """A relative path is taken from the current folder once, when the experiment is read:
    its config.toml then names the same files from any folder (a resume from elsewhere)."""
    monkeypatch.chdir(tmp_path)
    X, y = _classes(40)
    np.savez(tmp_path / "a.npz", X=X, y=y)
    np.savez(tmp_path / "b.npz", X=X, y=y)
    exp = loads_experiment("""
exclude = [{"problem.options.file" = "b.npz", workers = 2}]
[problem]
name = "logreg-file"
options = {file = "a.npz"}
[stop]
updates = 10
[sweep]
"problem.options.file" = ["a.npz", "b.npz"]
workers = [1, 2]
""")
    assert exp.problem.options["file"] == str(tmp_path / "a.npz")
    assert exp.sweep["problem.options.file"] == (str(tmp_path / "a.npz"),
                                                 str(tmp_path / "b.npz"))
    from stalesgd.experiment import expand, to_toml

    assert len(expand(exp)) == 3
    monkeypatch.chdir("/")
    again = loads_experiment(to_toml(exp))
    assert again.to_dict() == exp.to_dict()


def test_file_errors_from_the_command_line_read_as_typed(tmp_path, capsys, monkeypatch):
    """A missing --data-file is named without a value; a folder is a folder whatever its
    name; a minus sign before inf or nan is a value, not a flag."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "adv").mkdir()
    base = ["real", "--algorithm", "lock", "--workers", "1", "--updates", "10", "--dry-run"]
    cases = [
        (["--problem", "logreg-file"], "stalesgd: --data-file is missing; allowed: the path"),
        (["--problem", "logreg-file", "--data-file", "adv"],
         f"stalesgd: {tmp_path / 'adv'}: is a folder, not a data file"),
        (["--problem", "logreg-synthetic", "--lr", "-inf"],
         "stalesgd: --lr -inf is out of range; allowed: a finite number > 0"),
    ]
    for extra, expected in cases:
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith(expected), err


def test_a_home_folder_in_an_experiment_files_path_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    X, y = _classes(20)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    exp = loads_experiment('[problem]\nname = "logreg-file"\noptions = {file = "~/d.npz"}\n')
    assert exp.problem.options["file"] == str(tmp_path / "d.npz")
