"""GradientFlowImputer: missing entries from a GradientFlowEncoder's reconstructions."""

import numpy as np
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin, clone
from sklearn.utils._param_validation import HasMethods
from sklearn.utils.validation import check_is_fitted, validate_data

from ._gfe import GradientFlowEncoder


class GradientFlowImputer(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Impute missing values by decoding the best code of the observed entries.

    ``fit`` trains a :class:`GradientFlowEncoder` on the samples, their missing
    entries left out of every loss. ``transform`` encodes each sample from its
    observed entries alone (a gradient flow on the loss of those entries),
    decodes the code, and fills the missing entries with the decoded values;
    observed entries are returned unchanged. With ``return_std=True`` it also
    returns the predictive standard deviation of every filled entry (0 for
    observed entries), from a Laplace approximation at the code (see
    :ref:`missing`).

    Unlike :class:`~sklearn.impute.KNNImputer` or
    :class:`~sklearn.impute.IterativeImputer`, the imputation of a sample comes
    from a non-linear low-dimensional model of all the training data, fitted to
    the entries that sample observed: the right tool for samples that lie near a
    curved manifold (spectra, images, simulations) with dead channels, masked
    regions or clipped ranges.

    Read more in the :ref:`User Guide <missing>`.

    Parameters
    ----------
    encoder : GradientFlowEncoder or None, default=None
        The (unfitted) encoder to fit; it is cloned. None uses
        ``GradientFlowEncoder()`` at its defaults (``n_components=2``): choose
        ``n_components`` for your data, e.g.
        ``GradientFlowImputer(GradientFlowEncoder(n_components=8))``.

    Attributes
    ----------
    encoder_ : GradientFlowEncoder
        The fitted encoder.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during fit. Defined only when ``X`` has feature
        names that are all strings.

    See Also
    --------
    GradientFlowEncoder : The encoder behind the imputations.
    sklearn.impute.KNNImputer : Imputation from the nearest complete neighbours.
    sklearn.impute.IterativeImputer : Imputation by regressing each feature on
        the others.

    Examples
    --------
    >>> import numpy as np
    >>> from skgfe import GradientFlowEncoder, GradientFlowImputer
    >>> rng = np.random.RandomState(0)
    >>> t = rng.uniform(0, 1, (200, 1))
    >>> X = np.hstack([np.sin(3 * t + k) for k in np.linspace(0, 2, 12)])
    >>> X_missing = X.copy()
    >>> X_missing[rng.uniform(size=X.shape) < 0.2] = np.nan
    >>> imputer = GradientFlowImputer(
    ...     GradientFlowEncoder(n_components=1, random_state=0)
    ... ).fit(X_missing)
    >>> X_filled, std = imputer.transform(X_missing, return_std=True)
    >>> bool(np.isnan(X_filled).any()), bool((std[~np.isnan(X_missing)] == 0).all())
    (False, True)
    """

    _parameter_constraints = {
        "encoder": [HasMethods(["fit", "reconstruct"]), None],
    }

    def __init__(self, encoder=None):
        self.encoder = encoder

    def _validate(self, X, reset):
        return validate_data(
            self,
            X,
            reset=reset,
            dtype=[np.float64, np.float32],
            ensure_all_finite="allow-nan",
            copy=False,
        )

    def fit(self, X, y=None):
        """Fit the encoder on ``X``, missing entries (NaN) left out.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training samples, NaN for a missing entry.
        y : Ignored
            Not used, present for API consistency by convention.

        Returns
        -------
        self : object
            The fitted imputer.
        """
        self._validate_params()
        X = self._validate(X, reset=True)
        encoder = GradientFlowEncoder() if self.encoder is None else self.encoder
        self.encoder_ = clone(encoder).fit(X)
        return self

    def transform(self, X, return_std=False):
        """Fill the missing entries of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples, NaN for a missing entry; each must observe one entry at
            least.
        return_std : bool, default=False
            Also return the predictive standard deviation of every entry.

        Returns
        -------
        X_filled : ndarray of shape (n_samples, n_features)
            ``X`` with its missing entries replaced by the reconstruction;
            observed entries unchanged.
        std : ndarray of shape (n_samples, n_features)
            Only with ``return_std``: the predictive standard deviation of each
            filled entry, 0 for observed entries.
        """
        check_is_fitted(self)
        X = self._validate(X, reset=False)
        missing = np.isnan(X)
        if return_std:
            X_hat, std = self.encoder_.reconstruct(X, return_std=True)
        else:
            X_hat = self.encoder_.reconstruct(X)
        X_filled = np.where(missing, X_hat, X)
        if return_std:
            return X_filled, np.where(missing, std, 0.0).astype(X.dtype, copy=False)
        return X_filled

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags
