"""Experiment specs: TOML round trip, validation messages, sweep expansion, units."""

from __future__ import annotations

import math
import tomllib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stalesgd.experiment import (
    Experiment,
    ExperimentError,
    default_experiment,
    expand,
    experiment_from_flags,
    load_experiment,
    loads_experiment,
    parse_experiment,
    to_toml,
    toml_value,
)
from stalesgd.units import (
    Distribution,
    UnitsError,
    format_duration,
    parse_distribution,
    parse_duration,
)
from stalesgd.validation import short_repr

FULL = """
name = "quick-logreg"
engine = "sim"
workers = 2
seed = 3
repeats = 2

[problem]
name = "mlp-fashion-mnist"
batch = 32
dtype = "float32"
options = {hidden = [128, 64], init = "he"}

[algorithm]
name = "leashed"
persistence = 4

[stepsize]
rule = "tail"
lr = 0.01
options = {window = 5, warmup = 10}

[stop]
updates = 5000
seconds = "1.5s"
target_loss = 0.3

[eval]
every_seconds = 0.25
split = "train"
max_rows = 500

[sim]
cores = 2
compute = "gamma:2ms:0.5"
read = "det:0"
update = "det:150us"
time_slice = "4ms"
timing_only = true
calibration = "calib.json"

[sweep]
workers = [1, 2, 4]
"stepsize.rule" = ["model", "tail"]
"""

MINIMAL = """
[problem]
name = "logreg-synthetic"
"""


def test_full_file_resolves_every_key():
    exp = loads_experiment(FULL)
    assert exp.name == "quick-logreg" and exp.engine == "sim" and exp.workers == 2
    assert exp.seeds == (3, 4)
    assert exp.problem.model == "mlp" and exp.problem.data == "fashion-mnist"
    assert exp.problem.options == {"hidden": [128, 64], "init": "he"}
    assert exp.algorithm.persistence == 4
    assert exp.stepsize.rule == "tail" and exp.stepsize.lr == 0.01
    assert exp.stop.seconds == pytest.approx(1.5) and exp.stop.updates == 5000
    assert exp.eval.every_seconds == 0.25 and exp.eval.every_updates is None
    assert exp.sim.cores == 2 and exp.sim.timing_only is True
    assert exp.sweep == {"workers": (1, 2, 4), "stepsize.rule": ("model", "tail")}


@pytest.mark.parametrize("text", [FULL, MINIMAL], ids=["full", "minimal"])
def test_toml_round_trip(text):
    exp = loads_experiment(text)
    again = loads_experiment(to_toml(exp))
    assert again == exp
    # and the writer is stable: writing the reloaded spec gives the same text
    assert to_toml(again) == to_toml(exp)


def test_round_trip_of_default_and_infinite_persistence():
    exp = default_experiment()
    assert exp.algorithm.persistence == math.inf
    text = to_toml(exp)
    assert "persistence = inf" in text
    assert loads_experiment(text) == exp


def test_load_from_file_defaults_name_to_stem(tmp_path):
    path = tmp_path / "my-exp.toml"
    path.write_text(MINIMAL)
    exp = load_experiment(path)
    assert exp.name == "my-exp"
    # defaults are resolved: the eval cadence follows the stop rule (about 50 evaluations)
    assert exp.stop.updates == 20000 and exp.eval.every_updates == 400


def test_eval_default_follows_seconds_budget():
    exp = loads_experiment(MINIMAL + "[stop]\nseconds = 10\n")
    assert exp.eval.every_seconds == pytest.approx(0.2) and exp.eval.every_updates is None


def test_toml_value_writer_is_valid_toml():
    data = {"s": 'quote " back\\slash\nnew\ttab', "b": True, "i": -3, "f": 1e-05,
            "inf": math.inf, "ninf": -math.inf, "l": [1, 2.5, "x"], "d": {"a b": 1, "c": []}}
    text = "\n".join(f"{k} = {toml_value(v)}" for k, v in data.items())
    back = tomllib.loads(text)
    assert back == data


# ---------------------------------------------------------------------------------------------
# Validation: every error names the key, the value and what is allowed
# ---------------------------------------------------------------------------------------------

BASE = {"name": "x", "problem": {"name": "logreg-synthetic"}, "stop": {"updates": 100}}


def _with(path: str, value):
    import copy

    raw = copy.deepcopy(BASE)
    node = raw
    parts = path.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return raw


