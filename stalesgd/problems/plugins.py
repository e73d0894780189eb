"""Models added from outside the package: registered in code, or found through entry points.

A plug-in model is a :class:`ModelPlugin`: a factory that builds a
:class:`~stalesgd.problems.base.Model` for a data set's shape and a parameter dtype, the
options the factory takes, and the task the model solves.  Once registered under a name
(:func:`stalesgd.problems.register_model`), ``NAME-DATA`` is a problem like the built-in
ones, on every command and in experiment files.

An installed package adds models without being imported by hand: it declares an entry point
in the group :data:`ENTRY_POINT_GROUP` whose name is the model's name and whose object is a
:class:`ModelPlugin`::

    [project.entry-points."stalesgd.models"]
    tanhmlp = "stalesgd_tanh_mlp:PLUGIN"

Entry points are loaded lazily, the first time a problem names a model that is neither
built in nor registered.  Built-in names always win: an entry point named like a built-in
model is never loaded.

Every model a plug-in factory builds is checked against the kernel contract
(:func:`check_contract`) before it is used, so that a broken plug-in is refused with a
message naming what is wrong instead of crashing inside an engine's compiled loop.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import numpy as np

from stalesgd.problems.base import Model

__all__ = ["ENTRY_POINT_GROUP", "NAME_PATTERN", "TASKS", "ModelPlugin", "PluginError",
           "add_plugin", "check_contract", "entry_point_names", "find_plugin",
           "registered_names", "remove_plugin"]

#: the entry-point group installed packages declare their models in
ENTRY_POINT_GROUP = "stalesgd.models"
#: what a model name may be: a problem name is ``MODEL-DATA``, split at its first ``-``
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
#: what a model may solve: ``classification`` (int64 labels 0..K-1, K >= 2), ``binary``
#: (exactly two classes) or ``regression`` (float targets)
TASKS = ("classification", "binary", "regression")
#: the arguments of the two kernels, in the order of the contract (see ``base``)
GRAD_ARGS = ("theta", "X", "y", "idx", "grad", "ws", "dims")
LOSS_ARGS = ("theta", "X", "y", "idx", "ws", "dims")


class PluginError(ValueError):
    """A plug-in model that cannot be loaded, built or used: the message says which and why."""


@dataclass(frozen=True)
class ModelPlugin:
    """A model from outside the package.

    ``factory(data, dtype, **options) -> Model``: ``data`` has ``n_features``,
    ``n_classes`` (0 for regression), ``input_shape`` and ``packed`` (a
    :class:`~stalesgd.data.DataShape` while a problem is checked, the loaded
    :class:`~stalesgd.data.Dataset` when it is built: the model must come out the same);
    ``dtype`` is ``numpy.float32`` or ``numpy.float64``; ``options`` are the problem options
    named in ``options`` that the user set (values as written in TOML or ``-o KEY=VALUE``).
    The factory checks them and raises :class:`~stalesgd.validation.OptionError` (or
    ``ValueError``) for a bad one.

    ``task`` picks the data a model fits and the defaults of the ``synthetic`` set:
    ``classification`` (10 classes unless set), ``binary`` (2 classes) or ``regression``.
    """

    factory: Callable[..., Model]
    options: tuple[str, ...] = ()
    task: str = "classification"
    description: str = ""

    def __post_init__(self) -> None:
        if not callable(self.factory):
            raise TypeError(f"factory must be callable, got {type(self.factory).__name__}")
        opts = (self.options,) if isinstance(self.options, str) else tuple(self.options)
        if not all(isinstance(o, str) and o.isidentifier() for o in opts):
            raise ValueError(f"options must be option names (identifiers), got {opts!r}")
        object.__setattr__(self, "options", opts)
        if self.task not in TASKS:
            raise ValueError(f"task={self.task!r} is not allowed; use one of {', '.join(TASKS)}")


_plugins: dict[str, ModelPlugin] = {}


def add_plugin(name: str, plugin: ModelPlugin, reserved: tuple[str, ...],
               reserved_options: tuple[str, ...]) -> None:
    """Store ``plugin`` under ``name``; a name taken by ``reserved`` (the built-in models) or
    by another plug-in, a malformed name, or an option clashing with ``reserved_options``
    (the options every problem takes) is refused with a ValueError."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ValueError(f"model name {name!r} is not allowed; use lower-case letters, digits "
                         "and '_', starting with a letter (no '-': problems are MODEL-DATA)")
    if name in reserved:
        raise ValueError(f"model name {name!r} is taken by a built-in model; built-in models: "
                         f"{', '.join(reserved)}")
    if name in _plugins and _plugins[name] is not plugin:
        raise ValueError(f"model name {name!r} is already registered; call "
                         "stalesgd.problems.unregister_model first to replace it")
    clash = [o for o in plugin.options if o in reserved_options]
    if clash:
        raise ValueError(f"model option(s) {', '.join(clash)} of {name!r} clash with the "
                         f"options every problem takes: {', '.join(reserved_options)}")
    _plugins[name] = plugin


def remove_plugin(name: str) -> None:
    """Forget the plug-in model ``name`` (a KeyError if it is not registered)."""
    del _plugins[name]


def registered_names() -> tuple[str, ...]:
    """Names of the plug-in models registered or loaded so far, in registration order."""
    return tuple(_plugins)


