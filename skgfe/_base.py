"""Base class for transformers that learn a torch decoder.

Holds what GradientFlowEncoder and the autoencoder baselines share: parameter
validation, input validation, internal scaling, device and dtype handling, the
training entry points (``fit``, ``partial_fit``), decoding, scoring, feature names and
pickling. A subclass says how to build its modules, how to encode, and the loss of a
training minibatch.
"""

import copy
import hashlib
from abc import ABCMeta, abstractmethod
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from ._losses import LOSSES
from ._networks import ACTIVATIONS, ARCHITECTURES, make_mlp
from ._training import OPTIMIZERS, make_optimizer, run_epochs
from ._warnings import warn_user

try:  # scikit-learn >= 1.9: the callback API (set_callbacks, ProgressBar, ...)
    from sklearn.callback import CallbackSupportMixin
except ImportError:  # older scikit-learn: fit runs without callback hooks

    class CallbackSupportMixin:
        """Stand-in for scikit-learn's mixin where it has no callback API."""

        def _init_callback_context(self, **kwargs):
            return None


# Rows encoded or decoded at once by transform-like methods; results do not depend
# on it (rows are computed independently), only peak memory does.
CHUNK_ROWS = 8192


def _fingerprint(X):
    """A digest of a tensor's shape and values: are two training sets the same?"""
    array = np.ascontiguousarray(X.detach().cpu().numpy())
    return (array.shape, hashlib.sha256(array.tobytes()).hexdigest())


def _refuse_1d(X):
    """The 1-D input error without the array itself (a spectrum has thousands
    of values, and scikit-learn's message prints them all)."""
    shape = getattr(X, "shape", None)
    if shape is None and isinstance(X, (list, tuple)):
        shape = np.shape(X) if X and np.ndim(X[0]) == 0 else None
    if shape is not None and len(shape) == 1:
        raise ValueError(
            f"Expected 2D array, got 1D array of shape {tuple(shape)} instead. "
            "Reshape your data either using array.reshape(-1, 1) if your data has "
            "a single feature or array.reshape(1, -1) if it contains a single "
            "sample."
        )


