"""Model plug-ins: registered in code or found through an entry point, checked against the
kernel contract, run on every engine; the public finite-difference gradient check.

The example package ``examples/plugin_tanh_mlp`` is installed by ``make test``'s setup; its
model ``tanhmlp`` is found through its entry point, and registered again under other names
here to test the in-process path.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from numba import njit
from stalesgd.app.cli import main
from stalesgd_tanh_mlp import PLUGIN, TanhMLP, make_tanh_mlp
from stalesgd_tanh_mlp.model import tanh_mlp_grad_kernel

from stalesgd.experiment import loads_experiment
from stalesgd.problems import (
    ENTRY_POINT_GROUP,
    ModelPlugin,
    make_problem,
    model_names,
    register_model,
    unregister_model,
)
from stalesgd.problems import plugins as plugin_store
from stalesgd.problems.linreg import LinearRegression
from stalesgd.problems.registry import check_problem
from stalesgd.problems.testing import GradientCheckError, check_gradient
from stalesgd.validation import OptionError

TINY = ["-o", "n_train=300", "-o", "n_test=100", "-o", "n_features=6", "-o", "hidden=4"]


@pytest.fixture
def registered():
    """Register plug-ins for one test; forget them afterwards."""
    names = []

    def add(name, factory, options=(), **kw):
        register_model(name, factory, options, **kw)
        names.append(name)

    yield add
    for name in names:
        unregister_model(name)


def _runs(out: Path) -> pd.DataFrame:
    (folder,) = out.iterdir()
    return pd.read_parquet(folder / "runs.parquet")


# --- the example model's gradient, with the public helper -----------------------------------


def _data(n=30, d=5, k=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.integers(0, k, size=n).astype(np.int64)


def test_example_gradient_passes_the_public_finite_difference_check():
    X, y = _data()
    model = TanhMLP(n_features=5, n_classes=3, hidden=4, dtype="float64")
    result = check_gradient(model, (X, y), seed=1)
    assert result.n_checked == model.n_params == 5 * 4 + 4 + 4 * 3 + 3
    assert result.max_error <= 1e-7 * result.scale


@njit(nogil=True)
def _doubled_grad(theta, X, y, idx, grad, ws, dims):
    loss = tanh_mlp_grad_kernel(theta, X, y, idx, grad, ws, dims)
    grad[-1] *= 2.0
    return loss


class _WrongGradient(TanhMLP):
    @property
    def grad_kernel(self):
        return _doubled_grad


def test_gradient_check_names_the_wrong_coordinate():
    X, y = _data()
    model = _WrongGradient(n_features=5, n_classes=3, hidden=4, dtype="float64")
    with pytest.raises(GradientCheckError, match=r"at 1 of 39 coordinates.*theta\[38\] "
                                                 r"\(layer b2\)"):
        check_gradient(model, (X, y), seed=1)


def test_gradient_check_takes_a_problem_and_refuses_float32():
    problem = make_problem("tanhmlp-synthetic", n_train=40, n_test=10, n_features=4, hidden=3)
    assert check_gradient(None, problem).n_checked == problem.model.n_params
    p32 = make_problem("tanhmlp-synthetic", dtype="float32", n_train=40, n_test=10,
                       n_features=4, hidden=3)
    with pytest.raises(ValueError, match="float64"):
        check_gradient(None, p32)


# --- registering in code ------------------------------------------------------------------


def test_a_registered_model_runs_on_real_and_sim(registered, tmp_path, capsys):
    registered("tanhtest", make_tanh_mlp, ("hidden",), description="tanh MLP under test")
    assert "tanhtest" in model_names()
    for engine in ("real", "sim"):
        out = tmp_path / engine
        argv = [engine, "--problem", "tanhtest-synthetic", *TINY, "--algorithm", "hogwild",
                "--workers", "2", "--updates", "200", "--batch", "4", "--out", str(out),
                "--no-progress"]
        assert main(argv) == 0, capsys.readouterr().err
        runs = _runs(out)
        assert runs["problem"].tolist() == ["tanhtest-synthetic"]
        assert runs["updates"].tolist() == [200]
        assert np.isfinite(runs["final_loss"]).all()


def test_a_registered_model_in_an_experiment_file_with_a_sweep(registered):
    registered("tanhtest", make_tanh_mlp, ("hidden",))
    exp = loads_experiment("""
