"""Correlated residuals: what the observed entries of a sample say about its
missing ones beyond its code.

A decoder with few components leaves a residual ``r = x - D(z)``. When that
residual is correlated across features (smooth spectra and fields leave smooth
residuals), the residual of a sample's observed entries predicts the residual
of its missing ones. The model here is Gaussian,

    r ~ N(0, Sigma),   Sigma = S^1/2 ((1 - alpha) C + alpha I) S^1/2,

``S`` being the encoder's per-feature noise variance (``noise_variance_``,
estimated on held-out samples), ``C`` the correlation matrix of the training
residuals (when they miss entries, estimated by EM for a zero-mean Gaussian up
to :data:`EM_MAX_FEATURES` features, else pairwise over the entries both
observe and clipped to positive semi-definite) and ``alpha`` a shrinkage
towards independent residuals, the one that best imputes entries hidden from
held-out samples (``alpha = 1`` is the independent model that
:meth:`GradientFlowEncoder.reconstruct` assumes).

Given a sample's code ``z``, observed entries ``O`` and missing ones ``M``
(the decoder's Jacobian ``J = dD/dz`` in the data's units), the imputation
and its predictive variance are the linearised Gaussian answers:

    x_M = D_M(z) + Sigma_MO Sigma_OO^-1 r_O,
    Sigma_z = (J_O^T Sigma_OO^-1 J_O + P)^-1,
    A = J_M - Sigma_MO Sigma_OO^-1 J_O,
    var(x_M) = diag(Sigma_MM - Sigma_MO Sigma_OO^-1 Sigma_OM) + diag(A Sigma_z A^T),

``P`` being the code prior's precision. The first term of the variance is
what the residual leaves unknown, the second what the code does.

Every row is computed on its own (batched Cholesky factorisations of the
``|O| x |O|`` block, embedded in a ``p x p`` matrix with the identity on the
missing entries), so a row's result does not depend on its batch mates; the
cost is ``p^3 / 3`` per row, which is why :class:`GradientFlowImputer` uses the
model for up to :data:`MAX_CORRELATED_FEATURES` features by default.
"""

import numpy as np
import torch

