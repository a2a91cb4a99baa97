"""The correlated residual model of GradientFlowImputer (skgfe._residuals)."""

import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning

from skgfe import GradientFlowEncoder, GradientFlowImputer
from skgfe import _residuals as residuals_module
from skgfe._residuals import (
    CODE_SHARE_EDGES,
    DATA_SHARE_EDGES,
    FACTORS_SHAPE,
    FEATURE_RIDGES,
    SHARE_EDGES,
    SHRINKAGES,
    WEIGHT_TOLERANCE,
    WEIGHTS_SHAPE,
    blend_imputations,
    choose_feature_ridge,
    choose_shrinkage,
    conditional_imputation,
    cross_fitted_level,
    em_second_moments,
    feature_covariance,
    linear_imputation,
    per_entry,
    residual_correlation,
    residual_covariance,
    with_ridge,
)

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

Z_90 = 1.6448536269514722


def reference_imputation(covariance, prior, x, x_hat, jac):
    """One row, by the textbook formulas on explicit sub-matrices."""
    o, m = ~np.isnan(x), np.isnan(x)
    s_oo, s_mo = covariance[np.ix_(o, o)], covariance[np.ix_(m, o)]
    gain = s_mo @ np.linalg.inv(s_oo)
    j_o, j_m = jac[:, o].T, jac[:, m].T
    code_cov = np.linalg.inv(j_o.T @ np.linalg.inv(s_oo) @ j_o + prior)
    a = j_m - gain @ j_o
    value = x_hat[m] + gain @ (x[o] - x_hat[o])
    var = np.diag(covariance[np.ix_(m, m)] - gain @ s_mo.T) + np.diag(
        a @ code_cov @ a.T
    )
    return value, var


def test_conditional_imputation_matches_the_textbook_formulas():
    rng = np.random.RandomState(0)
    n, p, k = 7, 9, 3
    root = rng.randn(p, p)
    covariance = root @ root.T / p + 0.1 * np.eye(p)
    prior = np.eye(k) * 0.5
    X = rng.randn(n, p)
    X[rng.uniform(size=(n, p)) < 0.4] = np.nan
    X[:, 0] = 1.0  # every row observes an entry
    X[3] = 2.0  # and one observes all
    X_hat, jac = rng.randn(n, p), rng.randn(n, k, p)
    values, variance = conditional_imputation(covariance, prior, X, X_hat, jac)
    for i in range(n):
        missing = np.isnan(X[i])
        np.testing.assert_array_equal(variance[i, ~missing], 0.0)
        if not missing.any():
            continue
        value, var = reference_imputation(covariance, prior, X[i], X_hat[i], jac[i])
        np.testing.assert_allclose(values[i, missing], value, rtol=1e-10)
        np.testing.assert_allclose(variance[i, missing], var, rtol=1e-10)
    # Rows are computed independently of their batch mates.
    alone = conditional_imputation(covariance, prior, X[5:6], X_hat[5:6], jac[5:6])
    np.testing.assert_allclose(alone[0], values[5:6], rtol=1e-14)
    np.testing.assert_allclose(alone[1], variance[5:6], rtol=1e-14)


def test_many_features_use_pairwise_deletion(monkeypatch):
    rng = np.random.RandomState(4)
    R = rng.randn(100, 5) @ rng.randn(5, 5)
    R[rng.uniform(size=R.shape) < 0.2] = np.nan
    monkeypatch.setattr(residuals_module, "EM_MAX_FEATURES", 4)
    pairwise = np.ma.dot(np.ma.masked_invalid(R).T, np.ma.masked_invalid(R))
    counts = (~np.isnan(R)).T.astype(float) @ (~np.isnan(R)).astype(float)
    moments = np.asarray(pairwise) / counts
    values, vectors = np.linalg.eigh(moments)
    clipped = (vectors * np.clip(values, 0, None)) @ vectors.T
    scale = np.sqrt(np.diag(clipped))
    np.testing.assert_allclose(
        residual_correlation(R), clipped / np.outer(scale, scale), atol=1e-12
    )


