"""The base of every estimator of skgfe that trains torch modules.

:class:`TorchEstimatorMixin` holds what the decoder-based transformers
(:class:`~skgfe._base.BaseDecoderTransformer`) and
:class:`~skgfe.VAEDLMRegressor` share: the skeleton of ``fit`` and its steps
(new model or warm start, training, the end-of-training report), the hooks the
training loop calls, the training record, the checks of a fitted model's input,
pickling, devices and random generators. A subclass implements the hooks that
say how its data are validated, scaled and split, and how its modules are built
and trained.
"""

import copy
from abc import ABCMeta, abstractmethod
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from ._devices import resolve_device
from ._missing import check_observed_rows
from ._networks import ACTIVATIONS, ARCHITECTURES, make_mlp
from ._training import OPTIMIZERS, make_optimizer, progress_window, run_epochs
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

# Constraints of the network parameters every torch estimator of skgfe has.
NETWORK_PARAMETER_CONSTRAINTS = {
    "n_components": [Interval(Integral, 1, None, closed="left")],
    "hidden_layer_sizes": [
        "array-like",
        Interval(Integral, 1, None, closed="left"),
    ],
    "activation": [StrOptions(set(ACTIVATIONS) - {"sigmoid"})],
    "architecture": [StrOptions(set(ARCHITECTURES))],
    "max_iter": [Interval(Integral, 1, None, closed="left")],
}

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


def _new_training_record(early_stopping):
    """The training record of a new model: attribute name -> initial value."""
    return {
        "loss_curve_": [],
        "best_loss_": np.inf,
        "validation_scores_": [] if early_stopping else None,
        "best_validation_score_": None,
        "n_iter_": 0,
        "t_": 0,
        "_no_improvement_count": 0,
    }


# The per-fit training attributes: set afresh when a model's networks are built,
# updated by every epoch (see run_epochs), saved with the model (skgfe.save).
TRAINING_RECORD = tuple(_new_training_record(early_stopping=False))


def centre_and_scale(values):
    """Per-column mean of ``values`` and one global scale of the centred values.

    The scale is the root mean column variance, or 1 where that is zero or not
    finite. One scalar, unlike per-column standardisation, leaves the
    squared-error geometry unchanged up to a constant.

    Parameters
    ----------
    values : ndarray of shape (n_rows, n_columns)
        The training values.

    Returns
    -------
    mean : ndarray of shape (n_columns,)
    scale : float
    """
    if np.isnan(values).any():
        # Missing entries (NaN) are left out of each column's statistics.
        mean = np.nanmean(values, axis=0)
        scale = float(np.sqrt(np.nanvar(values, axis=0).mean()))
    else:
        mean = values.mean(axis=0)
        scale = float(np.sqrt(values.var(axis=0).mean()))
    return mean, (scale if np.isfinite(scale) and scale > 0 else 1.0)


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