# 'auto' models correlated residuals up to this many features: the cost per
# imputed row grows as n_features ** 3 (about 1 ms per row at 512 features).
MAX_CORRELATED_FEATURES = 512
# Shrinkage candidates towards independent residuals (1.0: independent).
SHRINKAGES = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)
# Share of a held-out sample's observed entries hidden to choose the shrinkage.
HIDDEN_SHARE = 0.3
# The smallest and largest share of the features that a gap hidden from a
# held-out sample to calibrate the intervals covers.
GAP_SHARES = (0.1, 0.3)
# Independent draws of hidden entries per held-out sample (a steadier choice
# and calibration where few samples are held out).
HIDING_ROUNDS = 4
# A smaller shrinkage must lower the held-out error by more than this share.
ERROR_TOLERANCE = 0.02
# Without a blend (see DATA_SHARE_EDGES for the bins with one), the
# intervals are calibrated apart for the entries whose residual the
# observed ones predict well and those they hardly predict, and for those
# whose code is well or poorly pinned down: by the share of the residual's
# variance left unknown given the observed residuals (the inner edges of its
# bins, SHARE_EDGES) and by the code's share of the predictive variance
# (CODE_SHARE_EDGES). An entry whose neighbours are observed (scattered
# missing entries) is predicted from them; one inside a gap is not, and its
# sample's code is fitted without a whole region: there the model's variance
# fell short. Spectra with a gap of 20% of the features: 90% intervals
# covered 0.65 of the gap's entries (0.90 of scattered ones) with one factor.
SHARE_EDGES = (1e-3, 1e-2, 3e-2, 0.1, 0.3, 0.6)
CODE_SHARE_EDGES = (0.3,)
FACTORS_SHAPE = (len(SHARE_EDGES) + 1, len(CODE_SHARE_EDGES) + 1)
# A bin with fewer calibration entries takes the factor (or weight) of its
# row of bins over all code shares, or of all entries.
MIN_BIN_ENTRIES = 50
# The quantile levels a factor may take, and the folds of held-out samples
# that choose one (see cross_fitted_level): the plain 0.9 quantile of a few
# samples' scores covers less of new samples' entries where the samples
# differ (10 samples of a Monte Carlo: 0.874 against 0.892).
CALIBRATION_LEVELS = np.linspace(0.9, 1.0, 41)
CALIBRATION_FOLDS = 20
# The weights that blend imputations with a Gaussian model's, and the
# factors that calibrate the blended intervals, are fitted apart for entries
# that the sample's observed entries predict well and for those they hardly
# predict, under a Gaussian model of the features (bins of
# the share of an entry's variance that its observed entries leave unknown,
# by the features' covariance: DATA_SHARE_EDGES) and by the code's share of
# the predictive variance (CODE_SHARE_EDGES). The residual's unknown share
# does not tell them apart: it is near 1 both inside a gap and between a few
# missing neighbours (spectra, entries with it above 0.6, weights towards
# the features' means: best 0.17-0.33 inside gaps of 20% of the features,
# 0.72-0.87 with half the entries missing at random).
DATA_SHARE_EDGES = (0.01, 0.03, 0.1, 0.3, 0.6, 0.9)
WEIGHTS_SHAPE = (len(DATA_SHARE_EDGES) + 1, len(CODE_SHARE_EDGES) + 1)
# A bin's weight departs from 1 only where it lowers the squared error of
# the bin's hidden entries by more than this share of the centre's (the
# imputation it is blended with): a weight that the held-out entries barely
# prefer may not carry over to other patterns in the same bin.
WEIGHT_TOLERANCE = 0.01
# The features' covariance (see feature_covariance): its relative ridge, and
# its EM's iterations and tolerance where samples miss entries. Near-linear
# data need both small: reaction-diffusion fields trained with 10% of the
# entries missing imputed at 8e-7 of the column means' error with a ridge of
# 1e-6 and 10 EM iterations (tolerance 1e-2), 1e-8 with 100 (tolerance
# 1e-6), 1e-11 with a ridge of 1e-10 as well (IterativeImputer: 2e-9).
# But converged, the EM fits noise: spectra trained with 30% missing imputed
# at 0.083 instead of 0.028 with a ridge of 1e-6, 0.027 with 1e-2. So the
# ridge is chosen among FEATURE_RIDGES by the linear imputation's error on
# entries hidden from held-out samples (see choose_feature_ridge).
FEATURE_RIDGES = (1e-10, 1e-8, 1e-6, 1e-4, 1e-3, 1e-2, 3e-2, 0.1)
FEATURE_EM_ITERATIONS = 100
FEATURE_EM_TOLERANCE = 1e-6
FEATURE_EM_MAX_ROWS = 2000
# Half-width of a two-sided 90% Gaussian interval, in standard deviations.
Z_90 = 1.6448536269514722
# Residuals with missing entries: EM estimates of their second moments up to
# this many features (each iteration costs about n_features ** 3 operations
# per row), over at most EM_MAX_ROWS rows and EM_MAX_ITERATIONS iterations,
# stopped once an iteration changes the estimate by less than EM_TOLERANCE.
EM_MAX_FEATURES = 256
EM_MAX_ROWS = 500
EM_MAX_ITERATIONS = 10
EM_TOLERANCE = 1e-2
# Rows per batched factorisation: bounds the memory to a few p x p matrices each.
_BYTES_PER_CHUNK = 2**27


def residual_correlation(residuals):
    """Correlation matrix of residual rows with NaN for missing entries.

    The residuals' second moments (their covariance about zero): for complete
    rows, the mean products; with missing entries and at most
    :data:`EM_MAX_FEATURES` features, the maximum-likelihood estimate of a
    zero-mean Gaussian by EM (:func:`em_second_moments`); with more features,
    each entry's mean product over the rows that observe both features. The
    matrix is then clipped to positive semi-definite (its negative eigenvalues
    set to 0) and normalised to a unit diagonal. A feature without residual
    gets no correlation with the others.
    """
    covariance = second_moments(residuals)
    scale = np.sqrt(np.clip(np.diag(covariance), 0.0, None))
    # Features without residual (to rounding) correlate with none.
    live = scale > np.finfo(np.float64).eps * max(scale.max(), 1e-300)
    inverse = np.where(live, 1.0 / np.where(live, scale, 1.0), 0.0)
    correlation = covariance * np.outer(inverse, inverse)
    np.fill_diagonal(correlation, 1.0)
    return correlation


