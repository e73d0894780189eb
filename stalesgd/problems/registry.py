"""Problems by name: a model bound to a data set, ``MODEL-DATA`` (e.g. ``mlp-mnist``).

``make_problem`` is the one place that turns a problem name and its options
into arrays and kernels; engines then take ``problem.model.grad_kernel``,
``problem.dataset.inputs("train")`` … into their own ``@njit`` loops.

Models are the built-in :data:`MODELS` and plug-ins (:mod:`stalesgd.problems.plugins`):
registered with :func:`register_model`, or declared by an installed package in the
``stalesgd.models`` entry-point group.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from stalesgd.data import DataShape, check_dataset
from stalesgd.data.dataset import Dataset
from stalesgd.data.real import REAL_OPTIONS
from stalesgd.data.registry import ALL_NAMES, FILE_SET
from stalesgd.data.sparse import SPARSE_OPTIONS
from stalesgd.data.synthetic import KIND_OPTIONS
from stalesgd.data.userfile import FILE_OPTIONS
from stalesgd.jitcache import specialise
from stalesgd.problems._kernels import evaluate_chunks
from stalesgd.problems.base import INIT_SCHEMES, Model, resolve_dtype
from stalesgd.problems.mlp import hidden_sizes
from stalesgd.problems.plugins import (
    ModelPlugin,
    PluginError,
    add_plugin,
    check_contract,
    entry_point_names,
    find_plugin,
    registered_names,
    remove_plugin,
)
from stalesgd.validation import OptionError, choice, flag, known_keys, number

MODELS: tuple[str, ...] = ("linreg", "logreg", "softmax", "svm", "mlp", "lenet")
#: the data sets a problem may name (those of :mod:`stalesgd.data`)
DATASETS: tuple[str, ...] = ALL_NAMES
#: Options each model consumes; every other option goes to the data loader.
MODEL_OPTIONS: dict[str, tuple[str, ...]] = {
    "linreg": (),
    "logreg": ("intercept_step",),
    "softmax": ("intercept_step",),
    "svm": ("intercept_step",),
    "mlp": ("hidden",),
    "lenet": ("fc84",),
}
#: Options of every problem: the initialisation scheme, the seed of synthetic data, and where
#: data files are looked for first.
COMMON_OPTIONS: tuple[str, ...] = ("init", "seed", "data_dir")
#: Rows per chunk when ``Problem.evaluate`` walks a split.
EVAL_CHUNK = 256
#: what a plug-in model must be (the allowed part of the error refusing one)
CONTRACT = "a model that keeps the kernel contract of stalesgd.problems.base"
#: loader options of the synthetic set that fit a plug-in model of each task
_TASK_SYNTHETIC: dict[str, dict[str, Any]] = {
    "classification": {"kind": "classification", "n_classes": 10},
    "binary": {"kind": "classification", "n_classes": 2},
    "regression": {"kind": "regression"},
}


def register_model(name: str, factory: Any, options: tuple[str, ...] = (), *,
                   task: str = "classification", description: str = "") -> ModelPlugin:
    """Make ``NAME-DATA`` a problem for every data set, on every command and in experiment
    files, with the model ``factory(data, dtype, **options)`` builds (see
    :class:`~stalesgd.problems.plugins.ModelPlugin` for the factory, ``options`` and
    ``task``).  ``name`` is lower-case letters, digits and ``_``, not a built-in model's name
    nor one registered already (a ValueError).  Returns the stored plug-in.

    The model must keep the kernel contract of :mod:`stalesgd.problems.base`; it is checked
    each time it is built (:func:`~stalesgd.problems.plugins.check_contract`), and its
    gradient can be checked with :func:`stalesgd.problems.testing.check_gradient`.
    """
    plugin = ModelPlugin(factory=factory, options=options, task=task, description=description)
    add_plugin(name, plugin, MODELS, COMMON_OPTIONS)
    _tried.clear()  # (a model of this name may have been tried before)
    return plugin


def unregister_model(name: str) -> None:
    """Forget the plug-in model ``name`` (registered, or loaded from its entry point)."""
    if name not in registered_names():
        raise ValueError(f"no plug-in model {name!r} is registered; registered: "
                         f"{', '.join(registered_names()) or 'none'}")
    remove_plugin(name)
    _tried.clear()


def model_names() -> tuple[str, ...]:
    """The built-in models, then the plug-ins registered or installed (entry points)."""
    extra = [n for n in (*registered_names(), *entry_point_names()) if n not in MODELS]
    return (*MODELS, *dict.fromkeys(extra))


def problem_names() -> list[str]:
    """Every ``MODEL-DATA`` combination the registry knows (some need files to load)."""
    return [f"{m}-{d}" for m in model_names() for d in DATASETS]


def _plugin(model: str) -> ModelPlugin | None:
    """The plug-in model ``model`` (None for a built-in or unknown name); a plug-in that
    fails to load is an OptionError on ``name``."""
    if model in MODELS:
        return None
    try:
        return find_plugin(model, MODELS, COMMON_OPTIONS)
    except PluginError as exc:
        raise OptionError("name", model, "a model that loads", f"cannot be used ({exc})") \
            from None


@contextmanager
def _named(name: Any) -> Iterator[None]:
    """Report an OptionError on ``name`` raised inside (about the model part) with the whole
    problem name as its value."""
    try:
        yield
    except OptionError as exc:
        if exc.key != "name":
            raise
        raise OptionError("name", name, exc.allowed, exc.problem) from None


def _model_options(model: str) -> tuple[str, ...]:
    plugin = _plugin(model)
    return MODEL_OPTIONS[model] if plugin is None else plugin.options


@dataclass
class Problem:
    """A model with its data: the unit engines train on.

    ``init`` is the initialisation scheme used by :meth:`init_params`.  For
    ``linreg`` problems, ``L``, ``mu``, ``theta_star`` and ``f_star`` describe
    the training objective ``½·mean((Xθ − y)²)`` exactly (computed in float64
    on first access), so convergence theory can be checked.
    """

    name: str
    model: Model
    dataset: Dataset
    init: str = "default"

    @property
    def sparse(self) -> bool:
        """Sparse inputs and a model with the sparse gradient contract (engines then apply
        only the coordinates an update touches)."""
        return self.dataset.sparse and self.model.sparse_grad_kernel is not None

    def coords_per_update(self, batch: int, samples: int = 256, seed: int = 0) -> float:
        """The mean number of coordinates a gradient of ``batch`` uniformly drawn training
        rows touches: on a sparse problem the non-zeros of the model's sparse gradient at
        the initial parameters, over ``samples`` minibatches of a fixed seed (so the same
        problem always gives the same number); every parameter on a dense one.  The
        simulator charges sparse updates for this many coordinates."""
        model = self.model
        if not self.sparse:
            return float(model.n_params)
        theta = self.init_params(seed)
        cap = model.sparse_capacity(batch)
        gidx = np.zeros(cap, dtype=np.int64)
        gval = np.zeros(cap, dtype=theta.dtype)
        ws = self.workspace(batch)
        X, y = self.dataset.inputs("train"), self.dataset.y_train
        rows = np.random.default_rng(seed).integers(0, self.dataset.n_train,
                                                    size=(samples, batch))
        total = 0
        for idx in rows:
            total += int(model.sparse_grad_kernel(theta, X, y, idx, gidx, gval, ws,
                                                  model.dims)[1])
        return total / samples

    # --- convenience wrappers (Python level; engines call the kernels directly) ---

    def init_params(self, seed: int = 0) -> np.ndarray:
        """Fresh seeded parameters with this problem's init scheme."""
        return self.model.init_params(seed, self.init)

    def workspace(self, batch: int) -> np.ndarray:
        """A scratch array sized for minibatches of ``batch`` rows."""
        return self.model.workspace(batch)

    def loss_grad(self, theta: np.ndarray, idx: Any, grad: np.ndarray, ws: np.ndarray) -> float:
        """Mean training loss over rows ``idx`` and its gradient written into ``grad``."""
        idx = np.ascontiguousarray(idx, dtype=np.int64)
        self._check_theta(theta)
        if grad.shape != theta.shape or grad.dtype != theta.dtype:
            raise ValueError(
                f"grad must have theta's shape {theta.shape} and dtype {theta.dtype}; "
                f"got {grad.shape} {grad.dtype}"
            )
        need = self.model.workspace_size(len(idx))
        if ws.dtype != theta.dtype or ws.size < need:
            raise ValueError(f"ws must be {theta.dtype} with at least {need} elements")
        d = self.dataset
        return float(
            self.model.grad_kernel(theta, d.inputs("train"), d.y_train, idx, grad, ws,
                                  self.model.dims)
        )

    def evaluate(
        self, theta: np.ndarray, split: str = "test", max_rows: int | None = None
    ) -> tuple[float, float]:
        """(mean loss, accuracy) on the first ``max_rows`` rows of ``split`` ("test" or "train").

        One Numba call walks the split in chunks of ``EVAL_CHUNK`` rows.
        Accuracy is NaN for regression.  Loss is the model's per-example loss
        (``½ r²`` for linreg, cross-entropy for classifiers).
        """
        if split not in ("test", "train"):
            raise ValueError(f"split={split!r} is not allowed; use 'test' or 'train'")
        X, y = self.dataset.inputs(split), (self.dataset.y_test if split == "test"
                                            else self.dataset.y_train)
        self._check_theta(theta)
        n = self.dataset.n_test if split == "test" else self.dataset.n_train
        if max_rows is not None:
            if int(max_rows) <= 0:
                raise ValueError(f"max_rows={max_rows!r} is not allowed; must be positive")
            n = min(n, int(max_rows))
        if n == 0:
            raise ValueError(f"split {split!r} of {self.name} has no rows")
        idx = np.arange(n, dtype=np.int64)
        chunk = min(EVAL_CHUNK, n)
        ws = self.model.workspace(chunk)
        evaluate = specialise(evaluate_chunks, self.model.loss_kernel)
        loss_sum, correct = evaluate(theta, X, y, idx, chunk, ws, self.model.dims)
        acc = correct / n if self.model.is_classifier else float("nan")
        return float(loss_sum / n), float(acc)

    def _check_theta(self, theta: np.ndarray) -> None:
        if theta.shape != (self.model.n_params,) or theta.dtype != self.model.dtype:
            raise ValueError(
                f"theta must be a ({self.model.n_params},) {self.model.dtype} array; "
                f"got {theta.shape} {theta.dtype}"
            )

    # --- least-squares constants (linreg only) ---

    def _require_linreg(self, what: str) -> None:
        if self.model.name != "linreg":
            raise ValueError(f"{what} is defined only for linreg problems, not {self.name!r}")

    @cached_property
    def _hessian_eigs(self) -> np.ndarray:
        self._require_linreg("the Hessian spectrum")
        X = self.dataset.features("train").astype(np.float64, copy=False)
        return np.linalg.eigvalsh(X.T @ X / X.shape[0])

    @property
    def L(self) -> float:
        """Smoothness: the largest eigenvalue of the Hessian XᵀX/n of the training loss."""
        self._require_linreg("L")
        return float(self._hessian_eigs[-1])

    @property
    def mu(self) -> float:
        """Strong convexity: the smallest eigenvalue of XᵀX/n (0 if rank-deficient)."""
        self._require_linreg("mu")
        return float(max(self._hessian_eigs[0], 0.0))

    @cached_property
    def theta_star(self) -> np.ndarray:
        """The least-squares minimiser of the training loss, in float64."""
        self._require_linreg("theta_star")
        X = self.dataset.features("train").astype(np.float64, copy=False)
        y = np.asarray(self.dataset.y_train, dtype=np.float64)
        return np.linalg.lstsq(X, y, rcond=None)[0]

    @property
    def f_star(self) -> float:
        """The minimum of the training loss ½·mean((Xθ − y)²), in float64."""
        self._require_linreg("f_star")
        X = self.dataset.features("train").astype(np.float64, copy=False)
        y = np.asarray(self.dataset.y_train, dtype=np.float64)
        r = X @ self.theta_star - y
        return float(0.5 * np.mean(r * r))


