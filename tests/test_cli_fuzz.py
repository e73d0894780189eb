"""Random command lines and experiment files, built from the real flags and keys with
adversarial values (extremes, wrong types, empty strings, huge numbers, unicode, negative
numbers, NaN and infinity): never a traceback, never a hang, and exit code 2 exactly when
the case is nonsense, 0 when it is valid (each case knows which it is by construction).

Cases run with ``--dry-run`` (which checks everything a run checks) in this process, under a
time limit; a few run for real, tiny, through a subprocess.  The default budget is small;
``-m slow`` runs a bigger one.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stalesgd.app.cli import main

from stalesgd.experiment import dict_to_toml

#: seconds one case may take
LIMIT = 60
INT64_MAX = 2**63 - 1
MAX_WORKERS = 4096
SYNTHETIC_TRAIN = 10000  # training examples of a synthetic set by default
SMALL_TRAIN = 500  # ... with -o n_train=500
PROBLEMS = ("logreg-synthetic", "softmax-synthetic", "mlp-synthetic", "linreg-synthetic")
ALGORITHMS = ("seq", "sync", "lock", "hogwild", "leashed")
RULES = ("constant", "inverse", "exponential", "tail", "tail-original", "model",
         "delay-adaptive")
PDF_RULES = ("tail", "tail-original", "model")

# adversarial values shared by many flags
WEIRD = ["", " ", "nan", "inf", "-inf", "NaN", "1e999", "-1", "0x10", "☃", "ünïcödé", "x" * 400,
         "\t", "None", "null", "true", "[]", "{}", "1,2", "１"]


class Hang(Exception):
    """A case ran longer than :data:`LIMIT` seconds."""


@contextlib.contextmanager
def time_limit(seconds: float):
    def fire(signum, frame):
        raise Hang(f"no answer after {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_main(argv: list[str]) -> tuple[int, str]:
    """Exit code and stderr of ``stalesgd ARGV`` in this process, under the time limit; an
    exception escaping ``main`` fails the test with its traceback."""
    err, out = io.StringIO(), io.StringIO()
    with time_limit(LIMIT), contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse
            code = exc.code
    return code, err.getvalue()


def check(argv: list[str], valid: bool, why: list[str]) -> None:
    code, err = run_main(argv)
    assert "Traceback" not in err, (argv, err)
    if valid:
        assert code == 0, (argv, err)
        return
    assert code == 2, (argv, why, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[0].startswith(("stalesgd: ", "usage: ")), (argv, err)


# --- command lines ---------------------------------------------------------------------------


def _int_valid(lo: int, hi: int):
    """Valid when ``int()`` (which the command line uses) reads an integer in lo..hi."""
    def valid(text: str) -> bool:
        try:
            return lo <= int(text) <= hi
        except ValueError:
            return False
    return valid


def _float_positive(text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return math.isfinite(value) and value > 0


@dataclass
class Flag:
    """A flag, how its values are drawn, which of them are valid (given the case), and
    values valid in any case (for cases built to be valid)."""

    name: str
    values: Any  # a strategy of strings
    valid: Any  # text, case -> bool
    engines: tuple[str, ...] = ("real", "sim")
    good: tuple[str, ...] = ()


@dataclass
class Case:
    engine: str
    flags: dict[str, str] = field(default_factory=dict)
    switches: list[str] = field(default_factory=list)
    built_valid: bool = False

    def get(self, name: str, default: str) -> str:
        return self.flags.get(name, default)


GOOD_OPTIONS = ("n_train=500", "n_test=100", "seed=3", 'init="he"')
GOOD_RULE_OPTIONS = ("window=3", "A=0.5", "warmup=2", "A=1")
GOOD_COMPUTE = ("exp:2ms", "det:1ms", "gamma:2ms:0.5", "lognormal:2ms:0.5")


def _train_rows(case: Case) -> int:
    return SMALL_TRAIN if case.flags.get("-o") == "n_train=500" else SYNTHETIC_TRAIN


def _texts(*good: str) -> Any:
    return st.one_of(st.sampled_from(list(good)), st.sampled_from(WEIRD), st.text(max_size=12))


def _ints(lo: int, hi: int) -> Any:
    return st.one_of(st.integers(lo - 3, hi + 3), st.integers(-(2**70), 2**70)).map(str) | \
        st.sampled_from(WEIRD + ["1.5", "2.0", "1e3"])


FLAGS = [
    Flag("--problem", _texts(*PROBLEMS, "logreg-mnist", "resnet-mnist", "mlp"),
         lambda t, c: t in PROBLEMS, good=PROBLEMS),
    Flag("--algorithm", _texts(*ALGORITHMS), lambda t, c: t in ALGORITHMS, good=ALGORITHMS),
    Flag("--workers", _ints(1, 8), lambda t, c: _int_valid(1, MAX_WORKERS)(t),
         good=("1", "2", "4")),
    Flag("--stepsize", _texts(*RULES), lambda t, c: t in RULES, good=RULES),
    Flag("--lr", st.floats(allow_nan=True, allow_infinity=True).map(repr) | _texts("0.05"),
         lambda t, c: _float_positive(t), good=("0.05", "1e-3", "1")),
    Flag("--batch", _ints(1, 64) | st.sampled_from(["10000", "10001", "500", "501"]),
         lambda t, c: _int_valid(1, _train_rows(c))(t), good=("1", "16")),
    Flag("--dtype", _texts("float32", "float64", "float16"),
         lambda t, c: t in ("float32", "float64"), good=("float32", "float64")),
    Flag("--persistence", _texts("0", "3", "inf", "-1", "1000000001", "many"),
         lambda t, c: t == "inf" or _int_valid(0, 10**9)(t), good=("0", "3", "inf")),
    Flag("-o", st.sampled_from(["n_train=500", "n_test=100", "seed=3", 'init="he"',
                                "hidden=[0]", "hidden=[-5]", "hidden=[1.5]", 'hidden="abc"',
                                "n_train=0", "foo=1", "=3", "novalue", "n_train=1e999",
                                "dtype=float32", "n_train=99999999999", "seed=-1",
                                "n_features=0", "noise=nan"]),
         lambda t, c: t in GOOD_OPTIONS, good=GOOD_OPTIONS),
    Flag("--stepsize-option", st.sampled_from(["window=3", "A=0.5", "warmup=2", "A=-1",
                                               "A=inf", "window=0", "pdf=[]", "A=5", "bogus=1",
                                               "pdf=[0, 0]", "A=1", "patience=0"]),
         lambda t, c: t in GOOD_RULE_OPTIONS and c.get("--stepsize", "constant") in PDF_RULES,
         good=GOOD_RULE_OPTIONS),
    Flag("--controller", _texts("static", "window", "elastic"), lambda t, c: t == "static",
         good=("static",)),
    Flag("--controller-option", st.sampled_from(["probe=0", "speed=3", "steps=[[0, 99]]"]),
         lambda t, c: False),
    Flag("--updates", _ints(1, 100), lambda t, c: _int_valid(1, INT64_MAX)(t),
         good=("10", "100")),
    Flag("--seconds", _texts("0.5s", "1", "2ms", "0", "-1", "10 parsecs", "1e999s"),
         lambda t, c: _seconds_valid(t), good=("0.5s", "1", "2ms")),
    Flag("--target-loss", st.floats(allow_nan=True, allow_infinity=True).map(repr),
         lambda t, c: _float_positive(t), good=("0.3",)),
    Flag("--log-rows", _texts("all", "none", "every:10", "every:0", "every:-1", "some"),
         lambda t, c: t in ("all", "none") or bool(re.fullmatch(r"every:[1-9][0-9]{0,17}", t)),
         good=("all", "none", "every:10")),
    Flag("--seed", st.integers(-3, 2**64).map(str) | st.sampled_from(
        [str(INT64_MAX), str(INT64_MAX + 1), "1.0", "x", ""]),
         lambda t, c: _int_valid(0, INT64_MAX)(t), good=("0", "7", str(INT64_MAX))),
    Flag("--name", _texts("fz-1", "has space", "-lead", "n" * 201),
         lambda t, c: bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}", t)),
         good=("fz-1",)),
    Flag("--data-dir", _texts("/data"), lambda t, c: False),
    Flag("--cores", _ints(1, 4), lambda t, c: _int_valid(1, MAX_WORKERS)(t), ("sim",),
         good=("1", "2")),
    Flag("--compute", _texts(*GOOD_COMPUTE, "exp:2", "lognormal:2ms:1e300", "poisson:1ms",
                             "exp:-1ms", "gamma:2ms:0", "exp:1e300s"),
         lambda t, c: t in GOOD_COMPUTE, ("sim",), good=GOOD_COMPUTE),
    Flag("--read", _texts("det:10us", "per-param", "exp:2", "gamma:1ms:0"),
         lambda t, c: t in ("det:10us", "per-param"), ("sim",), good=("det:10us", "per-param")),
    Flag("--update", _texts("det:10us", "per-param", "lognormal:1ms:11"),
         lambda t, c: t in ("det:10us", "per-param"), ("sim",), good=("det:10us", "per-param")),
    Flag("--time-slice", _texts("4ms", "1ms", "0ms", "4", "-1ms"),
         lambda t, c: t in ("4ms", "1ms"), ("sim",), good=("4ms", "1ms")),
    Flag("--calibration", _texts("missing.json"), lambda t, c: False, ("sim",)),
]


def _seconds_valid(text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?|\.[0-9]+"
                         r"(?:[eE][-+]?[0-9]+)?)\s*(ns|us|µs|ms|s)\s*", text)
        if m is None:
            return False
        scale = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0}[m.group(2)]
        value = float(m.group(1)) * scale
    return math.isfinite(value) and value > 0


def validity(case: Case) -> list[str]:
    """Why ``case`` is nonsense (empty when it is valid)."""
    why = []
    for flag in FLAGS:
        if flag.name not in case.flags:
            continue
        text = case.flags[flag.name]
        if case.engine not in flag.engines:
            why.append(f"{flag.name} is not a flag of {case.engine}")
        elif not flag.valid(text, case):
            why.append(f"{flag.name} {text!r}")
    if "--updates" in case.flags and "--seconds" in case.flags:
        why.append("--updates with --seconds")
    return why


@st.composite
def command_lines(draw) -> Case:
    """Half of the cases are built to be valid, the others from every value of every flag
    (mostly nonsense)."""
    case = Case(engine=draw(st.sampled_from(["real", "sim"])))
    valid = draw(st.booleans())
    required = ("--problem", "--algorithm", "--workers")
    for flag in FLAGS:
        if valid and (not flag.good or case.engine not in flag.engines
                      or (flag.name == "--seconds" and "--updates" in case.flags)):
            continue
        if flag.name in required or draw(st.integers(0, 3 if valid else 9)) == 0:
            case.flags[flag.name] = draw(st.sampled_from(flag.good) if valid else flag.values)
    if valid and "--stepsize-option" in case.flags:
        case.flags["--stepsize"] = draw(st.sampled_from(PDF_RULES))
    if draw(st.booleans()):
        case.switches.append("--timing-only" if case.engine == "sim" else "--no-progress")
    case.built_valid = valid
    return case


def _argv(case: Case, out: str) -> list[str]:
    argv = [case.engine]
    for name, value in case.flags.items():
        argv += [name, value] if not value.startswith("-") else [f"{name}={value}"]
    return argv + case.switches + ["--out", out, "--dry-run"]


def _fuzz_command_lines(case: Case) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "res")
        why = validity(case)
        assert not (case.built_valid and why), why  # the generator keeps its word
        check(_argv(case, out), not why, why)
        assert not os.path.exists(out)  # a dry run writes nothing


SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@settings(max_examples=60, **SETTINGS)
@given(command_lines())
def test_random_command_lines(case):
    _fuzz_command_lines(case)


@pytest.mark.slow
@settings(max_examples=1500, **SETTINGS)
@given(command_lines())
def test_random_command_lines_many(case):
    _fuzz_command_lines(case)


# --- experiment files ------------------------------------------------------------------------

GOOD_KEYS: dict[str, list[Any]] = {
    "engine": ["real", "sim"],
    "workers": [1, 2, 4],
    "seeds": [[0], [1, 2]],
    "problem.name": list(PROBLEMS),
    "problem.batch": [1, 16],
    "problem.dtype": ["float32", "float64"],
    "problem.options": [{}, {"n_train": 500}, {"seed": 3}],
    "algorithm.name": list(ALGORITHMS),
    "algorithm.persistence": [0, 3, "inf", math.inf],
    "stepsize.rule": ["constant", "inverse", "exponential", "delay-adaptive"],
    "stepsize.lr": [0.05, 1e-3],
    "stop.updates": [10, 100],
    "stop.seconds": [0.5, "1.5s"],
    "stop.target_loss": [0.3],
    "stop.at_target": [True, False],
    "eval.every_updates": [5],
    "eval.split": ["train", "test"],
    "eval.max_rows": [100],
    "sim.cores": [1, 2],
    "sim.compute": ["exp:2ms", "gamma:2ms:0.5"],
    "sim.time_slice": ["4ms"],
    "sim.timing_only": [True, False],
    "record.rows": ["all", "none", "every:3"],
    "controller.name": ["static"],
    "sweep.workers": [[1, 2]],
    "sweep.stepsize.lr": [[0.1, 0.01]],
}
BAD_KEYS: dict[str, list[Any]] = {
    "name": ["", "has space", "x" * 300, 7],
    "engine": ["gpu", "", 1],
    "workers": [0, -1, 10**6, 2.0, "2", True, 2**70, math.nan],
    "seeds": [[], [-1], [2**63], [1, 1], "0", [0.5]],
    "repeats": [0, 10**9],
    "colour": ["red"],
    "problem.name": ["logreg-mnist", "resnet-mnist", "mlp", "", 3, "☃-synthetic"],
    "problem.batch": [0, -8, 1.5, 10**9, "16"],
    "problem.dtype": ["float16", ""],
    "problem.options": [3, "x", {"foo": 1}, {"n_train": 0}, {"hidden": [0]},
                        {"n_train": 10**12}, {"noise": math.nan}, {"seed": -1}],
    "problem.bach": [16],
    "algorithm.name": ["async", "", 3],
    "algorithm.persistence": [-1, "many", 1.5, 10**12, -math.inf],
    "stepsize.rule": ["adam", ""],
    "stepsize.lr": [0, -0.1, math.inf, math.nan, "0.1", 1e309],
    "stepsize.options": [{"A": 1}, {"window": 0}, 5],
    "stop.updates": [0, -5, 2**63, 1.5, "10"],
    "stop.seconds": [-1, 0, "10 parsecs", math.nan, math.inf, "1e999s"],
    "stop.target_loss": [-0.5, 0, math.nan, "x"],
    "stop.at_target": ["yes", 1],
    "stop.forever": [True],
    "eval.split": ["validation"],
    "eval.every_updates": [0, -1],
    "eval.max_rows": [0],
    "sim.cores": [0, 10**5, "2"],
    "sim.compute": ["exp:2", "poisson:2ms", "gamma:2ms", "lognormal:2ms:1e300", 5,
                    "per-param", "exp:1e300s"],
    "sim.read": [5, "gamma:1ms:0"],
    "sim.time_slice": ["4", "0ms", 4],
    "sim.timing_only": [1, "no"],
    "sim.calibration": [7, ""],
    "record.rows": ["some", "every:0", "every:" + "9" * 30, 3],
    "controller.name": ["elastic"],
    "controller.options": [{"probe": 0}],
    "sweep.workers": [[1, 0], 4, []],
    "sweep.name": [["a", "b"]],
    "sweep.stepsize.rule": [["constant", "bogus"]],
    "sweep.problem.options.hidden": [[[8], [0]]],
    "exclude": [{"engine": "real"}, [{}], [{"seed": 3}]],
}


def _set(raw: dict[str, Any], key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    if parts[0] == "sweep":  # swept keys are quoted dotted keys of [sweep]
        parts = ["sweep", ".".join(parts[1:])]
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


@st.composite
def experiment_files(draw) -> tuple[dict[str, Any], list[str]]:
    raw: dict[str, Any] = {"name": "fz", "problem": {"name": "logreg-synthetic"},
                           "stop": {"updates": 10}}
    why: list[str] = []
    for key in draw(st.lists(st.sampled_from(sorted(GOOD_KEYS)), max_size=6, unique=True)):
        _set(raw, key, draw(st.sampled_from(GOOD_KEYS[key])))
    for key in draw(st.lists(st.sampled_from(sorted(BAD_KEYS)), max_size=2, unique=True)):
        value = draw(st.sampled_from(BAD_KEYS[key]))
        _set(raw, key, value)
        why.append(f"{key} = {value!r}")
    if "seconds" in raw["stop"] and draw(st.booleans()):
        raw["stop"].pop("updates")
    return raw, why


def _write(raw: dict[str, Any], path: Path) -> bool:
    """Write ``raw`` as TOML; False if TOML cannot hold it (then the case is skipped)."""
    try:
        path.write_text(dict_to_toml(raw))
    except (TypeError, ValueError):
        return False
    return True


def _fuzz_experiment_file(case: tuple[dict[str, Any], list[str]]) -> None:
    raw, why = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fz.toml"
        if not _write(raw, path):
            return
        out = os.path.join(tmp, "res")
        check(["run", str(path), "--dry-run", "--out", out], not why, why)
        assert not os.path.exists(out)


@settings(max_examples=60, **SETTINGS)
@given(experiment_files())
def test_random_experiment_files(case):
    _fuzz_experiment_file(case)


@pytest.mark.slow
@settings(max_examples=1500, **SETTINGS)
@given(experiment_files())
def test_random_experiment_files_many(case):
    _fuzz_experiment_file(case)


@settings(max_examples=40, **SETTINGS)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_random_bytes_as_an_experiment_file(data):
    """Anything but an experiment is refused (no random text holds a [problem] table with a
    problem name)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "junk.toml"
        path.write_bytes(data)
        check(["run", str(path), "--dry-run", "--out", os.path.join(tmp, "res")], False,
              ["junk"])


