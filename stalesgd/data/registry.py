"""What each data set is made of: file names, checksums, sizes and download sources.

MNIST and Fashion-MNIST checksums are the published MD5s of the files *after
decompression* (a recompressed ``.gz`` differs byte for byte from the upstream
archive but not in content).

CIFAR-10: the dataset authors publish only the MD5 of the whole archive
``cifar-10-binary.tar.gz`` (``c32a1d4ab5d03f1284b67883e8d87530``), not of the
six batch files inside it.  So ``download`` verifies the archive's MD5 and then
records the MD5 of each extracted batch in a manifest (:data:`MANIFEST_NAME`) in
the data folder; ``verify`` checks those recorded sums when the manifest is
present and otherwise verifies CIFAR-10 by structure only (exact size of
10000 records of 3073 bytes, labels in 0..9) and says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Name of the per-folder checksum manifest written by ``stalesgd data download``.
MANIFEST_NAME = "stalesgd-md5sums.txt"


@dataclass(frozen=True)
class FileSpec:
    """One upstream file: its name, role, decompressed MD5 (if published) and size."""

    name: str
    role: str
    md5: str | None
    size: int
    """Size in bytes after decompression."""


@dataclass(frozen=True)
class DataSpec:
    """A file-based data set: where it lives under a root and how to fetch it.

    ``folder`` is the sub-folder of every search root (named as in problem
    names); ``alt_subdirs`` are further sub-folders tried inside it (the CIFAR
    archive unpacks into ``cifar-10-batches-bin/``).  ``mirrors`` are base URLs
    that hold ``<file>.gz`` (IDX sets); ``archive_url``/``archive_md5`` describe
    a single archive download (CIFAR-10).
    """

    name: str
    folder: str
    kind: str  # "idx" or "cifar"
    files: tuple[FileSpec, ...]
    input_shape: tuple[int, ...]
    n_classes: int
    description: str
    mirrors: tuple[str, ...] = ()
    archive_url: str | None = None
    archive_md5: str | None = None
    archive_member_dir: str | None = None
    alt_subdirs: tuple[str, ...] = field(default_factory=tuple)

    def file(self, role: str) -> FileSpec:
        """The file playing ``role`` (``train_images``, ``test_labels``, ``train_1`` …)."""
        for f in self.files:
            if f.role == role:
                return f
        raise KeyError(f"{self.name} has no file with role {role!r}")


#: bytes before the labels of an IDX label file (magic number and count)
IDX_LABEL_HEADER = 8


def _idx_files(md5s: dict[str, str]) -> tuple[FileSpec, ...]:
    sizes = {
        "train-images-idx3-ubyte": 16 + 60000 * 784,
        "train-labels-idx1-ubyte": IDX_LABEL_HEADER + 60000,
        "t10k-images-idx3-ubyte": 16 + 10000 * 784,
        "t10k-labels-idx1-ubyte": IDX_LABEL_HEADER + 10000,
    }
    roles = {
        "train-images-idx3-ubyte": "train_images",
        "train-labels-idx1-ubyte": "train_labels",
        "t10k-images-idx3-ubyte": "test_images",
        "t10k-labels-idx1-ubyte": "test_labels",
    }
    return tuple(FileSpec(n, roles[n], md5s[n], sizes[n]) for n in sizes)


CIFAR_RECORD = 1 + 3 * 32 * 32
CIFAR_RECORDS_PER_FILE = 10000

DATASETS: dict[str, DataSpec] = {
    "mnist": DataSpec(
        name="mnist",
        folder="mnist",
        kind="idx",
        files=_idx_files(
            {
                "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
                "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
                "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
                "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
            }
        ),
        input_shape=(1, 28, 28),
        n_classes=10,
        description="MNIST handwritten digits, 60000 train / 10000 test, 28x28 grey",
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
    ),
    "fashion-mnist": DataSpec(
        name="fashion-mnist",
        folder="fashion-mnist",
        kind="idx",
        files=_idx_files(
            {
                "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
                "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
                "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
                "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
            }
        ),
        input_shape=(1, 28, 28),
        n_classes=10,
        description="Fashion-MNIST (Zalando), 60000 train / 10000 test, 28x28 grey",
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
        ),
    ),
    "cifar10": DataSpec(
        name="cifar10",
        folder="cifar10",
        kind="cifar",
        files=tuple(
            FileSpec(f"data_batch_{i}.bin", f"train_{i}", None,
                     CIFAR_RECORD * CIFAR_RECORDS_PER_FILE)
            for i in range(1, 6)
        )
        + (FileSpec("test_batch.bin", "test", None, CIFAR_RECORD * CIFAR_RECORDS_PER_FILE),),
        input_shape=(3, 32, 32),
        n_classes=10,
        description="CIFAR-10 binary batches, 50000 train / 10000 test, 32x32 RGB",
        archive_url="https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
        archive_md5="c32a1d4ab5d03f1284b67883e8d87530",
        archive_member_dir="cifar-10-batches-bin",
        alt_subdirs=("cifar-10-batches-bin",),
    ),
}

#: The data sets generated from a seed (no files): dense ``synthetic`` and text-like ``sparse``.
GENERATED_NAMES: tuple[str, ...] = ("synthetic", "sparse")
#: The data set read from a file the user names (:mod:`stalesgd.data.userfile`).
FILE_SET = "file"
#: The data sets known by their name alone (``stalesgd data`` lists and verifies them).
NAMED_SETS: tuple[str, ...] = (*GENERATED_NAMES, *DATASETS)
#: Every name :func:`stalesgd.data.load_dataset` accepts.
ALL_NAMES: tuple[str, ...] = (*NAMED_SETS, FILE_SET)


def split_sizes(spec: DataSpec) -> tuple[int, int]:
    """The upstream number of training and test examples of a file-based data set, known
    from its files' sizes without reading them."""
    if spec.kind == "idx":
        return (spec.file("train_labels").size - IDX_LABEL_HEADER,
                spec.file("test_labels").size - IDX_LABEL_HEADER)
    train = sum(f.size for f in spec.files if f.role != "test") // CIFAR_RECORD
    return train, spec.file("test").size // CIFAR_RECORD


def get_spec(name: str) -> DataSpec:
    """The :class:`DataSpec` of a file-based data set; a clear error for anything else."""
    try:
        return DATASETS[name]
    except KeyError:
        if name in GENERATED_NAMES:
            raise ValueError(
                f"data set {name!r} is generated from a seed and has no files"
            ) from None
        raise ValueError(
            f"unknown data set {name!r}; allowed: {', '.join(NAMED_SETS)}"
        ) from None
