"""Exact expected loss of SGD with i.i.d. staleness on least squares (DESIGN §8, "Theory").

What is modelled — exactly what :func:`stalesgd.sim.iid.run_iid_staleness` runs with its
default ``sampling="replacement"``:

* objective ``f(θ) = ½·mean_i (x_iᵀθ − y_i)²`` over the **training** rows (the ``linreg``
  convention, no bias), Hessian ``H = XᵀX/n``, minimiser ``θ*``, residuals at the optimum
  ``r_i = x_iᵀθ* − y_i`` (not zero in general; ``Σ_i r_i x_i = 0``);
* step ``t`` (t = 0, 1, …): draw τ ~ p (i.i.d., independent of everything else), clip it to
  ``τ_t = min(τ, t)`` (no read before θ_0), draw a minibatch of ``b`` row indices uniformly
  **with replacement**, and set ``θ_{t+1} = θ_t − η(τ_t)·g_t``, ``g_t = (1/b)·Σ_j x_j(x_jᵀθ_{t−τ_t}
  − y_j)``, ``η(τ) = lr·s[min(τ, len(s) − 1)]``;
* evaluations: the mean ``½ r²`` over the first ``max_rows`` rows of a split (the simulator's
  default is ``split="test"``, ``max_rows=2000``).

Derivation.  With ``e_t = θ_t − θ*`` and one sampled row ``x`` (residual ``r`` at θ*), the
per-row gradient is ``A e + a`` with ``A = x xᵀ``, ``a = r x``; ``E[A] = H``, ``E[a] = 0``.
The ``b`` rows are i.i.d. (with-replacement sampling), so for a fixed ``e``

    E[g | e]    = H e
    E[g gᵀ | e] = (1 − 1/b)·H E H + (1/b)·( M4[E] + 2·M3[e] + S ),      E = e eᵀ

with the empirical moment maps ``M4[E] = mean_i (x_iᵀ E x_i) x_i x_iᵀ``, ``M3[e] = mean_i
r_i (x_iᵀ e) x_i x_iᵀ`` and ``S = mean_i r_i² x_i x_iᵀ``.  Both are linear in (e, e eᵀ), the
minibatch and τ_t are independent of the past, so the stacked error ``z_t = (e_t, …,
e_{t−T})`` follows an i.i.d. random affine map and its first two moments obey an exact
linear recursion.  Writing ``C_{s,u} = E[e_s e_uᵀ]``, ``m_s = E[e_s]``, ``q`` the clipped law
of τ_t, ``w_τ = q_τ η(τ)``, ``v_τ = q_τ η(τ)²``:

    m_{t+1}        = m_t − H Σ_τ w_τ m_{t−τ}
    C_{t+1,t−k}    = C_{t,t−k} − H Σ_τ w_τ C_{t−τ,t−k}                 (k = 0 … T−1)
    C_{t+1,t+1}    = C_{t,t} − (H V + Vᵀ H) + (1 − 1/b)·H D H + (1/b)·(M4[D] + 2·M3[μ] + ΣvS)
                     with V = Σ_τ w_τ C_{t−τ,t},  D = Σ_τ v_τ C_{t−τ,t−τ},  μ = Σ_τ v_τ m_{t−τ}

and the expected loss on any split is the quadratic ``E f_s(θ* + e) = f_s(θ*) + ∇f_s(θ*)ᵀ m +
½ tr(H_s C)`` (on the training split ``∇f(θ*) = 0``).  This is exact in exact arithmetic; the
simulator's float64 runs agree to rounding (float32 runs only approximately).

Eigenbasis and (non-)decoupling.  Everything is computed in the eigenbasis of ``H`` (so H is
diagonal and ``H V`` is a row scaling).  The **mean** recursion decouples into one scalar
delay recursion per eigen-direction.  The **second moments do not** in general: ``M4`` (the
multiplicative noise: the per-row Hessian ``x xᵀ`` differs from ``H``) and ``M3`` mix
directions, so the full ``(T+1)d × (T+1)d`` recursion is kept (fine for d ≲ 20, T ≲ 60).
They decouple exactly only if the gradient noise does not depend on θ in a direction-mixing
way: d = 1; or an exact (noise-free) gradient; or purely additive noise ``E[ggᵀ|e] = HEH + Σ``
with Σ fixed — which finite-sum least squares with with-replacement minibatches never is
unless every row has ``x xᵀ = H``.  No decoupled shortcut is offered for that reason.

Cost per step: one matrix–vector product of size ``(T+1)² d²`` plus a ``d² × d²`` one;
10⁴ steps with d = 10, T = 40 take about a second.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stalesgd.problems.registry import Problem
from stalesgd.stepsize import StepSizeRule, make_rule

__all__ = [
    "LstsqMoments",
    "TheoryCurve",
    "expected_curve",
    "expected_loss",
    "expected_suboptimality",
    "geometric_pdf",
    "lstsq_moments",
    "normalise_pdf",
    "step_table",
    "zeta_pdf",
]

Arrays = tuple[np.ndarray, ...]


# ----------------------------------------------------------------------------- PDFs of τ


def normalise_pdf(pdf: np.ndarray | Sequence[float]) -> np.ndarray:
    """A PDF (or histogram) of τ as float64 summing to 1, trailing zeros removed.

    Raises ValueError for empty, negative, non-finite or all-zero input.
    """
    p = np.asarray(pdf, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise ValueError("pdf must be a non-empty 1-D array indexed by τ (pdf[t] = P[τ = t])")
    if not np.all(np.isfinite(p)) or np.any(p < 0) or not p.sum() > 0:
        raise ValueError("pdf must hold finite values >= 0 with a positive sum")
    last = int(np.flatnonzero(p)[-1])
    p = p[: last + 1]
    return p / p.sum()


def geometric_pdf(mean: float, tau_max: int) -> np.ndarray:
    """Geometric law on {0, 1, …} with the given mean, truncated at ``tau_max`` and renormalised.

    The law of τ for m workers with exponential compute times has mean m − 1 (DESIGN §6).
    """
    if not (math.isfinite(mean) and mean >= 0):
        raise ValueError(f"mean={mean!r} is not allowed; must be a finite number >= 0")
    if isinstance(tau_max, bool) or int(tau_max) != tau_max or tau_max < 0:
        raise ValueError(f"tau_max={tau_max!r} is not allowed; must be an integer >= 0")
    if mean == 0:
        return np.ones(1)
    q = mean / (1.0 + mean)  # P[τ = k] = (1 − q) q^k
    p = (1.0 - q) * q ** np.arange(int(tau_max) + 1)
    return p / p.sum()


def zeta_pdf(alpha: float, tau_max: int) -> np.ndarray:
    """Heavy-tailed discretised Pareto (zeta) law P[τ = k] ∝ (k + 1)^(−alpha), k = 0..tau_max."""
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha={alpha!r} is not allowed; must be a finite number > 0")
    if isinstance(tau_max, bool) or int(tau_max) != tau_max or tau_max < 0:
        raise ValueError(f"tau_max={tau_max!r} is not allowed; must be an integer >= 0")
    p = (np.arange(int(tau_max) + 1) + 1.0) ** (-float(alpha))
    return p / p.sum()


def step_table(
    stepsize: str | StepSizeRule | np.ndarray | Sequence[float],
    pdf: np.ndarray | Sequence[float],
    *,
    workers: int = 1,
    lr: float = 1.0,
    stepsize_options: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """The fixed table s[0..τmax] a rule uses under ``pdf`` (what the simulator looks up).

    ``stepsize`` is a rule name (with ``stepsize_options``), a
    :class:`~stalesgd.stepsize.StepSizeRule` or a table.  Online rules (``tail``,
    ``tail-original`` or ``model`` without a ``pdf`` option) learn their table from the random
    τ sample, so their expectation is not the output of a fixed linear recursion: they are
    rejected — build them with ``stepsize_options={"pdf": pdf}`` to get the static table.
    """
    p = normalise_pdf(pdf)
    tau_max = p.size - 1
    if isinstance(stepsize, str):
        rule = make_rule(stepsize, workers=workers, lr=lr, **dict(stepsize_options or {}))
    elif isinstance(stepsize, StepSizeRule):
        if stepsize_options:
            raise ValueError("stepsize_options only apply when stepsize is a rule name")
        rule = stepsize
    else:
        if stepsize_options:
            raise ValueError("stepsize_options only apply when stepsize is a rule name")
        s = np.asarray(stepsize, dtype=np.float64).reshape(-1)
        if s.size == 0 or not np.all(np.isfinite(s)) or np.any(s < 0):
            raise ValueError("step-size table must be a non-empty array of finite values >= 0")
        return s.copy()
    if rule.estimator(tau_max) is not None:
        raise ValueError(
            f"step-size rule {rule.name!r} learns its table online from the sampled τ, so the "
            "exact recursion does not apply; pass stepsize_options={'pdf': pdf} for its "
            "static table"
        )
    return np.asarray(rule.table(tau_max), dtype=np.float64).copy()


# ----------------------------------------------------------------------------- data moments


@dataclass(frozen=True)
class LstsqMoments:
    """Empirical moments of a least-squares training set, in the eigenbasis of H.

    ``lam`` eigenvalues of ``H = XᵀX/n`` (ascending), ``Q`` its eigenvectors (columns),
    ``K4`` = mean_i x̃⊗x̃⊗x̃⊗x̃ reshaped ``(d², d²)``, ``K3`` = mean_i r_i x̃⊗x̃⊗x̃ reshaped
    ``(d², d)``, ``S`` = mean_i r_i² x̃ x̃ᵀ (x̃ = Qᵀx), ``theta_star``, ``f_star`` (training
    minimum), ``n`` rows.
    """

    lam: np.ndarray
    Q: np.ndarray
    K4: np.ndarray
    K3: np.ndarray
    S: np.ndarray
    theta_star: np.ndarray
    f_star: float
    n: int

    @property
    def d(self) -> int:
        """Number of parameters."""
        return int(self.lam.size)


def _as_2d(X: Any, y: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{what} X must be a non-empty 2-D array (rows × features); "
                         f"got shape {X.shape}")
    if y.shape != (X.shape[0],):
        raise ValueError(f"{what} y must have shape ({X.shape[0]},); got {y.shape}")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
        raise ValueError(f"{what} X and y must be finite")
    return X, y


def lstsq_moments(X: np.ndarray, y: np.ndarray) -> LstsqMoments:
    """The moments :func:`expected_curve` needs from training rows ``X`` (n × d) and ``y``.

    Cost ``O(n d⁴)`` through one matrix product (fine for d ≲ 30).
    """
    X, y = _as_2d(X, y, "training")
    n, d = X.shape
    theta_star = np.linalg.lstsq(X, y, rcond=None)[0]
    r = X @ theta_star - y
    H = X.T @ X / n
    lam, Q = np.linalg.eigh(H)
    Xt = X @ Q
    Z = (Xt[:, :, None] * Xt[:, None, :]).reshape(n, d * d)
    K4 = Z.T @ Z / n
    K3 = Z.T @ (r[:, None] * Xt) / n
    S = (Xt * (r * r)[:, None]).T @ Xt / n
    return LstsqMoments(lam=lam, Q=Q, K4=K4, K3=K3, S=0.5 * (S + S.T),
                        theta_star=theta_star, f_star=float(0.5 * np.mean(r * r)), n=n)


def _split_arrays(data: Problem | Sequence[Any], split: str,
                  max_rows: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(X_train, y_train, X_eval, y_eval) from a linreg Problem or a tuple of arrays."""
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r} is not allowed; use 'train' or 'test'")
    if isinstance(data, Problem):
        if data.model.name != "linreg":
            raise ValueError(f"the exact recursion needs a linreg problem, not {data.name!r}")
        ds = data.dataset
        Xtr, ytr = ds.features("train"), ds.y_train
        Xev, yev = (ds.features("test"), ds.y_test) if split == "test" else (Xtr, ytr)
    elif isinstance(data, (tuple, list)) and len(data) in (2, 4):
        Xtr, ytr = data[0], data[1]
        if len(data) == 4:
            Xev, yev = (data[2], data[3]) if split == "test" else (data[0], data[1])
        elif split == "test":
            raise ValueError("split='test' needs (X_train, y_train, X_test, y_test); "
                             "got only (X_train, y_train)")
        else:
            Xev, yev = data[0], data[1]
    else:
        raise ValueError("data must be a linreg Problem, (X_train, y_train) or "
                         "(X_train, y_train, X_test, y_test)")
    Xtr, ytr = _as_2d(Xtr, ytr, "training")
    Xev, yev = _as_2d(Xev, yev, f"{split}")
    if Xev.shape[1] != Xtr.shape[1]:
        raise ValueError(f"{split} X has {Xev.shape[1]} features, training X has {Xtr.shape[1]}")
    if max_rows is not None:
        if isinstance(max_rows, bool) or int(max_rows) != max_rows or int(max_rows) <= 0:
            raise ValueError(f"max_rows={max_rows!r} is not allowed; must be a positive integer")
        Xev, yev = Xev[: int(max_rows)], yev[: int(max_rows)]
    return Xtr, ytr, Xev, yev