def split_name(name: Any) -> tuple[str, str]:
    """``(model, data)`` of a problem name ``MODEL-DATA``; an
    :class:`~stalesgd.validation.OptionError` naming what is allowed otherwise."""
    model, sep, data = str(name).partition("-")
    with _named(name):
        known = isinstance(name, str) and sep and (model in MODELS or _plugin(model) is not None)
    if not known or data not in DATASETS:
        raise OptionError("name", name, f"MODEL-DATA with MODEL in {', '.join(model_names())} "
                          f"and DATA in {', '.join(DATASETS)}, e.g. logreg-synthetic or "
                          "mlp-mnist")
    return model, data


def _synthetic_defaults(model: str) -> dict[str, Any]:
    """Loader options that make the synthetic set fit the model (overridable by the caller)."""
    plugin = _plugin(model)
    if plugin is not None:
        return dict(_TASK_SYNTHETIC[plugin.task])
    if model == "linreg":
        return {"kind": "regression"}
    if model in ("logreg", "svm"):
        return {"kind": "classification", "n_classes": 2}
    if model == "lenet":
        return {"kind": "images"}
    return {"kind": "classification", "n_classes": 10}


def _file_kind(model: str) -> str:
    """How the ``file`` set reads its labels for ``model``: targets or classes."""
    plugin = _plugin(model)
    regression = model == "linreg" if plugin is None else plugin.task == "regression"
    return "regression" if regression else "classification"