def test_residual_correlation_of_complete_and_incomplete_rows():
    rng = np.random.RandomState(1)
    R = rng.randn(300, 4) @ rng.randn(4, 4)
    second_moment = R.T @ R / len(R)
    scale = np.sqrt(np.diag(second_moment))
    np.testing.assert_allclose(
        residual_correlation(R), second_moment / np.outer(scale, scale), rtol=1e-12
    )
    # Missing entries: positive semi-definite with a unit diagonal still.
    R[rng.uniform(size=R.shape) < 0.5] = np.nan
    correlation = residual_correlation(R)
    np.testing.assert_allclose(np.diag(correlation), 1.0)
    assert np.linalg.eigvalsh(correlation).min() > -1e-10
    covariance = residual_covariance(correlation, np.array([1.0, 4.0, 9.0, 1.0]), 0.3)
    np.testing.assert_allclose(np.diag(covariance), [1.0, 4.0, 9.0, 1.0])
    np.testing.assert_allclose(covariance[0, 1], 0.7 * 2.0 * correlation[0, 1])


def em_by_rows(R, n_iter):
    """The textbook EM of a zero-mean Gaussian with missing entries, row by row."""
    observed = ~np.isnan(R)
    p = R.shape[1]
    S = np.diag(np.nansum(R**2, axis=0) / observed.sum(axis=0))
    for _ in range(n_iter):
        total = np.zeros((p, p))
        for row, o in zip(R, observed):
            m = ~o
            filled, conditional = np.where(o, row, 0.0), np.zeros((p, p))
            if m.any():
                gain = np.linalg.solve(S[np.ix_(o, o)], S[np.ix_(o, m)])
                filled[m] = gain.T @ row[o]
                conditional[np.ix_(m, m)] = S[np.ix_(m, m)] - S[np.ix_(m, o)] @ gain
            total += np.outer(filled, filled) + conditional
        S = total / len(R)
    return S


def test_em_second_moments_match_the_textbook_iteration():
    rng = np.random.RandomState(2)
    A = rng.randn(7, 7)
    R = rng.multivariate_normal(np.zeros(7), A @ A.T / 7, size=200)
    R[rng.uniform(size=R.shape) < 0.35] = np.nan
    R[3] = np.nan  # a row without observed entries is left out
    # The implementation's jitter (1e-9 of the mean variance) on the matrix it
    # inverts adds up over the iterations.
    for iterations, rtol in ((4, 1e-7), (30, 1e-6)):
        expected = em_by_rows(np.delete(R, 3, axis=0), iterations)
        np.testing.assert_allclose(
            em_second_moments(R, max_iterations=iterations, tolerance=0.0),
            expected,
            rtol=rtol,
            atol=1e-9,
        )


def test_feature_covariance_of_near_linear_data_predicts_missing_entries():
    # Rows on a 3-dimensional subspace of 12 features, 10% of the entries
    # missing: the Gaussian model's linear imputation of new rows is
    # near-exact only with a converged EM (the default) and a small ridge,
    # which held-out rows choose (with 10 EM iterations and a ridge of 1e-6:
    # 2e-5 of the means' error).
    rng = np.random.RandomState(3)
    basis = rng.randn(3, 12)
    X = rng.randn(400, 3) @ basis + 5.0
    X[rng.uniform(size=X.shape) < 0.1] = np.nan
    new = rng.randn(100, 3) @ basis + 5.0
    hidden = rng.uniform(size=new.shape) < 0.1
    mean = np.nanmean(X, axis=0)
    covariance = feature_covariance(X, mean)
    held_out = rng.randn(50, 3) @ basis + 5.0
    ridge = choose_feature_ridge(covariance, mean, held_out)
    assert ridge <= 1e-6
    values, _, share = linear_imputation(
        with_ridge(covariance, ridge), mean, np.where(hidden, np.nan, new)
    )
    error = np.mean((values[hidden] - new[hidden]) ** 2)
    assert error < 1e-8 * np.mean((mean - new)[hidden] ** 2)
    assert np.all(share[hidden] < 1e-4)


