"""Multinomial (softmax) logistic regression: an MLP with no hidden layer.

Parameters: ``W1`` of shape ``(d, K)`` then ``b1`` of shape ``(K,)``; loss is
the mean softmax cross-entropy (log-sum-exp).  It shares the MLP kernels,
which with ``dims = [1, d, K]`` compute exactly ``X @ W + b``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stalesgd.problems.mlp import MLP


@dataclass(kw_only=True)
class SoftmaxRegression(MLP):
    """Linear classifier with softmax cross-entropy; default init Glorot uniform, bias 0.

    ``SoftmaxRegression(n_features=d, n_classes=K, dtype="float64")``.
    """

    hidden: tuple[int, ...] = field(default=(), init=False)

    def __post_init__(self) -> None:
        self.hidden = ()
        super().__post_init__()
        self.name = "softmax"
