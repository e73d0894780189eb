"""Tests of stalesgd.data: synthetic generators, IDX and CIFAR-10 readers, checksums,
the search path, downloads (never over the network) and the `stalesgd data` command."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import tarfile
import time
import urllib.error
from pathlib import Path

import numpy as np
import pytest

import stalesgd.data.paths as paths
import stalesgd.data.registry as registry
from stalesgd.data import (
    DataCorruptError,
    DataDownloadError,
    DataNotFoundError,
    load_dataset,
)
from stalesgd.data.cifar import parse_cifar_batch, read_cifar_batch, write_cifar_batch
from stalesgd.data.cli import data_command
from stalesgd.data.download import download
from stalesgd.data.files import check_file
from stalesgd.data.idx import parse_idx, read_idx, write_idx
from stalesgd.data.registry import DATASETS, MANIFEST_NAME

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def need_shared(name: str) -> Path:
    folder = SHARED / name
    if not all((folder / (f + ".gz")).is_file() for f in IDX_NAMES):
        pytest.skip(f"shared data {folder} is absent (expected <repo>/../shared/data/{name})")
    return folder


@pytest.fixture(autouse=True)
def hermetic(tmp_path, monkeypatch):
    """No test sees the real user cache, $STALESGD_DATA or /usr/share/datasets."""
    monkeypatch.delenv("STALESGD_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(paths, "SYSTEM_ROOT", tmp_path / "system")


def touch_set(root: Path, name: str) -> Path:
    """A folder of empty placeholder files with the upstream names of ``name``."""
    folder = root / DATASETS[name].folder
    folder.mkdir(parents=True, exist_ok=True)
    for f in DATASETS[name].files:
        (folder / f.name).write_bytes(b"")
    return folder


def nearest_mean_accuracy(ds) -> float:
    X, Xt = ds.features("train"), ds.features("test")
    means = np.stack([X[ds.y_train == k].mean(0) for k in range(ds.n_classes)])
    d = ((Xt[:, None, :] - means[None]) ** 2).sum(-1)
    return float(np.mean(d.argmin(1) == ds.y_test))


# ---------------------------------------------------------------- synthetic


@pytest.mark.parametrize("kind", ["regression", "classification", "images"])
def test_synthetic_is_seeded(kind):
    a = load_dataset("synthetic", kind=kind, seed=3, n_train=200, n_test=50)
    b = load_dataset("synthetic", kind=kind, seed=3, n_train=200, n_test=50)
    c = load_dataset("synthetic", kind=kind, seed=4, n_train=200, n_test=50)
    for field in ("X_train", "y_train", "X_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.X_train, c.X_train)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_synthetic_shapes_and_dtypes(dtype):
    r = load_dataset("synthetic", kind="regression", dtype=dtype, n_train=300, n_test=70,
                     n_features=7)
    assert r.X_train.shape == (300, 7) and r.X_test.shape == (70, 7)
    assert r.X_train.dtype == np.dtype(dtype) and r.y_train.dtype == np.dtype(dtype)
    assert r.n_classes == 0 and r.input_shape == (7,) and r.X_train.flags.c_contiguous
    c = load_dataset("synthetic", kind="classification", dtype=dtype, n_train=300, n_test=70,
                     n_features=5, n_classes=4)
    assert c.X_train.shape == (300, 5) and c.X_train.dtype == np.dtype(dtype)
    assert c.y_train.dtype == np.int64 and set(np.unique(c.y_train)) == {0, 1, 2, 3}
    assert np.bincount(c.y_train.tolist() + c.y_test.tolist()).tolist() == [93, 93, 92, 92]
    im = load_dataset("synthetic", kind="images", dtype=dtype, n_train=100, n_test=20,
                      input_shape=(3, 8, 12))
    assert im.X_train.shape == (100, 3 * 8 * 12) and im.input_shape == (3, 8, 12)
    assert im.packed and im.X_train.dtype == np.uint8 and not im.X_train.flags.writeable
    assert im.features("train").dtype == np.dtype(dtype) and im.y_train.dtype == np.int64
    assert im.dtype == np.dtype(dtype) and im.features("test").shape == (20, 288)


def test_regression_meta_is_the_generating_solution():
    ds = load_dataset("synthetic", kind="regression", n_train=500, n_test=100, n_features=6,
                      noise=0.0, bias=0.7)
    w, b = ds.meta["w_true"], ds.meta["b_true"]
    np.testing.assert_allclose(ds.X_train @ w + b, ds.y_train, atol=1e-12)
    np.testing.assert_allclose(ds.X_test @ w + b, ds.y_test, atol=1e-12)
    np.testing.assert_allclose(ds.meta["w_star"], w, atol=1e-10)
    noisy = load_dataset("synthetic", kind="regression", n_train=4000, n_test=10,
                         n_features=6, noise=0.5)
    # least-squares optimum: its residual is orthogonal to the features
    A = np.hstack([noisy.X_train, np.ones((4000, 1))])
    resid = A @ np.append(noisy.meta["w_star"], noisy.meta["b_star"]) - noisy.y_train
    assert np.abs(A.T @ resid).max() < 1e-8
    assert np.abs(noisy.meta["w_star"] - noisy.meta["w_true"]).max() < 0.1
    assert noisy.meta["train_mse_star"] == pytest.approx(0.25, rel=0.1)


def test_regression_condition_number():
    ds = load_dataset("synthetic", kind="regression", n_train=20000, n_test=10,
                      n_features=5, cond=100.0)
    ev = np.linalg.eigvalsh(np.cov(ds.X_train.T))
    assert ev.max() / ev.min() == pytest.approx(100.0, rel=0.1)


def test_classification_separation_controls_difficulty():
    accs = []
    for sep in (0.0, 1.0, 3.0, 8.0):
        ds = load_dataset("synthetic", kind="classification", n_train=3000, n_test=3000,
                          n_features=10, n_classes=3, separation=sep, seed=1)
        m = ds.meta["means"]
        dists = [np.linalg.norm(m[i] - m[j]) for i in range(3) for j in range(i)]
        np.testing.assert_allclose(dists, sep, atol=1e-12)
        accs.append(nearest_mean_accuracy(ds))
    assert accs[0] < 0.40  # chance is 1/3
    assert accs[0] < accs[1] < accs[2] < accs[3]
    assert accs[3] > 0.99


def test_two_class_bayes_accuracy_matches():
    ds = load_dataset("synthetic", kind="classification", n_train=4000, n_test=20000,
                      n_classes=2, separation=2.0, seed=2)
    assert nearest_mean_accuracy(ds) == pytest.approx(ds.meta["bayes_accuracy"], abs=0.015)
    assert ds.meta["bayes_accuracy"] == pytest.approx(0.8413, abs=1e-3)


def test_synthetic_images_normalisation_and_learnability():
    std = load_dataset("synthetic", kind="images", n_train=1000, n_test=300)
    assert std.input_shape == (1, 28, 28) and std.n_classes == 10
    X = std.features("train")
    assert abs(X.mean()) < 1e-9 and X.std() == pytest.approx(1.0)
    assert nearest_mean_accuracy(std) > 0.9
    unit = load_dataset("synthetic", kind="images", n_train=1000, n_test=300,
                        normalize="unit", input_shape=(3, 32, 32))
    X = unit.features("train")
    assert X.min() >= 0.0 and X.max() <= 1.0
    assert X.shape == (1000, 3072)


@pytest.mark.parametrize(
    ("args", "kwargs", "needle"),
    [
        (("imagenet",), {}, "allowed: synthetic, sparse, mnist, fashion-mnist, cifar10"),
        (("synthetic",), {"kind": "tabular"}, "allowed: regression, classification, images"),
        (("synthetic",), {"kind": "regression", "n_classes": 3},
         "n_classes = 3 is an unknown option; allowed: options of synthetic kind "
         "'regression': bias, cond"),
        (("synthetic",), {"dtype": "int32"}, "allowed: float32, float64"),
        (("synthetic",), {"seed": -1}, "seed = -1 is out of range; allowed: an integer in 0.."),
        (("synthetic",), {"seed": 2**63}, "seed = 9223372036854775808 is out of range"),
        (("synthetic",), {"n_train": 0}, "n_train = 0 is out of range"),
        (("synthetic",), {"n_train": 1.5}, "n_train = 1.5 is a float, not an integer"),
        (("synthetic",), {"n_train": 10**9}, "n_train = 1000000000 is too large"),
        (("synthetic",), {"kind": "classification", "separation": -1}, "separation = -1"),
        (("synthetic",), {"kind": "classification", "n_classes": 10**6}, "n_classes = 1000000"),
        (("synthetic",), {"kind": "images", "input_shape": [1, 0, 28]}, "input_shape[1] = 0"),
        (("synthetic",), {"kind": "images", "input_shape": "abc"}, "input_shape = 'abc'"),
        (("synthetic",), {"noise": float("nan")}, "noise = nan is out of range"),
        (("synthetic",), {"data_dir": "/x"}, "synthetic data needs no files"),
        (("mnist",), {"batch": 3},
         "batch = 3 is an unknown option; allowed: options of data set 'mnist': n_test, "
         "n_train, normalize, verify"),
        (("mnist",), {"normalize": "zscore"}, "allowed: standard, unit"),
        (("mnist",), {"n_train": 60001}, "n_train = 60001 is out of range; allowed: an integer "
                                         "in 1..60000"),
        (("mnist",), {"verify": "yes"}, "verify = 'yes' is a string, not a boolean"),
    ],
)
def test_bad_names_and_options_say_what_is_allowed(args, kwargs, needle):
    with pytest.raises(ValueError, match=None) as info:
        load_dataset(*args, **kwargs)
    assert needle in str(info.value)


# ---------------------------------------------------------------- IDX


def test_idx_reader_on_shared_mnist_and_fashion():
    for name in ("mnist", "fashion-mnist"):
        folder = need_shared(name)
        spec = DATASETS[name]
        for f in spec.files:
            assert check_file(spec, f, folder / (f.name + ".gz"), fresh=True).status == "OK"
        t0 = time.process_time()  # (CPU time: waits for a core on a busy machine do not count)
        ds = load_dataset(name, data_dir=SHARED, dtype="float32", normalize="unit")
        elapsed = time.process_time() - t0
        assert elapsed < 5.0, f"loading {name} took {elapsed:.2f} s of CPU"
        assert ds.X_train.shape == (60000, 784) and ds.X_test.shape == (10000, 784)
        assert ds.y_train.dtype == np.int64 and ds.dtype == np.float32
        assert set(np.unique(ds.y_train)) == set(range(10)) == set(np.unique(ds.y_test))
        X = ds.features("train")
        assert X.dtype == np.float32 and X.min() == 0.0 and X.max() == 1.0
        # packed: uint8 pixels and a 256-entry table instead of 4-byte floats
        assert ds.nbytes() < 0.3 * (X.nbytes + 4 * ds.X_test.size)
        assert ds.input_shape == (1, 28, 28) and ds.meta["verified"]
        assert Path(ds.meta["source"]) == folder


def test_mnist_standardisation_and_subset():
    need_shared("mnist")
    full = load_dataset("mnist", data_dir=SHARED)
    assert full.meta["channel_mean"][0] == pytest.approx(0.1307, abs=1e-4)
    assert full.meta["channel_std"][0] == pytest.approx(0.3081, abs=1e-4)
    X = full.features("train")
    assert abs(X.mean()) < 1e-9 and X.std() == pytest.approx(1.0)
    sub = load_dataset("mnist", data_dir=SHARED, n_train=500, n_test=40)
    np.testing.assert_array_equal(sub.features("train"), X[:500])
    np.testing.assert_array_equal(full.features("train", slice(7, 9)), X[7:9])
    np.testing.assert_array_equal(sub.y_test, full.y_test[:40])
    assert full.y_train[:5].tolist() == [5, 0, 4, 1, 9]  # the well-known first MNIST labels
    with pytest.raises(ValueError, match="read-only"):
        sub.X_train[:] = 0  # pixels are data, never scratch
    sub.pixel_coef[:] = 0.0  # callers own their arrays: the memoised data is unaffected
    again = load_dataset("mnist", data_dir=SHARED, n_train=500, n_test=40)
    np.testing.assert_array_equal(again.features("train"), X[:500])


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", ["u1", "i1", ">i2", ">i4", ">f4", ">f8"])
def test_idx_roundtrip_generated(tmp_path, suffix, dtype):
    arr = (np.arange(2 * 3 * 5) * 7 % 120).astype(dtype).reshape(2, 3, 5)
    path = write_idx(tmp_path / f"x-idx3{suffix}", arr)
    got = read_idx(path)
    assert got.shape == (2, 3, 5) and got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, arr)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")


def test_idx_header_errors_name_the_source():
    good = b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + b"\x01\x02\x03"
    assert parse_idx(good).tolist() == [1, 2, 3]
    for bad, why in [(good[:-1], "needs 11"), (b"\x01" + good[1:], "not an IDX"),
                     (b"\x00\x00\x07\x01" + good[4:], "not an IDX"), (b"\x00", "too short")]:
        with pytest.raises(DataCorruptError, match=why) as info:
            parse_idx(bad, "some/file-idx1-ubyte")
        assert "some/file-idx1-ubyte" in str(info.value)


def test_load_generated_idx_set_without_verification(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "root" / "mnist"
    folder.mkdir(parents=True)
    tr = rng.integers(0, 256, (60, 28, 28), dtype=np.uint8)
    te = rng.integers(0, 256, (10, 28, 28), dtype=np.uint8)
    write_idx(folder / "train-images-idx3-ubyte.gz", tr)
    write_idx(folder / "train-labels-idx1-ubyte", np.arange(60, dtype=np.uint8) % 10)
    write_idx(folder / "t10k-images-idx3-ubyte", te)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.arange(10, dtype=np.uint8))
    ds = load_dataset("mnist", data_dir=tmp_path / "root", verify=False, normalize="unit")
    np.testing.assert_allclose(ds.features("train"), tr.reshape(60, -1) / 255.0)
    np.testing.assert_allclose(ds.features("test"), te.reshape(10, -1) / 255.0)
    assert ds.y_test.tolist() == list(range(10))
    # with verification the generated files are not the upstream ones
    with pytest.raises(DataCorruptError, match=r"train-images-idx3-ubyte\.gz: MISMATCH"):
        load_dataset("mnist", data_dir=tmp_path / "root")


# ---------------------------------------------------------------- checksums, errors


def _copy_mnist(dst: Path) -> Path:
    src = need_shared("mnist")
    folder = dst / "mnist"
    folder.mkdir(parents=True)
    for n in IDX_NAMES:
        (folder / (n + ".gz")).write_bytes((src / (n + ".gz")).read_bytes())
    return folder


def test_flipped_byte_in_raw_file_is_a_checksum_mismatch(tmp_path):
    folder = _copy_mnist(tmp_path / "root")
    gz = folder / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(gz.read_bytes()))
    raw[100] = (raw[100] + 1) % 10  # still a valid label: only the checksum can tell
    gz.unlink()
    (folder / "t10k-labels-idx1-ubyte").write_bytes(bytes(raw))
    with pytest.raises(DataCorruptError) as info:
        load_dataset("mnist", data_dir=tmp_path / "root", n_train=10)
    msg = str(info.value)
    assert str(folder / "t10k-labels-idx1-ubyte") in msg and "MISMATCH" in msg
    assert "27ae3e4e09519cfbb04c329615203637" in msg
    assert "stalesgd data download mnist" in msg


def test_flipped_byte_in_gz_file_is_corrupt(tmp_path):
    folder = _copy_mnist(tmp_path / "root")
    gz = folder / "train-labels-idx1-ubyte.gz"
    data = bytearray(gz.read_bytes())
    data[len(data) // 2] ^= 0xFF
    gz.write_bytes(bytes(data))
    with pytest.raises(DataCorruptError) as info:
        load_dataset("mnist", data_dir=tmp_path / "root")
    assert str(gz) in str(info.value)
    out, err = io.StringIO(), io.StringIO()
    assert data_command("verify", "mnist", str(tmp_path / "root"), out, err) == 1
    line = [ln for ln in out.getvalue().splitlines() if "train-labels" in ln][0]
    assert line.split()[0] in ("MISMATCH", "CORRUPT")
    assert sum(ln.startswith("OK") for ln in out.getvalue().splitlines()) == 3


def test_missing_names_every_place_looked_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("STALESGD_DATA", str(tmp_path / "env"))
    (tmp_path / "explicit" / "mnist").mkdir(parents=True)
    (tmp_path / "explicit" / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(b"x")
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("mnist", data_dir=tmp_path / "explicit")
    msg = str(info.value)
    assert "train-labels-idx1-ubyte" in msg  # first file missing from the partial folder
    for place in (tmp_path / "explicit" / "mnist", tmp_path / "env" / "mnist",
                  tmp_path / "xdg" / "stalesgd" / "mnist", tmp_path / "system" / "mnist"):
        assert str(place) in msg
    assert "stalesgd data download mnist" in msg and "$STALESGD_DATA" in msg
    assert "--data-dir" in msg
    assert isinstance(info.value, FileNotFoundError)


def test_unset_env_var_is_reported(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"\$STALESGD_DATA: \(not set\)"):
        load_dataset("fashion-mnist")


# ---------------------------------------------------------------- search path


def test_search_path_order(tmp_path, monkeypatch):
    spec = DATASETS["fashion-mnist"]
    explicit = touch_set(tmp_path / "explicit", "fashion-mnist")
    env = touch_set(tmp_path / "env", "fashion-mnist")
    cache = touch_set(tmp_path / "xdg" / "stalesgd", "fashion-mnist")
    system = touch_set(tmp_path / "system", "fashion-mnist")
    monkeypatch.setenv("STALESGD_DATA", str(tmp_path / "env"))
    assert paths.locate(spec, tmp_path / "explicit").folder == explicit
    assert paths.locate(spec).folder == env
    monkeypatch.delenv("STALESGD_DATA")
    assert paths.locate(spec).folder == cache
    assert paths.locate(spec).root.label == "user cache"
    for p in cache.iterdir():
        p.unlink()
    assert paths.locate(spec).folder == system
    # an explicit dir may be the data set's folder itself
    assert paths.locate(spec, explicit).folder == explicit
    # raw is preferred over .gz; .gz is found alone
    (env / "t10k-labels-idx1-ubyte").unlink()
    (env / "t10k-labels-idx1-ubyte.gz").write_bytes(b"")
    loc = paths.locate(spec, tmp_path / "env")
    assert loc.files["t10k-labels-idx1-ubyte"].name == "t10k-labels-idx1-ubyte.gz"
    assert loc.files["t10k-images-idx3-ubyte"].name == "t10k-images-idx3-ubyte"


def test_env_var_with_several_roots_and_incomplete_folders_skipped(tmp_path, monkeypatch):
    spec = DATASETS["mnist"]
    partial = touch_set(tmp_path / "a", "mnist")
    (partial / "t10k-images-idx3-ubyte").unlink()
    full = touch_set(tmp_path / "b", "mnist")
    monkeypatch.setenv("STALESGD_DATA", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    assert paths.locate(spec).folder == full


def test_user_cache_root(tmp_path, monkeypatch):
    assert paths.user_cache_root() == tmp_path / "xdg" / "stalesgd"
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert paths.user_cache_root() == tmp_path / "home" / ".cache" / "stalesgd"


# ---------------------------------------------------------------- CIFAR-10


def make_cifar_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    px = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    px[0, 0], px[0, 1], px[0, 2] = 10, 130, 250  # R, G, B planes of image 0
    px[1, :, 1, 2] = (200, 129, 255)  # one pixel (row 1, col 2), all >= 128
    return px, (np.arange(n) % 10).astype(np.uint8)


def test_cifar_reader_planes_and_unsigned_pixels(tmp_path):
    px, lab = make_cifar_images(12, 0)
    path = write_cifar_batch(tmp_path / "data_batch_1.bin", px, lab)
    assert path.stat().st_size == 12 * 3073
    got_px, got_lab = read_cifar_batch(path)
    assert got_px.dtype == np.uint8 and got_px.shape == (12, 3072)
    np.testing.assert_array_equal(got_px.reshape(12, 3, 32, 32), px)
    np.testing.assert_array_equal(got_lab, lab)
    img0 = got_px[0]
    assert (img0[:1024] == 10).all() and (img0[1024:2048] == 130).all()
    assert (img0[2048:] == 250).all()
    assert [int(img0[c * 1024]) for c in range(3)] == [10, 130, 250]
    assert [int(got_px[1][c * 1024 + 1 * 32 + 2]) for c in range(3)] == [200, 129, 255]
    raw = path.read_bytes()
    assert raw[0] == lab[0] and raw[1] == 10 and raw[1 + 1024] == 130


@pytest.mark.parametrize(("data", "why"), [(b"\x00" * 3072, "whole number"),
                                           (b"\x0a" + b"\x00" * 3072, "label 10")])
def test_cifar_structure_errors(data, why):
    with pytest.raises(DataCorruptError, match=why):
        parse_cifar_batch(data, "x/test_batch.bin")


@pytest.fixture
def small_cifar(monkeypatch):
    """Make the registry expect 20 records per CIFAR file, so tests stay small."""
    spec = DATASETS["cifar10"]
    small = dataclasses.replace(
        spec, files=tuple(dataclasses.replace(f, size=20 * 3073) for f in spec.files))
    monkeypatch.setitem(registry.DATASETS, "cifar10", small)
    return small


def write_cifar_set(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    parts = [make_cifar_images(20, s) for s in range(6)]
    for i, (px, lab) in enumerate(parts[:5], start=1):
        write_cifar_batch(folder / f"data_batch_{i}.bin", px, lab)
    write_cifar_batch(folder / "test_batch.bin", *parts[5])
    return (np.concatenate([p for p, _ in parts[:5]]).reshape(100, -1),
            np.concatenate([lab for _, lab in parts[:5]]))


def test_cifar_load_generated_set(tmp_path, small_cifar):
    Xtr_u8, ytr = write_cifar_set(tmp_path / "root" / "cifar10" / "cifar-10-batches-bin")
    ds = load_dataset("cifar10", data_dir=tmp_path / "root", normalize="unit")
    assert ds.X_train.shape == (100, 3072) and ds.X_test.shape == (20, 3072)
    assert ds.input_shape == (3, 32, 32) and ds.n_classes == 10
    X = ds.features("train")
    np.testing.assert_allclose(X, Xtr_u8 / 255.0)  # never negative: unsigned bytes
    np.testing.assert_array_equal(ds.y_train, ytr)
    img = X[0].reshape(3, 32, 32)
    np.testing.assert_allclose(img[:, 5, 7], np.array([10, 130, 250]) / 255.0)
    assert X.min() >= 0.0
    std = load_dataset("cifar10", data_dir=tmp_path / "root")
    per = Xtr_u8.reshape(100, 3, -1) / 255.0
    np.testing.assert_allclose(std.meta["channel_mean"], per.mean(axis=(0, 2)))
    np.testing.assert_allclose(std.meta["channel_std"], per.std(axis=(0, 2)))
    np.testing.assert_allclose(std.features("train").reshape(100, 3, -1).mean(axis=(0, 2)), 0,
                               atol=1e-12)
    assert "structure only" in check_file(
        small_cifar, small_cifar.files[0],
        tmp_path / "root/cifar10/cifar-10-batches-bin/data_batch_1.bin", fresh=True).detail


def test_cifar_wrong_size_is_corrupt(tmp_path, small_cifar):
    folder = tmp_path / "root" / "cifar10"
    write_cifar_set(folder)
    px, lab = make_cifar_images(19, 9)
    write_cifar_batch(folder / "data_batch_3.bin", px, lab)
    with pytest.raises(DataCorruptError) as info:
        load_dataset("cifar10", data_dir=tmp_path / "root")
    assert str(folder / "data_batch_3.bin") in str(info.value)


# ---------------------------------------------------------------- download


def test_download_unreachable_fails_clearly(tmp_path, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    out, err = io.StringIO(), io.StringIO()
    assert data_command("download", "mnist", str(tmp_path / "dl"), out, err) == 1
    msg = err.getvalue()
    assert "could not download mnist file train-images-idx3-ubyte.gz" in msg
    for mirror in DATASETS["mnist"].mirrors:
        assert mirror + "train-images-idx3-ubyte.gz" in msg
    assert "offline" in msg and "by hand" in msg and str(tmp_path / "dl" / "mnist") in msg
    assert not (tmp_path / "dl" / "mnist").exists()  # no partial files, no empty folder left
    with pytest.raises(DataDownloadError, match="cifar-10-binary.tar.gz"):
        download("cifar10", tmp_path / "dl")


def test_download_from_unreachable_local_port(tmp_path):
    with pytest.raises(DataDownloadError, match="127.0.0.1:9"):
        download("fashion-mnist", tmp_path, mirrors=("http://127.0.0.1:9/",), timeout=5)


def test_download_idx_from_file_mirror_verifies(tmp_path):
    src = need_shared("mnist")
    out, err = io.StringIO(), io.StringIO()
    folder = download("mnist", tmp_path / "dl", mirrors=(src.as_uri() + "/",),
                      report=lambda s: print(s, file=out))
    assert folder == tmp_path / "dl" / "mnist"
    assert sorted(p.name for p in folder.iterdir()) == sorted(n + ".gz" for n in IDX_NAMES)
    assert out.getvalue().count(": OK (published md5)") == 4
    # a second download finds the files verified and fetches nothing
    assert download("mnist", tmp_path / "dl", mirrors=("http://127.0.0.1:9/",),
                    timeout=5) == folder
    assert data_command("path", "mnist", str(tmp_path / "dl"), out, err) == 0
    assert out.getvalue().strip().splitlines()[-1] == str(folder)


def test_download_skips_a_set_verified_on_the_search_path(tmp_path, monkeypatch):
    src = need_shared("mnist")

    def offline(url, timeout=None):
        raise AssertionError(f"fetched {url} though a verified copy exists")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    monkeypatch.setenv("STALESGD_DATA", str(src.parent))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out, err = io.StringIO(), io.StringIO()
    assert data_command("download", "mnist", None, out, err) == 0, err.getvalue()
    assert f"mnist: already present and verified in {src}" in out.getvalue()
    assert not (tmp_path / "cache").exists()  # nothing written to the user cache
    # a copy that does not verify is not enough: the download is tried (and fails offline)
    bad = tmp_path / "bad" / "mnist"
    bad.mkdir(parents=True)
    for n in IDX_NAMES:
        write_idx(bad / (n + ".gz"), np.zeros((2, 2), dtype=np.uint8))
    monkeypatch.setenv("STALESGD_DATA", str(bad.parent))
    with pytest.raises(AssertionError, match="fetched"):
        data_command("download", "mnist", None, out, err)


def test_download_rejects_wrong_content(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for n in IDX_NAMES:
        write_idx(mirror / (n + ".gz"), np.zeros((2, 2), dtype=np.uint8))
    with pytest.raises(DataDownloadError, match="MISMATCH"):
        download("mnist", tmp_path / "dl", mirrors=(mirror.as_uri() + "/",))
    assert not (tmp_path / "dl" / "mnist").exists()  # no partial files, no empty folder


def _cifar_archive(tmp_path: Path) -> tuple[Path, str]:
    staging = tmp_path / "staging" / "cifar-10-batches-bin"
    write_cifar_set(staging)
    archive = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(staging, arcname="cifar-10-batches-bin")
    return archive, hashlib.md5(archive.read_bytes()).hexdigest()


def test_download_cifar_archive_records_sums(tmp_path, small_cifar):
    archive, md5 = _cifar_archive(tmp_path)
    with pytest.raises(DataDownloadError, match="archive md5"):
        download("cifar10", tmp_path / "dl", archive_url=archive.as_uri())
    folder = download("cifar10", tmp_path / "dl", archive_url=archive.as_uri(),
                      archive_md5=md5)
    assert (folder / MANIFEST_NAME).is_file()
    ds = load_dataset("cifar10", data_dir=tmp_path / "dl", normalize="unit")
    assert ds.X_train.shape == (100, 3072)
    out, err = io.StringIO(), io.StringIO()
    assert data_command("verify", "cifar10", str(tmp_path / "dl"), out, err) == 0
    assert out.getvalue().count(f"md5 recorded in {MANIFEST_NAME}") == 6
    batch = bytearray((folder / "test_batch.bin").read_bytes())
    batch[5000] ^= 0x80
    (folder / "test_batch.bin").write_bytes(bytes(batch))
    out = io.StringIO()
    assert data_command("verify", "cifar10", str(tmp_path / "dl"), out, err) == 1
    assert "MISMATCH  cifar10/test_batch.bin" in out.getvalue()


# ---------------------------------------------------------------- data_command


def test_data_command_list_and_verify_on_shared():
    need_shared("mnist")
    need_shared("fashion-mnist")
    out, err = io.StringIO(), io.StringIO()
    assert data_command("list", data_dir=str(SHARED), out=out, err=err) == 0
    lines = {ln.split()[0]: ln for ln in out.getvalue().splitlines()[1:]}
    assert set(lines) == {"synthetic", "sparse", "mnist", "fashion-mnist", "cifar10", "file"}
    assert "--data-file PATH" in lines["file"]
    assert lines["mnist"].split()[1] == "OK" and str(SHARED / "mnist") in lines["mnist"]
    assert "NOT FOUND" in lines["cifar10"] and "download cifar10" in lines["cifar10"]
    out = io.StringIO()
    assert data_command("verify", data_dir=str(SHARED), out=out, err=err) == 0
    assert sum(ln.startswith("OK ") for ln in out.getvalue().splitlines()) == 8
    assert "cifar10: not installed (skipped" in out.getvalue()


def test_data_command_errors_and_exit_codes(tmp_path):
    out, err = io.StringIO(), io.StringIO()
    assert data_command("fetch", "mnist", out=out, err=err) == 2
    assert "allowed: list, verify, path, download" in err.getvalue()
    assert data_command("path", "svhn", out=out, err=err) == 2
    assert data_command("path", None, out=out, err=err) == 2
    assert data_command("path", "synthetic", out=out, err=err) == 2
    assert data_command("verify", "file", out=out, err=err) == 2  # the user's file: no name
    assert data_command("verify", "synthetic", out=out, err=err) == 0
    err = io.StringIO()
    assert data_command("path", "cifar10", str(tmp_path), out=out, err=err) == 1
    assert "stalesgd data download cifar10" in err.getvalue()
    assert str(tmp_path / "cifar10") in err.getvalue()
    out, err = io.StringIO(), io.StringIO()
    assert data_command("verify", "mnist", str(tmp_path), out=out, err=err) == 1
    assert out.getvalue().count("MISSING") == 4 and "Looked in" in err.getvalue()
    # without a name, sets absent everywhere are skipped, not failures
    assert data_command("verify", None, str(tmp_path), out=io.StringIO(), err=err) == 0


# ---------------------------------------------------------------- packed images


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("normalize", ["standard", "unit"])
def test_packed_images_hold_exactly_the_dense_inputs(dtype, normalize):
    """uint8 pixels + coefficients decode to the very floats pixels_to_inputs gives (bit for
    bit), and the kernels read both forms alike."""
    from stalesgd.data.transforms import channel_stats, pixels_to_inputs
    from stalesgd.problems._kernels import gather_rows

    ds = load_dataset("synthetic", kind="images", dtype=dtype, n_train=60, n_test=10,
                      input_shape=(3, 5, 4), normalize=normalize, seed=2)
    mean, std = channel_stats(ds.X_train, 3)
    dense = pixels_to_inputs(ds.X_train, np.dtype(dtype), 3, normalize, mean, std)
    assert ds.features("train").tobytes() == dense.tobytes()
    idx = np.array([5, 0, 59, 5], dtype=np.int64)
    a = np.full((4, 60), np.nan, dtype=dtype)
    b = np.full((4, 60), np.nan, dtype=dtype)
    gather_rows(ds.inputs("train"), idx, a)
    gather_rows(dense, idx, b)
    assert a.tobytes() == b.tobytes() == dense[idx].tobytes()
    with pytest.raises(IndexError, match="out of range"):
        gather_rows(ds.inputs("train"), np.array([60], dtype=np.int64), a[:1])


def test_packed_dataset_rejects_inconsistent_arrays():
    from stalesgd.data.dataset import Dataset

    px = np.zeros((4, 6), np.uint8)
    coef = np.ones((2, 3), np.float32)
    y = np.zeros(4, np.int64)
    with pytest.raises(ValueError, match="uint8"):
        Dataset("x", px.astype(np.float32), y, px, y, 2, (2, 3, 1), pixel_coef=coef)
    with pytest.raises(ValueError, match="multiple of the 4 channels"):
        Dataset("x", px, y, px, y, 2, (4, 1, 1), pixel_coef=np.ones((4, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(channels, 3\)"):
        Dataset("x", px, y, px, y, 2, (2, 3, 1), pixel_coef=np.ones((2, 2), np.float32))
    with pytest.raises(ValueError, match="split='valid' is not allowed"):
        Dataset("x", px, y, px, y, 2, (2, 3, 1), pixel_coef=coef).features("valid")