def _data_options(data: str, options: dict[str, Any]) -> tuple[str, ...]:
    """The options the data set takes (for a synthetic set: those of its ``kind``)."""
    if data == FILE_SET:
        return FILE_OPTIONS
    if data == "sparse":
        return tuple(SPARSE_OPTIONS)
    if data != "synthetic":
        return REAL_OPTIONS
    return ("kind", *KIND_OPTIONS[choice(options["kind"], "kind", tuple(KIND_OPTIONS))])


def _check_fit(model: str, name: str, data: DataShape, file: Any = None) -> None:
    """Refuse a model that cannot be trained on ``data`` (key ``name``; ``file``: the data
    file of the data set ``file``, named in the message)."""
    if file is not None:
        data = dataclasses.replace(data, name=f"file {Path(str(file)).expanduser().absolute()}")
    why = None
    plugin = _plugin(model)
    if plugin is not None:
        why = _task_misfit(model, plugin.task, data)
    elif model == "linreg" and data.n_classes != 0:
        why = f"linreg needs a regression data set; {data.name!r} has classes"
    elif model != "linreg" and data.n_classes < 2:
        why = f"{model} needs a classification data set; {data.name!r} is regression"
    elif model in ("logreg", "svm") and data.n_classes != 2:
        why = (f"{model} needs 2 classes (labels 0 and 1); data set {data.name!r} has "
               f"{data.n_classes} (labels 0..{data.n_classes - 1}): softmax takes more")
    elif model == "lenet":
        from stalesgd.problems.lenet import ALLOWED_INPUT_SHAPES, N_CLASSES

        if tuple(data.input_shape) not in ALLOWED_INPUT_SHAPES or data.n_classes > N_CLASSES:
            why = (f"lenet needs images of shape {' or '.join(map(str, ALLOWED_INPUT_SHAPES))}"
                   f" with at most {N_CLASSES} classes; {data.name!r} has input shape "
                   f"{tuple(data.input_shape)} and {data.n_classes} classes")
    if why is not None:
        raise OptionError("name", name, "a model its data set fits", f"does not fit ({why})")