def second_moments(rows, **em):
    """Second moments (about zero) of rows with NaN for missing entries: the
    mean products of complete rows; with missing entries the EM estimate up to
    :data:`EM_MAX_FEATURES` features (:func:`em_second_moments` with the
    options ``em``), the mean products over the rows that observe both
    features beyond; clipped to positive semi-definite."""
    observed = ~np.isnan(rows)
    if not observed.all() and rows.shape[1] <= EM_MAX_FEATURES:
        covariance = em_second_moments(rows, **em)
    else:
        filled = np.where(observed, rows, 0.0)
        counts = observed.T.astype(np.float64) @ observed.astype(np.float64)
        covariance = filled.T @ filled / np.maximum(counts, 1.0)
    values, vectors = np.linalg.eigh(covariance)
    return (vectors * np.clip(values, 0.0, None)) @ vectors.T


def feature_covariance(X, mean):
    """The features' covariance about ``mean`` (:func:`second_moments` of the
    centred rows: EM to convergence over at most :data:`FEATURE_EM_MAX_ROWS`
    evenly spaced rows where they miss entries, up to
    :data:`EM_MAX_FEATURES` features; pairwise beyond), without ridge (see
    :func:`with_ridge`). A feature no row observes (NaN mean) is centred
    at 0; callers give it no linear imputation."""
    centred = X - np.where(np.isnan(mean), 0.0, mean)
    return second_moments(
        centred,
        max_iterations=FEATURE_EM_ITERATIONS,
        tolerance=FEATURE_EM_TOLERANCE,
        max_rows=FEATURE_EM_MAX_ROWS,
    )


def with_ridge(covariance, ridge):
    """``covariance`` plus ``ridge`` times its mean variance on the diagonal
    (every block then has a Cholesky factor)."""
    variance = np.diag(covariance)
    scale = variance.mean() if variance.any() else 1.0
    return covariance + ridge * scale * np.eye(len(covariance))


def linear_imputation(covariance, mean, X):
    """The Gaussian model ``N(mean, covariance)``'s conditional mean of each
    missing entry of ``X`` given the observed ones (NaN for a feature without
    a mean), its variance, and the share of the feature's variance it leaves
    unknown."""
    values, variance, share = conditional_imputation(
        covariance,
        np.eye(1),
        X,
        np.tile(np.nan_to_num(mean), (len(X), 1)),
        np.zeros((len(X), 1, X.shape[1])),
        return_share=True,
    )
    return np.where(np.isnan(mean), np.nan, values), variance, share[..., 0]


def choose_feature_ridge(covariance, mean, held_out, random_state=1):
    """The ridge of :data:`FEATURE_RIDGES` (see :func:`with_ridge`) whose
    linear imputation of entries hidden from the ``held_out`` samples
    (:data:`HIDDEN_SHARE` of their observed entries, :data:`HIDING_ROUNDS`
    draws; another draw than :func:`choose_shrinkage`'s, whose entries then
    judge the linear imputation) is best; of those within
    :data:`ERROR_TOLERANCE` of the best, the largest. The smallest ridge
    without held-out samples or an entry to hide."""
    if held_out is None or not len(held_out):
        return FEATURE_RIDGES[0]
    held_out = np.tile(held_out, (HIDING_ROUNDS, 1))
    rng = np.random.RandomState(random_state)
    scattered = rng.uniform(size=held_out.shape) < HIDDEN_SHARE
    hidden = _hideable(~np.isnan(held_out), scattered) & ~np.isnan(mean)
    rows = hidden.any(axis=1)
    if not rows.any():
        return FEATURE_RIDGES[0]
    truth, hidden = held_out[rows], hidden[rows]
    X = np.where(hidden, np.nan, truth)
    errors = np.array(
        [
            np.sum(
                (linear_imputation(with_ridge(covariance, r), mean, X)[0] - truth)[
                    hidden
                ]
                ** 2
            )
            for r in FEATURE_RIDGES
        ]
    )
    return FEATURE_RIDGES[_simplest_of_the_best(errors)]