# --- a few for real, through a subprocess ----------------------------------------------------

TINY = ["--problem", "logreg-synthetic", "--algorithm", "lock", "--workers", "2",
        "--updates", "50", "--no-progress"]
def _slow(*case):
    return pytest.param(*case, marks=pytest.mark.slow)


SUBPROCESS_CASES = [
    (["real", *TINY], 0),
    (["sim", *TINY, "--compute", "exp:1ms", "--timing-only"], 0),
    (["real", *TINY, "--problem", "mlp-synthetic", "-o", "hidden=[0]"], 2),
    (["real", "--problem", "mlp-mnist", "--algorithm", "lock", "--workers", "1",
      "--updates", "10"], 2),  # no data: $STALESGD_DATA is a folder that does not exist
    _slow(["real", *TINY, "-o", "hidden=[0]"], 2),
    _slow(["sim", *TINY, "--compute", "lognormal:2ms:1e300"], 2),
    _slow(["real", *TINY, "--seed", str(2**63)], 2),
    _slow(["real", *TINY, "--stepsize", "tail", "--stepsize-option", "A=5"], 2),
    _slow(["run", "no-such-file.toml"], 2),
    _slow(["report", "no-such-folder"], 2),
]


@pytest.mark.parametrize(("argv", "code"), SUBPROCESS_CASES)
def test_command_lines_in_a_subprocess(tmp_path, argv, code):
    env = {**os.environ, "STALESGD_DATA": str(tmp_path / "no-data")}
    if "mlp-mnist" in argv:  # no user cache holding the data set either
        env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    proc = subprocess.run([sys.executable, "-m", "stalesgd.app.cli", *argv, *(
        ["--out", str(tmp_path / "res")] if argv[0] in ("real", "sim") else [])],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == code, proc.stderr
    if code == 2:
        assert proc.stderr.startswith("stalesgd: ") and not (tmp_path / "res").exists()
    else:
        assert len(list((tmp_path / "res").iterdir())) == 1