def test_noisy_features_get_a_large_ridge():
    # Independent features, few rows: the sample covariance's correlations
    # are noise, and a large ridge imputes held-out entries best (near the
    # means), where the smallest one imputes them worse than the means.
    rng = np.random.RandomState(4)
    X, held_out = rng.randn(40, 30), rng.randn(60, 30)
    mean = X.mean(axis=0)
    covariance = feature_covariance(X, mean)
    ridge = choose_feature_ridge(covariance, mean, held_out)
    assert ridge >= 0.03
    hidden = rng.uniform(size=held_out.shape) < 0.3
    X_hidden = np.where(hidden, np.nan, held_out)
    errors = [
        np.mean(
            (
                linear_imputation(with_ridge(covariance, r), mean, X_hidden)[0]
                - held_out
            )[hidden]
            ** 2
        )
        for r in (FEATURE_RIDGES[0], ridge)
    ]
    assert errors[1] < errors[0]


def test_em_recovers_the_covariance_that_pairwise_deletion_misses():
    """With missing entries, the EM estimate is close to the true second
    moments, and its correlations are those that residual_correlation uses."""
    rng = np.random.RandomState(3)
    t = np.linspace(0, 1, 12)
    truth = np.exp(-((t[:, None] - t[None]) ** 2) / 0.1) + 1e-3 * np.eye(12)
    R = rng.multivariate_normal(np.zeros(12), truth, size=2000)
    R[rng.uniform(size=R.shape) < 0.4] = np.nan
    estimate = em_second_moments(R)
    assert np.abs(estimate - truth).max() < 0.1
    scale = np.sqrt(np.diag(estimate))
    np.testing.assert_allclose(
        residual_correlation(R), estimate / np.outer(scale, scale), atol=1e-10
    )


def gaussian_imputer(X):
    """Conditional means of a zero-mean Gaussian (no code: a zero Jacobian)."""
    n, p = X.shape
    zero = np.zeros((n, p))
    return lambda covariance: conditional_imputation(
        covariance, np.eye(1), X, zero, zero[:, None], return_share=True
    )


def test_shrinkage_follows_how_far_the_correlation_carries_over():
    rng = np.random.RandomState(2)
    noise = np.ones(12)
    lags = np.abs(np.subtract.outer(np.arange(12), np.arange(12)))
    correlation = 0.95**lags
    independent = rng.randn(200, 12)
    correlated = independent @ np.linalg.cholesky(correlation).T
    shrinkage, weights, factors = choose_shrinkage(
        correlation, noise, correlated, gaussian_imputer
    )
    assert shrinkage <= 0.03
    assert factors.shape == (len(SHARE_EDGES) + 1, len(CODE_SHARE_EDGES) + 1)
    # Without a centre to pull towards, no weights.
    assert np.all(weights == 1.0)
    # Its calibrated 90% intervals cover 90% of new samples' hidden entries.
    fresh = rng.randn(400, 12) @ np.linalg.cholesky(correlation).T
    hidden = rng.uniform(size=fresh.shape) < 0.3
    values, variance, share = gaussian_imputer(np.where(hidden, np.nan, fresh))(
        residual_covariance(correlation, noise, shrinkage)
    )
    calibrated = per_entry(share, factors) * variance
    inside = np.abs(values - fresh) <= Z_90 * np.sqrt(calibrated)
    assert 0.87 <= inside[hidden].mean() <= 0.93
    # Twice the noise: the intervals widen to cover it.
    factors_before = factors
    _, _, factors = choose_shrinkage(
        correlation, noise, np.sqrt(2.0) * correlated, gaussian_imputer
    )
    assert np.all(1.6 * factors_before <= factors)
    assert np.all(factors <= 2.5 * factors_before)
    # Correlations that do not carry over to held-out samples are shrunk away.
    shrinkage, _, _ = choose_shrinkage(
        correlation, noise, independent, gaussian_imputer
    )
    assert shrinkage >= 0.3
    # No held-out sample: the independent model as it is.
    shrinkage, weights, factors = choose_shrinkage(
        correlation, noise, None, gaussian_imputer
    )
    assert shrinkage == 1.0 and np.all(factors == 1.0) and np.all(weights == 1.0)
    assert SHRINKAGES[-1] == 1.0


