"""The step-size rules η(τ) = η0 · s(τ) (DESIGN §5), built by name with :func:`make_rule`.

Each rule checks its options when it is built (:class:`~stalesgd.validation.OptionError`
naming the option, the value and what is allowed), so an experiment is refused when it is
read, not when its run starts.  Rules computed from PDF(τ) keep s(τ) ≥ 0: their amplitude
``A`` is at most 1.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from stalesgd import staleness
from stalesgd.stepsize.estimator import DEFAULT_PATIENCE, TauEstimator, check_estimator_options
from stalesgd.stepsize.tables import as_weights, check_tau_max, tail_original_table, tail_table
from stalesgd.validation import OptionError, choice, flag, integer, known_keys, number

__all__ = ["RULES", "DelayAdaptiveRule", "ExponentialRule", "InverseRule", "ModelRule",
           "PdfRule", "StepSizeRule", "TailOriginalRule", "TailRule", "ConstantRule",
           "make_rule", "rule_names", "rule_options"]

#: largest amplitude A of the PDF-based rules: s(τ) = 1 + A·(…) stays ≥ 0 for A ≤ 1
MAX_AMPLITUDE = 1.0


class StepSizeRule:
    """Base class: η(τ) = lr · s(τ), materialised by :meth:`table`.

    Subclasses set ``name``, ``defaults`` (allowed options and their default
    values) and implement :meth:`table`.  Construct through :func:`make_rule`.
    """

    name: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    adaptive: ClassVar[bool] = False

    def __init__(self, *, workers: int, lr: float, **options: Any):
        self.workers = integer(workers, "workers", 1)
        self.lr = number(lr, "lr", positive=True)
        known_keys(options, "", self.defaults, f"options of step-size rule {self.name!r}")
        self.options: dict[str, Any] = {**self.defaults, **options}
        self._validate()

    def _validate(self) -> None:
        """Check and normalise ``self.options`` (subclasses)."""

    def table(self, tau_max: int) -> np.ndarray:
        """The factor table s[0..tau_max] (float64)."""
        raise NotImplementedError

    def eta_table(self, tau_max: int) -> np.ndarray:
        """The step-size table η[0..tau_max] = lr · s."""
        return self.lr * self.table(tau_max)

    def estimator(self, tau_max: int) -> TauEstimator | None:
        """An online estimator producing new tables, or None for a fixed rule."""
        return None

    def spec(self) -> dict[str, Any]:
        """Name, lr, workers and scalar options, for run records and configs."""
        opts = {k: v for k, v in self.options.items() if not isinstance(v, np.ndarray)}
        return {"name": self.name, "lr": self.lr, "workers": self.workers, **opts}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec()})"


class ConstantRule(StepSizeRule):
    """``constant``: s(τ) = 1, plain SGD step size whatever the staleness (the baseline)."""

    name = "constant"

    def table(self, tau_max: int) -> np.ndarray:
        """All ones."""
        return np.ones(check_tau_max(tau_max) + 1)


class InverseRule(StepSizeRule):
    """``inverse``: s(τ) = 1/(τ + 1).

    Source: the staleness-dependent rate η/τ of Zhang, Gupta, Lian and Liu,
    "Staleness-aware async-SGD for distributed deep learning", IJCAI 2016;
    τ + 1 keeps τ = 0 finite, as the released C++ (``INVERSE``) does.
    """

    name = "inverse"

    def table(self, tau_max: int) -> np.ndarray:
        """1/(τ+1) for τ = 0..tau_max."""
        return 1.0 / (np.arange(check_tau_max(tau_max) + 1, dtype=np.float64) + 1.0)


class ExponentialRule(StepSizeRule):
    """``exponential``: s(τ) = exp(−βτ), β = (2/τthr)·ln(1 + τthr/2), τthr = m + 1.

    Source: the staleness dampening of FLeet (Damaskinos, Guerraoui,
    Kermarrec, Nitu, Patra, Taïani, "FLeet: Online Federated Learning via
    Staleness Awareness and Performance Prediction", Middleware 2020), with
    the threshold τthr = m + 1 used by the released C++ (``FLEET``).
    Options: ``tau_thr`` (default m + 1); ``quirks`` (default false) = the
    C++'s integer division τthr/2 inside the logarithm.
    """

    name = "exponential"
    defaults: ClassVar[dict[str, Any]] = {"tau_thr": None, "quirks": False}

    def _validate(self) -> None:
        if self.options["tau_thr"] is None:
            self.options["tau_thr"] = self.workers + 1
        self.options["tau_thr"] = number(self.options["tau_thr"], "tau_thr", positive=True)
        self.options["quirks"] = flag(self.options["quirks"], "quirks")

    @property
    def beta(self) -> float:
        """The decay rate β."""
        thr = self.options["tau_thr"]
        half = float(int(thr) // 2) if self.options["quirks"] else thr / 2.0
        return 2.0 / thr * math.log1p(half)

    def table(self, tau_max: int) -> np.ndarray:
        """exp(−βτ) for τ = 0..tau_max."""
        return np.exp(-self.beta * np.arange(check_tau_max(tau_max) + 1, dtype=np.float64))


class DelayAdaptiveRule(StepSizeRule):
    """``delay-adaptive``: s(τ) = min(1, m/τ), with s(0) = 1.

    Source: the delay-adaptive step sizes of Mishchenko, Bach, Even and
    Woodworth, "Asynchronous SGD Beats Minibatch SGD Under Arbitrary Delays",
    NeurIPS 2022, which keep the full step for delays up to about the number
    of workers and shrink it like 1/τ beyond.  Writing it relative to η0 as
    min(1, m/τ) is this project's form (DESIGN §5).  Not normalised: the
    checker reports E[s] < 1 when τ > m has mass.
    """

    name = "delay-adaptive"

    def table(self, tau_max: int) -> np.ndarray:
        """min(1, m/τ) for τ = 0..tau_max (1 at τ = 0)."""
        t = np.arange(check_tau_max(tau_max) + 1, dtype=np.float64)
        out = np.ones_like(t)
        pos = t > 0
        out[pos] = np.minimum(1.0, self.workers / t[pos])
        return out


_ONLINE_DEFAULTS: dict[str, Any] = {
    "A": 1.0,
    "pdf": None,
    "warmup": 10,
    "window": 5,
    "refresh_every": 0,
    "refresh_window": None,
    "patience": DEFAULT_PATIENCE,
}


class PdfRule(StepSizeRule):
    """A rule computed from PDF(τ): fixed if a ``pdf`` option is given, else online.

    ``A`` is at most 1, so that s(τ) ≥ 0 for every τ: beyond the largest τ of the window,
    s(τ) = 1 − A (0 with A = 1; the run record counts such zero-step updates)."""

    defaults: ClassVar[dict[str, Any]] = dict(_ONLINE_DEFAULTS)

    def _validate(self) -> None:
        o = self.options
        o["A"] = number(o["A"], "A", 0.0, MAX_AMPLITUDE,
                        allowed=f"a number in 0..{MAX_AMPLITUDE:g} (s(τ) >= 0 needs A <= 1)")
        if o["pdf"] is not None:
            o["pdf"] = as_weights(o["pdf"], "pdf")
        checked = check_estimator_options(self.workers, o["warmup"], o["window"],
                                          o["refresh_every"], o["refresh_window"],
                                          o["patience"])
        for key in ("warmup", "window", "refresh_every", "patience"):
            o[key] = checked[key]
        if o["refresh_window"] is not None:
            o["refresh_window"] = checked["refresh_window"]

    @property
    def adaptive(self) -> bool:  # type: ignore[override]
        """True when the table is learned online (no fixed ``pdf`` option)."""
        return self.options["pdf"] is None

    def table_from_counts(
        self, counts: np.ndarray, tau_max: int, *, normaliser: float | None = None
    ) -> np.ndarray:
        """The table for a histogram (or PDF) of τ; ``normaliser`` defaults to its total."""
        raise NotImplementedError

    def table(self, tau_max: int) -> np.ndarray:
        """The table for the fixed ``pdf`` option, or all ones before anything is known."""
        if self.options["pdf"] is None:
            return np.ones(check_tau_max(tau_max) + 1)
        return self.table_from_counts(self.options["pdf"], tau_max)

    def _quirks(self) -> bool:
        return False

    def estimator(self, tau_max: int) -> TauEstimator | None:
        """A fresh :class:`TauEstimator` for this rule, or None when ``pdf`` fixes the table."""
        if not self.adaptive:
            return None
        o = self.options
        return TauEstimator(
            self,
            tau_max=tau_max,
            workers=self.workers,
            warmup=o["warmup"],
            window=o["window"],
            refresh_every=o["refresh_every"],
            refresh_window=o["refresh_window"],
            patience=o["patience"],
            quirks=self._quirks(),
        )


class TailRule(PdfRule):
    """``tail`` (TAIL-τ): s(τ) = 1 + A·(P[T>τ] − P[T<τ]) from the run's own PDF(τ).

    Source: Bäckström, Papatriantafilou and Tsigas, "ASAP.SGD: Instance-based
    Adaptiveness to Staleness in Asynchronous SGD", ICML 2022 (TAIL-τ).  The
    mid-rank form used here is the one DESIGN §5 fixes: it meets the paper's
    conditions exactly (non-negative for A ≤ 1, bounded by 1 + A,
    non-increasing, E[s] = 1 under the PDF it is built from), whereas the
    released code's form (``tail-original``) is not normalised.  PDF(τ) is
    estimated online (:class:`TauEstimator`) unless a fixed ``pdf`` is given.
    Options: ``A`` (1), ``pdf``, ``warmup`` (10 per worker), ``window`` (5
    per worker), ``refresh_every`` (0 = never), ``refresh_window``
    (max(window·m, refresh_every)), ``patience`` (:data:`DEFAULT_PATIENCE`).
    """

    name = "tail"

    def table_from_counts(
        self, counts: np.ndarray, tau_max: int, *, normaliser: float | None = None
    ) -> np.ndarray:
        """TAIL-τ table of the histogram (normalised by its total: the samples collected)."""
        return tail_table(counts, tau_max, self.options["A"])


class TailOriginalRule(PdfRule):
    """``tail-original``: s(τ) = 1 + A·(1 − 2·P[T<τ]), the released C++ TAIL rule.

    Source: the ``TAIL`` strategy of the ASAP.SGD authors' C++ framework
    (dcs-chalmers/shared-memory-sgd, ``NetworkExecutor::compute_tail_dist``).
    Under a proper PDF its mean is 1 + A·Σp² (up to 1 + A on a point mass), so
    it is offered to reproduce published results, not as a normalised rule.
    With ``quirks=true`` (the default) the estimator copies the C++ exactly
    where it can: samples counted by global update index strictly between
    warmup·m and (warmup+window)·m (5m − 1 samples), τ above the table dropped,
    P[T<τ] divided by the nominal window·m instead of the samples seen, and no
    refresh.  Two C++ effects are not reproduced: the table was computed when
    step (warmup+window)·m was *claimed*, so updates still in flight (about
    m − 1) were missing from the window; and its clamp ``staleness >> 199``
    (a shift, not a comparison) sends τ ≥ 128 to the last entry.
    With ``quirks=false`` it uses the same estimator as ``tail``.
    """

    name = "tail-original"
    defaults: ClassVar[dict[str, Any]] = {**_ONLINE_DEFAULTS, "quirks": True}

    def _validate(self) -> None:
        super()._validate()
        self.options["quirks"] = flag(self.options["quirks"], "quirks")
        if self.options["quirks"] and self.options["refresh_every"]:
            raise OptionError("refresh_every", self.options["refresh_every"],
                              "0 with quirks = true (the C++ never refreshed); set "
                              "quirks = false to refresh")

    def _quirks(self) -> bool:
        return self.options["quirks"]

    def table_from_counts(
        self, counts: np.ndarray, tau_max: int, *, normaliser: float | None = None
    ) -> np.ndarray:
        """C++ TAIL table; P[T<τ] = Σ_{t<τ} counts / normaliser (default: the total)."""
        return tail_original_table(counts, tau_max, self.options["A"], normaliser)


class ModelRule(PdfRule):
    """``model`` (MindTheStep-style): the ``tail`` rule applied to a fitted law of τ.

    Source: Bäckström, Papatriantafilou and Tsigas, "MindTheStep-AsyncPSGD:
    Adaptive Asynchronous Parallel Stochastic Gradient Descent", IEEE BigData
    2019, which models τ as Poisson or Conway–Maxwell–Poisson (CMP) and adapts
    the step size to the modelled staleness.  We could not find that paper's
    own step-size formula, so this rule is the project's interpretation, not
    a reproduction: fit the family (``staleness.fit_cmp`` /
    ``staleness.fit_poisson``, maximum likelihood) to the observed τ and
    apply TAIL-τ's s(τ) = 1 + A·(P[T>τ] − P[T<τ]) to the fitted law, which
    keeps E[s] = 1 under that law and smooths the small online sample.
    Options: ``family`` ("cmp" default, "poisson", or "auto" = the better by
    AIC), plus those of ``tail``.  If CMP does not apply (all τ equal) it
    falls back to Poisson.
    """

    name = "model"
    defaults: ClassVar[dict[str, Any]] = {**_ONLINE_DEFAULTS, "family": "cmp"}
    families: ClassVar[tuple[str, ...]] = ("cmp", "poisson", "auto")

    def _validate(self) -> None:
        super()._validate()
        self.options["family"] = choice(self.options["family"], "family", self.families)
        self.last_fit: staleness.Fit | None = None

    def fit(self, counts: np.ndarray) -> staleness.Fit:
        """Fit the configured family to a histogram (with the fallbacks described above)."""
        fam = self.options["family"]
        if fam == "poisson":
            return staleness.fit_poisson(counts)
        fits = [staleness.fit_cmp(counts)]
        if fam == "auto" or not (fits[0].applicable and fits[0].converged):
            fits.append(staleness.fit_poisson(counts))
        ok = [f for f in fits if f.applicable and f.converged]
        return staleness.best_fit(ok) if fam == "auto" else ok[0]

    def table_from_counts(
        self, counts: np.ndarray, tau_max: int, *, normaliser: float | None = None
    ) -> np.ndarray:
        """TAIL-τ table of the law fitted to the histogram."""
        tau_max = check_tau_max(tau_max)
        f = self.fit(np.asarray(counts, dtype=np.float64))
        self.last_fit = f
        pmf = f.pmf(max(tau_max, f.support_max()))
        return tail_table(pmf, tau_max, self.options["A"])


RULES: dict[str, type[StepSizeRule]] = {
    cls.name: cls
    for cls in (
        ConstantRule,
        InverseRule,
        ExponentialRule,
        TailRule,
        TailOriginalRule,
        ModelRule,
        DelayAdaptiveRule,
    )
}


def rule_names() -> tuple[str, ...]:
    """The allowed rule names, in DESIGN order."""
    return tuple(RULES)


def rule_options(name: str) -> dict[str, Any]:
    """The options a rule accepts, with their defaults (None: derived from workers)."""
    return dict(_rule_class(name).defaults)


def _rule_class(name: str) -> type[StepSizeRule]:
    return RULES[choice(name, "rule", tuple(RULES))]


def make_rule(name: str, *, workers: int, lr: float, **options: Any) -> StepSizeRule:
    """Build a step-size rule by name (``--stepsize NAME``) with its options.

    ``workers`` is m (used by ``exponential``, ``delay-adaptive`` and the
    per-worker windows), ``lr`` is η0.  Unknown names or options and bad values raise an
    :class:`~stalesgd.validation.OptionError` (a ValueError) naming the option and what is
    allowed.
    """
    return _rule_class(name)(workers=workers, lr=lr, **options)
