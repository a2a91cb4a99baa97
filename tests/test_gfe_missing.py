"""GradientFlowEncoder and GradientFlowImputer on samples with missing entries."""

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skgfe import GradientFlowEncoder, GradientFlowImputer, load, save

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def manifold(n_samples, seed, n_features=20, noise=0.05):
    """A fixed tanh curve-surface of a 2-D code plus Gaussian noise of known spread."""
    weights = np.random.RandomState(123)
    first, second = weights.randn(2, 16), weights.randn(16, n_features) / 2
    rng = np.random.RandomState(seed)
    clean = np.tanh(rng.randn(n_samples, 2) @ first) @ second
    return clean + noise * rng.randn(n_samples, n_features)


def hide(X, rate, seed):
    missing = np.random.RandomState(seed).uniform(size=X.shape) < rate
    missing[:, 0] = False  # every row observes an entry
    return np.where(missing, np.nan, X), missing


@pytest.fixture(scope="module")
def fitted():
    """A small GFE fitted on complete samples, and held-out samples."""
    X = manifold(400, 0)
    gfe = GradientFlowEncoder(n_components=2, hidden_layer_sizes=(16,), random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gfe.fit(X[:300])
    return gfe, X[300:]


def test_complete_rows_are_encoded_as_if_no_row_missed_entries(fitted):
    gfe, X = fitted
    X_missing, missing = hide(X, 0.3, 1)
    complete = np.arange(len(X)) % 3 == 0
    X_missing[complete] = X[complete]
    np.testing.assert_array_equal(
        gfe.transform(X_missing)[complete], gfe.transform(X[complete])
    )
    # A row's code does not depend on its batch mates, with gaps too.
    np.testing.assert_array_equal(
        gfe.transform(X_missing[5:6]), gfe.transform(X_missing)[5:6]
    )


def test_missing_entries_are_filled_and_scored_on_observed_entries(fitted):
    gfe, X = fitted
    X_missing, missing = hide(X, 0.3, 2)
    X_hat = gfe.inverse_transform(gfe.transform(X_missing))
    assert np.isfinite(X_hat).all()
    np.testing.assert_array_equal(gfe.reconstruct(X_missing), X_hat)
    # The score averages the observed entries only.
    expected = -np.nanmean((X_missing - X_hat) ** 2, axis=1)
    np.testing.assert_allclose(gfe.score_samples(X_missing), expected, rtol=1e-12)
    # Filled entries are far better than the training means.
    error = np.mean((X_hat[missing] - X[missing]) ** 2)
    baseline = np.mean((gfe.mean_[np.nonzero(missing)[1]] - X[missing]) ** 2)
    assert error < 0.3 * baseline


def test_input_is_not_modified(fitted):
    gfe, X = fitted
    X_missing, _ = hide(X, 0.3, 3)
    before = X_missing.copy()
    gfe.transform(X_missing)
    gfe.reconstruct(X_missing, return_std=True)
    np.testing.assert_array_equal(X_missing, before)


@pytest.mark.parametrize("method", ["fit", "transform", "score"])
def test_rows_without_observed_entries_and_inf_are_refused(fitted, method):
    gfe, X = fitted
    X = X.copy()
    X[3] = np.nan
    target = GradientFlowEncoder(max_iter=2) if method == "fit" else gfe
    with pytest.raises(ValueError, match=r"sample\(s\) have none \(rows 3\)"):
        getattr(target, method)(X)
    X[3] = 1.0
    X[4, 2] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        getattr(target, method)(X)


def test_a_feature_never_observed_in_fit_is_refused():
    X = manifold(50, 1)
    X[:, 4] = np.nan
    with pytest.raises(ValueError, match=r"features \[4\] have none"):
        GradientFlowEncoder(max_iter=2).fit(X)


def test_fit_on_incomplete_samples_learns_and_saves(tmp_path):
    X = manifold(400, 2)
    X_missing, missing = hide(X[:300], 0.3, 4)
    gfe = GradientFlowEncoder(n_components=2, hidden_layer_sizes=(16,), random_state=0)
    gfe.fit(X_missing)
    assert gfe.n_iter_ > 1 and np.isfinite(gfe.loss_curve_).all()
    assert gfe.noise_variance_.shape == (20,)
    X_test, test_missing = hide(X[300:], 0.3, 5)
    X_hat = gfe.reconstruct(X_test)
    error = np.mean((X_hat[test_missing] - X[300:][test_missing]) ** 2)
    assert error < 0.3 * np.var(X[300:], axis=0).mean()
    restored = load(save(gfe, tmp_path / "model"))
    for a, b in zip(
        restored.reconstruct(X_test, return_std=True),
        gfe.reconstruct(X_test, return_std=True),
    ):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(restored.noise_variance_, gfe.noise_variance_)


def test_bce_with_missing_entries():
    X = (manifold(200, 3) > 0).astype(float)
    X_missing, _ = hide(X, 0.2, 6)
    gfe = GradientFlowEncoder(
        n_components=2,
        loss="bce",
        hidden_layer_sizes=(16,),
        max_iter=20,
        random_state=0,
    ).fit(X_missing)
    X_hat, std = gfe.reconstruct(X_missing, return_std=True)
    assert ((X_hat >= 0) & (X_hat <= 1)).all()
    assert np.isfinite(std).all() and (std >= 0).all()


def test_error_bars_shrink_with_observed_entries_and_need_fit(fitted):
    gfe, X = fitted
    few, _ = hide(X, 0.8, 7)
    many, _ = hide(X, 0.1, 7)
    _, std_few = gfe.encode(few, return_std=True)
    _, std_many = gfe.encode(many, return_std=True)
    assert np.median(std_few) > 2 * np.median(std_many)
    Z, std, info = gfe.encode(many, return_std=True, return_info=True)
    np.testing.assert_array_equal(Z, gfe.transform(many))
    assert std.shape == Z.shape and set(info) >= {"loss", "converged"}
    partial = GradientFlowEncoder(n_components=2, hidden_layer_sizes=(16,))
    partial.partial_fit(X)
    with pytest.raises(ValueError, match="last trained by partial_fit"):
        partial.encode(X, return_std=True)


def test_fewer_observed_entries_than_components_give_a_code_and_wide_bars(fitted):
    gfe, X = fitted
    X_one = np.full_like(X[:10], np.nan)
    X_one[:, 7] = X[:10, 7]
    Z, std = gfe.encode(X_one, return_std=True)
    assert np.isfinite(Z).all()
    # The unobserved direction keeps about the prior's spread of the codes.
    prior_std = np.sqrt(np.diag(gfe._code_covariance))
    assert (std.max(axis=1) > 0.5 * prior_std.min()).all()


@pytest.mark.parametrize("rate", [0.2, 0.5])
def test_intervals_of_missing_entries_are_calibrated_on_known_noise(rate):
    X = manifold(1300, 8, noise=0.05)
    gfe = GradientFlowEncoder(n_components=2, hidden_layer_sizes=(16,), random_state=0)
    gfe.fit(X[:1000])
    X_test, missing = hide(X[1000:], rate, 9)
    X_hat, std = gfe.reconstruct(X_test, return_std=True)
    z = np.abs(X_hat[missing] - X[1000:][missing]) / std[missing]
    n = missing.sum()
    for level, bound in ((0.68, 0.9945), (0.90, 1.6449)):
        coverage = np.mean(z <= bound)
        # Nominal, within 4 binomial standard errors and a 5% modelling margin.
        margin = 4 * np.sqrt(level * (1 - level) / n) + 0.05
        assert abs(coverage - level) <= margin, (level, coverage)


@pytest.mark.parametrize("n_observed", [1, 2, 3])
def test_a_feature_few_samples_observe_gets_wide_error_bars(n_observed, fitted):
    # Observed by 1-3 of 300 samples, the last feature's noise variance came
    # from at most three residuals (0 when one held-out sample observed it:
    # the scaler's mean is its value), or where no held-out sample did, from
    # the other features' residuals: error bars of 0.0-0.08 where the
    # decoder, which cannot learn the feature, errs by 0.4-0.5.
    X = manifold(400, 10)
    X_train, X_test = X[:300].copy(), X[300:]
    X_train[n_observed:, -1] = np.nan
    gfe = GradientFlowEncoder(n_components=2, hidden_layer_sizes=(16,), random_state=0)
    gfe.fit(X_train)
    typical = np.nanvar(X_train[:, :-1], axis=0, ddof=1).mean()
    assert gfe.noise_variance_[-1] >= 0.5 * typical
    X_missing = X_test.copy()
    X_missing[:, -1] = np.nan
    X_hat, std = gfe.reconstruct(X_missing, return_std=True)
    inside = np.abs(X_hat[:, -1] - X_test[:, -1]) <= 1.6449 * std[:, -1]
    # Observed once, the feature's spread is unknown and the typical
    # feature's stands in (it covers 0.65 here: this feature spreads more).
    assert inside.mean() >= (0.6 if n_observed == 1 else 0.85)
    # The features that samples observe enough keep their own estimates, as
    # every feature does when all samples observe it.
    assert np.all(gfe.noise_variance_[:-1] < 0.5 * typical)
    assert np.all(fitted[0].noise_variance_ < 0.5 * typical)


# -------------------------------------------------------------------- imputer
def test_imputer_fills_missing_entries_only(fitted):
    gfe, X = fitted
    X_missing, missing = hide(X, 0.3, 10)
    imputer = GradientFlowImputer(gfe).fit(X_missing)
    filled, std = imputer.transform(X_missing, return_std=True)
    np.testing.assert_array_equal(filled[~missing], X[~missing])
    assert np.isfinite(filled).all()
    assert (std[~missing] == 0).all() and (std[missing] > 0).all()
    np.testing.assert_array_equal(imputer.transform(X_missing), filled)


def test_imputer_in_a_pipeline_with_pandas_output_saves_and_loads(tmp_path):
    pytest.importorskip("skops")
    X = manifold(200, 11)
    X_missing, _ = hide(X, 0.2, 12)
    frame = pd.DataFrame(X_missing, columns=[f"c{i}" for i in range(X.shape[1])])
    pipe = make_pipeline(
        GradientFlowImputer(
            GradientFlowEncoder(n_components=2, hidden_layer_sizes=(8,), max_iter=5)
        ),
        StandardScaler(),
    ).set_output(transform="pandas")
    out = pipe.fit_transform(frame)
    assert list(out.columns) == list(frame.columns)
    restored = load(save(pipe, tmp_path / "pipe"))
    pd.testing.assert_frame_equal(restored.transform(frame), pipe.transform(frame))
