"""Tests of skgfe.metrics."""

import numpy as np
import pytest
from numpy.testing import assert_allclose
from sklearn.dummy import DummyRegressor
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import GroupKFold, cross_val_score

from skgfe.metrics import relative_l1_error, relative_l1_scorer

Y_TRUE = np.array([[1.0, -2.0, 0.0], [0.5, 0.5, -3.0]])
Y_PRED = np.array([[1.5, -2.0, 1.0], [0.5, 0.0, -1.0]])
# |errors|: row 0: 0.5 + 0 + 1 = 1.5; row 1: 0 + 0.5 + 2 = 2.5
# |y_true|: row 0: 1 + 2 + 0 = 3;     row 1: 0.5 + 0.5 + 3 = 4


def test_pooled_value():
    assert relative_l1_error(Y_TRUE, Y_PRED) == pytest.approx(4.0 / 7.0, rel=1e-15)
    assert isinstance(relative_l1_error(Y_TRUE, Y_PRED), float)
    # Not symmetric: the denominator is the truth.
    assert relative_l1_error(Y_PRED, Y_TRUE) == pytest.approx(4.0 / 6.0, rel=1e-15)


def test_per_sample_values():
    errors = relative_l1_error(Y_TRUE, Y_PRED, per_sample=True)
    assert errors.shape == (2,)
    assert_allclose(errors, [0.5, 0.625], rtol=1e-15)
    # The pooled error is the |y_true|-weighted mean of the per-sample ones.
    assert relative_l1_error(Y_TRUE, Y_PRED) == pytest.approx(
        np.average(errors, weights=[3.0, 4.0]), rel=1e-15
    )


def test_sample_weight():
    assert relative_l1_error(Y_TRUE, Y_PRED, sample_weight=[1.0, 0.0]) == 0.5
    assert relative_l1_error(Y_TRUE, Y_PRED, sample_weight=[0.0, 2.0]) == 0.625
    # Weights 2 and 1 equal duplicating the first row.
    duplicated = relative_l1_error(Y_TRUE[[0, 0, 1]], Y_PRED[[0, 0, 1]])
    weighted = relative_l1_error(Y_TRUE, Y_PRED, sample_weight=[2, 1])
    assert weighted == pytest.approx(duplicated, rel=1e-15)
    assert weighted == pytest.approx((2 * 1.5 + 2.5) / (2 * 3 + 4), rel=1e-15)


def test_one_dimensional_and_lists():
    y_true, y_pred = [2.0, -1.0, 1.0], [1.0, -1.0, 2.0]
    assert relative_l1_error(y_true, y_pred) == pytest.approx(0.5, rel=1e-15)
    assert_allclose(relative_l1_error(y_true, y_pred, per_sample=True), [0.5, 0, 1])


def test_perfect_prediction_and_scale_invariance():
    assert relative_l1_error(Y_TRUE, Y_TRUE) == 0.0
    assert relative_l1_error(10 * Y_TRUE, 10 * Y_PRED) == pytest.approx(
        relative_l1_error(Y_TRUE, Y_PRED), rel=1e-14
    )
    # Predicting zero gives exactly 1.
    assert relative_l1_error(Y_TRUE, np.zeros_like(Y_TRUE)) == 1.0


@pytest.mark.parametrize(
    "y_true, y_pred, kwargs, match",
    [
        (Y_TRUE, Y_PRED[:, :2], {}, "same shape"),
        (Y_TRUE, Y_PRED[:1], {}, "inconsistent numbers of samples"),
        (Y_TRUE, Y_PRED, {"sample_weight": [1.0]}, "inconsistent numbers"),
        (Y_TRUE, Y_PRED, {"sample_weight": [1.0, -1.0]}, "non-negative"),
        (Y_TRUE, Y_PRED, {"sample_weight": [0.0, 0.0]}, "undefined"),
        (Y_TRUE, Y_PRED, {"sample_weight": [1, 1], "per_sample": True}, "per_sample"),
        (np.zeros((2, 3)), Y_PRED, {}, "undefined"),
        (
            np.vstack([Y_TRUE[0], 0 * Y_TRUE[1]]),
            Y_PRED,
            {"per_sample": True},
            "index 1",
        ),
        (Y_TRUE, np.where(Y_PRED > 1, np.nan, Y_PRED), {}, "NaN"),
        (np.zeros((2, 3, 1)), np.zeros((2, 3, 1)), {}, "dim 3"),
    ],
)
def test_invalid_inputs(y_true, y_pred, kwargs, match):
    with pytest.raises(ValueError, match=match):
        relative_l1_error(y_true, y_pred, **kwargs)


def test_scorer_sign_and_value():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(40, 3))
    y = X @ rng.normal(size=(3, 2)) + 5.0
    dummy = DummyRegressor().fit(X, y)
    expected = relative_l1_error(y, dummy.predict(X))
    assert expected > 0.05
    assert relative_l1_scorer(dummy, X, y) == pytest.approx(-expected, rel=1e-15)
    # Greater is better: the exact linear model beats the constant one.
    exact = LinearRegression().fit(X, y)
    assert relative_l1_scorer(exact, X, y) > relative_l1_scorer(dummy, X, y)
    assert relative_l1_scorer(exact, X, y) == pytest.approx(0.0, abs=1e-12)


def test_scorer_in_cross_val_score():
    rng = np.random.RandomState(1)
    X = rng.normal(size=(30, 2))
    y = 1.0 + X[:, 0] ** 2
    groups = np.repeat(np.arange(10), 3)
    cv = GroupKFold(n_splits=5)
    scores = cross_val_score(
        DummyRegressor(), X, y, groups=groups, cv=cv, scoring=relative_l1_scorer
    )
    assert np.all(scores < 0)
    for score, (train, test) in zip(scores, cv.split(X, y, groups)):
        pred = np.full(len(test), y[train].mean())
        assert score == pytest.approx(-relative_l1_error(y[test], pred), rel=1e-14)