def _hideable(observed, candidates):
    """The ``candidates`` entries that are observed, except in rows where
    hiding them would leave no observed entry."""
    hidden = observed & candidates
    hidden[~(observed & ~hidden).any(axis=1)] = False
    return hidden


def _simplest_of_the_best(errors):
    """The last index (candidates are ordered from least to most
    regularised) whose error is within :data:`ERROR_TOLERANCE` of the
    smallest."""
    errors = np.asarray(errors)
    return np.flatnonzero(errors <= (1.0 + ERROR_TOLERANCE) * errors.min())[-1]


def em_second_moments(
    residuals,
    max_iterations=EM_MAX_ITERATIONS,
    tolerance=EM_TOLERANCE,
    max_rows=EM_MAX_ROWS,
):
    """Second moments of zero-mean Gaussian rows with missing entries, by EM.

    Each iteration fills a row's missing entries with their conditional mean
    given its observed ones under the current estimate and adds their
    conditional covariance (Little and Rubin, *Statistical Analysis with
    Missing Data*, section 11.2). The mean products over the rows that observe
    both features (pairwise deletion) mix rows whose residuals were fitted to
    different entries, and their clipped matrix lends strong, spurious
    correlations: spectra trained with 30% of the entries missing imputed at
    1.00 of the mean imputer's error with nearly unshrunk correlations, 0.13
    at the best shrinkage; with these estimates 0.084 and 0.079.

    At most ``max_rows`` rows (evenly spaced) and ``max_iterations``
    iterations; it stops once an iteration changes the
    matrix by less than ``tolerance`` of its norm.
    """
    R = torch.as_tensor(residuals, dtype=torch.float64)
    R = R[~torch.isnan(R).all(dim=1)]
    if len(R) > max_rows:
        R = R[torch.linspace(0, len(R) - 1, max_rows).round().long()]
    missing = torch.isnan(R)
    R = R.nan_to_num(0.0)
    n_rows, n_features = R.shape
    counts = (~missing).sum(dim=0).clamp(min=1)
    moments = torch.diag(R.pow(2).sum(dim=0) / counts)
    # Each row's missing entries, gathered into the first places of a row as
    # wide as the largest count (the other places: padding).
    width = int(missing.sum(dim=1).max())
    order = torch.argsort((~missing).to(torch.int8), dim=1, stable=True)
    index = order[:, :width]
    valid = torch.arange(width) < missing.sum(dim=1, keepdim=True)
    pair = valid.unsqueeze(-1) & valid.unsqueeze(-2)
    eye = torch.eye(n_features, dtype=torch.float64)
    padding = torch.eye(width, dtype=torch.float64)
    for _ in range(max_iterations):
        # Given the observed entries O, the missing ones M of a zero-mean
        # Gaussian of precision K are N(-K_MM^-1 K_MO x_O, K_MM^-1). A jitter
        # keeps K finite where a feature's residual is (nearly) constant.
        jitter = 1e-9 * moments.diagonal().mean() + 1e-300
        precision = torch.linalg.inv(moments + jitter * eye)
        block = precision[index.unsqueeze(-1), index.unsqueeze(-2)]
        block = torch.where(pair, block, padding)
        coupling = torch.gather(R @ precision, 1, index) * valid
        factor = torch.linalg.cholesky(block)
        mean = -torch.cholesky_solve(coupling.unsqueeze(-1), factor).squeeze(-1)
        conditional = torch.cholesky_inverse(factor) * pair
        filled = R.scatter(1, index, torch.where(valid, mean, R.gather(1, index)))
        total = filled.T @ filled
        flat = index.unsqueeze(-1) * n_features + index.unsqueeze(-2)
        total.view(-1).index_add_(0, flat[pair], conditional[pair])
        updated = total / n_rows
        change = torch.linalg.matrix_norm(updated - moments)
        moments = updated
        if change <= tolerance * torch.linalg.matrix_norm(moments):
            break
    return moments.numpy()


