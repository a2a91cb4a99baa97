"""GradientFlowImputer: missing entries from a GradientFlowEncoder's reconstructions."""

import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin, clone
from sklearn.utils._param_validation import HasMethods, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from ._flow.uncertainty import decoder_jacobian
from ._gfe import GradientFlowEncoder
from ._residuals import (
    FACTORS_SHAPE,
    MAX_CORRELATED_FEATURES,
    WEIGHTS_SHAPE,
    blend_imputations,
    choose_feature_ridge,
    choose_shrinkage,
    conditional_imputation,
    feature_covariance,
    linear_imputation,
    per_entry,
    residual_correlation,
    residual_covariance,
    weight_per_entry,
    with_ridge,
)


class GradientFlowImputer(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Impute missing values by decoding the best code of the observed entries.

    ``fit`` trains a :class:`GradientFlowEncoder` on the samples, their missing
    entries left out of every loss. ``transform`` encodes each sample from its
    observed entries alone (a gradient flow on the loss of those entries),
    decodes the code, and fills the missing entries with the decoded values;
    observed entries are returned unchanged. Where the reconstructions' residuals
    are correlated across features (smooth spectra and fields), the residual of
    a sample's observed entries also predicts that of its missing ones
    (``residuals``), and the imputation is blended with that of a Gaussian
    model of the features, by weights that held-out samples choose
    (``blend``). With ``return_std=True`` it also returns the predictive
    standard deviation of every filled entry (0 for observed entries), from a
    Laplace approximation at the code (see :ref:`missing`).

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
    residuals : {'auto', 'correlated', 'independent'}, default='auto'
        The model of what the decoder leaves unexplained.

        - 'correlated': a Gaussian residual with a covariance fitted on the
          training residuals (their correlations shrunk towards none by the
          amount that best imputes entries hidden from the encoder's
          validation samples; fully without them; the variances are the
          encoder's ``noise_variance_``). A missing entry is its decoded
          value plus the conditional mean of its residual given the sample's
          observed residuals, and its error bar accounts for both. Costs
          about ``n_features ** 3 / 3`` operations per imputed sample.
        - 'independent': residuals independent across features; a missing
          entry is its decoded value (:meth:`GradientFlowEncoder.reconstruct`).
        - 'auto': 'correlated' for the squared-error loss and at most
          512 features, else 'independent'.
    blend : {'linear'} or None, default='linear'
        With the 'correlated' residual model, pull each imputation towards
        the linear one: the conditional mean of the missing entries given
        the observed ones under a Gaussian model of the features (their
        training mean ``mean_`` and covariance ``feature_covariance_``), by
        weights fitted by least squares on entries hidden from the encoder's
        held-out samples (``imputation_weight_``, one per bin of how much of
        an entry's variance the observed entries leave unknown under that
        model). Near-linear data lean on it (reaction-diffusion fields
        imputed at 1e-5 to 1e-2 of the error), and inside a gap whose content
        the observed entries do not tell it falls back towards the means
        instead of drawing a confident profile (see :ref:`missing`). Costs
        another ``n_features ** 3 / 3`` operations per imputed sample. None:
        the residual model's own imputation. Read at ``fit``.

    Attributes
    ----------
    encoder_ : GradientFlowEncoder
        The fitted encoder.
    residual_shrinkage_ : float
        The shrinkage of the residual correlations towards none (1.0:
        independent residuals).
    residual_covariance_ : ndarray of shape (n_features, n_features) or None
        The residual covariance in the data's units; None where the
        imputations are the encoder's reconstructions ('independent', or an
        encoder that held out no samples: ``early_stopping=False``).
    mean_ : ndarray of shape (n_features,)
        The mean of each feature's observed entries in the encoder's training
        samples (NaN for a feature none observes).
    feature_covariance_ : ndarray of shape (n_features, n_features) or None
        The features' covariance on the encoder's training samples (an EM
        estimate over at most 2000 of them where they miss entries, up to 256
        features; pairwise beyond), with a ridge of ``feature_ridge_`` times
        the mean variance; None without a blend.
    feature_ridge_ : float or None
        The ridge that imputes entries hidden from the encoder's held-out
        samples best by the linear imputation (a small one for near-linear
        data, a large one for noisy data); None without a blend.
    imputation_weight_ : ndarray of shape (7, 2)
        The blend's weights: an imputation is ``c + w * (x_hat - c)``, ``c``
        the linear imputation and ``x_hat`` the residual model's; one weight
        per bin of the share of an entry's variance that its observed
        entries leave unknown under ``feature_covariance_`` (rows; edges
        0.01, 0.03, 0.1, 0.3, 0.6, 0.9) and of the code's share of its
        predictive variance (columns; edge 0.3). A bin keeps 1 unless its
        least-squares weight lowers the bin's held-out error by more than 1%
        of the linear imputation's. Ones without a blend.
    variance_scale_ : ndarray of shape (7, 2)
        The factors on the predictive variances (with a blend,
        ``w**2 var(x_hat) + (1 - w)**2 var(c)``) that make nominal 90%
        intervals cover 90% of entries hidden from the encoder's held-out
        samples (scattered entries and contiguous gaps), cross-fitted: the
        quantile's level is raised above 0.9 where a quantile of some of
        these samples covers less of the others' entries (samples that
        differ, few samples). With a blend, one factor per bin of
        ``imputation_weight_``; without, one for each bin of the share of
        an entry's residual variance that its sample's observed residuals
        leave unknown (rows; edges 0.001, 0.01, 0.03, 0.1, 0.3 and 0.6: from
        entries they predict well to entries inside a gap) and of the code's
        share of its predictive variance (columns; edge 0.3). Ones without
        a residual model.
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
    >>> X += 0.05 * rng.normal(size=X.shape)
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
        "residuals": [StrOptions({"auto", "correlated", "independent"})],
        "blend": [StrOptions({"linear"}), None],
    }

    def __init__(self, encoder=None, residuals="auto", blend="linear"):
        self.encoder = encoder
        self.residuals = residuals
        self.blend = blend

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
        self.encoder_ = clone(encoder)
        # The residual model needs the encoder's own training / held-out split.
        self.encoder_._keep_split = True
        try:
            self.encoder_.fit(X)
            split = vars(self.encoder_).pop("_split", (None, None))
        finally:
            del self.encoder_._keep_split
        self.residual_shrinkage_, self.residual_covariance_ = 1.0, None
        self.imputation_weight_ = np.ones(WEIGHTS_SHAPE)
        self.variance_scale_ = np.ones(FACTORS_SHAPE)
        # The features' moments come from the encoder's training samples only:
        # the held-out ones judge the imputations pulled towards them.
        X_fitted = X if split[0] is None else split[0].astype(np.float64)
        with warnings.catch_warnings():
            # A feature no sample observes has no mean (NaN): no weights there.
            warnings.simplefilter("ignore", RuntimeWarning)
            self.mean_ = np.nanmean(X_fitted, axis=0, dtype=np.float64)
        self.feature_covariance_, self.feature_ridge_ = None, None
        if self._models_correlated_residuals(X):
            self._fit_residual_model(*split)
        return self

    def _models_correlated_residuals(self, X):
        mse = getattr(self.encoder_, "_fitted_loss", None) == "mse"
        if self.residuals == "correlated" and not mse:
            raise ValueError(
                "residuals='correlated' models Gaussian residuals and needs an "
                f"encoder with loss='mse', got loss="
                f"{getattr(self.encoder_, 'loss', None)!r}. Use "
                "residuals='independent' or 'auto'."
            )
        if self.residuals == "auto":
            return mse and X.shape[1] <= MAX_CORRELATED_FEATURES
        return self.residuals == "correlated"

    def _fit_residual_model(self, X_train, X_held_out):
        """The residual covariance: correlations from the training samples'
        residuals, shrunk by the amount that imputes the held-out samples best,
        and the blend's weights and the factors that calibrate the intervals
        on them (see :func:`~skgfe._residuals.choose_shrinkage`). The blend's
        Gaussian model of the features comes first: the held-out samples
        judge the imputations pulled towards it."""
        noise = getattr(self.encoder_, "noise_variance_", None)
        if noise is None or X_held_out is None:
            # No residual model, so nothing to blend.
            return
        X_fitted = X_train.astype(np.float64)
        if self.blend == "linear":
            covariance = feature_covariance(X_fitted, self.mean_)
            self.feature_ridge_ = choose_feature_ridge(
                covariance, self.mean_, X_held_out
            )
            self.feature_covariance_ = with_ridge(covariance, self.feature_ridge_)
        noise = noise.astype(np.float64)
        correlation = residual_correlation(
            X_fitted - self.encoder_.reconstruct(X_train)
        )
        shrinkage, weights, variance_scale = choose_shrinkage(
            correlation, noise, X_held_out, self._imputer_of
        )
        self.residual_shrinkage_ = float(shrinkage)
        self.imputation_weight_ = weights
        self.variance_scale_ = variance_scale
        self.residual_covariance_ = residual_covariance(correlation, noise, shrinkage)

    def _imputer_of(self, X):
        """``impute(covariance)`` for the samples ``X``: their reconstructions
        with the missing entries corrected by the residual model
        ``covariance``, and the predictive variances. The samples are encoded
        once, for every residual model tried on them."""
        encoder = self.encoder_
        # encode, not transform: its output stays an array under set_output.
        Z = encoder.encode(X)
        X_hat = encoder.inverse_transform(Z).astype(np.float64)
        rows = np.isnan(X).any(axis=1)
        if rows.any():
            decoder = encoder.decoder_
            parameter = next(decoder.parameters())
            codes = torch.as_tensor(
                Z[rows], dtype=parameter.dtype, device=parameter.device
            )
            jacobian = decoder_jacobian(decoder, codes).double().cpu().numpy()
            jacobian = jacobian * encoder.scale_
            prior_precision = np.linalg.inv(encoder._code_covariance)
            linear = None
            if self._blends():
                linear = linear_imputation(
                    self.feature_covariance_, self.mean_, X[rows]
                )

        def impute(covariance):
            """Values, variances and shares (:func:`conditional_imputation`'s
            two, and the features' model's unknown share), and with a blend
            the linear imputation and its variance."""
            values, variance = X_hat.copy(), np.zeros(X.shape)
            share = np.zeros((*X.shape, 3))
            if not rows.any():
                return values, variance, share
            values[rows], variance[rows], share[rows, :, :2] = conditional_imputation(
                covariance,
                prior_precision,
                X[rows],
                X_hat[rows],
                jacobian,
                return_share=True,
            )
            if linear is None:
                return values, variance, share
            centre, centre_variance = np.full(X.shape, np.nan), np.zeros(X.shape)
            centre[rows], centre_variance[rows], share[rows, :, 2] = linear
            return values, variance, share, centre, centre_variance

        return impute

    def _blends(self):
        # Fitted state, not the parameter: the weights and factors were
        # fitted for it.
        return getattr(self, "feature_covariance_", None) is not None

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
        if getattr(self, "residual_covariance_", None) is not None:
            X_hat, variance, share, *centre = self._imputer_of(X)(
                self.residual_covariance_
            )
            if centre:
                X_hat, variance = blend_imputations(
                    X_hat,
                    variance,
                    *centre,
                    weight_per_entry(share, self.imputation_weight_),
                )
            variance = variance * per_entry(
                share, self.variance_scale_, blended=bool(centre)
            )
            X_hat = X_hat.astype(X.dtype, copy=False)
            std = np.sqrt(variance).astype(X.dtype, copy=False)
        elif return_std:
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
