"""The discrete-event simulator of asynchronous SGD.

Importing this package registers the ``sim`` engine with :mod:`stalesgd.engines`
(:func:`run_sim`, with :func:`validate` as its settings check): a
:class:`~stalesgd.experiment.RunSpec` in, a run record out, timing only or with numeric
replay.  :func:`simulate_timing` is the timing model on its own and
:func:`run_iid_staleness` the i.i.d.-staleness mode for theory checks.

How it is built
---------------
Each algorithm is defined once, as a SimPy process (``model.py``) over a simulated machine
(``machine.py``: cores with time slices, a lock).  :class:`~.simulation.Simulation` holds
the workers' shared state, the stop rules and the controls, and runs the processes in one of
two event loops behind one interface (clock, timers, waking parked workers, stopping):
SimPy itself, or the compiled loop (``fastloop.py``, ``fastcore.py``, ``faststeps.py``),
which runs each process as a compiled step in SimPy's event order and gives the same records
bit for bit, tens of times faster.  The compiled loop runs every algorithm that has a step,
on any machine and under elastic control; the SimPy processes serve hooks that need a Python
call at every read or apply.  Update rows leave either loop a chunk at a time
(``buffers.py``) for the run's update log.  ``timing.py`` holds the duration models,
``replay.py`` numeric replay (with ``batches.py``, the minibatch draws, ``stepsizes.py``, and
``pipeline.py``, which runs it on several cores),
``engine.py`` :func:`simulate_timing` and elastic control, ``run.py`` the engine.

Adding an algorithm
-------------------
1. ``stalesgd/algorithms.py``: an :class:`~stalesgd.algorithms.Algorithm` entry (options,
   buffers, cycle costs, τ semantics) naming its implementations.
2. ``real/workers.py``: the real worker.
3. ``sim/model.py``: its SimPy process ``<name>_process(sim, w)``, a generator over the
   simulation's clock, machine, lock and row buffer, as the others.

It then runs in the simulator on the SimPy processes.  Optionally, a compiled step in
``sim/faststeps.py`` (a code in ``CODES``, its step in ``STEPS``) makes it fast;
``tests/test_sim_loops.py`` checks the step against the process bit for bit.
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
    "validate",
]