class TorchEstimatorMixin(CallbackSupportMixin, metaclass=ABCMeta):
    """What every estimator of skgfe that trains torch modules shares.

    The class has the parameters of :data:`NETWORK_PARAMETER_CONSTRAINTS` and
    :data:`TRAINING_PARAMETER_CONSTRAINTS` and ``batch_size``. Its ``fit``
    (and ``partial_fit``) call :meth:`_fit`, which validates the data, builds
    a new model or resumes the fitted one, runs :func:`~skgfe._training.run_epochs`
    and reports how training ended; the abstract methods and the hooks below
    say what differs between estimators. Pickling stores the modules on the
    CPU, so that a model fitted on a GPU loads anywhere, and drops the
    optimiser (it references the original parameters); it is rebuilt on
    demand.
    """

    # Fewest hidden layers the networks may have (a decoder may be linear).
    _MIN_HIDDEN_LAYERS = 1

    # ------------------------------------------------------ abstract methods
    # Whether samples may miss entries (NaN), left out of every loss.
    _accepts_missing = False

    def _fit_error_model(self, X_train, X_val):
        """Hook: after ``fit``, estimate what error bars need (scaled tensors)."""

    def _fit_amortized_start(self, X_train, generator, incremental):
        """Hook: after training, fit what starts inference from the scaled
        training samples ``X_train`` (``fit`` only: ``incremental`` is
        ``partial_fit``, which leaves inference without it)."""

    @abstractmethod
    def _validate_training_data(self, X, y, reset, incremental):
        """Validated ``(X, y)`` of a training call (``reset``: for a new model)."""

    @abstractmethod
    def _fit_scaling(self, X, y):
        """Fix the internal scaling from a new model's validated training data."""

    @abstractmethod
    def _module_sizes(self, X, y):
        """The leading arguments of :meth:`_build_modules` for the training data."""

    @abstractmethod
    def _build_modules(self, *args):
        """Create the fitted torch modules (at least ``self.decoder_``).

        ``args`` are the sizes of :meth:`_module_sizes`, then the generator that
        draws the weights, the dtype and the device.
        """

    @abstractmethod
    def _training_data(self, X, y, generator, new_model, incremental):
        """What :func:`~skgfe._training.run_epochs` trains and validates on.

        Returns ``(X_train, X_val)`` built from the validated data, ``X_val``
        None when nothing is held out.
        """

    @abstractmethod
    def _modules(self):
        """The trainable torch modules, in a fixed order."""

    @abstractmethod
    def _batch_loss(self, X_batch, generator, rows=None):
        """Mean training loss of a minibatch (a tensor with gradient) and a dict.

        ``rows`` are the minibatch's indices into this training call's samples.
        """

    @abstractmethod
    def _validation_loss(self, X_val):
        """The held-out loss of the current weights, for early stopping."""

    @abstractmethod
    def _training_loss(self, X_train):
        """The training objective of the current weights on all of ``X_train``."""

    # ----------------------------------------------------------------- hooks
    def _record_data_format(self, X, y):
        """Hook: what a new model takes from its first training data besides
        the scaling (dtypes, the number of outputs)."""

    def _draw_model_seeds(self, generator):
        """Hook: seeds a new model draws after its weights and keeps."""

    def _begin_training(self, X_train):
        """Hook: state that lives for one call of fit or partial_fit."""

    def _end_training(self):
        """Hook: drop what :meth:`_begin_training` created."""

    def _clip_gradients(self):
        """Hook: called by the training loop between backward pass and step."""

    def _prepare_minibatches(self, X_train, rows):
        """Hook: called by the training loop before it steps the consecutive
        minibatches that hold the training rows ``rows`` (a group of about
        :data:`~skgfe._training.MINIBATCH_GROUP_ROWS` rows)."""

    def _reference_training_loss(self, X_train):
        """Hook: a training loss that validated checks must not exceed, or None.

        See :func:`~skgfe._training.run_epochs`.
        """
        return None

    def _refit_start_to_all_data(self, X):
        """Hook: a new model's validated fit kept its start: refit the start to
        all the validated training samples ``X`` (it was fitted to the training
        part only)."""

    def _forget_resume_state(self):
        """After a fit that kept its start: what a warm start would resume from
        (the optimiser's moments; GFE's training codes) belongs to weights that
        were dropped, so the next warm start resumes from the kept start afresh."""
        self._optimizer = self._make_optimizer()

    def _start_description(self):
        """What the weights a fit starts from are, for the end-of-training report."""
        return "the initial weights"

    def _block_options(self):
        """Hook: options of the network blocks, passed on to ``make_mlp``."""
        return {}

    def _check_inference_input(self, X):
        """Hook: checks of validated input to a fitted model, beyond its shape."""

    # ------------------------------------------------------------ parameters
    def _hidden_sizes(self):
        """``hidden_layer_sizes`` as a tuple of ints; raise where it is invalid."""
        sizes = np.atleast_1d(np.asarray(self.hidden_layer_sizes, dtype=object))
        if (
            sizes.ndim != 1
            or len(sizes) < self._MIN_HIDDEN_LAYERS
            or not all(
                isinstance(s, Integral) and not isinstance(s, bool) and s > 0
                for s in sizes
            )
        ):
            form = (
                "a sequence of positive integers (or () for a linear decoder)"
                if self._MIN_HIDDEN_LAYERS == 0
                else "a non-empty sequence of positive integers"
            )
            raise ValueError(
                f"hidden_layer_sizes must be {form}, got {self.hidden_layer_sizes!r}."
            )
        sizes = tuple(int(s) for s in sizes)
        if self.architecture == "modified_mlp":
            self._check_modified_mlp_sizes(sizes)
        return sizes

    def _check_modified_mlp_sizes(self, sizes):
        """Raise unless the modified MLP's blocks can take these hidden layers."""
        if self._block_options().get("gate_first_layer", True):
            if len(set(sizes)) > 1:
                raise ValueError(
                    "architecture='modified_mlp' needs hidden layers of equal width "
                    "(its two gates feed every hidden layer), got "
                    f"hidden_layer_sizes={sizes}."
                )
        elif len(set(sizes)) > 1 or len(sizes) < 2:
            raise ValueError(
                "architecture='modified_mlp' needs at least two hidden layers of "
                "equal width (its first hidden layer is plain and its two gates "
                f"feed the others), got hidden_layer_sizes={sizes}."
            )

    def _check_params(self):
        """Checks of parameter combinations that constraints cannot express.

        Called at the start of ``fit`` and ``partial_fit``; subclasses extend it.
        """
        self._hidden_sizes()

    def _architecture(self):
        """Parameters that shape the fitted networks or the meaning of their outputs.

        Resolved values. Recorded at initialisation, they are what inference uses
        (whatever ``set_params`` did since), and neither a warm start nor
        ``partial_fit`` can change them. Subclasses add theirs.
        """
        return {
            "n_components": self.n_components,
            "hidden_layer_sizes": self._hidden_sizes(),
            "activation": self.activation,
            "architecture": self.architecture,
        }

    def _make_network(
        self,
        n_inputs,
        hidden_sizes,
        n_outputs,
        generator,
        dtype,
        device,
        activation=None,
    ):
        """A network of the estimator's ``architecture`` and blocks.

        Its activation is ``activation``, by default the ``activation`` parameter.
        """
        return make_mlp(
            n_inputs,
            hidden_sizes,
            n_outputs,
            self.activation if activation is None else activation,
            architecture=self.architecture,
            generator=generator,
            dtype=dtype,
            device=device,
            **self._block_options(),
        )

    def _effective_batch_size(self, n_samples):
        """Rows per minibatch for ``n_samples`` training rows."""
        if self.batch_size == "auto":
            return min(200, n_samples)
        # Like MLPRegressor, but silently: the default (64) exceeds small data sets.
        return min(self.batch_size, n_samples)

    # -------------------------------------------------------- fit, in steps
    def _fit(self, X, y, n_epochs, incremental):
        """Train on ``X`` (and ``y``): the skeleton of ``fit`` and ``partial_fit``.

        ``incremental`` (``partial_fit``) resumes a fitted model whatever
        ``warm_start`` says, does not hold samples out, keeps the last weights
        and reports nothing.

        Returns
        -------
        self : object
        """
        new_model = not self._can_resume(incremental)
        X, y = self._validate_training_data(X, y, new_model, incremental)
        generator = self._torch_generator()
        if new_model:
            self._start_new_model(X, y, generator)
        else:
            self._resume_training()
        X_train, X_val = self._training_data(X, y, generator, new_model, incremental)
        outcome, callback_ctx = self._train(
            X, y, X_train, X_val, n_epochs, generator, incremental
        )
        self._conclude_fit(
            outcome, X, y, new_model, incremental, X_val is not None, callback_ctx
        )
        # The amortized start first: the error model's codes start from it, as
        # transform's do.
        self._fit_amortized_start(X_train, generator, incremental)
        if not incremental:
            self._fit_error_model(X_train, X_val)
        return self

    def _can_resume(self, incremental):
        """Whether this training call continues the fitted model."""
        return (
            (incremental or self.warm_start)
            and self._is_initialized()
            and not self._fitted_architecture_changed(incremental)
        )

    def _is_initialized(self):
        """Whether the networks have been built."""
        return hasattr(self, "decoder_")

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

    def _start_new_model(self, X, y, generator):
        """Scaling, networks, optimiser and training record of a new model."""
        self._record_data_format(X, y)
        self._fit_scaling(X, y)
        self.n_components_ = self.n_components
        self._fitted_architecture = self._architecture()
        sizes = self._module_sizes(X, y)
        self._build_modules(*sizes, generator, self._dtype, self._device())
        self._draw_model_seeds(generator)
        try:
            self._optimizer = self._make_optimizer()
        except BaseException:
            # The first torch optimiser of a process imports torch._dynamo
            # (seconds): interrupted there, the half-built model must not look
            # fitted.
            self._forget_fit()
            raise
        for name, value in _new_training_record(self.early_stopping).items():
            setattr(self, name, value)

    def _forget_fit(self):
        """Drop every fitted attribute, so that ``check_is_fitted`` raises again."""
        for name in [k for k in vars(self) if k.endswith("_") and k[:2] != "__"]:
            delattr(self, name)

    def _resume_training(self):
        """Before more training of fitted modules (warm start, ``partial_fit``)."""
        self._ensure_on_device()
        if getattr(self, "_optimizer", None) is None:  # dropped by pickling
            self._optimizer = self._make_optimizer()
        if self.early_stopping and self.validation_scores_ is None:
            self.validation_scores_ = []  # early stopping switched on
        self._no_improvement_count = 0

    def _train(self, X, y, X_train, X_val, n_epochs, generator, incremental):
        """Run the epochs inside the training hooks and the callbacks' fit task.

        scikit-learn callbacks (e.g. ProgressBar) see the fit as one task with
        an "epoch" subtask per epoch. Returns the
        :class:`~skgfe._training.TrainingOutcome` and the callback context.
        """
        self._begin_training(X_train)
        try:
            callback_ctx = self._init_callback_context(max_subtasks=n_epochs)
            if callback_ctx is not None:
                callback_ctx.call_on_fit_task_begin(estimator=self, X=X, y=y)
            outcome = run_epochs(
                self,
                X_train,
                X_val,
                n_epochs,
                generator,
                keep_best=not incremental,
                callback_ctx=callback_ctx,
            )
        finally:
            self._end_training()
        return outcome, callback_ctx

    def _conclude_fit(
        self, outcome, X, y, new_model, incremental, validated, callback_ctx
    ):
        """After the epochs: the kept start, the callbacks' end, the report."""
        if outcome.kept_start and not incremental:
            self._forget_resume_state()
        if new_model and validated and outcome.kept_start:
            # Training never beat the initial model on the validation samples:
            # that model is kept, and a start fitted to all the data is better.
            self._refit_start_to_all_data(X)
        if callback_ctx is not None:
            callback_ctx.call_on_fit_task_end(
                estimator=self, X=X, y=y, reconstruction_attributes={}
            )
        if not incremental:
            self.kept_start_ = outcome.kept_start
            self._report_training_end(outcome, validated, new_model)
            self._warn_if_max_iter_reached(outcome)

    def _report_training_end(self, outcome, validated, new_model):
        """With ``verbose``: say why training stopped and which weights were kept."""
        if not self.verbose:
            return
        monitored = "validation loss" if validated else "training loss"
        window, improvement = progress_window(self.n_iter_no_change, self.tol)
        reasons = {
            "plateau": f"the {monitored} did not improve by more than tol={self.tol} "
            f"(relative) in {self.n_iter_no_change} checks, nor by "
            f"{improvement:.1%} in the last "
            f"{window}",
            "max_iter": f"max_iter={self.max_iter} epochs were reached while the "
            f"{monitored} still improved (raise max_iter)",
            "callback": "a callback asked to stop",
            "diverged": "the loss became non-finite (lower learning_rate_init)",
            "interrupted": "it was interrupted",
        }
        if outcome.kept_start:
            start = (
                self._start_description()
                if new_model
                else "the weights the previous fit ended with"
            )
            kept = f"kept {start}: no trained weights had a lower {monitored}"
        else:
            kept = f"kept the weights measured after epoch {outcome.best_epoch}"
        print(
            f"Training stopped after {self.n_iter_} epochs: "
            f"{reasons[outcome.reason]}; {kept}."
        )

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

    # ------------------------------------------------------------- inference
    def _check_ready(self, X):
        """Validated input of a fitted model, its modules on the device."""
        check_is_fitted(self)
        X = self._validate_samples(X, reset=False)
        self._check_inference_input(X)
        self._ensure_on_device()
        return X

    def _validate_samples(self, X, reset):
        """``X`` as a float array of samples (``reset``: of a new fit).

        Missing entries (NaN) pass where the estimator accepts them, except in
        samples, or training features, that observe no entry.
        """
        _refuse_1d(X)
        X = validate_data(
            self,
            X,
            reset=reset,
            dtype=[np.float64, np.float32],
            accept_sparse=False,
            ensure_min_samples=1,
            ensure_all_finite="allow-nan" if self._accepts_missing else True,
        )
        if not self._accepts_missing:
            return X
        name = type(self).__name__
        check_observed_rows(X, name)
        never = np.flatnonzero(np.isnan(X).all(axis=0)) if reset else []
        if len(never):
            raise ValueError(
                f"{name} needs at least one observed (non-NaN) entry of every "
                f"feature to train on; features {never[:10].tolist()} have none. "
                "Drop them first."
            )
        return X

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

    # ------------------------------------------------ torch state, pickling
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