def residual_covariance(correlation, noise_variance, shrinkage):
    """``Sigma`` of the module docstring, ``(p, p)``."""
    shrunk = (1.0 - shrinkage) * correlation
    np.fill_diagonal(shrunk, 1.0)
    scale = np.sqrt(noise_variance)
    return shrunk * np.outer(scale, scale)


def choose_shrinkage(correlation, noise_variance, held_out, imputer_of, random_state=0):
    """The shrinkage of :data:`SHRINKAGES` that imputes held-out samples best,
    the weights that blend its imputations with another (a centre) where that
    imputes them better, and the factors on the predictive variance that
    calibrate its intervals.

    Entries of the ``held_out`` samples (which training did not fit) are hidden
    at random (:data:`HIDDEN_SHARE` of the observed ones, each row keeping one;
    :data:`HIDING_ROUNDS` independent draws per sample) and imputed under each
    candidate by ``imputer_of(X_hidden)(covariance)`` (values, variances and
    shares: the two of :func:`conditional_imputation` and a third, see
    below; optionally a centre; ``imputer_of`` encodes the samples once).
    The largest shrinkage whose squared error on the hidden entries is within
    :data:`ERROR_TOLERANCE` of the smallest wins (the simpler model unless the
    correlations clearly help: training residuals are smaller and more
    regular than those of new samples, so only held-out samples tell how far
    their correlation carries over).

    The same samples also hide one contiguous block of features each (a gap,
    as in a detector or a clipped range; its width a share of the features
    drawn uniformly in :data:`GAP_SHARES`), as many draws again. On all the
    hidden entries, under the chosen shrinkage:

    - with a centre (the fourth and fifth outputs of ``impute``: an
      imputation to blend with, NaN where there is none, and its variance),
      the weights of :func:`blend_imputations`: least squares,
      clipped to ``[0, 1]`` (1 unless it lowers the bin's error by more
      than :data:`WEIGHT_TOLERANCE` of the centre's), one per bin of
      the share of an entry's variance that its observed entries leave
      unknown under the features' covariance (:data:`DATA_SHARE_EDGES`; the
      third share) and of the code's share of the variance
      (:data:`CODE_SHARE_EDGES`; see :func:`weight_per_entry`). Without a
      centre, all ones.
    - the variance factors calibrate the blended imputations' intervals:
      one per bin (with a centre, the weights' bins; without, those of the
      residual's unknown share, :data:`SHARE_EDGES`, and of the code's
      share; see :func:`per_entry`), each the square of the bin's
      standardised errors' quantile over :data:`Z_90`, at the level of
      :func:`cross_fitted_level` (at least 0.9: the level whose quantile
      covers 90% of the hidden entries of held-out samples it was not
      computed from).

    A bin of fewer than :data:`MIN_BIN_ENTRIES` entries takes the value of
    its row of bins together, or of all entries.

    Returns ``(shrinkage, weights, factors)``, ``weights`` of shape
    :data:`WEIGHTS_SHAPE` and ``factors`` of shape :data:`WEIGHTS_SHAPE`
    with a centre, :data:`FACTORS_SHAPE` without;
    ``(1.0, ones, ones)`` (the independent model as it is) without held-out
    samples or an entry to hide.
    """
    no_model = 1.0, np.ones(WEIGHTS_SHAPE), np.ones(FACTORS_SHAPE)
    if held_out is None or not len(held_out):
        return no_model
    n_samples = len(held_out)
    held_out = np.tile(held_out, (2 * HIDING_ROUNDS, 1))
    # The held-out sample behind each row: the intervals' cross-fitting
    # folds hold out samples, not their draws.
    sample_of_row = np.tile(np.arange(n_samples), 2 * HIDING_ROUNDS)
    hidden, gap_rows = _hide_scattered_and_gaps(
        held_out, np.random.RandomState(random_state)
    )
    rows = hidden.any(axis=1)
    if not rows.any():
        return no_model
    truth, hidden, gap_rows = held_out[rows], hidden[rows], gap_rows[rows]
    sample_of_entry = np.broadcast_to(sample_of_row[rows, None], hidden.shape)[hidden]
    chooses = hidden & ~gap_rows[:, None]
    impute = imputer_of(np.where(hidden, np.nan, truth))
    errors, fits = [], []
    for shrinkage in SHRINKAGES:
        covariance = residual_covariance(correlation, noise_variance, shrinkage)
        values, variance, share, *centre = impute(covariance)
        centre = [part[hidden] for part in centre] if centre else None
        errors.append(np.sum((values - truth)[chooses] ** 2))
        fits.append((values[hidden], variance[hidden], share[hidden], centre))
    best = _simplest_of_the_best(errors)
    values, variance, share, centre = fits[best]
    truth = truth[hidden]
    weights = np.ones(WEIGHTS_SHAPE)
    if centre is not None:
        centre, centre_variance = centre
        has_centre = ~np.isnan(centre)
        known_centre = np.where(has_centre, centre, values)
        offset, target = values - known_centre, truth - known_centre

        def weight(selected):
            selected = selected & has_centre
            d, t = offset[selected], target[selected]
            squares = d @ d
            if squares <= 0.0:
                return 1.0
            w = float(np.clip(d @ t / squares, 0.0, 1.0))
            gain = np.sum((d - t) ** 2) - np.sum((w * d - t) ** 2)
            return w if gain > WEIGHT_TOLERANCE * (t @ t) else 1.0

        weights = _per_bin(weight, _weight_bins(share), WEIGHTS_SHAPE)
        values, variance = blend_imputations(
            values, variance, centre, centre_variance, weight_per_entry(share, weights)
        )
    standardised = np.abs(values - truth) / np.sqrt(variance)

    def factor(selected):
        scores = standardised[selected]
        level = cross_fitted_level(scores, sample_of_entry[selected])
        return (np.quantile(scores, level) / Z_90) ** 2

    blended = centre is not None
    shape = WEIGHTS_SHAPE if blended else FACTORS_SHAPE
    factors = _per_bin(factor, _factor_bins(share, blended), shape)
    return SHRINKAGES[best], weights, factors


