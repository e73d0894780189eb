"""The in-memory form every data set takes, real or synthetic."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Dataset:
    """Train and test arrays ready for the kernels.

    ``X_*`` are 2-D, C-contiguous, of the requested float dtype (images
    flattened channel-major, C×H×W); ``y_*`` are int64 labels for
    classification (``n_classes > 0``) or floats of the same dtype for
    regression (``n_classes == 0``).  ``input_shape`` is ``(C, H, W)`` for
    images and ``(d,)`` otherwise.  ``meta`` carries generator facts such as
    the true weights of a synthetic regression.
    """

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    input_shape: tuple[int, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return int(self.X_train.shape[1])
