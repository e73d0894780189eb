"""The discrete-event simulator of asynchronous SGD (SimPy).

Importing this package registers the ``sim`` engine with :mod:`stalesgd.engines`
(:func:`run_sim`: a :class:`~stalesgd.experiment.RunSpec` in, a run record out, timing only
or with numeric replay).  :func:`simulate_timing` is the timing model on its own and
:func:`run_iid_staleness` the i.i.d.-staleness mode for theory checks.
"""

from stalesgd.engines import register_engine

from .engine import SimResult, simulate_timing
from .iid import run_iid_staleness
from .replay import NumericReplay
from .run import run_sim, validate
from .stepsizes import StepSizes

register_engine("sim", run_sim, validate=validate)

__all__ = [
    "NumericReplay",
    "SimResult",
    "StepSizes",
    "run_iid_staleness",
    "run_sim",
    "simulate_timing",
]