BAD = [
    # (key path, value, error key, a word of what is allowed)
    ("workers", 0, "workers", "1..4096"),
    ("workers", 10**6, "workers", "1..4096"),
    ("workers", "2", "workers", "integer"),
    ("workers", True, "workers", "integer"),
    ("workers", 2.0, "workers", "integer"),
    ("engine", "gpu", "engine", "real"),
    ("name", "has space", "name", "letters"),
    ("problem.name", "logreg-imagenet", "problem.name", "cifar10"),
    ("problem.name", "resnet-mnist", "problem.name", "lenet"),
    ("problem.name", "logreg", "problem.name", "MODEL-DATA"),
    ("problem.batch", 0, "problem.batch", ">= 1"),
    ("problem.batch", 1.5, "problem.batch", "integer"),
    ("problem.dtype", "float16", "problem.dtype", "float32"),
    ("problem.options", 3, "problem.options", "table"),
    ("problem.bach", 16, "problem.bach", "batch"),
    ("algorithm.name", "async", "algorithm.name", "hogwild"),
    ("algorithm.persistence", -1, "algorithm.persistence", "inf"),
    ("algorithm.persistence", "many", "algorithm.persistence", "inf"),
    ("stepsize.rule", "adam", "stepsize.rule", "delay-adaptive"),
    ("stepsize.lr", 0, "stepsize.lr", "> 0"),
    ("stepsize.lr", -0.1, "stepsize.lr", "> 0"),
    ("stepsize.lr", math.inf, "stepsize.lr", "finite"),
    ("stepsize.lr", math.nan, "stepsize.lr", "finite"),
    ("stepsize.lr", "0.1", "stepsize.lr", "number"),
    ("stop.updates", 0, "stop.updates", "1..2^63-1"),
    ("stop.updates", 2**63, "stop.updates", "1..2^63-1"),
    ("stop.seconds", -1, "stop.seconds", "> 0"),
    ("stop.seconds", "10 parsecs", "stop.seconds", "duration"),
    ("stop.target_loss", -0.5, "stop.target_loss", "> 0"),
    ("stop.at_target", "yes", "stop.at_target", "true or false"),
    ("stop.forever", True, "stop.forever", "updates"),
    ("eval.split", "validation", "eval.split", "test"),
    ("eval.every_updates", 0, "eval.every_updates", "1.."),
    ("eval.max_rows", 0, "eval.max_rows", "1.."),
    ("sim.cores", 0, "sim.cores", "1..4096"),
    ("sim.compute", "exp:2", "sim.compute", "exp:MEAN"),
    ("sim.compute", "poisson:2ms", "sim.compute", "lognormal:MEAN:CV"),
    ("sim.compute", "gamma:2ms", "sim.compute", "gamma:MEAN:CV"),
    ("sim.compute", "gamma:2ms:-1", "sim.compute", "gamma:MEAN:CV"),
    ("sim.compute", "per-param", "sim.compute", "exp:MEAN"),
    ("sim.read", 5, "sim.read", "per-param"),
    ("sim.time_slice", "4", "sim.time_slice", "'4ms'"),
    ("sim.time_slice", "0ms", "sim.time_slice", "> 0"),
    ("sim.timing_only", 1, "sim.timing_only", "true or false"),
    ("sim.calibration", 7, "sim.calibration", "file name"),
    ("seeds", [0, -1], "seeds[1]", "0..2^63-1"),
    ("seeds", [2**63], "seeds[0]", "0..2^63-1"),
    ("seed", 2**63, "seed", "0..2^63-1"),
    ("seeds", [], "seeds", "non-empty"),
    ("seeds", [1, 1], "seeds", "distinct"),
    ("repeats", 0, "repeats", "1..100000"),
    ("repeats", 10**9, "repeats", "1..100000"),
    ("colour", "red", "colour", "workers"),
    ("sweep.workers", [1, 0], "workers", "1..4096"),
    ("sweep.workers", 4, "sweep.workers", "array"),
    ("sweep.name", ["a", "b"], "sweep.name", "TABLE.KEY"),
    ("sweep.stepsize.rule", ["constant", "bogus"], "stepsize.rule", "inverse"),
    ("sweep.problem.batch", [8, -8], "problem.batch", ">= 1"),
    # checked when read, as the run would check them when it starts
    ("name", "x" * 201, "name", "at most 200"),
    ("problem.name", "logreg-mnist", "problem.name", "fits"),
    ("problem.batch", 10001, "problem.batch", "1..10000"),  # the synthetic training set
    ("problem.options", {"foo": 1}, "problem.options.foo", "n_train"),
    ("problem.options", {"n_train": 0}, "problem.options.n_train", ">= 1"),
    ("problem.options", {"seed": -1}, "problem.options.seed", "0..2^63-1"),
    ("problem.options", {"init": "lecun"}, "problem.options.init", "glorot"),
    ("problem.options", {"dtype": "float32"}, "problem.options.dtype", "n_features"),
    ("problem.options", {"data_dir": "/data"}, "problem.options.data_dir", "no files"),
    ("stepsize.options", {"A": 1}, "stepsize.options.A", "'constant': none"),
    ("algorithm.persistence", 10**12, "algorithm.persistence", "inf"),
    ("record.rows", "every:0", "record.rows", "every:N"),
    ("record.rows", "every:" + "9" * 30, "record.rows", "every:N"),
    ("sim.compute", "lognormal:2ms:1e300", "sim.compute", "lognormal:MEAN:CV"),
    ("sim.compute", "exp:1e300s", "sim.compute", "exp:MEAN"),
]