def noisy_copy_imputer(noise_scale, centre=True, seed=0):
    """Fills a row's missing entries with the mean of its observed ones plus
    independent noise of ``noise_scale``; variance 1, one bin of shares and,
    with ``centre``, 0 (of variance 1) to pull the imputations towards."""

    def imputer_of(X):
        rng = np.random.RandomState(seed)
        fill = np.nanmean(X, axis=1, keepdims=True)
        values = np.where(np.isnan(X), fill + noise_scale * rng.randn(*X.shape), X)
        share = np.full((*X.shape, 3), 0.5)
        ones = np.ones(X.shape)
        if not centre:
            return lambda covariance: (values, ones, share)
        return lambda covariance: (values, ones, share, np.zeros(X.shape), ones)

    return imputer_of


@pytest.mark.parametrize("noise_scale", [0.0, 0.05, 0.5, 1.0, 3.0])
def test_weights_are_the_least_squares_pull_towards_the_mean(noise_scale):
    # Every feature of a row is one N(0, 1) value, so the mean of its observed
    # entries predicts its missing ones exactly; with noise of variance s^2
    # added, the best weight w on the imputation against the centre 0 is
    # 1 / (1 + s^2), and the blended imputation's error variance s^2 w, which
    # the factor calibrates from the blended variance w^2 + (1 - w)^2. The
    # weight lowers the error by s^4 / (1 + s^2) of the centre's: below
    # WEIGHT_TOLERANCE (s = 0.05) it stays 1.
    rng = np.random.RandomState(1)
    held_out = np.repeat(rng.randn(400, 1), 10, axis=1)
    correlation, noise = np.eye(10), np.ones(10)
    _, weights, factors = choose_shrinkage(
        correlation, noise, held_out, noisy_copy_imputer(noise_scale)
    )
    expected = 1.0 / (1.0 + noise_scale**2)
    error = noise_scale**2 * expected
    if noise_scale**2 - error < WEIGHT_TOLERANCE:
        expected, error = 1.0, noise_scale**2
    np.testing.assert_allclose(weights, expected, atol=0.03)
    if noise_scale > 0:
        blended_variance = expected**2 + (1 - expected) ** 2
        np.testing.assert_allclose(factors, error / blended_variance, rtol=0.1)
    # Without a centre, the imputations stay as they are and the factors
    # calibrate their own (larger) errors.
    _, unweighted, plain = choose_shrinkage(
        correlation, noise, held_out, noisy_copy_imputer(noise_scale, centre=False)
    )
    assert np.all(unweighted == 1.0)
    if noise_scale > 0:
        np.testing.assert_allclose(plain, noise_scale**2, rtol=0.1)


def test_blend_imputations():
    values, variance = np.array([[1.0, 2.0, 3.0]]), np.array([[4.0, 4.0, 4.0]])
    centre, centre_variance = np.array([[0.0, 1.0, np.nan]]), np.ones((1, 3))
    weights = np.array([[0.5, 0.0, 0.0]])
    blended, blended_variance = blend_imputations(
        values, variance, centre, centre_variance, weights
    )
    # A NaN centre keeps the imputation and its variance.
    np.testing.assert_allclose(blended, [[0.5, 1.0, 3.0]])
    np.testing.assert_allclose(blended_variance, [[0.25 * 4 + 0.25, 1.0, 4.0]])
    same = blend_imputations(values, variance, centre, centre_variance, 1.0)
    np.testing.assert_array_equal(same[0], values)
    np.testing.assert_array_equal(same[1], variance)