def resolve_device(device):
    """Turn the ``device`` parameter into an available :class:`torch.device`.

    ``device`` is 'auto' (CUDA when available, else the CPU), a
    :class:`torch.device`, or any string :class:`torch.device` parses ('cpu',
    'cuda', 'cuda:1', 'mps', ...). Raises a ValueError when the string does not
    parse, or when torch cannot reach the device (no CUDA, a CUDA index out of
    range, MPS not available, ...).
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, torch.device):
        resolved = device
    elif isinstance(device, str):
        try:
            resolved = torch.device(device)
        except (RuntimeError, ValueError, TypeError) as error:
            raise ValueError(
                f"device={device!r} is not a torch device ({error}). Use 'cpu', "
                "'cuda', 'cuda:<index>', 'mps', another string torch.device "
                "parses, or 'auto'."
            ) from None
    else:
        raise ValueError(
            "device must be a string such as 'cpu', 'cuda:0' or 'auto', or a "
            f"torch.device; got {device!r}."
        )
    _check_available(resolved, device)
    return resolved


def _check_available(resolved, device):
    """Raise a ValueError unless torch can put tensors on ``resolved``."""
    kind = resolved.type
    if kind == "cpu":
        return
    if kind == "meta":
        raise ValueError(
            f"device={device!r} holds no data (torch's 'meta' device); use "
            "'cpu', 'cuda' or another device with memory."
        )
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} was requested but torch finds no CUDA device. "
                "Use device='cpu' or device='auto', or install a CUDA build of "
                "torch."
            )
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(
                f"device={device!r} was requested but torch finds {count} CUDA "
                f"device(s), with indices 0 to {count - 1}."
            )
        return
    if kind == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(
                f"device={device!r} was requested but the MPS backend (Apple "
                "silicon GPUs) is not available on this machine or in this build "
                "of torch. Use device='cpu'."
            )
        return
    try:  # any other backend: can torch allocate there?
        torch.empty(0, device=resolved)
    except Exception as error:  # backends raise various errors
        raise ValueError(
            f"device={device!r} was requested but torch cannot use it: {error}"
        ) from None


# Constraints of the training parameters every torch estimator of skgfe has.
TRAINING_PARAMETER_CONSTRAINTS = {
    "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
    "optimizer": [StrOptions(set(OPTIMIZERS))],
    "weight_averaging": [Interval(Real, 0, 1, closed="left")],
    "tol": [Interval(Real, 0, None, closed="left")],
    "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
    "early_stopping": ["boolean"],
    "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
    "random_state": ["random_state"],
    "verbose": ["verbose"],
    "warm_start": ["boolean"],
    # Any string torch.device parses, or 'auto': checked (parsed, and the
    # device available) at fit and transform time by resolve_device.
    "device": [str, torch.device],
}


class TorchEstimatorMixin:
    """What every estimator of skgfe that trains torch modules shares.

    The class provides ``_modules()`` (the trainable modules) and the
    parameters ``device``, ``random_state``, ``optimizer``,
    ``learning_rate_init`` and ``early_stopping``. Pickling stores the modules
    on the CPU, so that a model fitted on a GPU loads anywhere, and drops the
    optimiser (it references the original parameters); it is rebuilt on
    demand.
    """

    def __getstate__(self):
        # A copy: scikit-learn's __getstate__ may hand back the live __dict__, and
        # pickling (or copy.copy) must not strip the optimiser from this model.
        state = dict(super().__getstate__())
        for key, value in list(state.items()):
            if isinstance(value, torch.nn.Module):
                state[key] = copy.deepcopy(value).cpu()
        state.pop("_optimizer", None)
        return state

    def _device(self):
        return resolve_device(self.device)

    def _ensure_on_device(self):
        device = self._device()
        for module in self._modules():
            module.to(device)

    def _torch_generator(self):
        """A torch generator seeded from ``random_state`` (never the global one)."""
        seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        return torch.Generator().manual_seed(int(seed))

    def _make_optimizer(self):
        return make_optimizer(
            self.optimizer,
            [p for m in self._modules() for p in m.parameters()],
            self.learning_rate_init,
        )

    def _resume_training(self):
        """Before more training of fitted modules (warm start, ``partial_fit``)."""
        self._ensure_on_device()
        if getattr(self, "_optimizer", None) is None:  # dropped by pickling
            self._optimizer = self._make_optimizer()
        if self.early_stopping and self.validation_scores_ is None:
            self.validation_scores_ = []  # early stopping switched on
        self._no_improvement_count = 0

    def _warn_if_max_iter_reached(self, outcome):
        """After ``fit``: warn when the epoch budget, not a stopping rule, ended it."""
        if outcome.stopped_early or outcome.diverged or self.n_iter_ < self.max_iter:
            return
        warn_user(
            f"Stochastic optimizer: Maximum iterations ({self.max_iter}) reached "
            f"and the optimization hasn't converged yet: {type(self).__name__} "
            f"stopped after {self.n_iter_} epochs while its monitored loss still "
            "improved. Raise max_iter (or continue with warm_start=True).",
            ConvergenceWarning,
        )

    def _in_chunks(self, function, *tensors):
        """Apply ``function`` to matching row chunks of the tensors; concatenate.

        Results do not depend on the chunking (rows are computed independently),
        only peak memory does.
        """
        return torch.cat(
            [
                function(*(tensor[i : i + CHUNK_ROWS] for tensor in tensors))
                for i in range(0, len(tensors[0]), CHUNK_ROWS)
            ]
        )

    def _require_finite(self, values, what, inputs="samples"):
        """Raise when some rows of the ndarray ``values`` are not finite.

        ``what`` names one row's value (e.g. "The code"), ``inputs`` the rows.
        """
        finite = np.isfinite(values)
        if finite.ndim > 1:
            finite = finite.all(axis=1)
        n_bad = int(np.sum(~finite))
        if not n_bad:
            return
        if not all(
            torch.isfinite(p).all() for m in self._modules() for p in m.parameters()
        ):
            cause = (
                "the model's weights are not finite; refit it (e.g. with a lower "
                "learning_rate_init)"
            )
        else:
            cause = (
                f"the {inputs} lie so far outside the range seen in training that "
                "the networks overflow"
            )
            if getattr(self, "_fit_dtype", None) == np.float32:
                cause += " in float32 (a model fitted on float64 data goes further)"
        raise FloatingPointError(
            f"{what} is not finite for {n_bad} of {len(finite)} {inputs}: {cause}."
        )


class BaseDecoderTransformer(
    TorchEstimatorMixin,
    CallbackSupportMixin,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    BaseEstimator,
    metaclass=ABCMeta,
):
    """Shared machinery of the decoder-based transformers. Not for direct use."""

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "hidden_layer_sizes": [
            "array-like",
            Interval(Integral, 1, None, closed="left"),
        ],
        "activation": [StrOptions(set(ACTIVATIONS) - {"sigmoid"})],
        "architecture": [StrOptions(set(ARCHITECTURES))],
        "loss": [StrOptions(set(LOSSES))],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [
            StrOptions({"auto"}),
            Interval(Integral, 1, None, closed="left"),
        ],
        **TRAINING_PARAMETER_CONSTRAINTS,
    }

    # ------------------------------------------------------------------ hooks
    @abstractmethod
    def _build_modules(self, n_features, generator, dtype, device):
        """Create the fitted torch modules (at least ``self.decoder_``)."""

    @abstractmethod
    def _encode(self, X):
        """Codes of the scaled samples ``X`` (a tensor).

        Inference callers wrap it in ``torch.no_grad``; a training loss may call it
        with gradients enabled.
        """

    @abstractmethod
    def _batch_loss(self, X_batch, generator, rows=None):
        """Mean training loss of a minibatch (a tensor with gradient) and a dict.

        ``rows`` are the minibatch's indices into this training call's samples.
        """

    def _init_from_data(self, X):
        """Hook: initialise the new modules from the scaled training samples."""

    def _begin_training(self, X):
        """Hook: state that lives for one call of fit or partial_fit."""

    def _end_training(self):
        """Hook: drop what :meth:`_begin_training` created."""

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
        """Parameters that shape the fitted networks or the meaning of their outputs.

        Resolved values. Recorded at initialisation, they are what inference uses
        (whatever ``set_params`` did since), and neither a warm start nor
        ``partial_fit`` can change them.
        """
        return {
            "n_components": self.n_components,
            "hidden_layer_sizes": self._hidden_sizes(),
            "activation": self.activation,
            "architecture": self.architecture,
            "loss": self.loss,
        }

    def _fitted_architecture_changed(self, incremental):
        """Whether a parameter of :meth:`_architecture` changed since initialisation.

        ``partial_fit`` cannot change the shape of a partially trained model and
        raises; ``fit`` with ``warm_start=True`` warns and starts afresh.
        """
        fitted = self._fitted_architecture
        changed = {
            name: (fitted[name], value)
            for name, value in self._architecture().items()
            if value != fitted[name]
        }
        if not changed:
            return False
        details = ", ".join(
            f"{name} ({old!r} -> {new!r})" for name, (old, new) in changed.items()
        )
        if incremental:
            raise ValueError(
                f"partial_fit cannot change {details} of a fitted "
                f"{self.__class__.__name__}: the networks were built with the old "
                "values. Set them back, or call fit to train a new model."
            )
        warn_user(
            f"warm_start=True cannot reuse the fitted networks after changing "
            f"{details}: the model is trained from scratch.",
            UserWarning,
        )
        return True

    @property
    def _fitted_loss(self):
        return self._fitted_architecture["loss"]

    @property
    def _loss_function(self):
        return LOSSES[self._fitted_loss]

    def _effective_batch_size(self, n_samples):
        if self.batch_size == "auto":
            return min(200, n_samples)
        # Like MLPRegressor, but silently: the default (64) exceeds small data sets.
        return min(self.batch_size, n_samples)

    def _hidden_sizes(self):
        sizes = np.atleast_1d(np.asarray(self.hidden_layer_sizes, dtype=object))
        if sizes.ndim != 1 or not all(
            isinstance(s, Integral) and not isinstance(s, bool) and s > 0 for s in sizes
        ):
            raise ValueError(
                "hidden_layer_sizes must be a sequence of positive integers (or () "
                f"for a linear decoder), got {self.hidden_layer_sizes!r}."
            )
        sizes = tuple(int(s) for s in sizes)
        if self.architecture == "modified_mlp" and len(set(sizes)) > 1:
            raise ValueError(
                "architecture='modified_mlp' needs hidden layers of equal width (its "
                f"two gates feed every hidden layer), got hidden_layer_sizes={sizes}."
            )
        return sizes

    def _check_params(self):
        """Checks of parameter combinations that constraints cannot express.

        Called at the start of ``fit`` and ``partial_fit``; subclasses extend it.
        """
        self._hidden_sizes()

    def _make_network(
        self, n_inputs, hidden_sizes, n_outputs, generator, dtype, device
    ):
        """A network of the estimator's ``architecture`` and ``activation``."""
        return make_mlp(
            n_inputs,
            hidden_sizes,
            n_outputs,
            self.activation,
            architecture=self.architecture,
            generator=generator,
            dtype=dtype,
            device=device,
        )

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
        _refuse_1d(X)
        X = validate_data(
            self,
            X,
            reset=reset,
            dtype=[np.float64, np.float32],
            accept_sparse=False,
            ensure_min_samples=1,
        )
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
        if loss == "bce" and (X.min() < 0 or X.max() > 1):
            raise ValueError(
                "loss='bce' needs data in [0, 1] (it models each feature as a "
                f"probability); got values in [{X.min():.4g}, {X.max():.4g}]. Rescale "
                "the data (e.g. with MinMaxScaler) or use loss='mse'."
            )

    def _to_tensor(self, X):
        # torch.tensor copies, so the caller's array (possibly a read-only memmap)
        # is never written to or aliased.
        return torch.tensor(X, dtype=self._dtype, device=self._device())

    def _fit_scaling(self, X):
        """Internal scaling that keeps the flow's step sizes meaningful.

        For 'mse' the data are centred per feature and divided by ONE global scale
        (the root mean feature variance). One scalar, unlike per-feature
        standardisation, leaves the squared-error geometry unchanged up to a
        constant, so the optimum (e.g. PCA's subspace for a linear decoder) is the
        same as on the raw data. 'bce' data are probabilities and stay as they are.
        """
        if self.loss == "mse":
            self.mean_ = X.mean(axis=0)
            scale = float(np.sqrt(X.var(axis=0).mean()))
            self.scale_ = scale if np.isfinite(scale) and scale > 0 else 1.0
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
    def _initialize(self, n_features, generator):
        self.n_components_ = self.n_components
        self._fitted_architecture = self._architecture()
        self._dtype = torch.float64 if self._fit_dtype == np.float64 else torch.float32
        self._build_modules(n_features, generator, self._dtype, self._device())
        try:
            self._optimizer = self._make_optimizer()
        except BaseException:
            # The first torch optimiser of a process imports torch._dynamo
            # (seconds): interrupted there, the half-built model must not look
            # fitted.
            self._forget_fit()
            raise
        self.loss_curve_ = []
        self.best_loss_ = np.inf
        self.validation_scores_ = [] if self.early_stopping else None
        self.best_validation_score_ = None
        self.n_iter_ = 0
        self.t_ = 0
        self._no_improvement_count = 0

    def _forget_fit(self):
        """Drop every fitted attribute, so that ``check_is_fitted`` raises again."""
        for name in [k for k in vars(self) if k.endswith("_") and k[:2] != "__"]:
            delattr(self, name)

    def _is_initialized(self):
        return hasattr(self, "decoder_")

    def _fit(self, X, n_epochs, incremental):
        first_call = not (
            (incremental or self.warm_start)
            and self._is_initialized()
            and not self._fitted_architecture_changed(incremental)
        )
        X = self._validate_X(X, reset=first_call)
        if not incremental and X.shape[0] < 2:
            raise ValueError(
                f"Found array with n_samples={X.shape[0]} while a minimum of 2 is "
                f"required by {type(self).__name__}.fit: one sample has no "
                "variance to learn (partial_fit accepts single samples)."
            )
        if first_call and not incremental:
            self._warn_if_degenerate(X)
        generator = self._torch_generator()
        if first_call:
            self._fit_dtype = X.dtype
            self._fit_scaling(X)
            self._initialize(X.shape[1], generator)
        else:
            self._resume_training()
        X_t = self._scale(self._to_tensor(X))
        X_all = X_t
        X_val = None
        n_val = max(1, int(round(self.validation_fraction * len(X_t))))
        # With a single sample there is nothing to hold out: monitor the
        # training loss instead.
        if self.early_stopping and not incremental and len(X_t) > n_val:
            order = self._validation_split(X_t, generator, first_call)
            X_val, X_t = X_t[order[:n_val]], X_t[order[n_val:]]
        if first_call:
            self._init_from_data(X_t)
        # scikit-learn callbacks (e.g. ProgressBar) see the fit as one task with
        # an "epoch" subtask per epoch.
        callback_ctx = self._init_callback_context(max_subtasks=n_epochs)
        if callback_ctx is not None:
            callback_ctx.call_on_fit_task_begin(estimator=self, X=X)
        self._begin_training(X_t)
        try:
            outcome = run_epochs(
                self,
                X_t,
                X_val,
                n_epochs,
                generator,
                keep_best=not incremental,
                callback_ctx=callback_ctx,
            )
        finally:
            self._end_training()
        if outcome.kept_start and not incremental:
            self._forget_resume_state()
        if first_call and X_val is not None and outcome.kept_start:
            # Training never beat the initial model on the validation samples:
            # that model is kept, and initialised from all the data it is better.
            self._init_from_data(X_all)
        if callback_ctx is not None:
            callback_ctx.call_on_fit_task_end(
                estimator=self, X=X, reconstruction_attributes={}
            )
        if not incremental:
            self.kept_start_ = outcome.kept_start
            self._report_training_end(outcome, X_val is not None, first_call)
            self._warn_if_max_iter_reached(outcome)
        return self

    def _forget_resume_state(self):
        """After a fit that kept its start: what a warm start would resume from
        (the optimiser's moments; GFE's training codes) belongs to weights that
        were dropped, so the next warm start resumes from the kept start afresh."""
        self._optimizer = self._make_optimizer()

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

    def _validation_split(self, X, generator, first_call):
        """A permutation of the rows of ``X``: validation rows first.

        A warm-start fit on the same samples keeps the previous fit's split, so
        that it validates on samples it has not trained on and resumes what
        depends on the training rows (GFE's training codes).
        """
        if not self.warm_start:
            return torch.randperm(len(X), generator=generator).to(X.device)
        fingerprint = _fingerprint(X)
        last = getattr(self, "_last_split", None)
        if not first_call and last is not None and last[0] == fingerprint:
            order = last[1]
        else:
            order = torch.randperm(len(X), generator=generator)
        self._last_split = (fingerprint, order)
        return order.to(X.device)

    def _start_description(self):
        """What the weights a fit starts from are, for the end-of-training report."""
        return "the initial weights"

    def _report_training_end(self, outcome, validated, first_call):
        """With ``verbose``: say why training stopped and which weights were kept."""
        if not self.verbose:
            return
        monitored = "validation loss" if validated else "training loss"
        reasons = {
            "plateau": f"the {monitored} did not improve by more than tol={self.tol} "
            f"(relative) in {self.n_iter_no_change} checks",
            "max_iter": f"max_iter={self.max_iter} epochs were reached while the "
            f"{monitored} still improved (raise max_iter)",
            "callback": "a callback asked to stop",
            "diverged": "the loss became non-finite (lower learning_rate_init)",
            "interrupted": "it was interrupted",
        }
        if outcome.kept_start:
            start = (
                self._start_description()
                if first_call
                else "the weights the previous fit ended with"
            )
            kept = f"kept {start}: no trained weights had a lower {monitored}"
        else:
            kept = f"kept the weights measured after epoch {outcome.best_epoch}"
        print(
            f"Training stopped after {self.n_iter_} epochs: "
            f"{reasons[outcome.reason]}; {kept}."
        )

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
        return self._fit(X, self.max_iter, incremental=False)

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
        self._fit(X, 1, incremental=True)
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
        X = check_array(X, dtype=[np.float64, np.float32])
        deviation = float(np.sqrt(np.mean((X - self.mean_) ** 2))) / self.scale_
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
    def _check_ready(self, X):
        check_is_fitted(self)
        _refuse_1d(X)
        X = validate_data(
            self,
            X,
            reset=False,
            dtype=[np.float64, np.float32],
            accept_sparse=False,
            ensure_min_samples=1,
        )
        self._check_range(X, self._fitted_loss)
        self._ensure_on_device()
        return X

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
        with np.errstate(over="ignore", invalid="ignore"):
            scores = -np.mean((X - X_hat) ** 2, axis=1)
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