# where the value named in the message is one element of the value given
OFFENDING = {("seeds", "seeds[1]"): -1, ("seeds", "seeds[0]"): 2**63,
             ("sweep.workers", "workers"): 0,
             ("problem.options", "problem.options.foo"): 1,
             ("problem.options", "problem.options.n_train"): 0,
             ("problem.options", "problem.options.seed"): -1,
             ("problem.options", "problem.options.init"): "lecun",
             ("problem.options", "problem.options.dtype"): "float32",
             ("problem.options", "problem.options.data_dir"): "/data",
             ("stepsize.options", "stepsize.options.A"): 1,
             ("sweep.stepsize.rule", "stepsize.rule"): "bogus",
             ("sweep.problem.batch", "problem.batch"): -8}


@pytest.mark.parametrize(("path", "value", "key", "allowed"), BAD,
                         ids=[f"{p}={v!r}" for p, v, *_ in BAD])
def test_validation_error_names_key_value_and_allowed(path, value, key, allowed):
    with pytest.raises(ExperimentError) as info:
        parse_experiment(_with(path, value), source="bad.toml")
    msg = str(info.value)
    assert msg.startswith("bad.toml: ")
    assert key in msg, msg
    assert short_repr(OFFENDING.get((path, key), value)) in msg, msg
    assert "allowed:" in msg and allowed in msg.split("allowed:", 1)[1], msg


def test_cross_field_rules():
    with pytest.raises(ExperimentError, match=r"stop = \{\}.*updates"):
        parse_experiment({**BASE, "stop": {}})
    with pytest.raises(ExperimentError, match="every_seconds"):
        parse_experiment({**BASE, "eval": {"every_seconds": 1.0, "every_updates": 10}})
    with pytest.raises(ExperimentError, match="seed = 1.*seeds"):
        parse_experiment({**BASE, "seeds": [0], "seed": 1})
    with pytest.raises(ExperimentError, match="problem = None.*missing"):
        parse_experiment({"name": "x"})
    with pytest.raises(ExperimentError, match=r"problem.name = None is missing"):
        parse_experiment({"name": "x", "problem": {"batch": 4}})


