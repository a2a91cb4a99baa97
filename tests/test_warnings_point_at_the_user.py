"""Warnings name the user's line (not skgfe's or scikit-learn's wrappers)."""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV

from skgfe import Autoencoder, GradientFlowEncoder, VariationalAutoencoder

ESTIMATORS = [GradientFlowEncoder, Autoencoder, VariationalAutoencoder]


def record(function):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        function()
    return caught


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_max_iter_warning_points_at_fit_and_names_the_estimator(cls):
    X = np.random.default_rng(0).normal(size=(40, 5))
    model = cls(n_components=2, hidden_layer_sizes=(4,), max_iter=2, random_state=0)
    caught = record(lambda: model.fit(X))
    (warning,) = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert warning.filename == __file__
    assert cls.__name__ in str(warning.message) and "Raise max_iter" in str(
        warning.message
    )


@pytest.mark.parametrize(
    "X, n_components, match",
    [
        (np.ones((10, 4)), 2, "are equal"),
        (np.random.default_rng(0).random((4, 8)), 5, "not below the number of"),
    ],
)
def test_degenerate_training_data_warn_at_the_users_line(X, n_components, match):
    model = GradientFlowEncoder(n_components=n_components, max_iter=2)
    caught = record(lambda: model.fit(X))
    (warning,) = [w for w in caught if match in str(w.message)]
    assert warning.category is UserWarning and warning.filename == __file__


def test_warnings_inside_a_grid_search_point_at_its_fit():
    X = np.random.default_rng(0).normal(size=(30, 5))
    search = GridSearchCV(
        GradientFlowEncoder(hidden_layer_sizes=(4,), max_iter=2, random_state=0),
        {"n_components": [2]},
        cv=2,
    )
    caught = record(lambda: search.fit(X))
    converge = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert converge and all(w.filename == __file__ for w in converge)


def test_hidden_layer_sizes_takes_an_int_as_mlpregressor_does():
    X = np.random.default_rng(0).normal(size=(20, 5))
    model = GradientFlowEncoder(n_components=2, hidden_layer_sizes=16, max_iter=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X)
    assert model.decoder_.layers[0].out_features == 16


def test_one_dimensional_input_error_is_short():
    spectrum = np.random.default_rng(0).random(4000)
    with pytest.raises(ValueError, match=r"1D array of shape \(4000,\)") as error:
        GradientFlowEncoder(max_iter=1).fit(spectrum)
    assert len(str(error.value)) < 300
