"""The TwoNN estimate behind ``code_prior_weight='auto'``."""

import numpy as np
import pytest
import torch

from skgfe import GradientFlowEncoder
from skgfe._gfe import AUTO_CODE_PRIOR_WEIGHT
from skgfe._intrinsic_dimension import MAX_SAMPLES, MIN_SAMPLES, two_nn_dimension


def _flat(n_samples, dimension, n_features=12, seed=0):
    """Uniform samples of a ``dimension``-dimensional linear subspace."""
    rng = np.random.RandomState(seed)
    basis = np.linalg.qr(rng.normal(size=(n_features, dimension)))[0]
    return rng.uniform(size=(n_samples, dimension)) @ basis.T


@pytest.mark.parametrize("dimension", [1, 3, 6])
def test_it_recovers_the_dimension_of_a_flat_manifold(dimension):
    # The maximum-likelihood estimate has a relative standard error of
    # 1 / sqrt(n): about 3% with 1000 samples.
    estimate = two_nn_dimension(_flat(1000, dimension))
    assert abs(estimate - dimension) < 0.15 * dimension + 0.1


def test_a_curved_manifold_counts_its_own_dimensions_not_the_ambient_ones():
    t = np.random.RandomState(0).uniform(0, 2 * np.pi, size=800)
    circle = np.c_[np.cos(t), np.sin(t), np.cos(2 * t), np.sin(3 * t)]
    assert abs(two_nn_dimension(circle) - 1) < 0.15


def test_rows_with_missing_entries_and_duplicates_are_left_out():
    X = _flat(300, 2)
    reference = two_nn_dimension(X)
    gaps = X[:50].copy()
    gaps[np.arange(50), np.arange(50) % 12] = np.nan
    with_gaps = np.vstack([X, gaps])
    assert two_nn_dimension(with_gaps) == reference
    # A duplicate's first neighbour is at distance 0: both copies leave the
    # sum (their log ratio is infinite) but the rest still estimates.
    duplicated = np.vstack([X, X[:1]])
    assert abs(two_nn_dimension(duplicated) - reference) < 0.1
    assert np.isfinite(two_nn_dimension(duplicated))


def test_too_few_samples_give_no_estimate():
    assert two_nn_dimension(_flat(MIN_SAMPLES - 1, 2)) is None
    assert two_nn_dimension(np.ones((50, 3))) is None  # all duplicates
    X = _flat(50, 2)
    X[: 50 - MIN_SAMPLES + 1, 0] = np.nan
    assert two_nn_dimension(X) is None


def test_large_data_use_a_deterministic_strided_subset():
    X = _flat(3 * MAX_SAMPLES + 7, 3)
    assert two_nn_dimension(X) == two_nn_dimension(X[::4])


def test_equal_neighbour_distances_give_a_huge_dimension_not_an_error():
    # A regular polygon: every sample's second neighbour is as far as its
    # first (up to rounding), sum(log mu) ~ 0.
    angles = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    estimate = two_nn_dimension(np.c_[np.cos(angles), np.sin(angles)])
    assert estimate is None or estimate > 1e3
    # An integer grid: every point has two neighbours at distance exactly 1,
    # sum(log mu) = 0, no finite estimate.
    grid = np.mgrid[0:5, 0:5].reshape(2, -1).T.astype(float)
    assert two_nn_dimension(grid) is None


def _auto_fit(n_components, **params):
    # A curved 2-dimensional manifold in 10 features.
    rng = np.random.RandomState(1)
    X = np.tanh(rng.normal(size=(300, 2)) @ rng.normal(size=(2, 16))) @ rng.normal(
        size=(16, 10)
    )
    common = dict(
        hidden_layer_sizes=(8,), max_iter=3, early_stopping=False, random_state=0
    )
    return X, GradientFlowEncoder(n_components, **common, **params).fit(X)


def test_auto_switches_the_prior_on_for_components_beyond_twice_the_dimension():
    X, many = _auto_fit(5, code_prior_weight="auto")
    assert 1.6 < many.intrinsic_dimension_ < 2.4
    assert many.code_prior_weight_ == AUTO_CODE_PRIOR_WEIGHT
    # ... and trains exactly as the explicit weight does.
    _, explicit = _auto_fit(5, code_prior_weight=AUTO_CODE_PRIOR_WEIGHT)
    assert explicit.code_prior_weight_ == AUTO_CODE_PRIOR_WEIGHT
    assert explicit.intrinsic_dimension_ is None
    assert many.loss_curve_ == explicit.loss_curve_
    torch.testing.assert_close(
        many.decoder_.state_dict(), explicit.decoder_.state_dict(), rtol=0, atol=0
    )
    _, without = _auto_fit(5, code_prior_weight=0.0)
    assert without.loss_curve_[1:] != many.loss_curve_[1:]
    # Close to the dimension the prior stays off: the fit equals weight 0.
    _, few = _auto_fit(3, code_prior_weight="auto")
    assert few.code_prior_weight_ == 0.0
    _, off = _auto_fit(3, code_prior_weight=0.0)
    assert few.loss_curve_ == off.loss_curve_
    torch.testing.assert_close(
        few.decoder_.state_dict(), off.decoder_.state_dict(), rtol=0, atol=0
    )


def test_a_warm_start_keeps_its_estimate_and_a_number_replaces_it():
    X, model = _auto_fit(5, code_prior_weight="auto", warm_start=True)
    estimate = model.intrinsic_dimension_
    model.fit(X[:60])  # a resumed fit does not estimate again
    assert model.intrinsic_dimension_ == estimate
    model.set_params(code_prior_weight=0.05).fit(X)
    assert model.code_prior_weight_ == 0.05 and model.intrinsic_dimension_ is None
