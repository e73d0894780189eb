"""Models over one flat parameter vector, with Numba loss and gradient kernels."""

from stalesgd.problems.base import DTYPES, INIT_SCHEMES, Model, resolve_dtype
from stalesgd.problems.linreg import LinearRegression
from stalesgd.problems.logreg import LogisticRegression
from stalesgd.problems.mlp import MLP
from stalesgd.problems.registry import DATASETS, MODELS, Problem, make_problem, problem_names
from stalesgd.problems.softmax import SoftmaxRegression

__all__ = [
    "DATASETS",
    "DTYPES",
    "INIT_SCHEMES",
    "MLP",
    "MODELS",
    "LinearRegression",
    "LogisticRegression",
    "Model",
    "Problem",
    "SoftmaxRegression",
    "make_problem",
    "problem_names",
    "resolve_dtype",
]
