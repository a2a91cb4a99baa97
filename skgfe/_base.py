"""Base class for transformers that learn a torch decoder.

Holds what GradientFlowEncoder and the autoencoder baselines share on top of
:class:`~skgfe._torch_estimator.TorchEstimatorMixin`: their parameters, input
validation, internal scaling, the validation split, the public ``fit`` and
``partial_fit``, decoding, scoring and feature names. A subclass says how to
build its modules, how to encode, and the loss of a training minibatch.
"""

import hashlib
from abc import abstractmethod
from numbers import Integral

import numpy as np
import torch
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_array, check_is_fitted

from ._losses import LOSSES
from ._torch_estimator import (
    NETWORK_PARAMETER_CONSTRAINTS,
    TRAINING_PARAMETER_CONSTRAINTS,
    TorchEstimatorMixin,
    centre_and_scale,
)
from ._warnings import warn_user


def _fingerprint(X):
    """A digest of a tensor's shape and values: are two training sets the same?"""
    array = np.ascontiguousarray(X.detach().cpu().numpy())
    return (array.shape, hashlib.sha256(array.tobytes()).hexdigest())


class BaseDecoderTransformer(
    TorchEstimatorMixin,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    BaseEstimator,
):
    """Shared machinery of the decoder-based transformers. Not for direct use."""

    _parameter_constraints: dict = {
        **NETWORK_PARAMETER_CONSTRAINTS,
        "loss": [StrOptions(set(LOSSES))],
        "batch_size": [
            StrOptions({"auto"}),
            Interval(Integral, 1, None, closed="left"),
        ],
        **TRAINING_PARAMETER_CONSTRAINTS,
    }

    # A decoder without hidden layers is linear (its optimum spans PCA's subspace).
    _MIN_HIDDEN_LAYERS = 0

    # ------------------------------------------------------------------ hooks
    @abstractmethod
    def _encode(self, X):
        """Codes of the scaled samples ``X`` (a tensor).

        Inference callers wrap it in ``torch.no_grad``; a training loss may call it
        with gradients enabled.
        """

    def _fit_starting_weights(self, X):
        """Hook: fit a new model's starting weights to scaled training samples."""

    def _overcomplete_is_intended(self):
        """Hook: True where codes wider than the data need no warning."""
        return False

    def _modules(self):
        """The trainable torch modules, in a fixed order."""
        return [self.decoder_]

    def _validation_loss(self, X):
        """Mean reconstruction loss of scaled samples, used for early stopping."""
        with torch.no_grad():
            output = self.decoder_(self._encode(X))
            return self._loss_function(output, X).mean().item()

    def _training_loss(self, X):
        """Training objective of the current weights on all scaled samples ``X``.

        What a progress check compares without validation samples. Random parts
        of the objective (corruption, sampled codes) draw from a fixed seed, so
        that successive checks compare weights, not noise.
        """
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            return self._batch_loss(X, generator)[0].item()

    # -------------------------------------------------------------- helpers
    def _architecture(self):
        return {**super()._architecture(), "loss": self.loss}

    @property
    def _fitted_loss(self):
        return self._fitted_architecture["loss"]

    @property
    def _loss_function(self):
        return LOSSES[self._fitted_loss]

    def _make_decoder(self, n_features, generator, dtype, device):
        """Decoder ``n_components -> hidden_layer_sizes -> n_features``."""
        return self._make_network(
            self.n_components,
            self._hidden_sizes(),
            n_features,
            generator,
            dtype,
            device,
        )

    def _make_encoder(self, n_features, n_outputs, generator, dtype, device):
        """Encoder mirroring the decoder: ``n_features -> reversed hidden -> out``."""
        return self._make_network(
            n_features, self._hidden_sizes()[::-1], n_outputs, generator, dtype, device
        )

    def _validate_X(self, X, reset):
        X = self._validate_samples(X, reset)
        self._check_range(X, self.loss if reset else self._fitted_loss)
        if (
            reset
            and self.n_components > X.shape[1]
            and not self._overcomplete_is_intended()
        ):
            warn_user(
                f"n_components={self.n_components} exceeds the number of features "
                f"({X.shape[1]}): the codes are overcomplete, they do not compress "
                "the data and many codes reconstruct a sample equally well. Use "
                "n_components <= n_features for a reduction.",
                UserWarning,
            )
        return X

    @staticmethod
    def _check_range(X, loss):
        if loss != "bce":
            return
        low, high = np.nanmin(X), np.nanmax(X)
        if low < 0 or high > 1:
            raise ValueError(
                "loss='bce' needs data in [0, 1] (it models each feature as a "
                f"probability); got values in [{low:.4g}, {high:.4g}]. Rescale "
                "the data (e.g. with MinMaxScaler) or use loss='mse'."
            )

    def _to_tensor(self, X):
        # torch.tensor copies, so the caller's array (possibly a read-only memmap)
        # is never written to or aliased.
        return torch.tensor(X, dtype=self._dtype, device=self._device())

    def _fit_scaling(self, X, y):
        """Internal scaling that keeps the flow's step sizes meaningful.

        For 'mse' the data are centred per feature and divided by ONE global scale
        (the root mean feature variance). One scalar, unlike per-feature
        standardisation, leaves the squared-error geometry unchanged up to a
        constant, so the optimum (e.g. PCA's subspace for a linear decoder) is the
        same as on the raw data. 'bce' data are probabilities and stay as they are.
        """
        if self.loss == "mse":
            self.mean_, self.scale_ = centre_and_scale(X)
        else:
            self.mean_ = np.zeros(X.shape[1], dtype=X.dtype)
            self.scale_ = 1.0

    def _scale(self, X):
        mean = torch.as_tensor(self.mean_, dtype=self._dtype, device=X.device)
        return (X - mean) / self.scale_

    def _unscale(self, X):
        mean = torch.as_tensor(self.mean_, dtype=X.dtype, device=X.device)
        return X * self.scale_ + mean

    def _decode_scaled(self, Z):
        """Decoder output in the scaled space, as a reconstruction (no logits)."""
        output = self.decoder_(Z)
        return torch.sigmoid(output) if self._fitted_loss == "bce" else output

    # ------------------------------------------------------------ training
    def _validate_training_data(self, X, y, reset, incremental):
        X = self._validate_X(X, reset=reset)
        if not incremental and X.shape[0] < 2:
            raise ValueError(
                f"Found array with n_samples={X.shape[0]} while a minimum of 2 is "
                f"required by {type(self).__name__}.fit: one sample has no "
                "variance to learn (partial_fit accepts single samples)."
            )
        if reset and not incremental:
            self._warn_if_degenerate(X)
        return X, None

    def _record_data_format(self, X, y):
        self._fit_dtype = X.dtype
        self._dtype = torch.float64 if X.dtype == np.float64 else torch.float32

    def _module_sizes(self, X, y):
        return (X.shape[1],)

    def _training_data(self, X, y, generator, new_model, incremental):
        """Scaled training samples and, with early stopping, validation samples.

        The starting weights of a new model are fitted to the training part.
        """
        X_train = self._scale(self._to_tensor(X))
        X_val = None
        n_val = max(1, int(round(self.validation_fraction * len(X_train))))
        if self.early_stopping and not incremental:
            if len(X_train) > n_val:
                order = self._validation_split(X_train, generator, new_model)
                X_val, X_train = X_train[order[:n_val]], X_train[order[n_val:]]
            else:
                warn_user(
                    f"early_stopping=True with validation_fraction="
                    f"{self.validation_fraction} holds out all {len(X_train)} "
                    "training samples and leaves none to train on: training "
                    "monitors the training loss instead (as with "
                    "early_stopping=False). Lower validation_fraction or pass "
                    "more samples.",
                    UserWarning,
                )
        if new_model:
            self._fit_starting_weights(X_train)
        return X_train, X_val

    def _refit_start_to_all_data(self, X):
        self._fit_starting_weights(self._scale(self._to_tensor(X)))

    def _warn_if_degenerate(self, X):
        """Warn about training data that cannot fit a model of this size."""
        name = type(self).__name__
        if np.all(X == X[:1]):
            warn_user(
                f"All {X.shape[0]} training samples of {name} are equal: there is "
                "no variance to encode, every code decodes to that sample (or to "
                "what the untrained decoder makes of it).",
                UserWarning,
            )
        elif self.n_components > X.shape[0] - 1:
            warn_user(
                f"n_components={self.n_components} is not below the number of "
                f"training samples ({X.shape[0]}): {X.shape[0]} samples span at "
                f"most {X.shape[0] - 1} directions, so some code directions are "
                "never trained (PCA refuses this). Use fewer components or more "
                "samples.",
                UserWarning,
            )

    def _validation_split(self, X, generator, new_model):
        """A permutation of the rows of ``X``: validation rows first.

        A warm-start fit on the same samples keeps the previous fit's split, so
        that it validates on samples it has not trained on and resumes what
        depends on the training rows (GFE's training codes).
        """
        if not self.warm_start:
            return torch.randperm(len(X), generator=generator).to(X.device)
        fingerprint = _fingerprint(X)
        last = getattr(self, "_last_split", None)
        if not new_model and last is not None and last[0] == fingerprint:
            order = last[1]
        else:
            order = torch.randperm(len(X), generator=generator)
        self._last_split = (fingerprint, order)
        return order.to(X.device)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Train the model on ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training samples.
        y : Ignored
            Not used, present for API consistency by convention.

        Returns
        -------
        self : object
            Fitted estimator.
        """
        self._check_params()
        return self._fit(X, None, self.max_iter, incremental=False)

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y=None):
        """Train for one epoch on ``X``, initialising the model on the first call.

        The internal scaling (``mean_`` and ``scale_``, see the User Guide) is
        fixed from the first call's data and never updated: the step sizes and
        tolerances of later calls assume data like the first block. Make the
        first block representative of all the data (several samples, spread as
        the rest), or standardise outside, e.g. with a
        :class:`~sklearn.preprocessing.StandardScaler` fitted on a sample
        beforehand. A later block whose samples lie more than 10 times
        ``scale_`` from ``mean_`` on average (or, with 10 samples or more, less
        than 0.1 times) warns with a :class:`UserWarning`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training samples.
        y : Ignored
            Not used, present for API consistency by convention.

        Returns
        -------
        self : object
            Updated estimator.
        """
        self._check_params()
        later_block = self._is_initialized()
        self._fit(X, None, 1, incremental=True)
        if later_block:
            self._check_block_scaling(X)
        return self

    def _check_block_scaling(self, X):
        """Warn when a later ``partial_fit`` block is far off the frozen scaling.

        Measured by the root mean square deviation of the block from ``mean_``
        in units of ``scale_``, which is 1 for the block the scaling came from
        (spread and offset together). Below 0.1 is only tested on 10 samples or
        more: a few samples can sit close to the mean by chance.
        """
        if self.loss != "mse":  # 'bce' data are not scaled
            return
        X = check_array(X, dtype=[np.float64, np.float32], ensure_all_finite=False)
        deviation = float(np.sqrt(np.nanmean((X - self.mean_) ** 2))) / self.scale_
        if 0.1 <= deviation <= 10 or (deviation < 0.1 and len(X) < 10):
            return
        warn_user(
            f"This partial_fit block lies {deviation:.3g} times scale_ from mean_ "
            "(root mean square over its values), where the first block, which "
            "fixed the internal scaling, lies 1 time: the model assumes scaled "
            "data of order one. Start a new model whose first partial_fit block "
            "represents all the data, or standardise the data outside the model.",
            UserWarning,
        )

    # ------------------------------------------------------------ inference
    def _check_inference_input(self, X):
        self._check_range(X, self._fitted_loss)

    def transform(self, X):
        """Encode ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples to encode.

        Returns
        -------
        X_new : ndarray of shape (n_samples, n_components)
            Codes, in the dtype of ``X``.
        """
        X = self._check_ready(X)
        X_t = self._scale(self._to_tensor(X))
        with torch.no_grad():
            Z = self._in_chunks(self._encode, X_t)
        Z = Z.cpu().numpy().astype(X.dtype, copy=False)
        self._require_finite(Z, "The code")
        return Z

    def inverse_transform(self, X):
        """Decode codes back to the input space.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_components)
            Codes, as returned by :meth:`transform`.

        Returns
        -------
        X_original : ndarray of shape (n_samples, n_features)
            Reconstructions, in the units of the training data.
        """
        check_is_fitted(self)
        Z = check_array(X, dtype=[np.float64, np.float32])
        if Z.shape[1] != self.n_components_:
            raise ValueError(
                f"X has {Z.shape[1]} features, but {self.__class__.__name__} was "
                f"fitted with n_components={self.n_components_} and decodes codes "
                "of that many features."
            )
        self._ensure_on_device()
        Z_t = self._to_tensor(Z)
        with torch.no_grad():
            X_hat = self._in_chunks(self._decode_scaled, Z_t)
            X_hat = self._unscale(X_hat)
        X_hat = X_hat.cpu().numpy().astype(Z.dtype, copy=False)
        self._require_finite(X_hat, "The reconstruction", inputs="codes")
        return X_hat

    def _reconstruct(self, X):
        """Reconstructions of validated samples, as a tensor in input units."""
        X_t = self._scale(self._to_tensor(X))
        with torch.no_grad():
            X_hat = self._in_chunks(
                lambda chunk: self._decode_scaled(self._encode(chunk)), X_t
            )
        return self._unscale(X_hat)

    def score_samples(self, X):
        """Negative mean squared reconstruction error of each sample.

        The error is measured in the units of ``X`` (after encoding and decoding),
        averaged over features; higher is better.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples.

        Returns
        -------
        scores : ndarray of shape (n_samples,)
            ``-mean((X - inverse_transform(transform(X)))**2, axis=1)``.
        """
        X = self._check_ready(X)
        X_hat = self._reconstruct(X).cpu().numpy()
        # Over the observed entries only, for samples with missing ones.
        mean = np.nanmean if np.isnan(X).any() else np.mean
        with np.errstate(over="ignore", invalid="ignore"):
            scores = -mean((X - X_hat) ** 2, axis=1)
        self._require_finite(scores, "The score")
        return scores

    def score(self, X, y=None):
        """Negative mean squared reconstruction error over all samples.

        It is in the units of ``X`` and only rises with ``n_components``: to
        choose the number of components in a grid search, score with
        :func:`skgfe.metrics.explained_variance_scorer` (unit-free, and
        comparable with PCA, whose ``score`` is a log-likelihood) and refit with
        :func:`skgfe.metrics.smallest_n_components` (the smallest number of
        components within one standard error of the best, or reaching a target).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples.
        y : Ignored
            Not used, present for API consistency by convention.

        Returns
        -------
        score : float
            Higher is better, 0 is a perfect reconstruction.
        """
        return float(np.mean(self.score_samples(X)))

    @property
    def _n_features_out(self):
        return self.n_components_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        tags.input_tags.allow_nan = False
        tags.non_deterministic = False
        return tags
