"""The parsed cache of file-based data sets (stalesgd.data.parsed_cache): a verified parse
is stored and reused for the same file bytes only, and the cache never makes a load fail."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
from test_data import IDX_NAMES, _copy_mnist

import stalesgd.data.paths as paths
import stalesgd.data.real as real
from stalesgd.data import DataCorruptError, load_dataset, parsed_cache
from stalesgd.data.files import clear_verdicts


@pytest.fixture(autouse=True)
def hermetic(tmp_path, monkeypatch):
    """A user cache of the test's own; no $STALESGD_DATA; no memo between loads."""
    monkeypatch.delenv("STALESGD_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(paths, "SYSTEM_ROOT", tmp_path / "system")
    clear_verdicts()
    yield
    clear_verdicts()


def _entries() -> list[Path]:
    folder = parsed_cache.cache_folder()
    return sorted(folder.iterdir()) if folder.is_dir() else []


def _no_parsing(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the files were read and parsed again")
    monkeypatch.setattr(real, "read_verified", refuse)


def _load(root: Path, **kw):
    return load_dataset("mnist", data_dir=root, n_train=500, n_test=100, **kw)


def test_a_second_load_reads_the_stored_parse_and_gets_the_same_data(tmp_path, monkeypatch):
    root = tmp_path / "root"
    _copy_mnist(root)
    first = _load(root)
    (entry,) = _entries()
    assert entry.name.startswith("mnist-")
    assert sorted(p.name for p in entry.iterdir()) == sorted(
        [f"{a}.npy" for a in parsed_cache.ARRAYS] + [parsed_cache.DIGEST])
    clear_verdicts()
    _no_parsing(monkeypatch)
    second = _load(root)
    for part in ("train", "test"):
        np.testing.assert_array_equal(first.features(part), second.features(part))
    np.testing.assert_array_equal(first.y_train, second.y_train)
    np.testing.assert_array_equal(first.y_test, second.y_test)
    raw, _ = real.load_raw("mnist", root)
    assert not raw.X_train.flags.writeable and raw.X_train.shape == (60000, 784)
    # the check before a run is answered from the cache too
    real.check_files("mnist", root)


def test_other_bytes_are_parsed_and_verified_again(tmp_path):
    root = tmp_path / "root"
    folder = _copy_mnist(root)
    _load(root)
    (before,) = _entries()
    gz = folder / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(gz.read_bytes()))
    raw[100] = (raw[100] + 1) % 10  # still a valid label: only the checksum can tell
    gz.write_bytes(gzip.compress(bytes(raw)))
    clear_verdicts()
    with pytest.raises(DataCorruptError, match="MISMATCH"):
        _load(root)
    assert _entries() == [before]  # a file that does not verify is not stored


def test_a_copy_elsewhere_with_the_same_bytes_shares_the_entry(tmp_path, monkeypatch):
    _copy_mnist(tmp_path / "a")
    _copy_mnist(tmp_path / "b")
    _load(tmp_path / "a")
    clear_verdicts()
    _no_parsing(monkeypatch)
    _load(tmp_path / "b")
    assert len(_entries()) == 1


def _flip_pixel(entry: Path) -> None:
    X = np.load(entry / "X_train.npy")
    X[123, 400] ^= 1
    np.save(entry / "X_train.npy", X)


def _swap(entry: Path) -> None:
    a, b = entry / "X_train.npy", entry / "X_test.npy"
    a.rename(entry / "tmp.npy")
    b.rename(a)
    (entry / "tmp.npy").rename(b)


@pytest.mark.parametrize("damage", [
    lambda e: (e / "X_train.npy").write_bytes(b"\x93NUMPY garbage"),  # unreadable
    _flip_pixel,  # readable, one value changed
    _swap,  # readable, arrays in each other's place
    lambda e: np.save(e / "y_train.npy", np.zeros((10, 3))),  # another dtype and shape
    lambda e: (e / parsed_cache.DIGEST).unlink(),  # no digest
])
def test_a_damaged_entry_is_parsed_again_and_replaced(tmp_path, damage):
    root = tmp_path / "root"
    _copy_mnist(root)
    first = _load(root)
    (entry,) = _entries()
    damage(entry)
    clear_verdicts()
    again = _load(root)
    np.testing.assert_array_equal(first.features("train"), again.features("train"))
    np.testing.assert_array_equal(first.y_train, again.y_train)
    assert _entries() == [entry] and np.load(entry / "X_train.npy").shape == (60000, 784)


def test_a_file_rewritten_in_place_is_verified_again_not_taken_from_memory(tmp_path):
    """Same size, same modification time, other bytes, in one process: the in-process
    verdict must not let the new bytes into the cache as verified."""
    root = tmp_path / "root"
    folder = root / "mnist"
    _copy_mnist(tmp_path / "gz")
    folder.mkdir(parents=True)
    for n in IDX_NAMES:  # uncompressed, so that one byte changes one label
        (folder / n).write_bytes(gzip.decompress((tmp_path / "gz" / "mnist" / f"{n}.gz")
                                                 .read_bytes()))
    _load(root)
    labels = folder / "train-labels-idx1-ubyte"
    st = labels.stat()
    data = bytearray(labels.read_bytes())
    data[100] = (data[100] + 1) % 10
    labels.write_bytes(bytes(data))
    os.utime(labels, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(DataCorruptError, match="MISMATCH"):
        _load(root)
    assert len(_entries()) == 1


def test_two_stores_of_one_entry_leave_one_folder(tmp_path):
    arrays = tuple(np.arange(3) + i for i in range(6))
    assert parsed_cache.store("mnist", "a" * 32, arrays)
    assert parsed_cache.store("mnist", "a" * 32, arrays)  # (a second process, same bytes)
    assert [p.name for p in _entries()] == ["mnist-" + "a" * 32]


def test_the_parsing_code_is_part_of_the_key(tmp_path, monkeypatch):
    files = {"f": tmp_path / "f"}
    files["f"].write_bytes(b"data")
    before = parsed_cache.content_key("mnist", files)
    monkeypatch.setattr(parsed_cache, "PARSER_MODULES", ("stalesgd.data.idx",))
    assert parsed_cache.content_key("mnist", files) != before


def test_an_unwritable_cache_costs_nothing_but_time(tmp_path, monkeypatch):
    root = tmp_path / "root"
    _copy_mnist(root)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    ds = _load(root)
    assert ds.features("train").shape == (500, 784)
    assert parsed_cache.store("mnist", "k" * 32, (np.zeros(1),) * 6) is False


def test_unverified_loads_neither_store_nor_use_entries(tmp_path):
    root = tmp_path / "root"
    _copy_mnist(root)
    _load(root, verify=False)
    assert _entries() == []


def test_a_new_entry_removes_the_sets_stale_entries_and_abandoned_writes(tmp_path):
    arrays = tuple(np.arange(3) + i for i in range(6))
    old = 1_000_000_000
    assert parsed_cache.store("mnist", "a" * 32, arrays)
    os.utime(parsed_cache.cache_folder() / ("mnist-" + "a" * 32), (old, old))
    assert parsed_cache.store("mnist", "d" * 32, arrays)  # (recent: kept)
    assert parsed_cache.store("fashion-mnist", "b" * 32, arrays)
    os.utime(parsed_cache.cache_folder() / ("fashion-mnist-" + "b" * 32), (old, old))
    abandoned = parsed_cache.cache_folder() / ".mnist-half"
    abandoned.mkdir()
    os.utime(abandoned, (old, old))
    recent = parsed_cache.cache_folder() / ".mnist-writing"
    recent.mkdir()
    assert parsed_cache.store("mnist", "c" * 32, arrays)
    assert [p.name for p in _entries()] == [".mnist-writing", "fashion-mnist-" + "b" * 32,
                                            "mnist-" + "c" * 32, "mnist-" + "d" * 32]
    loaded = parsed_cache.load("mnist", "c" * 32)
    assert all(np.array_equal(x, y) for x, y in zip(loaded, arrays, strict=True))
    assert parsed_cache.load("mnist", "a" * 32) is None