def test_shares_are_what_the_observed_entries_leave_unknown():
    # Two features of correlation c: observing one leaves 1 - c**2 of the
    # other's variance unknown; with both missing (and a third observed,
    # independent) all of it. Without a code (zero Jacobian) the code's share
    # of the predictive variance is 0; with one, it is its term's share
    # (checked against the textbook formulas).
    c = 0.8
    covariance = np.array([[1.0, c, 0.0], [c, 1.0, 0.0], [0.0, 0.0, 1.0]])
    X = np.array([[1.0, np.nan, 0.0], [np.nan, np.nan, 0.0]])
    zero = np.zeros((2, 3))
    _, _, share = conditional_imputation(
        covariance, np.eye(1), X, zero, zero[:, None], return_share=True
    )
    np.testing.assert_allclose(share[..., 0], [[0, 1 - c**2, 0], [1, 1, 0]])
    np.testing.assert_array_equal(share[..., 1], 0.0)
    jac = np.array([[[0.5, 1.0, 2.0]]] * 2)
    _, variance, share = conditional_imputation(
        covariance, np.eye(1), X, zero, jac, return_share=True
    )
    residual_part = share[..., 0] * np.diag(covariance)
    missing = np.isnan(X)
    np.testing.assert_allclose(
        share[..., 1][missing], 1 - residual_part[missing] / variance[missing]
    )
    assert ((share[..., 1] > 0) == missing).all()
    # Each entry takes the factor of its two bins.
    assert SHARE_EDGES == tuple(sorted(SHARE_EDGES))
    factors = np.arange(np.prod(FACTORS_SHAPE)).reshape(FACTORS_SHAPE)
    shares = np.array([[0.0, 0.0], [0.36, 0.9], [1.0, 0.1]])
    np.testing.assert_array_equal(
        per_entry(shares, factors),
        [
            factors[0, 0],
            factors[np.digitize(0.36, SHARE_EDGES), -1],
            factors[-1, 0],
        ],
    )
    # With a blend, the bins of the weights: the features' model's unknown
    # share (the third) and the code's share.
    factors = np.arange(np.prod(WEIGHTS_SHAPE)).reshape(WEIGHTS_SHAPE)
    shares = np.array([[0.0, 0.0, 0.95], [0.36, 0.9, 0.005], [1.0, 0.1, 0.2]])
    np.testing.assert_array_equal(
        per_entry(shares, factors, blended=True),
        [
            factors[-1, 0],
            factors[0, -1],
            factors[np.digitize(0.2, DATA_SHARE_EDGES), 0],
        ],
    )


def test_cross_fitted_level_covers_new_samples():
    rng = np.random.RandomState(0)

    def draw(n_samples, spread):
        # 40 scores per sample, each sample's scaled by its own factor
        # (spread 0: all samples alike).
        scale = np.exp(spread * rng.randn(n_samples, 1))
        return (scale * np.abs(rng.randn(n_samples, 40))).ravel()

    samples = np.repeat(np.arange(50), 40)
    # Alike samples: the plain 0.9 quantile carries over.
    assert cross_fitted_level(draw(50, 0.0), samples) <= 0.91
    # Samples that differ: a higher level, which covers more of new samples'
    # scores than the plain 0.9 quantile of 10 samples, which falls short
    # (Monte Carlo over calibration draws; measured 0.874 and 0.892, the
    # gain 0.017-0.019 over three seeds).
    rng = np.random.RandomState(1)
    samples = np.repeat(np.arange(10), 40)
    plain, fitted, levels = [], [], []
    for _ in range(500):
        scores, new = draw(10, 1.0), draw(10, 1.0)
        level = cross_fitted_level(scores, samples)
        levels.append(level)
        plain.append(np.mean(new <= np.quantile(scores, 0.9)))
        fitted.append(np.mean(new <= np.quantile(scores, level)))
    assert np.mean(levels) > 0.91
    assert np.mean(plain) < 0.885 and np.mean(fitted) - np.mean(plain) > 0.01
    # Few samples do not push the level to the largest score.
    assert cross_fitted_level(draw(5, 0.0), np.repeat(np.arange(5), 40)) < 0.95
    # A single sample: the plain level.
    assert cross_fitted_level(draw(1, 0.0), np.zeros(40, dtype=int)) == 0.9


