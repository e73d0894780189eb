"""Models over one flat parameter vector, with Numba loss and gradient kernels.

Models from outside the package: :func:`register_model` (in code) or an entry point in the
group :data:`ENTRY_POINT_GROUP` (an installed package); :mod:`stalesgd.problems.testing`
checks a model's gradient against finite differences.
"""

from stalesgd.problems.base import DTYPES, INIT_SCHEMES, Model, resolve_dtype
from stalesgd.problems.linreg import LinearRegression
from stalesgd.problems.logreg import LogisticRegression
from stalesgd.problems.mlp import MLP
from stalesgd.problems.plugins import ENTRY_POINT_GROUP, ModelPlugin
from stalesgd.problems.registry import (
    DATASETS,
    MODELS,
    Problem,
    make_problem,
    model_names,
    problem_names,
    register_model,
    unregister_model,
)
from stalesgd.problems.softmax import SoftmaxRegression

__all__ = [
    "DATASETS",
    "DTYPES",
    "ENTRY_POINT_GROUP",
    "INIT_SCHEMES",
    "MLP",
    "MODELS",
    "LinearRegression",
    "LogisticRegression",
    "Model",
    "ModelPlugin",
    "Problem",
    "SoftmaxRegression",
    "make_problem",
    "model_names",
    "problem_names",
    "register_model",
    "resolve_dtype",
    "unregister_model",
]