# ----------------------------------------------------------------------------- the recursion


@dataclass(frozen=True)
class TheoryCurve:
    """Exact expectations at the steps ``t`` (all arrays aligned with ``t``).

    ``loss``: E[f_split(θ_t)], the quantity the simulator's ``evals.loss`` estimates;
    ``gap``: ``loss − min f_split`` (suboptimality on the evaluation split);
    ``train_gap``: E[f(θ_t)] − f* on the training objective (what the published bounds bound);
    ``dist2``: E‖θ_t − θ*‖²; ``grad2``: E‖∇f(θ_t)‖² (full training gradient);
    ``split``, ``max_rows``: the evaluation set used.
    """

    t: np.ndarray
    loss: np.ndarray
    gap: np.ndarray
    train_gap: np.ndarray
    dist2: np.ndarray
    grad2: np.ndarray
    split: str
    max_rows: int | None


def _eval_at(eval_at: Any, updates: int) -> np.ndarray:
    if eval_at is None:
        return np.arange(updates + 1, dtype=np.int64)
    ts = np.asarray(eval_at)
    if ts.ndim == 0:
        ts = ts.reshape(1)
    if ts.ndim != 1 or ts.size == 0 or not np.issubdtype(ts.dtype, np.integer):
        raise ValueError("eval_at must be a non-empty 1-D sequence of integer steps")
    if ts.min() < 0 or ts.max() > updates:
        raise ValueError(f"eval_at steps must lie in 0..updates={updates}; "
                         f"got {int(ts.min())}..{int(ts.max())}")
    return ts.astype(np.int64)


