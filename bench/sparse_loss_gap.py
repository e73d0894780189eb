"""Why scikit-learn's SGDClassifier ends lower than stalesgd at the same step and samples.

``bench/sparse_hogwild.py`` compares final training losses of one-worker Hogwild! (batch 1)
and ``SGDClassifier(loss="log_loss", learning_rate="constant")`` on the synthetic text-like
set.  The two differ in two ways besides the engine: stalesgd's workers draw each minibatch
uniformly *with replacement* by default (``--sampling epochs`` walks reshuffled epochs
instead), scikit-learn walks a fresh permutation of the rows every epoch, and on sparse
input it moves the intercept with 0.01 of the step (``SPARSE_INTERCEPT_DECAY``).  This
script runs one plain compiled SGD loop in the four combinations, for several seeds, and
prints the final mean training loss of each (the problem's own loss kernel), beside
scikit-learn's.

    python bench/sparse_loss_gap.py                 # 5 epochs, η = 1, seeds 0 1 2
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
from numba import njit

from stalesgd.problems import make_problem


@njit(cache=False)
def _sgd(indptr, indices, values, y, n_features, lr, epochs, reshuffle, bias_step, seed):
    """Plain logistic-regression SGD, one row per step; returns (weights, bias)."""
    np.random.seed(seed)
    w = np.zeros(n_features + 1)
    n = indptr.shape[0] - 1
    order = np.arange(n)
    for _ in range(epochs):
        if reshuffle:
            np.random.shuffle(order)
        for i in range(n):
            r = order[i] if reshuffle else np.random.randint(0, n)
            s = w[n_features]
            for p in range(indptr[r], indptr[r + 1]):
                s += values[p] * w[indices[p]]
            e = np.exp(-abs(s))
            g = (1.0 / (1.0 + e) if s >= 0 else e / (1.0 + e)) - y[r]
            for p in range(indptr[r], indptr[r + 1]):
                w[indices[p]] -= lr * g * values[p]
            w[n_features] -= lr * g * bias_step
    return w


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--lr", type=float, default=1.0)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--n-train", type=int, default=20000)
    ap.add_argument("--n-features", type=int, default=20000)
    args = ap.parse_args()
    prob = make_problem("logreg-sparse", n_train=args.n_train, n_test=1000,
                        n_features=args.n_features, nnz=50)
    d = prob.dataset
    indptr, indices, values, _ = d.inputs("train")
    y = d.y_train.astype(np.float64)
    print(f"logreg-sparse {args.n_train} × {args.n_features}, {args.epochs} epochs, "
          f"η = {args.lr}: final mean training loss per seed")
    for reshuffle in (False, True):
        for bias_step in (1.0, 0.01):
            losses = [prob.evaluate(_sgd(indptr, indices, values, y, args.n_features, args.lr,
                                         args.epochs, reshuffle, bias_step, s)
                                    .astype(prob.model.dtype), "train")[0]
                      for s in args.seeds]
            rows = "with replacement," if not reshuffle else "reshuffled epochs,"
            print(f"  {rows:<18} intercept at {bias_step:<4} of the step: "
                  + "  ".join(f"{v:.4f}" for v in losses))
    from scipy.sparse import csr_matrix
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import SGDClassifier

    X = csr_matrix((values, indices, indptr), shape=(args.n_train, args.n_features))
    losses = []
    for s in args.seeds:
        clf = SGDClassifier(loss="log_loss", penalty=None, learning_rate="constant",
                            eta0=args.lr, max_iter=args.epochs, tol=None, random_state=s)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(X, d.y_train)
        theta = np.concatenate([clf.coef_.ravel(), clf.intercept_]).astype(prob.model.dtype)
        losses.append(prob.evaluate(theta, "train")[0])
    print("  scikit-learn SGDClassifier (reshuffled, intercept at 0.01):  "
          + "  ".join(f"{v:.4f}" for v in losses))


if __name__ == "__main__":
    main()
