"""stalesgd: a suite for studying asynchronous parallel SGD and its staleness.

The shared vocabulary lives here (problems, data, step-size rules, staleness
statistics, experiment specs, run records, option checks); the engines live
in :mod:`stalesgd.sim` and :mod:`stalesgd.real`, the comparisons in
:mod:`stalesgd.analysis`, and the command line and the experiment runner in
:mod:`stalesgd.app`, which alone may import all of them.
"""

import os as _os

# Worker kernels call BLAS from many threads at once; BLAS itself must stay
# single-threaded or the threads fight over the cores (DESIGN §7).  This only
# takes effect when stalesgd is imported before numpy; engines also limit
# BLAS at run time.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    _os.environ.setdefault(_var, "1")

__version__ = "0.1.0"
