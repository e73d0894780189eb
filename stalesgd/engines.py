"""The engine registry: names (``real``, ``sim``, …) mapped to the functions that run one run.

An engine is a callable ``fn(spec: RunSpec, progress: bool, updates: UpdateLog) -> RunRecord``
(:class:`stalesgd.experiment.RunSpec`, :class:`stalesgd.records.UpdateLog`,
:class:`stalesgd.records.RunRecord`): it adds the run's update rows to ``updates`` as the run
goes on, so that they reach the results folder while it runs.  Engines register
themselves with :func:`register_engine` when their module is imported; :func:`get_engine`
imports the module that provides a known engine on first use, so that ``stalesgd run`` needs
no explicit import.  Engines that belong to later issues are listed in :data:`PLANNED` and
:func:`get_engine` says plainly that they are not built yet and which issue adds them.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

EngineFn = Callable[..., Any]


@dataclass(frozen=True)
class PlannedEngine:
    """An engine the design names: what it is, the module that registers it, the issue adding it."""

    description: str
    module: str
    issue: str


PLANNED: dict[str, PlannedEngine] = {
    "real": PlannedEngine("the real engine", "stalesgd.real", "issue 4"),
    "sim": PlannedEngine("the simulator", "stalesgd.sim", "issue 5"),
}

_REGISTRY: dict[str, EngineFn] = {}


class EngineNotAvailable(LookupError):
    """The requested engine is unknown, or known but not built (registered) yet."""


def register_engine(name: str, fn: EngineFn) -> None:
    """Register ``fn`` as the engine called ``name`` (replacing any earlier registration)."""
    if not isinstance(name, str) or not re.match(r"^[A-Za-z0-9][A-Za-z0-9_-]*$", name):
        raise ValueError(f"engine name {name!r} is not allowed; use letters, digits, '-' or '_'")
    if not callable(fn):
        raise TypeError(f"engine {name!r}: {fn!r} is not callable")
    _REGISTRY[name] = fn


def unregister_engine(name: str) -> None:
    """Remove the engine ``name`` if registered (used by tests that register fakes)."""
    _REGISTRY.pop(name, None)


def registered_engines() -> list[str]:
    """Names of the engines that are registered now, sorted."""
    return sorted(_REGISTRY)


def engine_names() -> list[str]:
    """Every engine name an experiment may use: the planned ones and any registered one."""
    return sorted(set(PLANNED) | set(_REGISTRY))


def _try_import(name: str) -> None:
    planned = PLANNED.get(name)
    if planned is None or name in _REGISTRY:
        return
    try:
        importlib.import_module(planned.module)
    except ModuleNotFoundError as exc:
        if exc.name is None or not planned.module.startswith(exc.name):
            raise


def get_engine(name: str) -> EngineFn:
    """The engine function called ``name``.

    Raises :class:`EngineNotAvailable` naming the engines available now and, for a known engine
    that is not built yet, which issue adds it.
    """
    _try_import(name)
    if name in _REGISTRY:
        return _REGISTRY[name]
    available = ", ".join(registered_engines()) or "none yet"
    if name in PLANNED:
        planned = PLANNED[name]
        raise EngineNotAvailable(
            f"engine {name!r}: {planned.description} is not built yet ({planned.issue}); "
            f"engines available now: {available}"
        )
    raise EngineNotAvailable(
        f"engine {name!r} is unknown; known engines: {', '.join(engine_names())}; "
        f"available now: {available}"
    )
