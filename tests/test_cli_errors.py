"""Every command walked through the errors a user can make: each ends in one message on
stderr and exit code 2, no traceback, nothing run and no results folder left; a dry run
refuses exactly what a real run refuses."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest
from fakes import FakeEngine
from stalesgd.app.cli import main

from stalesgd.data import clear_caches
from stalesgd.validation import short_repr

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")

EXPERIMENT = """
name = "walk"
engine = "fake"
[problem]
name = "mlp-synthetic"
[stop]
updates = 20
"""


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Exit code, stderr and stdout of ``stalesgd ARGV`` run in this process."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.err, captured.out


def assert_refused(code: int, err: str, *words: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    first = [line for line in err.splitlines() if line.strip()]
    assert first and first[0].startswith(("stalesgd: ", "usage: ")), err
    assert sum(line.startswith("stalesgd: ") for line in first) <= 1, err  # one message
    for word in words:
        assert word in err, (word, err)


@pytest.fixture(autouse=True)
def _isolated_data(monkeypatch):
    """No test sees the real user cache or $STALESGD_DATA; verdicts are not remembered."""
    monkeypatch.delenv("STALESGD_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "/nonexistent-stalesgd-cache")
    clear_caches()
    yield
    clear_caches()


# --- real and sim: problem, step size, seeds, batch, distributions, calibration, --out ------

ENGINE = ["--problem", "mlp-synthetic", "--algorithm", "lock", "--workers", "2",
          "--updates", "20", "--no-progress"]

FLAG_CASES = [
    # (extra flags, words the message must hold)
    (["-o", "hidden=[0]"], "-o hidden[0]=0 is out of range"),
    (["-o", "hidden=[-5]"], "-o hidden[0]=-5 is out of range"),
    (["-o", "hidden=[1.5]"], "-o hidden[0]=1.5 is a float"),
    (["-o", 'hidden="abc"'], "-o hidden='abc' is a string"),
    (["-o", "n_train=0"], "-o n_train=0 is out of range"),
    (["-o", "foo=1"], "-o foo=1 is an unknown option"),
    (["-o", "=1"], "--option = '=1'"),
    (["-o", "n_train=500", "-o", "n_train=600"], "n_train is given twice"),
    (["--problem", "logreg-mnist"], "--problem 'logreg-mnist' does not fit"),
    (["--problem", "resnet-mnist"], "--problem 'resnet-mnist'"),
    (["--stepsize", "tail", "--stepsize-option", "A=-1"], "--stepsize-option A=-1"),
    (["--stepsize", "tail", "--stepsize-option", "A=inf"], "--stepsize-option A=inf"),
    (["--stepsize", "tail", "--stepsize-option", "A=5"], "allowed: a number in 0..1"),
    (["--stepsize", "tail", "--stepsize-option", "window=0"], "--stepsize-option window=0"),
    (["--stepsize", "tail", "--stepsize-option", "pdf=[]"], "--stepsize-option pdf=[]"),
    (["--stepsize", "constant", "--stepsize-option", "A=1"],
     "--stepsize-option A=1 is an unknown option"),
    (["--stepsize", "adam"], "--stepsize 'adam'"),
    (["--seed", str(2**63)], "--seed 9223372036854775808 is out of range"),
    (["--seed", "-1"], "--seed -1 is out of range"),
    # a value starting with '-' that is no plain number reaches our checks, not argparse's
    (["--slowdown", "-1=4"], "names worker '-1', not a worker index"),
    (["--batch", "100000"], "--batch 100000 is larger than the training set"),
    (["--workers", "0"], "--workers 0 is out of range"),
    (["--lr", "nan"], "--lr nan is out of range"),
    (["--target-loss", "-1"], "--target-loss -1.0 is out of range"),
    (["--log-rows", "every:0"], "--log-rows 'every:0'"),
    (["--controller", "window", "--controller-option", "probe=0"],
     "--controller-option probe=0 is out of range"),
    (["--persistence", "many"], "--persistence 'many'"),
    (["--data-dir", "/data"], "--data-dir '/data'"),
    (["--workers", "two"], "--workers 'two' is not allowed; allowed: a whole number"),
]

SIM_CASES = [
    (["--compute", "lognormal:2ms:1e300"], "--compute 'lognormal:2ms:1e300'"),
    (["--compute", "exp:2"], "--compute 'exp:2'"),
    (["--read", "gamma:1ms:0"], "--read 'gamma:1ms:0'"),
    (["--time-slice", "0ms"], "--time-slice '0ms'"),
    (["--cores", "0"], "--cores 0"),
    (["--topology", "ps", "--per-byte", "-1ns"], "--per-byte '-1ns' is not allowed"),
]


@pytest.mark.parametrize("dry", [False, True], ids=["run", "dry-run"])
@pytest.mark.parametrize("engine", ["real", "sim"])
@pytest.mark.parametrize(("extra", "words"), FLAG_CASES,
                         ids=[" ".join(e) for e, _ in FLAG_CASES])
def test_bad_flags_are_refused_before_anything_runs(fake, tmp_path, capsys, engine, dry,
                                                    extra, words):
    runs = fake(FakeEngine(), name=engine)
    out = tmp_path / "res"
    argv = [engine, *ENGINE, *extra, "--out", str(out)] + (["--dry-run"] if dry else [])
    assert_refused(*cli(argv, capsys)[:2], words)
    assert runs.calls == [] and not out.exists()


@pytest.mark.parametrize("dry", [False, True], ids=["run", "dry-run"])
@pytest.mark.parametrize(("extra", "words"), SIM_CASES, ids=[" ".join(e) for e, _ in SIM_CASES])
def test_bad_simulator_settings_are_refused(fake, tmp_path, capsys, dry, extra, words):
    runs = fake(FakeEngine(), name="sim")
    out = tmp_path / "res"
    argv = ["sim", *ENGINE, *extra, "--out", str(out)] + (["--dry-run"] if dry else [])
    assert_refused(*cli(argv, capsys)[:2], words)
    assert runs.calls == [] and not out.exists()


def _calibration_cases(tmp: Path) -> list[tuple[str, str]]:
    (tmp / "folder.json").mkdir()
    (tmp / "garbage.json").write_text("{not json")
    (tmp / "other.json").write_text('{"format": "something-else"}')
    return [(str(tmp / "missing.json"), "does not exist"),
            (str(tmp / "folder.json"), "is a folder"),
            (str(tmp / "garbage.json"), "garbage.json"),
            (str(tmp / "other.json"), "not a stalesgd calibration")]


def test_bad_calibration_files_are_refused(fake, tmp_path, capsys):
    runs = fake(FakeEngine(), name="sim")
    out = tmp_path / "res"
    for path, words in _calibration_cases(tmp_path):
        for dry in ([], ["--dry-run"]):
            code, err, _ = cli(["sim", *ENGINE, "--calibration", path, "--out", str(out), *dry],
                               capsys)
            assert_refused(code, err, f"--calibration '{path}' cannot be used", words)
    assert runs.calls == [] and not out.exists()


def _out_cases(tmp: Path) -> list[tuple[str, str]]:
    (tmp / "a-file").write_text("x")
    return [(str(tmp / "a-file"), "is a file"),
            (str(tmp / "a-file" / "sub"), "which is a file"),
            (str(tmp / ("y" * 300)), "File name too long"),
            ("", "is empty"),
            ("/proc/stalesgd-results", "is not writable")]


@pytest.mark.parametrize("engine", ["real", "sim"])
def test_an_out_that_cannot_take_results_is_refused(fake, tmp_path, capsys, engine):
    runs = fake(FakeEngine(), name=engine)
    for out, words in _out_cases(tmp_path):
        for dry in ([], ["--dry-run"]):
            code, err, _ = cli([engine, *ENGINE, "--out", out, *dry], capsys)
            assert_refused(code, err, f"--out = {short_repr(out)}", words)
    assert runs.calls == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_a_name_too_long_for_a_folder_is_refused(fake, tmp_path, capsys):
    fake(FakeEngine(), name="real")
    code, err, _ = cli(["real", *ENGINE, "--name", "n" * 250, "--out", str(tmp_path / "r")],
                       capsys)
    assert_refused(code, err, "--name ", "at most 200")
    assert not (tmp_path / "r").exists()


# --- real and sim: data sets that are missing, corrupt or unreadable ------------------------


@pytest.fixture(scope="module")
def data_roots(tmp_path_factory):
    """Data roots holding an MNIST folder each, every one wrong in its own way."""
    if not (SHARED / "mnist").is_dir():
        pytest.skip(f"shared data {SHARED / 'mnist'} is absent")
    base = tmp_path_factory.mktemp("data")

    def copy(name: str) -> Path:
        folder = base / name / "mnist"
        folder.mkdir(parents=True)
        for f in MNIST_FILES:
            shutil.copy(SHARED / "mnist" / f"{f}.gz", folder / f"{f}.gz")
        return folder

    labels = "t10k-labels-idx1-ubyte"
    raw = gzip.decompress((SHARED / "mnist" / f"{labels}.gz").read_bytes())
    roots = {"missing data set": base / "nothing"}
    (base / "empty" / "mnist").mkdir(parents=True)
    roots["empty data folder"] = base / "empty"
    truncated = copy("truncated")
    data = (truncated / "train-images-idx3-ubyte.gz").read_bytes()
    (truncated / "train-images-idx3-ubyte.gz").write_bytes(data[: len(data) // 3])
    roots["truncated gz"] = truncated.parent
    (copy("not-gzip") / f"{labels}.gz").write_bytes(b"these are not gzip bytes")
    roots["not gzip"] = base / "not-gzip"
    magic = bytearray(raw)
    magic[0:4] = b"\x12\x34\x08\x01"
    (copy("magic") / f"{labels}.gz").write_bytes(gzip.compress(bytes(magic)))
    roots["wrong magic number"] = base / "magic"
    flipped = bytearray(raw)
    flipped[100] ^= 1
    (copy("checksum") / f"{labels}.gz").write_bytes(gzip.compress(bytes(flipped)))
    roots["wrong checksum"] = base / "checksum"
    copy("unreadable")
    roots["unreadable file"] = base / "unreadable"
    return roots


DATA_WORDS = {
    "missing data set": "data set 'mnist' not found",
    "empty data folder": "data set 'mnist' not found",
    "truncated gz": "train-images-idx3-ubyte.gz: cannot decompress",
    "not gzip": "t10k-labels-idx1-ubyte.gz: cannot decompress",
    "wrong magic number": "t10k-labels-idx1-ubyte.gz: MISMATCH",
    "wrong checksum": "t10k-labels-idx1-ubyte.gz: MISMATCH",
    "unreadable file": "t10k-labels-idx1-ubyte.gz: cannot read it (Permission denied)",
}


@pytest.mark.parametrize("dry", [False, True], ids=["run", "dry-run"])
@pytest.mark.parametrize("engine", ["real", "sim"])
@pytest.mark.parametrize("case", list(DATA_WORDS))
def test_data_that_is_missing_corrupt_or_unreadable_is_refused(fake, data_roots, tmp_path,
                                                               capsys, monkeypatch, engine,
                                                               dry, case):
    runs = fake(FakeEngine(), name=engine)
    root = data_roots[case]
    if case == "unreadable file":  # tests run as root, which a chmod does not stop
        real_read = Path.read_bytes

        def read_bytes(path):
            if path.name == "t10k-labels-idx1-ubyte.gz" and root in path.parents:
                raise PermissionError(13, "Permission denied", str(path))
            return real_read(path)

        monkeypatch.setattr(Path, "read_bytes", read_bytes)
    monkeypatch.setenv("STALESGD_DATA", str(root))
    out = tmp_path / "res"
    argv = [engine, "--problem", "mlp-mnist", "--algorithm", "lock", "--workers", "1",
            "--updates", "10", "--out", str(out), "--no-progress"] + (["--dry-run"] if dry
                                                                         else [])
    code, err, _ = cli(argv, capsys)
    assert_refused(code, err, DATA_WORDS[case])
    assert runs.calls == [] and not out.exists()


def test_data_verify_lists_an_unreadable_file(data_roots, capsys, monkeypatch):
    real_read = Path.read_bytes
    root = data_roots["unreadable file"]

    def read_bytes(path):
        if path.name == "t10k-labels-idx1-ubyte.gz" and root in path.parents:
            raise PermissionError(13, "Permission denied", str(path))
        return real_read(path)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    code, err, out = cli(["data", "verify", "mnist", "--data-dir", str(root)], capsys)
    assert code == 1 and "Traceback" not in err
    assert "UNREADABLE mnist/t10k-labels-idx1-ubyte" in out
    assert out.count("OK ") == 3


# --- run: experiment files, sweeps ----------------------------------------------------------


def _file_cases(tmp: Path) -> list[tuple[str, str]]:
    (tmp / "broken.toml").write_text("name = \n")
    (tmp / "seconds.toml").write_text(EXPERIMENT.replace("updates = 20",
                                                         'seconds = "10 parsecs"'))
    (tmp / "binary.toml").write_bytes(b"\xff\xfe\x00\x01")
    (tmp / "a-folder.toml").mkdir()
    (tmp / "key.toml").write_text("colour = 1\n" + EXPERIMENT)
    (tmp / "sweep.toml").write_text(EXPERIMENT + '[sweep]\n"problem.options.hidden" = '
                                                 "[[8], [0]]\n")
    (tmp / "rule.toml").write_text(EXPERIMENT + '[stepsize]\nrule = "tail"\n'
                                                "options = {A = 5}\n")
    (tmp / "seeds.toml").write_text(EXPERIMENT.replace('engine = "fake"',
                                                       'engine = "fake"\nseeds = [1, 1]'))
    return [(str(tmp / "missing.toml"), "does not exist"),
            (str(tmp / "seconds.toml"), "stop.seconds = '10 parsecs'"),
            (str(tmp / "broken.toml"), "not valid TOML"),
            (str(tmp / "binary.toml"), "is not UTF-8 text"),
            (str(tmp / "a-folder.toml"), "is a folder, not a file"),
            (str(tmp / "key.toml"), "key.toml: colour = 1 is an unknown key"),
            (str(tmp / "sweep.toml"),
             "sweep point {'problem.options.hidden': [0]}: problem.options.hidden[0] = 0"),
            (str(tmp / "rule.toml"), "stepsize.options.A = 5 is out of range"),
            (str(tmp / "seeds.toml"), "seeds = [1, 1] repeats a seed")]


def test_bad_experiment_files_are_refused(fake, tmp_path, capsys):
    runs = fake(FakeEngine())
    out = tmp_path / "res"
    for path, words in _file_cases(tmp_path):
        for dry in ([], ["--dry-run"]):
            code, err, _ = cli(["run", path, "--out", str(out), "--no-progress", *dry], capsys)
            assert_refused(code, err, words)
    assert runs.calls == [] and not out.exists()


def test_run_refuses_an_out_that_cannot_take_results(fake, tmp_path, capsys):
    runs = fake(FakeEngine())
    exp = tmp_path / "walk.toml"
    exp.write_text(EXPERIMENT)
    for out, words in _out_cases(tmp_path):
        code, err, _ = cli(["run", str(exp), "--out", out, "--no-progress"], capsys)
        assert_refused(code, err, f"--out = {short_repr(out)}", words)
    assert runs.calls == []


def test_a_run_that_fails_at_its_start_leaves_no_folder(fake, tmp_path, capsys):
    """An engine refusing a run only when it starts: exit 2, and the empty folder (and the
    results root made for it) removed."""
    from stalesgd.experiment import ExperimentError

    def engine(spec, progress, updates=None):
        raise ExperimentError("algorithm.options.x", 1, "nothing", "is not taken")

    fake(engine)
    exp = tmp_path / "walk.toml"
    exp.write_text(EXPERIMENT)
    out = tmp_path / "new" / "res"
    assert_refused(*cli(["run", str(exp), "--out", str(out), "--no-progress"], capsys)[:2],
                   "algorithm.options.x = 1 is not taken")
    assert not (tmp_path / "new").exists()


# --- calibrate, compare, report -------------------------------------------------------------


@pytest.fixture
def fake_folder(fake, tmp_path):
    """A results folder of fake runs (no real run in it)."""
    from stalesgd.app.runner import run_experiment

    from stalesgd.experiment import loads_experiment

    fake(FakeEngine())
    return run_experiment(loads_experiment(EXPERIMENT), out=tmp_path / "res",
                          progress=False).folder


def test_calibrate_refuses_what_it_cannot_use(fake_folder, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    cases = [([str(tmp_path / "missing")], "does not exist"),
             ([str(tmp_path / "empty")], "empty"),
             ([str(fake_folder)], "real"),
             ([str(fake_folder), "--out", str(tmp_path)], "--out = "),
             ([str(fake_folder), "--out", str(tmp_path / "no" / "c.json")], "not a folder")]
    for argv, words in cases:
        code, err, _ = cli(["calibrate", *argv], capsys)
        assert_refused(code, err, words)
    assert not (fake_folder / "calibration.json").exists()


def test_report_and_compare_refuse_what_they_cannot_read(fake_folder, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(fake_folder, broken)
    data = (broken / "updates.parquet").read_bytes()
    (broken / "updates.parquet").write_bytes(data[: len(data) // 2])
    (tmp_path / "a-file").write_text("x")
    cases = [(["report", str(tmp_path / "missing")], "does not exist"),
             (["report", str(tmp_path / "a-file")], "is a file"),
             (["report", str(tmp_path)], "is not a results folder"),
             (["report", str(broken)], "updates.parquet"),
             (["report", str(fake_folder), "--target", "-1"], "target loss -1.0"),
             (["report", str(fake_folder), "--target", "nan"], "target loss nan"),
             (["report", str(fake_folder), "--families", "gauss"], "--families = 'gauss'"),
             (["report", str(fake_folder), "--target", "x"],
              "--target 'x' is not allowed; allowed: a number"),
             (["compare", str(fake_folder), str(fake_folder)], "is given twice"),
             (["compare", str(fake_folder), "--out", str(tmp_path / "a-file")],
              "--out = "),
             (["compare", str(broken), "--out", str(tmp_path / "cmp")], "updates.parquet")]
    for argv, words in cases:
        code, err, _ = cli(argv, capsys)
        assert_refused(code, err, words)
    assert not (fake_folder / "report.html").exists() and not (tmp_path / "cmp").exists()


def test_data_refuses_unknown_names_and_actions(capsys):
    for argv, words in [(["data", "verify", "imagenet"], "unknown data set 'imagenet'"),
                        (["data", "path"], "needs a data set name"),
                        (["data", "download", "synthetic"], "has no files"),
                        (["data", "fetch"], "invalid choice: 'fetch'")]:
        code, err, _ = cli(argv, capsys)
        assert code == 2 and "Traceback" not in err and words in err, err


def test_no_command_prints_the_help(capsys):
    code, err, _ = cli([], capsys)
    assert code == 2 and "usage: stalesgd" in err


def test_a_flag_value_of_the_wrong_kind_is_one_line_naming_what_is_allowed(capsys):
    """argparse's own errors printed the whole usage (ten lines) before "invalid int value";
    they are one line now, as every other refusal."""
    for argv, words in [(["real", "--problem", "x", "--algorithm", "lock", "--workers", "abc"],
                         "--workers 'abc' is not allowed; allowed: a whole number"),
                        (["sim", "--problem", "x", "--algorithm", "lock", "--workers", "2",
                          "--lr", "fast"], "--lr 'fast' is not allowed; allowed: a number"),
                        (["real", "--problem", "x"], "the following arguments are required")]:
        code, err, _ = cli(argv, capsys)
        assert_refused(code, err, words, f"`stalesgd {argv[0]} --help` says more")
        assert len(err.strip().splitlines()) == 1, err