def _hide_scattered_and_gaps(rows, rng):
    """Entries to hide from ``rows``: in the first half of them
    :data:`HIDDEN_SHARE` of the entries at random, in the second half a
    block of :data:`GAP_SHARES` of the features (uniformly drawn widths);
    only observed entries, each row keeping one (see :func:`_hideable`).
    Returns the mask and which rows hide a block."""
    scattered = rng.uniform(size=rows.shape) < HIDDEN_SHARE
    n_rows, n_features = rows.shape
    low, high = (max(1, int(round(share * n_features))) for share in GAP_SHARES)
    width = rng.randint(low, high + 1, size=n_rows)
    starts = (rng.uniform(size=n_rows) * (n_features - width + 1)).astype(int)
    columns = np.arange(n_features)
    block = (columns >= starts[:, None]) & (columns < (starts + width)[:, None])
    gap_rows = np.arange(n_rows) >= n_rows // 2
    candidates = np.where(gap_rows[:, None], block, scattered)
    return _hideable(~np.isnan(rows), candidates), gap_rows


def cross_fitted_level(scores, samples, coverage=0.9):
    """The smallest level of :data:`CALIBRATION_LEVELS` whose quantile of
    ``scores`` covers ``coverage`` of the scores of samples it did not see.

    The samples (``samples``: each score's sample) are split into
    :data:`CALIBRATION_FOLDS` folds (one per sample when there are fewer);
    each fold's scores are compared with the quantile of the other folds'
    scores, and the level is the smallest whose share of covered scores,
    over all folds, reaches ``coverage`` (1.0 if none does). Scores of one
    sample are alike (a sample whose code is off errs on all its missing
    entries), so a quantile of a few samples' scores covers less of a new
    sample's than it does of theirs; the more alike and the fewer the
    samples, the higher the level. The aim is ``coverage`` on average over
    new samples, not a guarantee; ``coverage`` itself with a single sample.
    """
    fold = np.unique(samples, return_inverse=True)[1] % CALIBRATION_FOLDS
    if fold.max() == 0:
        return coverage
    covered = np.zeros(len(CALIBRATION_LEVELS))
    for held in np.unique(fold):
        inside = fold == held
        limits = np.quantile(scores[~inside], CALIBRATION_LEVELS)
        covered += np.sum(scores[inside, None] <= limits, axis=0)
    reached = np.flatnonzero(covered >= coverage * len(scores))
    return float(CALIBRATION_LEVELS[reached[0]]) if len(reached) else 1.0


