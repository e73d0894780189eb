"""The sparse input form: the CSR container, the seeded text-like ``sparse`` set and its
option checks, and the svmlight reader."""

from __future__ import annotations

import numpy as np
import pytest

from stalesgd.data import DataCorruptError, DataNotFoundError, check_dataset, load_dataset
from stalesgd.data.cli import data_command
from stalesgd.data.csr import CSRMatrix, csr_from_coo
from stalesgd.data.svmlight import read_svmlight
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
    with pytest.raises(ValueError, match="strictly increasing"):
        CSRMatrix(X.indptr, np.array([3, 1, 0], dtype=np.int32), X.values, 4)
    CSRMatrix(X.indptr, np.array([1, 3, 0], dtype=np.int32), X.values, 4)  # a new row: fine
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


# --- svmlight ---------------------------------------------------------------------------

def write(tmp_path, text: str, name: str = "data.svm"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_svmlight_reads_one_based_files_with_pm1_labels(tmp_path):
    path = write(tmp_path, "# a comment line\n"
                           "+1 3:0.5 1:2 # entries in any order\n"
                           "\n"
                           "-1 qid:7 2:1e-1 4:0\n"
                           "1\n")
    X, y = read_svmlight(path)
    np.testing.assert_array_equal(y, [1, 0, 1])
    assert X.shape == (3, 4) and X.nnz == 3  # the explicit zero is dropped, its column kept
    np.testing.assert_array_equal(X.toarray(), [[2, 0, 0.5, 0], [0, 0.1, 0, 0], [0, 0, 0, 0]])
    X4, _ = read_svmlight(path, n_features=10, dtype=np.float32)
    assert X4.shape == (3, 10) and X4.dtype == np.float32


def test_svmlight_zero_based_and_class_labels(tmp_path):
    path = write(tmp_path, "0 0:1 2:3\n2 1:1\n1 2:-1\n")
    X, y = read_svmlight(path)  # index 0 present: read as 0-based
    np.testing.assert_array_equal(y, [0, 2, 1])
    np.testing.assert_array_equal(X.toarray(), [[1, 0, 3], [0, 1, 0], [0, 0, -1]])
    X1, _ = read_svmlight(write(tmp_path, "1 1:1 3:2\n", "b.svm"), zero_based=True)
    np.testing.assert_array_equal(X1.toarray(), [[0, 1, 0, 2]])
    with pytest.raises(DataCorruptError, match="index 0 in a file read as 1-based"):
        read_svmlight(path, zero_based=False)


def test_svmlight_reads_gzip(tmp_path):
    import gzip

    path = tmp_path / "d.svm.gz"
    with gzip.open(path, "wt") as f:
        f.write("-1 5:1\n+1 1:1\n")
    X, y = read_svmlight(path)
    assert X.shape == (2, 5) and list(y) == [0, 1]


@pytest.mark.parametrize(("text", "message"), [
    ("1 3:x\n", r"line 1: the value of index 3 'x' is not a number"),
    ("+1 2:1\n1 a:1\n", r"line 2: 'a:1' is not INDEX:VALUE"),
    ("1 2\n", r"'2' is not INDEX:VALUE"),
    ("1 2:1 2:3\n", "index 2 appears twice"),
    ("yes 1:1\n", "label 'yes' is not a number"),
    ("1 1:nan\n", "is not finite"),
    ("1 1:1\n0.5 1:1\n", "label 0.5 of example 2 is not allowed"),
    ("# nothing\n\n", "no examples"),
])
def test_svmlight_malformed_lines_say_where_and_what(tmp_path, text, message):
    with pytest.raises(DataCorruptError, match=message):
        read_svmlight(write(tmp_path, text))


def test_svmlight_file_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        read_svmlight(tmp_path / "absent.svm")
    with pytest.raises(DataCorruptError, match="beyond n_features = 2"):
        read_svmlight(write(tmp_path, "1 3:1\n"), n_features=2)
    (tmp_path / "bin.svm").write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(DataCorruptError, match="not a text file"):
        read_svmlight(tmp_path / "bin.svm")
    with pytest.raises(ValueError, match="zero_based"):
        read_svmlight(tmp_path / "bin.svm", zero_based="yes")


def test_svmlight_round_trip_of_the_sparse_set_matches_scikit_learn(tmp_path):
    sklearn_io = pytest.importorskip("sklearn.datasets")
    d = load_dataset("sparse", seed=2, n_train=50, n_test=5, n_features=400, nnz=12)
    path = tmp_path / "rt.svm"
    dense = d.X_train.toarray()
    sklearn_io.dump_svmlight_file(dense, 2 * d.y_train - 1, str(path), zero_based=False)
    X, y = read_svmlight(path, n_features=400)
    np.testing.assert_array_equal(y, d.y_train)
    np.testing.assert_allclose(X.toarray(), dense, rtol=1e-15)
    Xs, ys = sklearn_io.load_svmlight_file(str(path), n_features=400)
    np.testing.assert_array_equal(X.indptr, Xs.indptr)
    np.testing.assert_array_equal(X.indices, Xs.indices)


def test_svmlight_writer_round_trips_exactly(tmp_path):
    from stalesgd.data.svmlight import write_svmlight

    d = load_dataset("sparse", seed=4, n_train=60, n_test=5, n_features=300, nnz=9)
    path = write_svmlight(tmp_path / "w.svm", d.X_train, d.y_train)
    assert path.read_text().splitlines()[0].split()[0] in ("-1", "1")
    X, y = read_svmlight(path, n_features=300)
    np.testing.assert_array_equal(y, d.y_train)
    for name in ("indptr", "indices", "values"):
        np.testing.assert_array_equal(getattr(X, name), getattr(d.X_train, name))
    with pytest.raises(ValueError, match="a label per row"):
        write_svmlight(tmp_path / "bad.svm", d.X_train, d.y_train[:3])


@pytest.mark.parametrize(("text", "message"), [
    ("1 \u00b2:1\n", r"'\u00b2:1' is not INDEX:VALUE"),  # a digit int() does not read
    ("1 4000000000:1\n", "index 4000000000 is beyond the largest allowed, 2147483646"),
    ("1 99999999999999999999:1\n", "index 99999999999999999999 is beyond the largest"),
])
def test_svmlight_odd_and_huge_indices_are_refused_naming_the_line(tmp_path, text, message):
    with pytest.raises(DataCorruptError, match=f"line 1: {message}"):
        read_svmlight(write(tmp_path, text))


def test_svmlight_beyond_n_features_names_the_index_as_the_file_writes_it(tmp_path):
    with pytest.raises(DataCorruptError, match="feature index 7 is beyond n_features = 5"):
        read_svmlight(write(tmp_path, "1 7:1 2:1\n"), n_features=5)  # 1-based
    with pytest.raises(DataCorruptError, match="feature index 3 is beyond n_features = 2"):
        read_svmlight(write(tmp_path, "1 0:1 3:1\n", "z.svm"), n_features=2)  # 0-based


def test_svmlight_explicit_zeros_count_for_the_width_and_a_bom_is_dropped(tmp_path):
    X, y = read_svmlight(write(tmp_path, "\ufeff1 1:0 5:0 2:3\n-1 1:1\n"))
    assert X.shape == (2, 5) and X.nnz == 2 and list(y) == [1, 0]


def test_svmlight_damaged_compressed_files_are_corrupt_not_a_traceback(tmp_path):
    import gzip

    good = gzip.compress(b"1 1:1\n" * 200)
    for name, data in (("a.svm.gz", b"\x1f\x8b\x08\x00garbage" * 4),
                       ("b.svm.gz", good[:20] + bytes(20) + good[40:]),
                       ("c.svm.bz2", b"BZh91AY&SY garbage")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataCorruptError, match="not a readable"):
            read_svmlight(tmp_path / name)


def test_svmlight_writer_takes_other_forms_and_compresses_by_suffix(tmp_path):
    import scipy.sparse as sp

    from stalesgd.data.svmlight import write_svmlight

    dense = np.array([[0.0, 1.5, 0.0], [2.0, 0.0, -1.0]])
    for i, X in enumerate((dense, sp.csr_matrix(dense))):
        for suffix in ("svm", "svm.gz", "svm.bz2"):
            path = write_svmlight(tmp_path / f"w{i}.{suffix}", X, np.array([True, False]))
            Xr, yr = read_svmlight(path, n_features=3)
            np.testing.assert_array_equal(Xr.toarray(), dense)
            np.testing.assert_array_equal(yr, [1, 0])
    with pytest.raises(ValueError, match="finite numbers"):
        write_svmlight(tmp_path / "n.svm", dense, np.array([1.0, np.nan]))
    with pytest.raises(TypeError, match="X must be a CSRMatrix"):
        write_svmlight(tmp_path / "t.svm", "not a matrix", np.array([1, 0]))


def test_scores_in_chunks_give_the_same_set(monkeypatch):
    """Labels are scored in row chunks (no entries × classes temporary): the same sums, so
    the same set, as one pass."""
    import stalesgd.data.sparse as sparse

    opts = dict(seed=5, n_train=300, n_test=20, n_features=500, nnz=12, n_classes=7)
    whole = load_dataset("sparse", **opts)
    monkeypatch.setattr(sparse, "SCORE_CHUNK", 7 * 5)  # five entries a chunk
    chunked = sparse.make_sparse(**{**sparse.resolve_sparse_options(
        {k: v for k, v in opts.items() if k != "seed"}), "seed": 5}, dtype=np.float64)
    np.testing.assert_array_equal(chunked.y_train, whole.y_train)
    np.testing.assert_array_equal(chunked.y_test, whole.y_test)


def _digest(data) -> str:
    import hashlib

    h = hashlib.sha256()
    for X in (data.X_train, data.X_test):
        for a in (X.indptr, X.indices, X.values):
            h.update(np.ascontiguousarray(a).tobytes())
    for a in (data.y_train, data.y_test, data.meta["w_true"]):
        h.update(a.tobytes())
    h.update(repr(data.meta["flipped_share"]).encode())
    return h.hexdigest()[:16]


#: a generated set as the first version of the generator made it (one pass over all draws):
#: results folders name generated sets by their options, so the same options must give the
#: same set from one version to the next
PINNED = ({"n_train": 3000, "n_test": 500, "n_features": 5000, "nnz": 30, "n_classes": 5,
           "zipf": 1.3}, 7, np.float32, "983562160789b51b")


@pytest.mark.parametrize("draw_chunk", [None, 1000, 7])
def test_rows_made_in_chunks_give_the_set_of_one_pass_bit_for_bit(monkeypatch, draw_chunk):
    """Rows are made chunk by chunk into the finished arrays (memory of the set plus one
    chunk); whatever the chunk (7 draws: one row at a time), the set is the pinned one."""
    import stalesgd.data.sparse as sparse

    if draw_chunk is not None:
        monkeypatch.setattr(sparse, "DRAW_CHUNK", draw_chunk)
    options, seed, dtype, digest = PINNED
    data = sparse.make_sparse(**sparse.resolve_sparse_options(options), seed=seed, dtype=dtype)
    assert _digest(data) == digest