def _task_misfit(model: str, task: str, data: DataShape) -> str | None:
    """Why a plug-in model solving ``task`` cannot be trained on ``data``, or None."""
    if task == "regression" and data.n_classes != 0:
        return f"{model} needs a regression data set; {data.name!r} has classes"
    if task != "regression" and data.n_classes < 2:
        return f"{model} needs a classification data set; {data.name!r} is regression"
    if task == "binary" and data.n_classes != 2:
        return f"{model} needs 2 classes; data set {data.name!r} has {data.n_classes}"
    return None


def _build_plugin(model: str, plugin: ModelPlugin, data: DataShape | Dataset, dtype: np.dtype,
                  opts: dict[str, Any]) -> Model:
    """The plug-in's model, checked against the kernel contract (an OptionError on ``name``
    naming what is wrong); an OptionError of the factory names its option."""
    try:
        built = plugin.factory(data, dtype.type, **opts)
    except OptionError:
        raise
    except Exception as exc:  # a third-party factory
        raise OptionError("name", model, "a plug-in model its factory can build",
                          f"cannot be built ({type(exc).__name__}: {exc})") from None
    try:
        broken = check_contract(built, dtype)
    except MemoryError as exc:
        size = int(built.n_params) * dtype.itemsize / 2**30
        raise OptionError("name", model, "a model whose parameters fit in this machine's "
                          "memory", f"needs {size:.1f} GiB for its {int(built.n_params)} "
                          f"{dtype.name} parameters, more than can be allocated ({exc})"
                          ) from None
    if broken is not None:
        raise OptionError("name", model, CONTRACT, f"breaks the model contract: {broken}")
    return built