def _per_bin(statistic, bins, shape):
    """``statistic(selected)`` of the entries of each of the ``shape`` bins
    (rows: an unknown share, columns: the code's share); a bin of fewer than
    :data:`MIN_BIN_ENTRIES` entries takes its row's over all code shares, or
    that of all entries, or 1."""
    share_bin, code_bin = bins

    def of(selected, fallback):
        return fallback if np.sum(selected) < MIN_BIN_ENTRIES else statistic(selected)

    pooled = of(np.ones(len(share_bin), dtype=bool), 1.0)
    table = np.empty(shape)
    for i in range(table.shape[0]):
        marginal = of(share_bin == i, pooled)
        for j in range(table.shape[1]):
            table[i, j] = of((share_bin == i) & (code_bin == j), marginal)
    return table


def blend_imputations(values, variance, centre, centre_variance, weights):
    """``centre + weights * (values - centre)`` and the variance
    ``weights**2 variance + (1 - weights)**2 centre_variance`` (as for
    independent errors; the interval factors calibrate it): imputations pulled
    towards ``centre``, kept where it is NaN."""
    known = ~np.isnan(centre)
    blended = np.where(
        known, centre + weights * (values - np.where(known, centre, 0)), values
    )
    blended_variance = np.where(
        known, weights**2 * variance + (1 - weights) ** 2 * centre_variance, variance
    )
    return blended, blended_variance


def _bins(share):
    return (
        np.digitize(share[..., 0], SHARE_EDGES),
        np.digitize(share[..., 1], CODE_SHARE_EDGES),
    )


def _weight_bins(share):
    return (
        np.digitize(share[..., 2], DATA_SHARE_EDGES),
        np.digitize(share[..., 1], CODE_SHARE_EDGES),
    )


def _factor_bins(share, blended):
    # With a blend, the features' model carries much of the variance where
    # the observed entries say little (spectra, inside a gap: weights near
    # 0.1): its unknown share sorts the entries as the weights do. Binned by
    # the residual's share instead, the factors fitted on held-out samples
    # that miss entries of their own, with a gap hidden on top, fell short
    # on samples with one gap (spectra trained with a gap of 20% of the
    # features: 90% intervals covered 0.833 of the missing entries).
    return _weight_bins(share) if blended else _bins(share)


def weight_per_entry(share, weights):
    """Each entry's blend weight (``weights``, see
    :func:`choose_shrinkage`), by its ``share``: the two of
    :func:`conditional_imputation` and, last, the share of its variance that
    its observed entries leave unknown under the features' covariance."""
    return np.asarray(weights)[_weight_bins(share)]


def per_entry(share, table, blended=False):
    """Each entry's variance factor of ``table`` (one per bin; see
    :func:`choose_shrinkage`), by its ``share``: with a blend
    (``blended``), the bins of :func:`weight_per_entry`; else those of the
    two shares of :func:`conditional_imputation` (the residual's unknown
    share, the code's share)."""
    return np.asarray(table)[_factor_bins(share, blended)]


def _masked_factor(covariance, observed):
    """Cholesky factors of each row's ``Sigma_OO`` embedded in ``p x p`` (the
    identity on its missing entries), ``(n, p, p)``."""
    both = observed.unsqueeze(-1) * observed.unsqueeze(-2)
    embedded = covariance * both + torch.diag_embed(1.0 - observed)
    return torch.linalg.cholesky(embedded)


