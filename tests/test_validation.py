"""The option checks every part of the package shares (stalesgd.validation), and the shapes of
problems and data sets known before anything is loaded (check_problem, check_dataset)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stalesgd.data import check_dataset, load_dataset
from stalesgd.problems.registry import check_problem, make_problem
from stalesgd.validation import (
    OptionError,
    choice,
    flag,
    integer,
    known_keys,
    number,
    short_repr,
    table,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.mark.parametrize("value", [True, False, 2.0, "2", None, [2], np.float64(2.0)])
def test_integer_refuses_what_is_not_an_integer(value):
    with pytest.raises(OptionError, match=r"workers = .* is an? [A-Za-z]+, not an integer; "
                                          r"allowed: an integer >= 1"):
        integer(value, "workers", 1)


def test_integer_takes_numpy_integers_and_checks_the_range():
    assert integer(np.int64(3), "k", 1, 3) == 3 and type(integer(np.int32(2), "k")) is int
    with pytest.raises(OptionError, match=r"k = 4 is out of range; allowed: an integer in 1..3"):
        integer(4, "k", 1, 3)
    with pytest.raises(OptionError, match=r"allowed: an integer in 0..2\^63-1"):
        integer(2**63, "seed", 0, 2**63 - 1)


@given(st.one_of(st.integers(), st.floats(), st.booleans(), st.text(max_size=5), st.none()))
def test_number_is_a_finite_float_or_an_error_naming_the_key(value):
    try:
        got = number(value, "lr", positive=True)
    except OptionError as exc:
        assert str(exc).startswith(f"lr = {short_repr(value)} ")
        assert exc.key == "lr" and exc.value is value
        return
    assert isinstance(value, int | float) and not isinstance(value, bool)
    assert math.isfinite(got) and got > 0 and got == float(value)


def test_flag_choice_table_and_known_keys():
    assert flag(np.bool_(True), "quirks") is True
    with pytest.raises(OptionError, match="quirks = 1 is an integer, not a boolean"):
        flag(1, "quirks")
    assert choice("tail", "rule", ("constant", "tail")) == "tail"
    with pytest.raises(OptionError, match="rule = 'x' is not allowed; allowed: constant, tail"):
        choice("x", "rule", ("constant", "tail"))
    with pytest.raises(OptionError, match=r"stop.forever = true is an unknown key; allowed: "
                                          r"keys in \[stop\]: updates, seconds"):
        table({"forever": True}, "stop", ("updates", "seconds"))
    with pytest.raises(OptionError, match=r"stepsize.options.beta = 3 is an unknown option; "
                                          r"allowed: options of rule x: a, b"):
        known_keys({"beta": 3}, "stepsize.options", ("b", "a"), "options of rule x")


def test_errors_move_under_a_prefix_and_quote_huge_values_briefly():
    err = OptionError("window", 0, "an integer >= 1", "is out of range").under("stepsize.options")
    assert str(err) == ("stepsize.options.window = 0 is out of range; allowed: an integer >= 1")
    huge = list(range(10**5))
    message = str(OptionError("pdf", huge, "weights"))
    assert len(message) < 400 and "chars)" in message


# --- problems and data sets, known before they are loaded -----------------------------------


@pytest.mark.parametrize(("name", "options"), [
    ("linreg-synthetic", {"n_features": 7, "n_train": 300}),
    ("logreg-synthetic", {"n_features": 9, "n_test": 50}),
    ("softmax-synthetic", {"n_classes": 4}),
    ("mlp-synthetic", {"hidden": [5, 3], "n_train": 200, "seed": 4}),
    ("lenet-synthetic", {"n_train": 64, "n_test": 32, "fc84": False}),
])
def test_check_problem_says_what_make_problem_builds(name, options):
    shape = check_problem(name, options, "float32")
    problem = make_problem(name, dtype="float32", **options)
    d = problem.dataset
    assert shape.n_params == problem.model.n_params
    assert (shape.data.n_train, shape.data.n_test, shape.data.n_classes) == (
        d.n_train, d.n_test, d.n_classes)
    assert tuple(shape.data.input_shape) == tuple(d.input_shape)
    assert shape.data.nbytes("float32") == d.X_train.nbytes + d.X_test.nbytes


def test_check_dataset_of_a_file_based_set_reads_no_file(monkeypatch):
    def no_reading(*args, **kwargs):
        raise AssertionError("a file was read")

    monkeypatch.setattr(Path, "read_bytes", no_reading)
    shape, options = check_dataset("mnist", n_train=1000)
    assert (shape.n_train, shape.n_test, shape.n_classes, shape.input_shape) == (
        1000, 10000, 10, (1, 28, 28))
    assert shape.packed and options == {"n_train": 1000}
    cifar, _ = check_dataset("cifar10")
    assert (cifar.n_train, cifar.n_test, cifar.input_shape) == (50000, 10000, (3, 32, 32))
    assert check_problem("mlp-mnist", {"hidden": [8]}).n_params == 784 * 8 + 8 + 8 * 10 + 10


def test_check_dataset_matches_the_loaded_mnist():
    if not (SHARED / "mnist").is_dir():
        pytest.skip(f"shared data {SHARED / 'mnist'} is absent")
    shape, _ = check_dataset("mnist", n_test=500)
    data = load_dataset("mnist", data_dir=SHARED, n_test=500)
    assert (shape.n_train, shape.n_test, shape.n_classes) == (data.n_train, data.n_test, 10)


@pytest.mark.parametrize(("name", "options", "key", "words"), [
    ("logreg-mnist", {}, "name", "logreg needs 2 classes"),
    ("linreg-mnist", {}, "name", "needs a regression data set"),
    ("softmax-synthetic", {"kind": "regression"}, "name", "needs a classification data set"),
    ("lenet-synthetic", {"kind": "classification"}, "name", "lenet needs images"),
    ("lenet-synthetic", {"input_shape": [1, 20, 20]}, "name", "lenet needs images"),
    ("mlp-synthetic", {"hidden": [70000]}, "hidden[0]", "1..65536"),
    ("mlp-synthetic", {"hidden": [[3]]}, "hidden[0]", "integer"),
    ("mlp-synthetic", {"fc84": True}, "fc84", "unknown option"),
    ("lenet-synthetic", {"fc84": "yes"}, "fc84", "boolean"),
    ("mlp-synthetic", {"init": "lecun"}, "init", "glorot"),
    ("mlp-synthetic", {"kind": "tabular"}, "kind", "images"),
    ("logreg-synthetic", {"n_features": 10**9}, "n_train", "too large"),
    ("mlp-mnist", {"normalize": "zscore"}, "normalize", "standard, unit"),
])
def test_check_problem_refuses_with_the_key(name, options, key, words):
    with pytest.raises(OptionError) as info:
        check_problem(name, options)
    assert info.value.key == key and words in str(info.value)