def _build_model(model: str, data: DataShape | Dataset, dtype: np.dtype,
                 opts: dict[str, Any]) -> Model:
    """The model for data of ``data``'s shape (a :class:`DataShape` or the loaded set).

    ``svm``, and ``logreg``/``softmax`` on a sparse set, are the linear models that read
    rows entry by entry (:mod:`stalesgd.problems.linear`)."""
    plugin = _plugin(model)
    if plugin is not None:
        return _build_plugin(model, plugin, data, dtype, opts)
    row_nnz = _sparse_row_nnz(data)
    if model == "svm" or (row_nnz is not None and model in ("logreg", "softmax")):
        from stalesgd.problems.linear import LinearClassifier

        return LinearClassifier(loss=model, n_features=data.n_features,
                                n_classes=data.n_classes, max_row_nnz=row_nnz, dtype=dtype,
                                intercept_step=opts.get("intercept_step", 1.0))
    if "intercept_step" in opts:
        raise OptionError("intercept_step", opts["intercept_step"], "the option of svm, and of "
                          "logreg and softmax on a sparse data set (the models that read rows "
                          "entry by entry)", f"is not an option of {model} on dense data")
    if model == "linreg":
        from stalesgd.problems.linreg import LinearRegression

        return LinearRegression(n_features=data.n_features, dtype=dtype)
    if model == "logreg":
        from stalesgd.problems.logreg import LogisticRegression

        return LogisticRegression(n_features=data.n_features, dtype=dtype)
    if model == "softmax":
        from stalesgd.problems.softmax import SoftmaxRegression

        return SoftmaxRegression(n_features=data.n_features, n_classes=data.n_classes, dtype=dtype)
    if model == "mlp":
        from stalesgd.problems.mlp import MLP

        return MLP(n_features=data.n_features, n_classes=data.n_classes,
                   hidden=opts.get("hidden", (128,)), dtype=dtype)
    # lenet: written separately; imported lazily so the dense models never depend on it
    from stalesgd.problems.lenet import LeNet5

    return LeNet5(input_shape=tuple(data.input_shape), fc84=opts.get("fc84", True), dtype=dtype)


def _sparse_row_nnz(data: DataShape | Dataset) -> int | None:
    """The most non-zeros of a row of a sparse data set (a bound before it is loaded);
    None for a dense one."""
    if isinstance(data, Dataset):
        return data.max_row_nnz if data.sparse else None
    return data.nnz_per_row


@dataclass(frozen=True)
class ProblemShape:
    """A problem as :func:`check_problem` sees it before building it: the data set's
    :class:`~stalesgd.data.DataShape`, the model's parameter count, and the options split
    between model, data loader and the problem itself (``init``, ``seed``, ``data_dir``)."""

    name: str
    model: str
    data: DataShape
    n_params: int
    model_options: dict[str, Any]
    data_options: dict[str, Any]
    init: str = "default"
    seed: int = 0
    data_dir: str | None = None

    def nbytes(self, dtype: Any) -> int:
        """The least memory any run of it takes: the data set and one parameter vector."""
        return self.data.nbytes(dtype) + self.n_params * np.dtype(dtype).itemsize