def _entry_points(name: str | None = None) -> list[EntryPoint]:
    found = entry_points(group=ENTRY_POINT_GROUP)
    return [ep for ep in found if name is None or ep.name == name]


def entry_point_names() -> tuple[str, ...]:
    """Names of the models installed packages declare (not loaded) that can be used: a
    name a problem name cannot hold (``NAME_PATTERN``) is left out."""
    return tuple(sorted({ep.name for ep in _entry_points() if NAME_PATTERN.match(ep.name)}))


def _describe(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    where = f" of package {dist.name}" if dist is not None else ""
    return f"entry point {ep.name} = {ep.value!r}{where} (group {ENTRY_POINT_GROUP})"


def find_plugin(name: str, reserved: tuple[str, ...],
                reserved_options: tuple[str, ...]) -> ModelPlugin | None:
    """The plug-in model ``name``: registered, else loaded from its entry point (then kept
    registered); None when there is neither.  A plug-in that fails to load raises
    :class:`PluginError` naming the entry point and the error."""
    if name in _plugins:
        return _plugins[name]
    if name in reserved:
        return None
    eps = _entry_points(name)
    if not eps:
        return None
    if len({ep.value for ep in eps}) > 1:
        raise PluginError(f"plug-in model {name!r} is declared by several installed packages: "
                          + "; ".join(_describe(ep) for ep in eps))
    ep = eps[0]
    try:
        plugin = ep.load()
    except Exception as exc:  # any import-time error of a third-party package
        raise PluginError(f"plug-in model {name!r} failed to load from {_describe(ep)}: "
                          f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(plugin, ModelPlugin):
        raise PluginError(f"plug-in model {name!r}: {_describe(ep)} is a "
                          f"{type(plugin).__name__}, not a stalesgd.problems.ModelPlugin")
    try:
        add_plugin(name, plugin, reserved, reserved_options)
    except ValueError as exc:
        raise PluginError(f"plug-in model {name!r} from {_describe(ep)}: {exc}") from None
    return plugin


def _arg_names(kernel: Any) -> tuple[str, ...] | None:
    py_func = getattr(kernel, "py_func", None)
    if py_func is None:
        return None
    params = inspect.signature(py_func).parameters.values()
    if any(p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params):
        return None
    return tuple(p.name for p in params)


def _kernel_problem(model: Model, attr: str, args: tuple[str, ...]) -> str | None:
    kernel = getattr(model, attr, None)
    names = _arg_names(kernel)
    if names is None:
        return (f"{attr} is a {type(kernel).__name__}, not a Numba @njit(nogil=True) function "
                f"of ({', '.join(args)})")
    if len(names) != len(args):
        return (f"{attr} takes {len(names)} arguments ({', '.join(names)}); the contract "
                f"passes {len(args)}: ({', '.join(args)})")
    if not getattr(kernel, "targetoptions", {}).get("nogil", False):
        return (f"{attr} is compiled without nogil=True: worker threads would run it one at "
                "a time; use @njit(nogil=True)")
    return None


def check_contract(model: Any, dtype: np.dtype) -> str | None:
    """What ``model`` breaks of the kernel contract of :mod:`stalesgd.problems.base` (the
    first thing found), or None when it keeps it as far as can be seen without running it."""
    if not isinstance(model, Model):
        kind = type(model).__name__
        article = "an" if kind[:1].lower() in "aeiou" else "a"
        return f"the factory returned {article} {kind}, not a stalesgd.problems.Model"
    if getattr(model, "dtype", None) != dtype:
        return f"the model's dtype is {getattr(model, 'dtype', None)!r}, asked for {dtype}"
    n = getattr(model, "n_params", None)
    if not isinstance(n, int | np.integer) or isinstance(n, bool) or n <= 0:
        return f"n_params = {n!r}; it must be a positive integer"
    dims = getattr(model, "dims", None)
    if not isinstance(dims, np.ndarray) or dims.dtype != np.int64 or dims.ndim != 1:
        what = (f"a {dims.ndim}-D {dims.dtype} array" if isinstance(dims, np.ndarray)
                else f"a {type(dims).__name__}")
        return f"dims is {what}; it must be a 1-D int64 array"
    for attr, args in (("grad_kernel", GRAD_ARGS), ("loss_kernel", LOSS_ARGS)):
        problem = _kernel_problem(model, attr, args)
        if problem:
            return problem
    try:
        ws = model.workspace_size(1)
    except Exception as exc:  # a third-party method
        return f"workspace_size(1) raised {type(exc).__name__}: {exc}"
    if not isinstance(ws, int | np.integer) or isinstance(ws, bool) or ws < 0:
        return f"workspace_size(1) = {ws!r}; it must be an integer >= 0"
    try:
        theta = model.init_params(0, "default")
    except MemoryError:
        raise  # (not the contract's: the model is too big for this machine)
    except Exception as exc:  # a third-party method
        return f"init_params(0, 'default') raised {type(exc).__name__}: {exc}"
    if not isinstance(theta, np.ndarray) or theta.shape != (n,) or theta.dtype != dtype:
        got = (f"a {theta.shape} {theta.dtype} array" if isinstance(theta, np.ndarray)
               else f"a {type(theta).__name__}")
        return f"init_params(0, 'default') returned {got}; expected a ({n},) {dtype} array"
    return None
