"""The TwoNN estimate of a data set's intrinsic dimension.

Facco, d'Errico, Rodriguez and Laio (2017), "Estimating the intrinsic dimension
of datasets by a minimal neighborhood information", Scientific Reports 7, 12140.
On a manifold of dimension d sampled with locally uniform density, the ratio
``mu = r2 / r1`` of a sample's distances to its second and first nearest
neighbours follows the Pareto law ``P(mu > x) = x^-d``, whose maximum-likelihood
estimate is ``d = N / sum(log mu)``. A few lines on top of scikit-learn's
:class:`~sklearn.neighbors.NearestNeighbors` do not justify a dependency (the
scikit-dimension package implements the same estimator).
"""

import math

import numpy as np
from sklearn.neighbors import NearestNeighbors

# Beyond this many samples a strided subset is used: the estimate needs a few
# hundred, and the neighbour search is quadratic in their number.
MAX_SAMPLES = 1000
# Fewer complete samples than this give no estimate.
MIN_SAMPLES = 20


def two_nn_dimension(X):
    """Maximum-likelihood TwoNN estimate of the intrinsic dimension of ``X``.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Samples; rows with a missing (NaN) entry are left out.

    Returns
    -------
    dimension : float or None
        The estimate, or None where fewer than ``MIN_SAMPLES`` distinct
        complete samples are given, or where every sample's two nearest
        neighbours are equally far (no finite estimate). Samples with a
        duplicate (first neighbour at distance 0) are left out of the sum.
    """
    X = np.asarray(X)
    rows = np.flatnonzero(~np.isnan(X).any(axis=1))
    # A deterministic subset: the estimate draws nothing from the fit's RNG.
    # Rows are chosen before the float64 copy, which then holds only them.
    if len(rows) > MAX_SAMPLES:
        rows = rows[:: math.ceil(len(rows) / MAX_SAMPLES)]
    if len(rows) < MIN_SAMPLES:
        return None
    X = np.asarray(X[rows], dtype=np.float64)
    distances, _ = NearestNeighbors(n_neighbors=3).fit(X).kneighbors(X)
    first, second = distances[:, 1], distances[:, 2]
    distinct = first > 0
    if distinct.sum() < MIN_SAMPLES:
        return None
    log_ratios = np.log(second[distinct] / first[distinct])
    total = log_ratios.sum()
    return float(distinct.sum() / total) if total > 0 else None