def check_problem(name: Any, options: dict[str, Any] | None = None,
                  dtype: Any = "float64", *, try_kernels: bool = True) -> ProblemShape:
    """Check a problem name and its options without loading data or allocating parameters.

    Options are the model's (:data:`MODEL_OPTIONS`), :data:`COMMON_OPTIONS` (``init``,
    ``seed`` of synthetic data, ``data_dir``) and the data loader's
    (:func:`stalesgd.data.load_dataset`).  Raises an :class:`~stalesgd.validation.OptionError`
    (a ValueError) naming the option (or ``name``), the value and what is allowed: an
    unknown option, a bad value, a model that does not fit its data.  A plug-in model's
    kernels are also run once on two rows of its data (``try_kernels``; once per process
    and problem), so that a kernel that fails is refused before any run, as in a dry run.
    """
    model_name, data_name = split_name(name)
    options = dict(options or {})
    dt = resolve_dtype(dtype)
    if data_name == "synthetic":  # a kind the user chose takes none of the model's defaults
        defaults = _synthetic_defaults(model_name)
        if options.get("kind", defaults["kind"]) != defaults["kind"]:
            defaults = {}
        options = {**defaults, **options}
    elif data_name == FILE_SET:  # the labels of a file are read as the model needs them
        options = {"kind": _file_kind(model_name), **options}
    own = _model_options(model_name)
    allowed = (*own, *COMMON_OPTIONS, *_data_options(data_name, options))
    if "sampling" in options and "sampling" not in allowed:  # a run setting, not an option
        raise OptionError("sampling", options["sampling"], "--sampling replacement|epochs "
                          "(problem.sampling in an experiment file)", "is not a problem option")
    known_keys(options, "", allowed, f"options of problem {name!r}")
    model_opts = {k: options.pop(k) for k in own if k in options}
    init = choice(options.pop("init", "default"), "init", INIT_SCHEMES)
    seed = options.pop("seed", 0)
    data_dir = options.pop("data_dir", None)
    shape, data_opts = check_dataset(data_name, dtype=dt, data_dir=data_dir, seed=seed,
                                     **options)
    _check_fit(model_name, str(name), shape,
               options.get("file") if data_name == FILE_SET else None)
    if model_name == "mlp" and "hidden" in model_opts:
        model_opts["hidden"] = hidden_sizes(model_opts["hidden"])
    if model_name == "lenet" and "fc84" in model_opts:
        model_opts["fc84"] = flag(model_opts["fc84"], "fc84")
    if "intercept_step" in model_opts:
        model_opts["intercept_step"] = number(model_opts["intercept_step"], "intercept_step",
                                              positive=True)
    with _named(name):
        n_params = _build_model(model_name, shape, dt, model_opts).n_params
    checked = ProblemShape(name=f"{model_name}-{data_name}", model=model_name, data=shape,
                           n_params=int(n_params), model_options=model_opts,
                           data_options=data_opts, init=init, seed=int(seed),
                           data_dir=data_dir)
    if try_kernels and _plugin(model_name) is not None:
        _try_plugin(checked, dt)
    return checked


#: elements after a plug-in's trial workspace that must still hold the sentinel afterwards
WORKSPACE_GUARD = 4096
WORKSPACE_SENTINEL = -3.0517578125e-05  # (exact in float32 and float64)

#: plug-in problems whose kernels ran once in this process (see :func:`_try_plugin`)
_tried: set[str] = set()


def _try_plugin(shape: ProblemShape, dt: np.dtype, problem: Problem | None = None) -> None:
    """Run a plug-in problem's kernels once (:func:`_try_kernels`) on ``problem`` (default:
    its data loaded here), once per process for the same problem, options and dtype."""
    key = repr((shape.name, dt.name, sorted(shape.model_options.items()),
                sorted(shape.data_options.items()), shape.init, shape.seed, shape.data_dir))
    if key in _tried:
        return
    _try_kernels(_load_problem(shape, dt) if problem is None else problem)
    _tried.add(key)


def is_plugin_problem(name: str) -> bool:
    """Whether the problem ``MODEL-DATA`` names a plug-in model (its kernels are not this
    package's: an exception they raise during a run is the plug-in's)."""
    try:
        return _plugin(split_name(name)[0]) is not None
    except OptionError:
        return False


