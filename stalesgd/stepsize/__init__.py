"""Staleness-adaptive step-size rules, their online PDF(τ) estimator, and the ASAP.SGD checker.

Every rule is η(τ) = η0 · s(τ).  Engines never evaluate a formula per step:
a rule is materialised as a float64 table ``s[0..tau_max]`` (τ beyond
``tau_max`` uses the last entry) and kernels look it up with :func:`eta_of`,
a clamped index that is safe inside ``@njit(nogil=True)`` loops.  Rules that
learn PDF(τ) while a run goes on (``tail``, ``tail-original``, ``model``)
hand out a :class:`TauEstimator`; the engine's monitor feeds it the τ samples
the workers logged and receives a new table (same length, so it can be copied
into the table the workers read) whenever the estimate changes.

Rules (DESIGN §5), built by name with :func:`make_rule`:

==================  ==========================================================
``constant``        s = 1
``inverse``         s = 1/(τ+1)
``exponential``     s = exp(−βτ), β = (2/τthr)·ln(1 + τthr/2), τthr = m + 1
``tail``            s = 1 + A·(P[T>τ] − P[T<τ]) from the run's PDF(τ), 0 ≤ A ≤ 1
``tail-original``   s = 1 + A·(1 − 2·P[T<τ]), the released C++ form
``model``           the ``tail`` rule applied to a fitted Poisson/CMP law
``delay-adaptive``  s = min(1, m/τ), s(0) = 1
==================  ==========================================================

:func:`check_conditions` reports, for any table and any PDF, the ASAP.SGD
conditions: s ≥ 0, bounded, non-increasing and E_τ[s(τ)] = 1.

Modules: :mod:`~stalesgd.stepsize.tables` (table length, lookup, TAIL-τ builders),
:mod:`~stalesgd.stepsize.rules` (the rules and :func:`make_rule`),
:mod:`~stalesgd.stepsize.estimator` (:class:`TauEstimator`),
:mod:`~stalesgd.stepsize.conditions` (the checker).
"""

from stalesgd.stepsize.conditions import ConditionReport, check_conditions
from stalesgd.stepsize.estimator import TauEstimator
from stalesgd.stepsize.rules import RULES, StepSizeRule, make_rule, rule_names, rule_options
from stalesgd.stepsize.tables import default_tau_max, eta_of, tail_original_table, tail_table

__all__ = [
    "RULES",
    "ConditionReport",
    "StepSizeRule",
    "TauEstimator",
    "check_conditions",
    "default_tau_max",
    "eta_of",
    "make_rule",
    "rule_names",
    "rule_options",
    "tail_original_table",
    "tail_table",
]