def smooth_data(n, seed, n_features=24):
    """A 2-D curved family of smooth profiles plus smooth (AR(1)) noise."""
    grid = np.linspace(0, 1, n_features)
    rng = np.random.RandomState(seed)
    position, width = rng.uniform(0.2, 0.8, (2, n, 1))
    clean = np.exp(-((grid - position) ** 2) / (0.02 + 0.05 * width))
    lags = np.abs(np.subtract.outer(np.arange(n_features), np.arange(n_features)))
    noise = rng.randn(n, n_features) @ np.linalg.cholesky(0.9**lags).T
    return clean + 0.03 * noise


@pytest.fixture(scope="module")
def smooth_imputer():
    X = smooth_data(600, 0)
    encoder = GradientFlowEncoder(
        n_components=2, hidden_layer_sizes=(16,), max_iter=60, random_state=0
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return GradientFlowImputer(encoder).fit(X)


def test_correlated_residuals_impute_better_with_calibrated_intervals(smooth_imputer):
    X = smooth_data(300, 1)
    missing = np.random.RandomState(3).uniform(size=X.shape) < 0.3
    X_missing = np.where(missing, np.nan, X)
    assert smooth_imputer.residual_shrinkage_ < 0.1
    filled, std = smooth_imputer.transform(X_missing, return_std=True)
    # The independent model: the encoder's reconstruction.
    plain = smooth_imputer.encoder_.reconstruct(X_missing)
    error = np.mean((filled[missing] - X[missing]) ** 2)
    assert error < 0.6 * np.mean((plain[missing] - X[missing]) ** 2)
    np.testing.assert_array_equal(filled[~missing], X[~missing])
    assert (std[~missing] == 0).all() and (std[missing] > 0).all()
    coverage = np.mean(np.abs(filled[missing] - X[missing]) <= Z_90 * std[missing])
    assert 0.85 <= coverage <= 0.95, coverage
    # A row's imputation does not depend on its batch mates.
    np.testing.assert_allclose(
        smooth_imputer.transform(X_missing[4:5]), filled[4:5], rtol=1e-12
    )
    # Inside a contiguous gap, too: there the code, fitted without a region,
    # errs more than its Laplace variance says, and one variance factor for
    # scattered and gap entries covered 0.72 of the gaps' entries (and 0.95
    # of the scattered ones); the factors by share cover both.
    rng = np.random.RandomState(4)
    starts = rng.randint(X.shape[1] - 5 + 1, size=len(X))
    columns = np.arange(X.shape[1])
    gap = (columns >= starts[:, None]) & (columns < starts[:, None] + 5)
    filled, std = smooth_imputer.transform(np.where(gap, np.nan, X), return_std=True)
    coverage = np.mean(np.abs(filled[gap] - X[gap]) <= Z_90 * std[gap])
    assert 0.85 <= coverage <= 0.95, coverage


def test_independent_residuals_are_the_encoders_reconstruction(smooth_imputer):
    X = smooth_data(50, 4)
    missing = np.random.RandomState(5).uniform(size=X.shape) < 0.3
    X_missing = np.where(missing, np.nan, X)
    imputer = clone(smooth_imputer).set_params(residuals="independent")
    # The same encoder, without the residual model.
    imputer.encoder_ = smooth_imputer.encoder_
    imputer.residual_covariance_, imputer.variance_scale_ = None, 1.0
    X_hat, std = imputer.encoder_.reconstruct(X_missing, return_std=True)
    filled, filled_std = imputer.transform(X_missing, return_std=True)
    np.testing.assert_array_equal(filled[missing], X_hat[missing])
    np.testing.assert_array_equal(filled_std[missing], std[missing])


def test_correlated_residuals_need_the_squared_error():
    X = np.random.RandomState(6).uniform(size=(60, 5))
    encoder = GradientFlowEncoder(
        n_components=1, loss="bce", hidden_layer_sizes=(4,), max_iter=2
    )
    with pytest.raises(ValueError, match="loss='mse'"):
        GradientFlowImputer(encoder, residuals="correlated").fit(X)
    imputer = GradientFlowImputer(encoder).fit(X)
    assert imputer.residual_covariance_ is None
    assert imputer.residual_shrinkage_ == 1.0


def test_without_held_out_samples_the_imputations_are_reconstructions():
    X = smooth_data(60, 7)
    X[::3, 5] = np.nan
    encoder = GradientFlowEncoder(
        n_components=1, hidden_layer_sizes=(8,), max_iter=3, early_stopping=False
    )
    imputer = GradientFlowImputer(encoder, residuals="correlated").fit(X)
    assert imputer.residual_covariance_ is None
    # Nothing to blend either.
    assert imputer.feature_covariance_ is None and imputer.feature_ridge_ is None
    assert not hasattr(imputer.encoder_, "_split")
    assert not hasattr(imputer.encoder_, "_keep_split")
    np.testing.assert_array_equal(
        imputer.transform(X)[::3, 5], imputer.encoder_.reconstruct(X)[::3, 5]
    )


def test_blend_with_the_linear_imputation(smooth_imputer):
    # blend=None keeps the residual model's own imputations; the default
    # pulls them towards the Gaussian model of the features by the weights
    # fitted on held-out samples, which must not impute worse.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        plain = clone(smooth_imputer).set_params(blend=None).fit(smooth_data(600, 0))
    assert plain.feature_covariance_ is None
    assert np.all(plain.imputation_weight_ == 1.0)
    assert smooth_imputer.feature_covariance_.shape == (24, 24)
    weights = smooth_imputer.imputation_weight_
    assert np.all((0 <= weights) & (weights <= 1)) and np.any(weights < 1)
    X = smooth_data(300, 1)
    rng = np.random.RandomState(8)
    starts = rng.randint(24 - 5 + 1, size=len(X))
    gap = (np.arange(24) >= starts[:, None]) & (np.arange(24) < starts[:, None] + 5)
    for missing in (rng.uniform(size=X.shape) < 0.3, gap):
        X_missing = np.where(missing, np.nan, X)
        errors = [
            np.mean((imputer.transform(X_missing)[missing] - X[missing]) ** 2)
            for imputer in (smooth_imputer, plain)
        ]
        assert errors[0] <= errors[1]
    # Without missing entries, the blend changes nothing.
    np.testing.assert_array_equal(smooth_imputer.transform(X), X)


def test_intervals_of_an_imputer_fitted_on_few_samples():
    # 100 samples hold out 10: a finite-sample correction by the count of
    # samples (split conformal, ceil(0.9 * 11) / 10 = 1) took each bin's
    # largest error and covered 0.99; the cross-fitted level keeps the
    # intervals near their nominal coverage.
    encoder = GradientFlowEncoder(
        n_components=2, hidden_layer_sizes=(16,), max_iter=60, random_state=0
    )
    imputer = GradientFlowImputer(encoder).fit(smooth_data(100, 0))
    X = smooth_data(400, 1)
    rng = np.random.RandomState(3)
    starts = rng.randint(24 - 5 + 1, size=len(X))
    gap = (np.arange(24) >= starts[:, None]) & (np.arange(24) < starts[:, None] + 5)
    for missing in (rng.uniform(size=X.shape) < 0.3, gap):
        filled, std = imputer.transform(np.where(missing, np.nan, X), return_std=True)
        inside = np.abs(filled - X) <= Z_90 * std
        assert 0.85 <= inside[missing].mean() <= 0.95, inside[missing].mean()
