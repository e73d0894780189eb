"""The top layer: the ``stalesgd`` command line and the experiment runner.

It may import every other part of the package (the core, the engines, the analysis); nothing
imports it.  :mod:`stalesgd.app.cli` is the command; :mod:`stalesgd.app.runner` checks and
runs a sweep, with :mod:`stalesgd.app.preflight` (the checks that need this machine),
:mod:`stalesgd.app.resume` (continuing a sweep in its folder) and
:mod:`stalesgd.app.autocalibration` (sim runs calibrated from the sweep's real runs);
:mod:`stalesgd.app.summary` prints what ran.
"""