def _chunks(n_rows, n_features):
    rows = max(1, _BYTES_PER_CHUNK // (8 * 4 * n_features * n_features))
    return range(0, n_rows, rows), rows


def conditional_imputation(
    covariance, prior_precision, X, X_hat, jacobian, return_share=False
):
    """Imputations and predictive variances of the missing entries of ``X``.

    Parameters
    ----------
    covariance : ndarray of shape (p, p)
        ``Sigma``, the residual covariance.
    prior_precision : ndarray of shape (k, k)
        ``P``, the code prior's precision.
    X : ndarray of shape (n, p)
        Samples, NaN for a missing entry.
    X_hat : ndarray of shape (n, p)
        Their reconstructions ``D(z)``.
    jacobian : ndarray of shape (n, k, p)
        ``dD/dz`` at each code, in the data's units.
    return_share : bool, default=False
        Also return each missing entry's two shares (see ``share`` below).

    Returns
    -------
    values : ndarray of shape (n, p)
        ``X_hat`` corrected by the conditional mean of the residual (on the
        observed entries it is the observed residual's conditional mean too, and
        of no use: callers keep the observed entries).
    variance : ndarray of shape (n, p)
        The predictive variance of each missing entry (0 for observed ones).
    share : ndarray of shape (n, p, 2)
        Only with ``return_share``: for each missing entry (0 for observed
        ones), the share of its residual variance that the observed residuals
        leave unknown, ``(Sigma_MM - Sigma_MO Sigma_OO^-1 Sigma_OM)_jj /
        Sigma_jj`` (1 where they say nothing about it), and the code's share
        of its predictive variance.
    """
    covariance = torch.as_tensor(covariance, dtype=torch.float64)
    prior = torch.as_tensor(prior_precision, dtype=torch.float64)
    n_rows, n_features = X.shape
    values, variances, shares = [], [], []
    starts, size = _chunks(n_rows, n_features)
    for start in starts:
        x = torch.as_tensor(X[start : start + size], dtype=torch.float64)
        x_hat = torch.as_tensor(X_hat[start : start + size], dtype=torch.float64)
        jac = torch.as_tensor(jacobian[start : start + size], dtype=torch.float64)
        observed = (~torch.isnan(x)).to(torch.float64)
        factor = _masked_factor(covariance, observed)
        # Right-hand sides restricted to the observed entries: the residual,
        # the Jacobian and the covariance's columns.
        k = jac.shape[1]
        rhs = torch.cat(
            [
                ((x - x_hat).nan_to_num(0.0) * observed).unsqueeze(-1),
                jac.transpose(1, 2) * observed.unsqueeze(-1),
                covariance * observed.unsqueeze(-1),
            ],
            dim=-1,
        )
        white = torch.linalg.solve_triangular(factor, rhs, upper=False)
        w_r, w_jac, w_cov = white[..., :1], white[..., 1 : 1 + k], white[..., 1 + k :]
        # Row j of gain = Sigma_jO Sigma_OO^-1 (through the whitened columns).
        mean = (w_cov.transpose(1, 2) @ w_r).squeeze(-1)
        residual_variance = covariance.diagonal() - w_cov.pow(2).sum(dim=1)
        code_precision = w_jac.transpose(1, 2) @ w_jac + prior
        code_covariance = torch.cholesky_inverse(torch.linalg.cholesky(code_precision))
        sensitivity = jac.transpose(1, 2) - w_cov.transpose(1, 2) @ w_jac
        code_variance = ((sensitivity @ code_covariance) * sensitivity).sum(dim=-1)
        missing = 1.0 - observed
        values.append((x_hat + mean * missing).numpy())
        residual_variance = residual_variance.clamp(min=0.0)
        variance = (residual_variance + code_variance) * missing
        variances.append(variance.numpy())
        unknown = residual_variance / covariance.diagonal().clamp(min=1e-300)
        code_share = code_variance / variance.clamp(min=1e-300)
        share = torch.stack([unknown.clamp(max=1.0), code_share.clamp(0.0, 1.0)], -1)
        shares.append((share * missing.unsqueeze(-1)).numpy())
    result = np.concatenate(values), np.concatenate(variances)
    return (*result, np.concatenate(shares)) if return_share else result
