"""Error metrics for regressors that predict fields, such as PDE solutions."""

# SPDX-License-Identifier: BSD-3-Clause

import numpy as np
from sklearn.metrics import make_scorer
from sklearn.utils import check_array, check_consistent_length
from sklearn.utils._param_validation import validate_params

__all__ = ["relative_l1_error", "relative_l1_scorer"]


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