def expected_curve(
    data: Problem | Sequence[Any],
    pdf: np.ndarray | Sequence[float],
    stepsize: str | StepSizeRule | np.ndarray | Sequence[float] = "constant",
    *,
    lr: float,
    batch: int,
    updates: int,
    theta0: np.ndarray,
    eval_at: Sequence[int] | np.ndarray | None = None,
    split: str = "test",
    max_rows: int | None = 2000,
    workers: int = 1,
    stepsize_options: Mapping[str, Any] | None = None,
    moments: LstsqMoments | None = None,
) -> TheoryCurve:
    """Exact E[loss] of :func:`~stalesgd.sim.iid.run_iid_staleness` at the steps ``eval_at``.

    ``data`` is a linreg :class:`Problem` or ``(X_train, y_train[, X_test, y_test])``;
    ``pdf[τ] = P[τ]``; ``stepsize`` as in the simulator (name, rule, or table s[0..]) with
    ``lr``, ``workers`` and ``stepsize_options``; ``batch`` rows drawn with replacement;
    ``theta0`` the start (the simulator's default is ``problem.init_params(seed)``, which
    changes with the seed — pass the same fixed θ_0 to both); ``eval_at`` the steps t ∈
    0..updates (default all); ``split``/``max_rows`` the evaluation set, defaults as the
    simulator's.  ``moments`` may be passed to reuse :func:`lstsq_moments` across calls.
    Diverging settings give inf/NaN values rather than an error.  See the module docstring
    for the recursion and why it is exact.
    """
    if isinstance(updates, bool) or not isinstance(updates, int | np.integer) or updates < 0:
        raise ValueError(f"updates={updates!r} is not allowed; must be an integer >= 0")
    if isinstance(batch, bool) or not isinstance(batch, int | np.integer) or batch < 1:
        raise ValueError(f"batch={batch!r} is not allowed; must be an integer >= 1")
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not (
            math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr={lr!r} is not allowed; must be a finite number > 0")
    p = normalise_pdf(pdf)
    s = step_table(stepsize, p, workers=workers, lr=float(lr), stepsize_options=stepsize_options)
    ts = _eval_at(eval_at, int(updates))
    Xtr, ytr, Xev, yev = _split_arrays(data, split, max_rows)
    mom = lstsq_moments(Xtr, ytr) if moments is None else moments
    d = mom.d
    if mom.n != Xtr.shape[0] or d != Xtr.shape[1]:
        raise ValueError(f"moments are for {mom.n}×{d} data, training X is {Xtr.shape}")
    th0 = np.asarray(theta0, dtype=np.float64)
    if th0.shape != (d,) or not np.all(np.isfinite(th0)):
        raise ValueError(f"theta0 must be a finite ({d},) array; got shape {th0.shape}")

    # evaluation quadratic in the eigenbasis: f_s(θ*+e) = c0 + gᵀẽ + ½ ẽᵀ Hs ẽ
    rs = Xev @ mom.theta_star - yev
    c0 = 0.5 * float(np.mean(rs * rs))
    Xs = Xev @ mom.Q
    g_s = Xs.T @ rs / Xs.shape[0]
    H_s = Xs.T @ Xs / Xs.shape[0]
    try:
        e_min = np.linalg.lstsq(H_s, -g_s, rcond=None)[0]
        f_min_s = c0 + g_s @ e_min + 0.5 * e_min @ H_s @ e_min
    except np.linalg.LinAlgError:  # pragma: no cover - lstsq on finite input
        f_min_s = math.nan

    eta = float(lr) * s[np.minimum(np.arange(p.size), s.size - 1)]  # η(τ), τ = 0..T
    T = p.size - 1
    R = T + 1
    lam = mom.lam
    K4, K3, S = mom.K4, mom.K3, mom.S
    inv_b = 1.0 / int(batch)

    m = np.zeros((R, d))
    C = np.zeros((R, R, d, d))
    e0 = mom.Q.T @ (th0 - mom.theta_star)
    m[0] = e0
    C[0, 0] = np.outer(e0, e0)
    tail = np.cumsum(p[::-1])[::-1]  # P[τ >= j]

    want = np.zeros(int(updates) + 1, dtype=bool)
    want[ts] = True
    out_t, loss, tgap, dist2, grad2 = [], [], [], [], []

    def record(t: int, slot: int) -> None:
        Ct, mt = C[slot, slot], m[slot]
        out_t.append(t)
        loss.append(c0 + g_s @ mt + 0.5 * float(np.sum(H_s * Ct)))
        tgap.append(0.5 * float(lam @ np.diag(Ct)))
        dist2.append(float(np.trace(Ct)))
        grad2.append(float((lam * lam) @ np.diag(Ct)))

    with np.errstate(all="ignore"):
        if want[0]:
            record(0, 0)
        for t in range(int(updates)):
            k_max = min(t, T)  # clipped law: τ_t = min(τ, t)
            q = p[: k_max + 1].copy()
            q[k_max] = tail[k_max]
            w = q * eta[: k_max + 1]
            v = w * eta[: k_max + 1]
            rows = (t - np.arange(k_max + 1)) % R  # slots of θ_{t−τ}
            cur = t % R
            new = (t + 1) % R
            wslot = np.zeros(R)
            np.add.at(wslot, rows, w)
            # V[u] = Σ_τ w_τ C[t−τ, u] for every column slot u
            V = np.tensordot(wslot, C, axes=(0, 0))
            Vm = wslot @ m
            row = C[cur] - lam[None, :, None] * V  # C[t+1, u] for every u
            Vt = V[cur]
            HV = lam[:, None] * Vt
            D = np.tensordot(v, C[rows, rows], axes=(0, 0))
            mu = v @ m[rows]
            noise = (1.0 - inv_b) * (lam[:, None] * D * lam[None, :]) + inv_b * (
                (K4 @ D.reshape(-1)).reshape(d, d)
                + 2.0 * (K3 @ mu).reshape(d, d)
                + v.sum() * S)
            diag = C[cur, cur] - HV - HV.T + noise
            m_new = m[cur] - lam * Vm
            # slots of times < t+1−T that would be read as θ_{t+1−k} are overwritten below;
            # columns of not-yet-existing times carry no weight and are zeroed for hygiene
            if t + 1 < T:
                row[(np.arange(t + 2, R))] = 0.0
            C[new, :] = row
            C[:, new] = np.swapaxes(row, 1, 2)
            C[new, new] = 0.5 * (diag + diag.T)
            m[new] = m_new
            if want[t + 1]:
                record(t + 1, new)

    order = np.argsort(np.asarray(out_t), kind="stable")
    t_arr = np.asarray(out_t, dtype=np.int64)[order]
    loss_arr = np.asarray(loss)[order]
    # re-expand duplicates in eval_at (rare): map each requested t to its value
    pos = np.searchsorted(t_arr, ts)
    loss_arr, tg, d2 = loss_arr[pos], np.asarray(tgap)[order][pos], np.asarray(dist2)[order][pos]
    g2 = np.asarray(grad2)[order][pos]
    return TheoryCurve(t=ts.copy(), loss=loss_arr, gap=loss_arr - f_min_s,
                       train_gap=tg, dist2=d2, grad2=g2, split=split,
                       max_rows=None if max_rows is None else int(max_rows))


def expected_loss(data: Problem | Sequence[Any], pdf: np.ndarray | Sequence[float],
                  stepsize: str | StepSizeRule | np.ndarray | Sequence[float] = "constant",
                  **kwargs: Any) -> np.ndarray:
    """E[f_split(θ_t)] at ``eval_at``: directly comparable with the simulator's ``evals.loss``.

    Same arguments as :func:`expected_curve`.
    """
    return expected_curve(data, pdf, stepsize, **kwargs).loss


def expected_suboptimality(data: Problem | Sequence[Any], pdf: np.ndarray | Sequence[float],
                           stepsize: str | StepSizeRule | np.ndarray | Sequence[float] = "constant",
                           **kwargs: Any) -> np.ndarray:
    """E[f_split(θ_t)] − min f_split at ``eval_at`` (on ``split="train"``: E[f(θ_t)] − f*).

    Same arguments as :func:`expected_curve`; note its default ``split="test"`` mirrors the
    simulator, so pass ``split="train"`` for the training suboptimality the bounds speak of.
    """
    return expected_curve(data, pdf, stepsize, **kwargs).gap