def test_invalid_toml_syntax_is_an_experiment_error(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("name = \n")
    with pytest.raises(ExperimentError, match="broken.toml.*not valid TOML"):
        load_experiment(path)


# ---------------------------------------------------------------------------------------------
# Sweep expansion
# ---------------------------------------------------------------------------------------------


def test_sweep_is_cartesian_product_times_seeds():
    runs = expand(loads_experiment(FULL))
    assert len(runs) == 3 * 2 * 2
    combos = [(r.workers, r.stepsize.rule, r.seed) for r in runs]
    expected = [(w, rule, s) for w in (1, 2, 4) for rule in ("model", "tail") for s in (3, 4)]
    assert combos == expected
    assert [r.run_id for r in runs] == [f"r{i:04d}" for i in range(12)]
    assert [r.index for r in runs] == list(range(12))
    assert all(r.point == {"workers": r.workers, "stepsize.rule": r.stepsize.rule} for r in runs)
    # the unswept keys are the base's
    assert {r.problem.name for r in runs} == {"mlp-fashion-mnist"}
    assert {r.algorithm.persistence for r in runs} == {4}
    assert {r.experiment for r in runs} == {"quick-logreg"}


def test_unquoted_dotted_sweep_keys_and_options():
    text = MINIMAL + ('[sweep]\nstepsize.lr = [0.1, 0.01]\n'
                      'problem.options.n_features = [5, 50]\n')
    exp = loads_experiment(text)
    assert set(exp.sweep) == {"stepsize.lr", "problem.options.n_features"}
    runs = expand(exp)
    assert [(r.stepsize.lr, r.problem.options["n_features"]) for r in runs] == [
        (0.1, 5), (0.1, 50), (0.01, 5), (0.01, 50)]
    assert loads_experiment(to_toml(exp)) == exp


def test_seq_runs_one_worker_and_duplicates_collapse():
    exp = parse_experiment({**BASE, "sweep": {"algorithm.name": ["seq", "lock"],
                                              "workers": [1, 2, 4]}, "seeds": [0, 1]})
    runs = expand(exp)
    seq = [r for r in runs if r.algorithm.name == "seq"]
    lock = [r for r in runs if r.algorithm.name == "lock"]
    assert {r.workers for r in seq} == {1} and len(seq) == 2  # one per seed
    assert sorted((r.workers, r.seed) for r in lock) == [(w, s) for w in (1, 2, 4) for s in (0, 1)]
    assert len({r.run_id for r in runs}) == len(runs) == 8


def test_default_experiment_is_the_main_job():
    """lock/hogwild/leashed × constant/tail × 1, 2, 4 workers, real and calibrated sim, plus
    the 4-worker configurations predicted from a calibration on m <= 2 only."""
    exp = default_experiment()
    runs = expand(exp)
    grid = {(r.engine, r.algorithm.name, r.stepsize.rule, r.workers,
             r.sim.calibration_max_workers) for r in runs}
    full = {(e, a, s, m, 4 if e == "sim" else None) for e in ("real", "sim")
            for a in ("lock", "hogwild", "leashed") for s in ("constant", "tail")
            for m in (1, 2, 4)}
    predicted = {("sim", a, s, 4, 2) for a in ("lock", "hogwild", "leashed")
                 for s in ("constant", "tail")}
    assert grid == full | predicted
    assert len(runs) == len(grid) == 42
    assert {r.problem.data for r in runs} == {"synthetic"}
    assert all(r.sim.calibration == "auto" for r in runs if r.engine == "sim")
    assert all(not r.sim.timing_only for r in runs if r.engine == "sim")  # numeric replay
    assert all(r.stop.seconds is not None and r.stop.seconds <= 10 for r in runs)


def test_flags_build_the_same_spec_as_a_file():
    from_flags = experiment_from_flags("sim", problem="logreg-synthetic", algorithm="leashed",
                                       workers=4, stepsize="tail", lr=0.02, batch=8,
                                       updates=1000, seed=7, persistence=2,
                                       sim={"cores": 2, "compute": "exp:1ms", "read": None},
                                       name="flags")
    from_file = loads_experiment("""
name = "flags"
engine = "sim"
workers = 4
seeds = [7]
[problem]
name = "logreg-synthetic"
batch = 8
[algorithm]
name = "leashed"
persistence = 2
[stepsize]
rule = "tail"
lr = 0.02
[stop]
updates = 1000
[sim]
cores = 2
compute = "exp:1ms"
""")
    assert isinstance(from_flags, Experiment)
    assert from_flags == from_file


def test_flags_errors_name_the_key():
    with pytest.raises(ExperimentError, match="command line: workers = 0"):
        experiment_from_flags("real", problem="logreg-synthetic", algorithm="lock", workers=0)


# ---------------------------------------------------------------------------------------------
# Units and distributions
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [
    ("2ms", 2e-3), ("150us", 150e-6), ("150µs", 150e-6), ("1.5s", 1.5), ("10ns", 1e-8),
    (" 3 ms ", 3e-3), ("0", 0.0), (0, 0.0), ("0s", 0.0), (".5s", 0.5), ("1e3us", 1e-3),
])
def test_parse_duration_good(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds, rel=1e-12, abs=0)


@pytest.mark.parametrize("text", ["2", 2, 1.5, "-2ms", "2 min", "ms", "", "2msec", None, True,
                                  "1e999s"])
def test_parse_duration_bad(text):
    with pytest.raises(UnitsError) as info:
        parse_duration(text)
    assert repr(text) in str(info.value) and "ms" in str(info.value)


@pytest.mark.parametrize("seconds", [2e-3, 150e-6, 1.5, 7e-9, 0.0, 12.0, 0.25e-3])
def test_format_duration_inverts_parse(seconds):
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, rel=1e-12)


@pytest.mark.parametrize(("text", "dist"), [
    ("exp:2ms", Distribution("exp", 2e-3, 1.0)),
    ("det:0", Distribution("det", 0.0, 0.0)),
    ("det:150us", Distribution("det", 150e-6, 0.0)),
    ("gamma:2ms:0.5", Distribution("gamma", 2e-3, 0.5)),
    ("lognormal:1s:2", Distribution("lognormal", 1.0, 2.0)),
])
def test_parse_distribution_good(text, dist):
    parsed = parse_distribution(text)
    assert parsed.kind == dist.kind
    assert parsed.mean == pytest.approx(dist.mean) and parsed.cv == pytest.approx(dist.cv)
    assert parse_distribution(str(parsed)) == parsed