def make_problem(
    name: str,
    *,
    dtype: str = "float64",
    seed: int = 0,
    data_dir: Any = None,
    init: str = "default",
    **options: Any,
) -> Problem:
    """Build the problem ``MODEL-DATA`` in ``dtype``.

    ``seed`` seeds synthetic data; ``data_dir`` is searched first for data
    files; ``init`` picks the initialisation scheme (one of ``INIT_SCHEMES``).
    Model options: mlp ``hidden=(128,)`` (widths of the hidden layers, any
    number), lenet ``fc84=True``.  Every other option goes to
    ``stalesgd.data.load_dataset`` (e.g. the synthetic generator's size and
    separation).  For ``synthetic`` the generator's ``kind`` is chosen to fit
    the model unless given: ``regression`` for linreg (its ``bias`` option
    should stay 0, linreg has no bias term), a 2-class ``classification``
    mixture for logreg, ``classification`` for softmax and mlp (the loader's
    default number of classes), ``images`` for lenet.  Options are checked first, by
    :func:`check_problem`.
    """
    extra = {"init": init, "seed": seed}
    if data_dir is not None:
        extra["data_dir"] = data_dir
    shape = check_problem(name, {**options, **extra}, dtype, try_kernels=False)
    dt = resolve_dtype(dtype)
    problem = _load_problem(shape, dt)
    if _plugin(shape.model) is not None:
        _try_plugin(shape, dt, problem)  # (on this data: no second load)
    return problem


def _load_problem(shape: ProblemShape, dt: np.dtype) -> Problem:
    """The checked problem ``shape`` with its data loaded and its model built."""
    from stalesgd.data import load_dataset

    dataset = load_dataset(shape.data.name, dtype=dt.name, data_dir=shape.data_dir,
                           seed=shape.seed, **shape.data_options)
    model = _build_model(shape.model, dataset, dt, shape.model_options)
    return Problem(name=shape.name, model=model, dataset=dataset, init=shape.init)


def _try_kernels(problem: Problem) -> None:
    """Run a plug-in model's kernels once on the first training rows, so that a kernel that
    does not compile for these arrays, or returns the wrong thing, is refused (an OptionError
    on ``name``) before an engine calls it from its compiled loop."""
    model, d = problem.model, problem.dataset
    idx = np.arange(min(2, d.n_train), dtype=np.int64)
    theta = problem.init_params(0)
    grad = np.zeros_like(theta)
    size = max(1, int(model.workspace_size(len(idx))))
    # the workspace inside a guard band: a kernel that writes past workspace_size would
    # corrupt the engines' memory (a crash, or wrong numbers) rather than fail
    band = np.full(size + WORKSPACE_GUARD, WORKSPACE_SENTINEL, dtype=model.dtype)
    band[:size] = 0
    ws = band[:size]
    X, y = d.inputs("train"), d.y_train
    calls = (("grad_kernel", lambda: model.grad_kernel(theta, X, y, idx, grad, ws, model.dims)),
             ("loss_kernel", lambda: model.loss_kernel(theta, X, y, idx, ws, model.dims)))
    results = []
    for step, call in calls:
        try:
            results.append(call())
        except Exception as exc:  # a third-party kernel: typing errors, index errors…
            text = " ".join(str(exc).split())
            raise OptionError("name", problem.name, CONTRACT, f"breaks the model contract: "
                              f"{step} fails on two rows of {d.name} ({type(exc).__name__}: "
                              f"{text[:400]})") from None
        past = np.flatnonzero(band[size:] != band.dtype.type(WORKSPACE_SENTINEL))
        if past.size:
            raise OptionError("name", problem.name, CONTRACT, f"breaks the model contract: "
                              f"{step} wrote up to {past[-1] + 1} elements past "
                              f"workspace_size({len(idx)}) = {size} (a workspace too small "
                              "for it)")
    loss, out = results
    why = None
    if not isinstance(loss, float | np.floating):
        why = f"grad_kernel returned a {type(loss).__name__}, not a float (the mean loss)"
    elif not (isinstance(out, tuple) and len(out) == 2):
        why = f"loss_kernel returned {out!r}, not (loss_sum, n_correct)"
    if why is not None:
        raise OptionError("name", problem.name, CONTRACT, f"breaks the model contract: {why}")
