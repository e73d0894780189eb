"""The engine registry: names (``real``, ``sim``, …) mapped to what runs and checks one run.

An engine is a callable ``run(spec: RunSpec, progress: bool, updates: UpdateLog) -> RunRecord``
(:class:`stalesgd.experiment.RunSpec`, :class:`stalesgd.records.UpdateLog`,
:class:`stalesgd.records.RunRecord`): it adds the run's update rows to ``updates`` as the run
goes on, so that they reach the results folder while it runs.  It may come with a
``validate(spec)`` that raises :class:`stalesgd.experiment.ExperimentError` for settings it
cannot run (checked for every run of an experiment before any of them starts, so that a
dry run and a real one agree).

Engines register themselves with :func:`register_engine` when their module is imported;
:func:`get_engine` imports the module of a built-in engine (:data:`BUILT_IN`) on first use,
so that ``stalesgd run`` needs no explicit import.  An engine that catches Ctrl-C may hand
back the partial record of its run by raising :class:`RunInterrupted`.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["BUILT_IN", "Engine", "EngineNotAvailable", "RunInterrupted", "engine_names",
           "get_engine", "register_engine", "registered_engines", "unregister_engine"]

#: built-in engine name -> the module that registers it when imported
BUILT_IN: dict[str, str] = {"real": "stalesgd.real", "sim": "stalesgd.sim",
                            "ray": "stalesgd.real.ps"}


@dataclass(frozen=True)
class Engine:
    """A registered engine: its name, the function that runs one run, and an optional check
    of a run's settings before anything runs."""

    name: str
    run: Callable[..., Any]
    validate: Callable[[Any], None] | None = None

    def check(self, spec: Any) -> None:
        """Raise :class:`~stalesgd.experiment.ExperimentError` if this engine cannot run
        ``spec`` as given."""
        if self.validate is not None:
            self.validate(spec)


_REGISTRY: dict[str, Engine] = {}


class EngineNotAvailable(LookupError):
    """The requested engine is unknown, or could not be loaded."""


class RunInterrupted(KeyboardInterrupt):
    """Raised by an engine on Ctrl-C to hand back the partial record of the run it was in
    (a :class:`stalesgd.records.RunRecord`, or None); the runner keeps it, marked
    ``interrupted``."""

    def __init__(self, record: Any = None) -> None:
        super().__init__("run interrupted")
        self.record = record


def register_engine(name: str, run: Callable[..., Any],
                    validate: Callable[[Any], None] | None = None) -> None:
    """Register ``run`` (and its settings check ``validate``) as the engine ``name``,
    replacing any earlier registration."""
    if not isinstance(name, str) or not re.match(r"^[A-Za-z0-9][A-Za-z0-9_-]*$", name):
        raise ValueError(f"engine name {name!r} is not allowed; use letters, digits, '-' or '_'")
    if not callable(run):
        raise TypeError(f"engine {name!r}: {run!r} is not callable")
    if validate is not None and not callable(validate):
        raise TypeError(f"engine {name!r}: validate {validate!r} is not callable")
    _REGISTRY[name] = Engine(name, run, validate)


def unregister_engine(name: str) -> None:
    """Remove the engine ``name`` if registered (used by tests that register fakes)."""
    _REGISTRY.pop(name, None)


def registered_engines() -> list[str]:
    """Names of the engines that are registered now, sorted."""
    return sorted(_REGISTRY)


def engine_names() -> list[str]:
    """Every engine name an experiment may use: the built-in ones and any registered one."""
    return sorted(set(BUILT_IN) | set(_REGISTRY))


def get_engine(name: str) -> Engine:
    """The engine called ``name``, importing a built-in one on first use.

    Raises :class:`EngineNotAvailable` naming the engines there are.
    """
    if name not in _REGISTRY and name in BUILT_IN:
        importlib.import_module(BUILT_IN[name])
    if name in _REGISTRY:
        return _REGISTRY[name]
    raise EngineNotAvailable(f"engine {name!r} is unknown; known engines: "
                             f"{', '.join(engine_names())}")