name = "plugin"
engine = "sim"
[problem]
name = "tanhtest-synthetic"
options = {n_train = 200, n_features = 4}
[stop]
updates = 50
[sweep]
"problem.options.hidden" = [2, 3]
""")
    assert exp.problem.name == "tanhtest-synthetic"
    with pytest.raises(OptionError, match=r"problem.options.hidden = 0 is out of range"):
        loads_experiment("[problem]\nname = 'tanhtest-synthetic'\noptions = {hidden = 0}\n"
                         "[stop]\nupdates = 5\n")
    with pytest.raises(OptionError, match=r"problem.options.fc84 .*unknown"):
        loads_experiment("[problem]\nname = 'tanhtest-synthetic'\noptions = {fc84 = true}\n"
                         "[stop]\nupdates = 5\n")


def test_the_task_sets_the_synthetic_defaults_and_the_fit(registered):
    registered("tanhbin", make_tanh_mlp, ("hidden",), task="binary")
    assert check_problem("tanhmlp-synthetic").data.n_classes == 10
    assert check_problem("tanhbin-synthetic").data.n_classes == 2
    with pytest.raises(OptionError, match="tanhbin needs 2 classes"):
        check_problem("tanhbin-synthetic", {"n_classes": 3})
    with pytest.raises(OptionError, match="needs a classification data set"):
        check_problem("tanhmlp-synthetic", {"kind": "regression"})


@pytest.mark.parametrize("name,why", [
    ("mlp", "taken by a built-in model"),
    ("my-model", "no '-'"),
    ("Upper", "lower-case"),
])
def test_register_refuses_bad_or_taken_names(name, why):
    with pytest.raises(ValueError, match=why):
        register_model(name, make_tanh_mlp)


def test_register_refuses_a_second_model_of_the_same_name_and_clashing_options(registered):
    registered("tanhtest", make_tanh_mlp, ("hidden",))
    with pytest.raises(ValueError, match="already registered"):
        register_model("tanhtest", make_tanh_mlp)
    with pytest.raises(ValueError, match="clash with the options every problem takes"):
        register_model("tanhseed", make_tanh_mlp, ("seed",))
    with pytest.raises(ValueError, match="task="):
        register_model("tanhtask", make_tanh_mlp, task="ranking")
    with pytest.raises(TypeError, match="callable"):
        register_model("tanhcall", 3)
    with pytest.raises(ValueError, match="no plug-in model 'never'"):
        unregister_model("never")


# --- the kernel contract --------------------------------------------------------------------


@njit(nogil=True)
def _five_args(theta, X, y, idx, grad):
    return 0.0


@njit
def _with_gil(theta, X, y, idx, grad, ws, dims):
    return 0.0


@njit(nogil=True)
def _does_not_compile(theta, X, y, idx, grad, ws, dims):
    return X.no_such_attribute


def _linreg_with(**changes):
    """A factory of linear regressions with some attributes replaced."""
    def factory(data, dtype):
        model = LinearRegression(n_features=data.n_features, dtype=dtype)
        for attr, value in changes.items():
            if attr in ("grad_kernel", "loss_kernel"):
                model = type("Changed", (LinearRegression,), {attr: property(
                    lambda self, v=value: v)})(n_features=data.n_features, dtype=dtype)
            else:
                object.__setattr__(model, attr, value)
        return model
    return factory


@pytest.mark.parametrize("changes,message", [
    ({"grad_kernel": _five_args}, r"grad_kernel takes 5 arguments \(theta, X, y, idx, grad\); "
                                  r"the contract passes 7"),
    ({"grad_kernel": _with_gil}, "grad_kernel is compiled without nogil=True"),
    ({"loss_kernel": len}, "loss_kernel is a builtin_function_or_method, not a Numba"),
    ({"dims": np.array([3.0])}, "dims is a 1-D float64 array; it must be a 1-D int64 array"),
    ({"n_params": 0}, "n_params = 0; it must be a positive integer"),
])
def test_a_model_breaking_the_contract_is_refused_with_the_reason(registered, changes, message):
    registered("broken", _linreg_with(**changes), task="regression")
    with pytest.raises(OptionError, match=r"name = 'broken-synthetic' breaks the model "
                                          r"contract: " + message):
        check_problem("broken-synthetic")


def test_a_factory_error_and_a_non_model_are_refused(registered):
    def raising(data, dtype):
        raise RuntimeError("out of ideas")

    registered("raising", raising)
    registered("notmodel", lambda data, dtype: object())
    with pytest.raises(OptionError, match=r"'raising-synthetic' cannot be built "
                                          r"\(RuntimeError: out of ideas\)"):
        check_problem("raising-synthetic")
    with pytest.raises(OptionError, match="returned an object, not a stalesgd.problems.Model"):
        check_problem("notmodel-synthetic")


def test_a_kernel_that_fails_on_the_data_is_refused_before_a_run(registered, tmp_path, capsys):
    registered("nocompile", _linreg_with(grad_kernel=_does_not_compile), task="regression")
    with pytest.raises(OptionError, match="grad_kernel fails on two rows of synthetic"):
        make_problem("nocompile-synthetic", n_train=20, n_test=5)
    argv = ["real", "--problem", "nocompile-synthetic", "--algorithm", "lock", "--workers", "1",
            "--updates", "10", "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "breaks the model contract" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_a_model_too_big_to_allocate_is_a_memory_error_not_a_contract_breach(registered):
    class Huge(LinearRegression):
        def init_params(self, seed, scheme="default"):
            raise MemoryError("Unable to allocate 32.0 GiB")

    registered("huge", lambda data, dtype: Huge(n_features=data.n_features, dtype=dtype),
               task="regression")
    with pytest.raises(OptionError, match=r"'huge-synthetic' needs 0.0 GiB for its 5 float64 "
                                          r"parameters, more than can be allocated") as err:
        check_problem("huge-synthetic", {"n_features": 5})
    assert "contract" not in str(err.value)


@njit(nogil=True)
def _scribbles_on_ten(theta, X, y, idx, grad, ws, dims):
    """A zero gradient, after writing ten workspace elements."""
    for i in range(10):
        ws[i] = 1.0
    for c in range(grad.shape[0]):
        grad[c] = 0.0
    return 0.0


def test_a_kernel_writing_past_its_workspace_is_refused_not_a_crash(registered):
    class TooSmall(LinearRegression):
        grad_kernel = property(lambda self: _scribbles_on_ten)

        def workspace_size(self, batch):
            return 1

    registered("toosmall", lambda data, dtype: TooSmall(n_features=data.n_features, dtype=dtype),
               task="regression")
    with pytest.raises(OptionError, match=r"grad_kernel wrote up to 9 elements past "
                                          r"workspace_size\(2\) = 1"):
        check_problem("toosmall-synthetic", {"n_features": 3})


def test_a_dry_run_refuses_a_kernel_that_fails_on_the_data(registered, capsys):
    """The check before any run (``--dry-run``, and every run of a sweep before the first)
    runs a plug-in's kernels too: a sweep does not stop part-way on a broken plug-in."""
    registered("nocompile", _linreg_with(grad_kernel=_does_not_compile), task="regression")
    with pytest.raises(OptionError, match="grad_kernel fails on two rows of synthetic"):
        check_problem("nocompile-synthetic", {"n_train": 20, "n_test": 5})
    argv = ["real", "--problem", "nocompile-synthetic", "--algorithm", "lock", "--workers", "1",
            "--updates", "10", "--dry-run"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--problem 'nocompile-synthetic' breaks the model contract" in err
    assert "--name" not in err


_LINREG_GRAD = LinearRegression(n_features=1).grad_kernel


@njit(nogil=True)
def _fails_past_row_ten(theta, X, y, idx, grad, ws, dims):
    """Linear regression's gradient on the trial's rows 0 and 1; a ValueError on a
    minibatch starting past row 10, as a run soon draws."""
    if idx[0] >= 10:
        raise ValueError("boom mid-run")
    return _LINREG_GRAD(theta, X, y, idx, grad, ws, dims)


@pytest.mark.parametrize("engine", ["real", "sim"])
def test_a_kernel_that_raises_during_a_run_is_one_line_not_a_traceback(registered, tmp_path,
                                                                       capsys, engine):
    registered("failslater", _linreg_with(grad_kernel=_fails_past_row_ten), task="regression")
    argv = [engine, "--problem", "failslater-synthetic", "--algorithm", "lock", "--workers",
            "2", "--updates", "2000", "--lr", "0.1", "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert (f"run r0000 (failslater-synthetic, {engine}): the plug-in model's code raised "
            "ValueError: boom mid-run") in err
    assert list(tmp_path.iterdir()) == []  # nothing ran to the end: no results folder


# --- entry points ---------------------------------------------------------------------------


def test_the_installed_example_is_found_through_its_entry_point():
    assert "tanhmlp" in plugin_store.entry_point_names()
    assert "tanhmlp" in model_names()
    assert plugin_store.find_plugin("tanhmlp", (), ()) is PLUGIN


def test_a_fresh_process_finds_the_installed_example_without_importing_it(tmp_path):
    """A new ``stalesgd`` process checks a run of ``tanhmlp`` (the README walk runs it on
    real and sim from the command line)."""
    exe = Path(sys.executable).with_name("stalesgd")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [str(exe), "sim", "--problem", "tanhmlp-synthetic", *TINY, "--algorithm", "lock",
         "--workers", "2", "--updates", "100", "--out", str(tmp_path), "--dry-run"],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "tanhmlp-synthetic" in proc.stdout
    bad = subprocess.run([str(exe), "sim", "--problem", "tanhmlp-synthetic", "-o", "hidden=-1",
                          "--algorithm", "lock", "--workers", "1", "--dry-run"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2
    assert "-o hidden=-1 is out of range" in bad.stderr


@pytest.fixture
def fake_entry_points(monkeypatch, tmp_path):
    """Replace the installed entry points of the group with the ones a test declares."""
    declared: list[EntryPoint] = []
    monkeypatch.setattr(plugin_store, "entry_points",
                        lambda group: [ep for ep in declared if ep.group == group])
    monkeypatch.syspath_prepend(str(tmp_path))
    yield lambda name, value: declared.append(EntryPoint(name, value, ENTRY_POINT_GROUP))
    for ep in declared:
        if ep.name in plugin_store.registered_names():
            unregister_model(ep.name)


def test_an_entry_point_is_loaded_only_when_its_model_is_named(fake_entry_points, tmp_path):
    (tmp_path / "lazy_plugin.py").write_text(
        "from stalesgd_tanh_mlp import make_tanh_mlp\n"
        "from stalesgd.problems import ModelPlugin\n"
        "LOADED = True\n"
        "PLUGIN = ModelPlugin(make_tanh_mlp, options=('hidden',))\n")
    fake_entry_points("lazyone", "lazy_plugin:PLUGIN")
    assert "lazyone" in model_names()
    assert "lazy_plugin" not in sys.modules
    assert check_problem("lazyone-synthetic", {"hidden": 3}).n_params == 20 * 3 + 3 + 3 * 10 + 10
    assert "lazy_plugin" in sys.modules
    sys.modules.pop("lazy_plugin")


@pytest.mark.parametrize("value,message", [
    ("no_such_module_here:PLUGIN", r"failed to load from entry point brokenep = "
                                   r"'no_such_module_here:PLUGIN'.*ModuleNotFoundError"),
    ("os:sep", r"entry point brokenep = 'os:sep'.* is a str, not a "
               r"stalesgd.problems.ModelPlugin"),
])
def test_an_entry_point_that_fails_is_a_clear_usage_error(fake_entry_points, value, message,
                                                          tmp_path, capsys):
    fake_entry_points("brokenep", value)
    with pytest.raises(OptionError, match=message):
        check_problem("brokenep-synthetic")
    argv = ["sim", "--problem", "brokenep-synthetic", "--algorithm", "lock", "--workers", "1",
            "--updates", "10", "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--problem 'brokenep-synthetic' cannot be used" in err
    assert "Traceback" not in err


def test_an_entry_point_named_like_a_built_in_is_never_loaded(fake_entry_points):
    fake_entry_points("mlp", "no_such_module_here:PLUGIN")
    assert check_problem("mlp-synthetic").model == "mlp"
    assert model_names().count("mlp") == 1


def test_an_entry_point_whose_name_no_problem_can_hold_is_not_listed(fake_entry_points):
    fake_entry_points("Bad-Name", "no_such_module_here:PLUGIN")
    assert "Bad-Name" not in model_names()


def test_model_plugin_checks_its_fields():
    assert ModelPlugin(make_tanh_mlp, options="hidden").options == ("hidden",)
    with pytest.raises(ValueError, match="option names"):
        ModelPlugin(make_tanh_mlp, options=("not an identifier",))


# --- the example reads every form of inputs through stalesgd.problems.inputs ----------------


def _input_forms(n=12, d=8, seed=3):
    """The same examples as float rows, as packed pixels (uint8 and a per-channel table, as
    MNIST is kept) and as CSR rows (a sparse set's form)."""
    from stalesgd.data.csr import csr_from_coo
    from stalesgd.problems.inputs import gather_rows

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(n, d)).astype(np.uint8)
    pixels[pixels < 128] = 0  # (zeros, so that the CSR rows are sparse)
    coef = np.array([[1 / 255, 0.1307, 1 / 0.3081]])  # scale, shift, factor
    packed = (pixels, coef)
    dense = np.empty((n, d))
    gather_rows(packed, np.arange(n, dtype=np.int64), dense)
    rows, cols = np.nonzero(dense)
    csr = csr_from_coo(rows, cols, dense[rows, cols], n, d, np.float64).kernel_inputs()
    return dense, packed, csr


def test_the_example_gives_the_same_gradient_on_every_input_form():
    dense, packed, csr = _input_forms()
    model = TanhMLP(n_features=dense.shape[1], n_classes=3, hidden=5)
    theta = model.init_params(1)
    y = np.arange(dense.shape[0], dtype=np.int64) % 3
    idx = np.array([0, 4, 4, 11, 7], dtype=np.int64)
    grads, losses = [], []
    for X in (dense, packed, csr):
        grad = np.zeros_like(theta)
        losses.append(tanh_mlp_grad_kernel(theta, X, y, idx, grad, model.workspace(5),
                                           model.dims))
        grads.append(grad)
    assert losses[0] == losses[1] == losses[2]
    np.testing.assert_array_equal(grads[1], grads[0])
    np.testing.assert_array_equal(grads[2], grads[0])
    assert np.abs(grads[0]).sum() > 0


@pytest.mark.skipif(not (Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist")
                    .is_dir(), reason="MNIST is not in ../shared/data")
def test_the_example_trains_on_mnist_kept_as_packed_pixels(tmp_path, monkeypatch):
    monkeypatch.setenv("STALESGD_DATA", str(Path(__file__).resolve().parents[2] / "shared"
                                            / "data"))
    code = main(["real", "--problem", "tanhmlp-mnist", "-o", "hidden=16", "--algorithm",
                 "hogwild", "--workers", "2", "--updates", "2000", "--lr", "0.1",
                 "--out", str(tmp_path), "--no-progress"])
    assert code == 0
    runs = _runs(tmp_path)
    assert runs["updates"].iloc[0] == 2000
    assert runs["final_loss"].iloc[0] < 1.0  # from ln 10 = 2.30 at the start
