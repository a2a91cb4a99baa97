"""Error metrics: for regressors that predict fields (such as PDE solutions),
and for choosing the number of components of a dimensionality reducer."""

# SPDX-License-Identifier: BSD-3-Clause

import numpy as np
from sklearn.metrics import make_scorer
from sklearn.utils import check_array, check_consistent_length
from sklearn.utils._param_validation import validate_params

__all__ = [
    "relative_l1_error",
    "relative_l1_scorer",
    "explained_variance_scorer",
    "smallest_n_components",
]


@validate_params(
    {
        "y_true": ["array-like"],
        "y_pred": ["array-like"],
        "sample_weight": ["array-like", None],
        "per_sample": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def relative_l1_error(y_true, y_pred, *, sample_weight=None, per_sample=False):
    r"""Relative L1 error, pooled over all entries or one value per sample.

    The pooled error (the default) is

    .. math::

        \frac{\sum_{i, j} w_i \, |\hat{y}_{ij} - y_{ij}|}
             {\sum_{i, j} w_i \, |y_{ij}|},

    with :math:`w_i = 1` without ``sample_weight``. With ``per_sample=True``
    it is computed for each row (sample) :math:`i` separately:
    :math:`\sum_j |\hat{y}_{ij} - y_{ij}| / \sum_j |y_{ij}|`.

    For fields (e.g. PDE solutions on a grid, one row per solution), the
    per-sample errors are the usual "relative L1 error of a prediction",
    whose mean and standard deviation over test samples are often reported.
    They are heavy-tailed (a sample with a small ``sum |y|`` gets a large
    relative error); the pooled error weighs every sample by its size and is
    more stable.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,) or (n_samples, n_outputs)
        The true values. A 1-D array is one output per sample.

    y_pred : array-like of the same shape as y_true
        The predicted values.

    sample_weight : array-like of shape (n_samples,), default=None
        Non-negative weights of the samples in the pooled error. Not allowed
        with ``per_sample=True``.

    per_sample : bool, default=False
        If True, return one error per sample instead of the pooled error.

    Returns
    -------
    error : float or ndarray of shape (n_samples,)
        The pooled relative L1 error (a float, ``>= 0``, 0 for a perfect
        prediction), or the per-sample errors if ``per_sample=True``.

    Raises
    ------
    ValueError
        If the shapes differ, if the weights are invalid, or if a denominator
        (``sum |y_true|``, per sample with ``per_sample=True``) is zero.

    See Also
    --------
    relative_l1_scorer : The pooled error as a scorer (negated).

    Examples
    --------
    >>> from skgfe.metrics import relative_l1_error
    >>> y_true = [[1.0, -3.0], [3.0, 1.0]]
    >>> y_pred = [[2.0, -3.0], [2.0, 2.0]]
    >>> relative_l1_error(y_true, y_pred)  # (1 + 0 + 1 + 1) / (1 + 3 + 3 + 1)
    0.375
    >>> relative_l1_error(y_true, y_pred, per_sample=True)
    array([0.25, 0.5 ])
    >>> relative_l1_error(y_true, y_pred, sample_weight=[1.0, 0.0])
    0.25
    """
    y_true = check_array(y_true, ensure_2d=False, dtype=np.float64, input_name="y_true")
    y_pred = check_array(y_pred, ensure_2d=False, dtype=np.float64, input_name="y_pred")
    check_consistent_length(y_true, y_pred, sample_weight)
    if y_true.ndim > 2 or y_true.shape != y_pred.shape:
        raise ValueError(
            f"y_true and y_pred must have the same shape, (n_samples,) or "
            f"(n_samples, n_outputs); got {y_true.shape} and {y_pred.shape}."
        )
    if y_true.ndim == 1:
        y_true = y_true[:, None]
        y_pred = y_pred[:, None]
    numerators = np.abs(y_pred - y_true).sum(axis=1)
    denominators = np.abs(y_true).sum(axis=1)

    if per_sample:
        if sample_weight is not None:
            raise ValueError("sample_weight is not supported with per_sample=True.")
        zero = np.flatnonzero(denominators == 0)
        if zero.size:
            raise ValueError(
                f"The relative L1 error is undefined for samples whose y_true is "
                f"all zeros; {zero.size} such sample(s), e.g. index {zero[0]}."
            )
        return numerators / denominators

    if sample_weight is not None:
        sample_weight = check_array(
            sample_weight, ensure_2d=False, dtype=np.float64, input_name="sample_weight"
        )
        if sample_weight.ndim != 1 or np.any(sample_weight < 0):
            raise ValueError(
                "sample_weight must be a 1-D array of non-negative weights."
            )
        numerators = sample_weight * numerators
        denominators = sample_weight * denominators
    total = denominators.sum()
    if total == 0:
        raise ValueError(
            "The relative L1 error is undefined when sum |y_true| (weighted) is 0."
        )
    return float(numerators.sum() / total)


relative_l1_scorer = make_scorer(relative_l1_error, greater_is_better=False)
"""Scorer of the pooled relative L1 error, negated (greater is better).

``relative_l1_scorer(estimator, X, y)`` returns
``-relative_l1_error(y, estimator.predict(X))``, as scikit-learn's model
selection tools expect, e.g. ``cross_val_score(model, X, y, groups=groups,
cv=GroupKFold(), scoring=relative_l1_scorer)``.
"""


def explained_variance_scorer(estimator, X, y=None):
    """Fraction of the variance of held-out ``X`` that a reducer reconstructs.

    ``1 - mean((X - X_hat) ** 2) / mean(X.var(axis=0))`` with
    ``X_hat = estimator.inverse_transform(estimator.transform(X))``: 1 for a
    perfect reconstruction, 0 for predicting the mean of ``X``. It is a scorer
    (``scoring=explained_variance_scorer`` in
    :class:`~sklearn.model_selection.GridSearchCV` or
    :func:`~sklearn.model_selection.cross_val_score`) for any estimator with
    ``transform`` and ``inverse_transform``: :class:`~skgfe.GradientFlowEncoder`,
    the autoencoders, :class:`~sklearn.decomposition.PCA`, and a
    :class:`~sklearn.pipeline.Pipeline` of them behind a scaler, whose
    ``inverse_transform`` returns to the input's units. Unlike ``score``
    (a mean squared error in the units of the data, or PCA's log-likelihood)
    it compares across estimators, data sets and scalers.

    The held-out error only falls as ``n_components`` grows, so taking the best
    score of a grid picks its largest value; choose the number of components
    with :func:`smallest_n_components` as ``refit``.

    Parameters
    ----------
    estimator : fitted estimator
        Has ``transform`` and ``inverse_transform``.

    X : array-like of shape (n_samples, n_features)
        Held-out samples, at least two.

    y : Ignored
        Not used, present for API consistency by convention.

    Returns
    -------
    score : float
        The fraction of the variance reconstructed (greater is better).
    """
    X = check_array(X, dtype=[np.float64, np.float32])
    if X.shape[0] < 2:
        raise ValueError(
            "explained_variance_scorer needs at least 2 samples to measure "
            f"their variance, got {X.shape[0]}."
        )
    X_hat = np.asarray(estimator.inverse_transform(estimator.transform(X)))
    variance = X.var(axis=0).mean()
    if variance == 0:
        raise ValueError("The samples are all equal: their variance is 0.")
    return float(1.0 - np.mean((X - X_hat) ** 2) / variance)


def smallest_n_components(target=None, param="n_components"):
    """A ``refit`` rule for grid searches over the number of components.

    Returns a callable for the ``refit`` parameter of
    :class:`~sklearn.model_selection.GridSearchCV` that picks the smallest
    number of components whose mean cross-validated score is good enough:

    - ``target=None``: the one-standard-error rule (Breiman et al., 1984; Hastie,
      Tibshirani and Friedman, *The Elements of Statistical Learning*, 7.10):
      within one standard error (the standard deviation of its best candidate's
      fold scores over the square root of the number of folds) of the best mean
      score;
    - a float: at least ``target`` (e.g. ``0.99`` of the variance with
      :func:`explained_variance_scorer`); when none reaches it, the best.

    Parameters
    ----------
    target : float or None, default=None
        The score to reach, or None for the one-standard-error rule.

    param : str, default="n_components"
        The name of the searched parameter, as in the grid
        (``"gfe__n_components"`` for a pipeline step named ``gfe``).

    Returns
    -------
    refit : callable
        ``refit(cv_results)`` returns the index of the chosen candidate.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.decomposition import PCA
    >>> from sklearn.model_selection import GridSearchCV
    >>> from skgfe.metrics import explained_variance_scorer, smallest_n_components
    >>> search = GridSearchCV(
    ...     PCA(), {"n_components": [2, 8, 16, 32]},
    ...     scoring=explained_variance_scorer, refit=smallest_n_components(0.8),
    ... ).fit(load_digits().data)
    >>> search.best_params_
    {'n_components': 16}
    """

    def refit(cv_results):
        n_components = np.asarray(cv_results[f"param_{param}"], dtype=float)
        mean = np.asarray(cv_results["mean_test_score"], dtype=float)
        best = int(np.nanargmax(mean))
        if target is None:
            n_splits = sum(
                key.startswith("split") and key.endswith("_test_score")
                for key in cv_results
            )
            std = np.asarray(cv_results["std_test_score"], dtype=float)[best]
            bar = mean[best] - std / np.sqrt(max(n_splits, 1))
        else:
            bar = target
        good = np.flatnonzero(mean >= bar)
        if len(good) == 0:
            return best
        return int(good[np.argmin(n_components[good])])

    return refit