@pytest.mark.parametrize(("text", "hint"), [
    ("exp:2", "unit"), ("exp", "exp:MEAN"), ("exp:2ms:1", "exp:MEAN"), ("gamma:2ms", "CV"),
    ("gamma:2ms:x", "CV"), ("gamma:2ms:0", "CV"), ("lognormal:0ms:1", "mean"),
    ("exp:0", "mean"), ("uniform:1ms", "lognormal:MEAN:CV"), (3, "exp:MEAN"),
    ("det:-1ms", "unit"),
    ("lognormal:2ms:1e300", "<= 10"),  # its parameters overflow: the draws would be NaN
    ("gamma:2ms:11", "<= 10"),
    ("exp:1e7s", "at most 1e+06 s"),
    ("det:1e300s", "at most"),
])
def test_parse_distribution_bad(text, hint):
    with pytest.raises(UnitsError) as info:
        parse_distribution(text)
    assert repr(text) in str(info.value) and hint in str(info.value)


@given(kind=st.sampled_from(["exp", "det", "gamma", "lognormal"]),
       mean=st.floats(1e-9, 1e6), cv=st.floats(1e-3, 10.0))
def test_every_distribution_allowed_draws_finite_positive_times(kind, mean, cv):
    text = f"{kind}:{mean!r}s" + (f":{cv!r}" if kind in ("gamma", "lognormal") else "")
    dist = parse_distribution(text)
    x = np.asarray(dist.sample(np.random.default_rng(0), 1000))
    assert np.all(np.isfinite(x)) and np.all(x >= 0) and x.mean() > 0


@pytest.mark.parametrize("text", ["exp:2ms", "gamma:2ms:0.5", "lognormal:2ms:0.8", "det:1ms"])
def test_distribution_samples_have_the_stated_mean_and_cv(text):
    dist = parse_distribution(text)
    x = np.asarray(dist.sample(np.random.default_rng(0), 200_000))
    se = dist.std / math.sqrt(len(x))
    assert abs(x.mean() - dist.mean) <= 5 * se + 1e-15
    assert x.std() == pytest.approx(dist.std, rel=0.05, abs=1e-15)
    assert np.all(x >= 0)


EXCLUDING = """
name = "ex"
exclude = [{engine = "real", workers = 16}, {engine = "real", workers = 32}]
[problem]
name = "logreg-synthetic"
[sim]
calibration = "auto"
[sweep]
engine = ["real", "sim"]
workers = [1, 2, 16, 32]
"""


def test_exclude_leaves_out_the_named_sweep_points_and_round_trips():
    exp = loads_experiment(EXCLUDING)
    got = [(r.engine, r.workers) for r in expand(exp)]
    assert got == [("real", 1), ("real", 2), ("sim", 1), ("sim", 2), ("sim", 16), ("sim", 32)]
    assert [r.run_id for r in expand(exp)] == [f"r{i:04d}" for i in range(6)]
    assert loads_experiment(to_toml(exp)) == exp


@pytest.mark.parametrize("bad,message", [
    ('exclude = [{engine = "real", workers = 17}]', "exclude[0].workers = 17 is never swept"),
    ('exclude = [{seed = 3}]', "exclude[0].seed = 3 is not swept"),
    ('exclude = {engine = "real"}', "exclude = "),
    ('exclude = [{}]', "exclude[0] = {}"),
])
def test_bad_exclude_names_the_entry(bad, message):
    text = EXCLUDING.replace(EXCLUDING.splitlines()[2], bad)
    with pytest.raises(ExperimentError) as err:
        loads_experiment(text)
    assert message in str(err.value)


def test_dist_settings_without_a_ray_run_are_refused():
    from stalesgd.experiment import ExperimentError, expand, loads_experiment

    with pytest.raises(ExperimentError, match="is set but never used"):
        loads_experiment('[problem]\nname = "logreg-synthetic"\n[dist]\nnet_delay = "exp:1ms"')
    mixed = loads_experiment('[problem]\nname = "logreg-synthetic"\n[dist]\n'
                             'net_delay = "exp:1ms"\n[sweep]\nengine = ["real", "ray"]\n'
                             '"dist.net_delay" = ["det:0", "exp:1ms"]')
    # the real runs do not differ by a [dist] setting: one real run, two ray runs
    assert [(r.engine, r.dist.net_delay) for r in expand(mixed)] == [
        ("real", None), ("ray", "det:0"), ("ray", "exp:1ms")]
