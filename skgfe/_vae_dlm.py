"""VAE-DLM: a variational autoencoder with a dynamical latent manifold.

An operator-learning VAE for time-dependent PDE data (Gracyk, arXiv 2410.10137):
it maps an initial condition ``u0`` and a time ``t`` to the solution ``u(., t)``
through a latent manifold that moves with ``t`` under a steady geometric flow.
"""

from numbers import Integral, Real
from typing import NamedTuple

import numpy as np
import torch
from sklearn.base import (
    BaseEstimator,
    MultiOutputMixin,
    RegressorMixin,
    _fit_context,
)
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from ._autoencoders import _standard_normal, gaussian_kl
from ._geometry import DERIVATIVE_MODES, geometry_terms
from ._networks import (
    ACTIVATIONS,
    _affine,
    _linear,
    _pad_to_blocks,
    _unpad,
    reset_linear,
)
from ._torch_estimator import (
    CHUNK_ROWS,
    NETWORK_PARAMETER_CONSTRAINTS,
    TRAINING_PARAMETER_CONSTRAINTS,
    TorchEstimatorMixin,
    centre_and_scale,
)
from ._warnings import warn_user

GEOMETRIES = ("steady_flow",)


# The networks compute in float32 whatever the data's dtype: a training step with
# the geometry runs 1.9 times faster than in float64 on a CPU (measured at the
# defaults), and float32 rounding is far below the model's error.
COMPUTE_DTYPE = torch.float32


class _PosteriorNetwork(torch.nn.Module):
    """``u0 -> (mean, log-variance)`` of the Gaussian posterior over the codes.

    A trunk of ``hidden_layer_sizes`` whose affine output has two halves of the
    last width, one per head; each head applies the activation and an affine map
    to ``n_components``. That is two heads ``Linear -> act -> Linear`` on a shared
    trunk, with the heads' first layers stacked into the trunk's output layer.
    """

    def __init__(self, trunk, n_hidden, n_components, activation, dtype, device):
        super().__init__()
        self.trunk = trunk
        self.act = ACTIVATIONS[activation]()
        self.n_hidden = n_hidden
        self.mean_head = _linear(n_hidden, n_components, dtype, device)
        self.log_var_head = _linear(n_hidden, n_components, dtype, device)

    @torch.no_grad()
    def reset_heads(self, generator):
        for layer in (self.mean_head, self.log_var_head):
            reset_linear(layer, generator)

    def forward(self, x):
        # Row blocks, as in the networks, so that a row's result does not depend
        # on its batch mates.
        hidden = _pad_to_blocks(self.act(self.trunk(x)))
        mean_part, log_var_part = hidden.split(self.n_hidden, dim=-1)
        n_rows = x.shape[0]
        return (
            _unpad(_affine(mean_part, self.mean_head), n_rows),
            _unpad(_affine(log_var_part, self.log_var_head), n_rows),
        )


class _TrainingRows(NamedTuple):
    """A training call's data; the training loop addresses its rows by index."""

    # Scaled initial conditions, one per trajectory.
    U0: torch.Tensor
    # The trajectory of each row.
    trajectory: torch.Tensor
    # The normalised time of each row.
    t: torch.Tensor
    # The scaled solution of each row.
    y: torch.Tensor


class VAEDLMRegressor(
    TorchEstimatorMixin,
    MultiOutputMixin,
    RegressorMixin,
    BaseEstimator,
):
    """VAE with a dynamical latent manifold (VAE-DLM) for time-dependent PDE data.

    Learns the map from an initial condition ``u0`` and a time ``t`` to the
    solution ``u(., t)``. Each training row is ``[u0 | t] -> u(., t)``: the
    first ``n_features_in_ - 1`` columns of ``X`` hold the initial condition on
    its grid, **the last column is the time**, and ``y`` holds the solution at
    that time. The model has five networks:

    - an encoder ``P``: ``u0 -> N(mu, diag(sigma^2))``, a Gaussian posterior
      over ``n_components`` latent coordinates ``u``;
    - a manifold encoder ``E``: ``(u, t) -> R^(n_components + 1)``, which embeds
      the coordinates as a point of a hypersurface ``M_t`` that moves with
      ``t``;
    - a decoder ``D``: ``E(u, t) -> u(., t)``;
    - a metric network ``g(u, t) = A^T A`` and an operator network
      ``Lambda(u, t) = B^T B`` (``n_components x n_components``, positive
      semi-definite), trained so that ``g`` matches the pull-back metric
      ``J^T J`` of ``E`` (``J = dE/du``) and follows the steady geometric flow
      ``dg/dt + Lambda g + relaxation_rate (g - g_S) = 0`` towards the round
      metric ``g_S`` of a sphere of radius ``sqrt(target_metric_scale)``, with a
      penalty on the eigenvalues of ``g - g_S`` below zero.

    The training loss of a minibatch is

    ``mse(D(E(u2, t)), y) + kl_weight KL + metric_weight mean (g - J^T J)^2
    + flow_weight mean R^2 + eigen_weight mean relu(-eig(g - g_S))^2``

    where ``u1``, ``u2`` are independent posterior samples (the geometry is
    evaluated at ``u1``), ``R`` is the flow residual and the means run over the
    batch and the matrix entries. Predictions use the posterior mean:
    ``D(E(mu(u0), t))``.

    Read more in the :ref:`User Guide <vae_dlm>`.

    Parameters
    ----------
    n_components : int, default=6
        Number of latent coordinates ``d``; the manifold lives in ``R^(d + 1)``.

    hidden_layer_sizes : array-like of int, default=(64, 64, 64)
        Widths of the hidden layers of all five networks. With
        ``architecture='modified_mlp'`` there must be at least two, of equal
        width. The author uses
        ``(400, 400, 400)``, a size for a GPU.

    activation : {'tanh', 'gelu', 'elu', 'relu', 'identity'}, default='tanh'
        Non-linearity of the manifold encoder and of the decoder. The geometric
        losses differentiate ``E`` twice, so a smooth activation is needed with
        ``geometry='steady_flow'`` ('relu' warns).

    encoder_activation : {'gelu', 'tanh', 'elu', 'relu', 'identity'}, \
default='gelu'
        Non-linearity of the encoder ``P``. The metric and operator networks
        always use 'gelu'.

    architecture : {'modified_mlp', 'mlp'}, default='modified_mlp'
        Block of all five networks: the gated modified MLP of physics-informed
        networks (with a plain first hidden layer, as in the author's code) or
        a plain MLP. ``architecture='mlp'`` with ``geometry=None`` is a plain
        conditional VAE.

    geometry : {'steady_flow'} or None, default='steady_flow'
        The latent geometry. None builds neither the metric nor the operator
        network and drops the three geometric losses: the "VAE with the same
        architecture" of the paper's ablation.

    kl_weight : float, default=2e-6
        Weight of ``KL(q(u | u0) || N(0, I))`` (mean over rows). The author's
        weight 1e-4 on twice the KL, relative to 100 times the reconstruction
        error, is this value.

    metric_weight, flow_weight, eigen_weight : float, default=0.01
        Weights of the metric-matching, flow-residual and eigenvalue losses
        (the author's 1 relative to 100 times the reconstruction error).

    target_metric_scale : float, default=10.0
        ``c`` of the target metric ``g_S = c diag(1, sin^2 u_1, sin^2 u_1 sin^2
        u_2, ...)``.

    relaxation_rate : float, default=2.0
        Rate at which the flow relaxes ``g`` towards ``g_S``, per unit of the
        normalised time (the training times mapped onto ``[0, 1]``).

    derivative_mode : {'forward', 'reverse'}, default='forward'
        How ``J = dE/du`` and ``dg/dt`` are computed: forward-mode products
        (``n_components`` tangents for ``J``, one for ``dg/dt``), or one backward
        pass per entry as in the author's code (``n_components + 1`` for ``J`` and
        ``n_components (n_components + 1) / 2`` for ``dg/dt``). Same values;
        'forward' is faster.

    n_posterior_samples : {1, 2}, default=2
        With 2, the reconstruction and the geometry each draw their own
        posterior sample, as in the author's code; with 1 they share one.

    max_iter : int, default=500
        Largest number of epochs (passes over the training rows). Early
        stopping usually ends training long before (see :ref:`vae_dlm`).

    batch_size : int, default=256
        Rows per minibatch (capped at the number of training rows).

    learning_rate_init : float, default=1e-3
        Step size of the optimiser.

    optimizer : {'adam', 'rmsprop'}, default='adam'
        The torch optimiser.

    weight_averaging : float in [0, 1), default=0.0
        Decay of an exponential moving average of the weights over the
        optimiser steps of ``fit`` (Polyak averaging). The progress checks
        measure the averaged weights and ``fit`` keeps the best of them: the
        average of the last ``1 / (1 - weight_averaging)`` steps or so lies
        nearer the minimum that single steps scatter around. ``0`` measures and
        keeps the weights themselves; ``partial_fit`` never averages.

    clip_grad_value : float or None, default=0.01
        Clip every gradient entry to ``[-clip_grad_value, clip_grad_value]``
        before each step (the author's 1.0 on a loss 100 times larger); None
        disables clipping.

    tol : float, default=1e-4
        Relative improvement of the monitored error that counts as progress.

    n_iter_no_change : int, default=10
        Checks without progress before training stops.
        A plateau never ends ``fit`` before 1000 optimiser steps (unless
        ``max_iter`` does): a small network can sit on a validation plateau for
        hundreds of steps before its loss falls. Nor does it end ``fit`` while
        the monitored loss still falls: while the best of the last
        ``5 * n_iter_no_change`` checks of this ``fit`` is more than 2% (and
        more than ``tol`` per check) below the best before them; ``max_iter``
        still ends it. The best measured weights are kept either way.

    early_stopping : bool, default=True
        Hold out ``validation_fraction`` of the **trajectories** (all rows that
        share an initial condition) and stop when their prediction error stops
        improving; the best weights are kept. Otherwise, or when there are too
        few trajectories to hold any out (a single one), the training rows'
        prediction error is monitored. Every fit of a model holds out the same
        trajectories, so a warm start validates on trajectories it has not
        trained on.

    validation_fraction : float, default=0.1
        Fraction of the trajectories held out for early stopping.

    random_state : int, RandomState instance or None, default=None
        Seeds the weights, the minibatches, the posterior samples and the
        validation split, through a local :class:`torch.Generator`.

    verbose : int, default=0
        Print the loss of each epoch.

    warm_start : bool, default=False
        Continue from the fitted networks on the next ``fit``.

    device : str or torch.device, default='cpu'
        Where the networks live: 'cpu', 'cuda', 'cuda:1', 'mps', 'auto' (CUDA
        when available) or any torch device.

    Attributes
    ----------
    encoder_ : torch.nn.Module
        ``P``: scaled initial conditions to the posterior mean and log-variance.

    manifold_ : torch.nn.Module
        ``E``: ``[u | t]`` to a point of ``R^(n_components + 1)``.

    decoder_ : torch.nn.Module
        ``D``: embedded points to scaled solutions.

    metric_ : torch.nn.Module or None
        Output ``A`` of ``g = A^T A``; None without geometry.

    operator_ : torch.nn.Module or None
        Output ``B`` of ``Lambda = B^T B``; None without geometry.

    n_components_ : int
        Number of latent coordinates of the fitted model.

    x_mean_ : ndarray of shape (n_features_in_ - 1,)
        Per-feature mean of the initial conditions, removed before encoding.

    x_scale_ : float
        Global scale the centred initial conditions are divided by.

    y_mean_ : ndarray of shape (n_outputs_,)
        Per-output mean of the solutions.

    y_scale_ : float
        Global scale of the centred solutions.

    t_min_, t_scale_ : float
        The training times map onto ``[0, 1]`` as ``(t - t_min_) / t_scale_``
        (``t_scale_`` is 1 when all training times are equal).

    n_outputs_ : int
        Number of outputs (columns of ``y``).

    loss_curve_ : list of float
        Mean training loss of each epoch (on the scaled data).

    validation_scores_ : list of float or None
        Negative mean squared prediction error on the held-out trajectories
        (scaled units) at each check, when ``early_stopping`` is True.

    best_validation_score_ : float or None
        Best entry of ``validation_scores_``.

    best_loss_ : float
        Mean squared prediction error on the training rows of the kept weights,
        when ``early_stopping`` is False; inf otherwise.

    kept_start_ : bool
        Whether ``fit`` kept the weights it started from because no trained
        weights measured better.

    n_iter_ : int
        Number of epochs run.

    t_ : int
        Number of training rows seen.

    n_features_in_ : int
        Number of columns of ``X`` seen during :term:`fit` (the time included).

    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during :term:`fit`. Defined only when `X`
        has feature names that are all strings.

    See Also
    --------
    VariationalAutoencoder : A VAE of snapshots (``X -> codes -> X``).
    skgfe.datasets.make_burgers : Viscous Burgers trajectories for this model.
    skgfe.datasets.trajectories_to_rows : Trajectories as ``[u0 | t] -> u`` rows.
    skgfe.metrics.relative_l1_error : The paper's error measure.

    Notes
    -----
    Rows of one trajectory share their initial condition, so model selection
    must split by trajectory: pass the trajectory index as ``groups`` to
    :class:`~sklearn.model_selection.GroupKFold`; a plain ``KFold`` leaks test
    trajectories into training. ``early_stopping`` holds out whole
    trajectories for the same reason.

    The initial conditions are stored once per trajectory during training (the
    rows repeat them), so a long time grid costs no extra memory for them.

    The networks compute in float32 whatever the dtype of the data (twice as
    fast as float64 on a CPU; the rounding is far below the model's error);
    predictions come back in the dtype of ``X``.

    The geometric losses differentiate the manifold encoder with respect to
    its input and then the result with respect to the weights, so a training
    step with ``geometry='steady_flow'`` costs several times that of
    ``geometry=None`` (measured in :ref:`vae_dlm`).

    References
    ----------
    A. Gracyk. "Variational autoencoders with latent high-dimensional steady
    geometric flows for dynamics", arXiv:2410.10137.

    Examples
    --------
    >>> from skgfe import VAEDLMRegressor
    >>> from skgfe.datasets import make_burgers, trajectories_to_rows
    >>> u0, Y, times = make_burgers(n_samples=20, n_features=32, n_times=5,
    ...                             random_state=0)
    >>> X, y, groups = trajectories_to_rows(u0, Y, times)
    >>> model = VAEDLMRegressor(n_components=2, hidden_layer_sizes=(16, 16),
    ...                         max_iter=3, random_state=0).fit(X, y)
    >>> model.predict(X[:3]).shape
    (3, 32)
    >>> model.predict_trajectories(u0[:2], times).shape
    (2, 5, 32)
    """

    _parameter_constraints: dict = {
        **NETWORK_PARAMETER_CONSTRAINTS,
        "encoder_activation": [StrOptions(set(ACTIVATIONS) - {"sigmoid"})],
        "geometry": [StrOptions(set(GEOMETRIES)), None],
        "kl_weight": [Interval(Real, 0, None, closed="left")],
        "metric_weight": [Interval(Real, 0, None, closed="left")],
        "flow_weight": [Interval(Real, 0, None, closed="left")],
        "eigen_weight": [Interval(Real, 0, None, closed="left")],
        "target_metric_scale": [Interval(Real, 0, None, closed="neither")],
        "relaxation_rate": [Interval(Real, 0, None, closed="left")],
        "derivative_mode": [StrOptions(set(DERIVATIVE_MODES))],
        "n_posterior_samples": [Interval(Integral, 1, 2, closed="both")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "clip_grad_value": [Interval(Real, 0, None, closed="neither"), None],
        **TRAINING_PARAMETER_CONSTRAINTS,
    }

    def __init__(
        self,
        n_components=6,
        *,
        hidden_layer_sizes=(64, 64, 64),
        activation="tanh",
        encoder_activation="gelu",
        architecture="modified_mlp",
        geometry="steady_flow",
        kl_weight=2e-6,
        metric_weight=0.01,
        flow_weight=0.01,
        eigen_weight=0.01,
        target_metric_scale=10.0,
        relaxation_rate=2.0,
        derivative_mode="forward",
        n_posterior_samples=2,
        max_iter=500,
        batch_size=256,
        learning_rate_init=1e-3,
        optimizer="adam",
        weight_averaging=0.0,
        clip_grad_value=0.01,
        tol=1e-4,
        n_iter_no_change=10,
        early_stopping=True,
        validation_fraction=0.1,
        random_state=None,
        verbose=0,
        warm_start=False,
        device="cpu",
    ):
        self.n_components = n_components
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.encoder_activation = encoder_activation
        self.architecture = architecture
        self.geometry = geometry
        self.kl_weight = kl_weight
        self.metric_weight = metric_weight
        self.flow_weight = flow_weight
        self.eigen_weight = eigen_weight
        self.target_metric_scale = target_metric_scale
        self.relaxation_rate = relaxation_rate
        self.derivative_mode = derivative_mode
        self.n_posterior_samples = n_posterior_samples
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.optimizer = optimizer
        self.weight_averaging = weight_averaging
        self.clip_grad_value = clip_grad_value
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start
        self.device = device

    # ------------------------------------------------------------ parameters
    def _architecture(self):
        return {
            **super()._architecture(),
            "encoder_activation": self.encoder_activation,
            "geometry": self.geometry,
        }

    def _check_params(self):
        super()._check_params()
        if self.geometry is not None and self.activation == "relu":
            warn_user(
                "activation='relu' makes the pull-back metric of the manifold "
                "encoder piecewise constant, so the geometric losses barely train "
                "it; use a smooth activation ('tanh', 'gelu' or 'elu').",
                UserWarning,
            )

    # -------------------------------------------------------------- networks
    def _block_options(self):
        # The author's modified MLP leaves its first hidden layer ungated.
        if self.architecture == "modified_mlp":
            return {"gate_first_layer": False}
        return {}

    def _build_modules(self, n_inputs, n_outputs, generator, dtype, device):
        d = self.n_components
        hidden = self._hidden_sizes()

        def network(n_in, n_out, activation):
            return self._make_network(
                n_in, hidden, n_out, generator, dtype, device, activation=activation
            )

        trunk = network(n_inputs, 2 * hidden[-1], self.encoder_activation)
        self.encoder_ = _PosteriorNetwork(
            trunk, hidden[-1], d, self.encoder_activation, dtype, device
        )
        self.encoder_.reset_heads(generator)
        self.manifold_ = network(d + 1, d + 1, self.activation)
        self.decoder_ = network(d + 1, n_outputs, self.activation)
        if self.geometry is None:
            self.metric_ = self.operator_ = None
        else:
            self.metric_ = network(d + 1, d * d, "gelu")
            self.operator_ = network(d + 1, d * d, "gelu")

    def _modules(self):
        modules = [self.encoder_, self.manifold_, self.decoder_]
        if self.metric_ is not None:
            modules += [self.metric_, self.operator_]
        return modules

    def _clip_gradients(self):
        if self.clip_grad_value is not None:
            torch.nn.utils.clip_grad_value_(
                [p for m in self._modules() for p in m.parameters()],
                self.clip_grad_value,
            )

    # --------------------------------------------------------------- scaling
    def _fit_scaling(self, X, y):
        """Scale the initial conditions and the solutions; map the times on [0, 1]."""
        self.x_mean_, self.x_scale_ = centre_and_scale(X[:, :-1])
        self.y_mean_, self.y_scale_ = centre_and_scale(y)
        self.t_min_ = float(X[:, -1].min())
        span = float(X[:, -1].max()) - self.t_min_
        self.t_scale_ = span if np.isfinite(span) and span > 0 else 1.0

    _dtype = COMPUTE_DTYPE

    def _tensor(self, values):
        return torch.tensor(values, dtype=self._dtype, device=self._device())

    def _scaled_inputs(self, X):
        """Scaled initial conditions and normalised times of validated rows."""
        U0 = self._tensor((X[:, :-1] - self.x_mean_) / self.x_scale_)
        t = self._tensor((X[:, -1] - self.t_min_) / self.t_scale_)
        return U0, t

    # --------------------------------------------------------------- forward
    def _predict_scaled(self, U0, t):
        mean, _ = self.encoder_(U0)
        return self.decoder_(self.manifold_(torch.cat([mean, t[:, None]], dim=1)))

    def _batch_loss(self, X_batch, generator, rows=None):
        # X_batch holds indices of training rows (see _training_data).
        data = self._training_rows
        U0 = data.U0[data.trajectory[X_batch]]
        t, y = data.t[X_batch], data.y[X_batch]
        mean, log_var = self.encoder_(U0)
        std = torch.exp(0.5 * log_var)
        u_rec = mean + std * _standard_normal(mean.shape, generator, mean)
        u_geo = (
            mean + std * _standard_normal(mean.shape, generator, mean)
            if self.n_posterior_samples == 2
            else u_rec
        )
        output = self.decoder_(self.manifold_(torch.cat([u_rec, t[:, None]], dim=1)))
        reconstruction = ((output - y) ** 2).mean()
        kl = gaussian_kl(mean, log_var).mean()
        loss = reconstruction + self.kl_weight * kl
        info = {"mse": reconstruction.item()}
        if self.geometry is not None:
            terms, _ = self._geometry(u_geo, t)
            loss = (
                loss
                + self.metric_weight * terms["metric"]
                + self.flow_weight * terms["flow"]
                + self.eigen_weight * terms["eigen"]
            )
            info.update({name: value.item() for name, value in terms.items()})
        return loss, info

    def _geometry(self, u, t):
        return geometry_terms(
            self.manifold_,
            self.metric_,
            self.operator_,
            u,
            t,
            scale=self.target_metric_scale,
            rate=self.relaxation_rate,
            mode=self.derivative_mode,
        )

    def _prediction_error(self, rows):
        """Mean squared error (scaled) of the posterior-mean prediction of rows."""
        data = self._training_rows
        total = 0.0
        with torch.no_grad():
            for begin in range(0, len(rows), CHUNK_ROWS):
                chunk = rows[begin : begin + CHUNK_ROWS]
                U0 = data.U0[data.trajectory[chunk]]
                output = self._predict_scaled(U0, data.t[chunk])
                total += ((output - data.y[chunk]) ** 2).mean(dim=1).sum().item()
        return total / len(rows)

    # run_epochs measures progress with these: the prediction error, the quantity
    # the model is for, on held-out trajectories or on the training rows.
    _validation_loss = _prediction_error
    _training_loss = _prediction_error

    # -------------------------------------------------------------- training
    def _validate_training_data(self, X, y, reset, incremental):
        X, y = validate_data(
            self,
            X,
            y,
            reset=reset,
            multi_output=True,
            y_numeric=True,
            dtype=[np.float64, np.float32],
            ensure_min_features=2,
        )
        y = np.asarray(y, dtype=X.dtype)
        if not np.all(np.isfinite(y)):
            raise ValueError("Input y contains NaN or infinity.")
        self._y_ndim = y.ndim
        Y = y.reshape(len(y), -1)
        if not reset and Y.shape[1] != self.n_outputs_:
            raise ValueError(
                f"y has {Y.shape[1]} outputs, but the fitted model predicts "
                f"{self.n_outputs_}; call fit with warm_start=False to start anew."
            )
        return X, Y

    def _record_data_format(self, X, y):
        self.n_outputs_ = y.shape[1]

    def _module_sizes(self, X, y):
        return (X.shape[1] - 1, y.shape[1])

    def _draw_model_seeds(self, generator):
        # Fixed once, so that every fit of this model (warm starts included)
        # holds out the same trajectories, whatever random_state is.
        self._validation_seed = int(torch.randint(2**62, (1,), generator=generator))

    def _training_data(self, X, y, generator, new_model, incremental):
        """Indices of the training and held-out rows (whole trajectories).

        The scaled rows they index are kept for this call as
        ``_training_rows``, with each trajectory's initial condition stored once.
        """
        initial, trajectory = np.unique(X[:, :-1], axis=0, return_inverse=True)
        device = self._device()
        trajectory = torch.as_tensor(trajectory.reshape(-1), device=device)
        rows = torch.arange(len(X), device=device)
        train_rows, val_rows = rows, None
        n_trajectories = len(initial)
        n_val = max(1, int(round(self.validation_fraction * n_trajectories)))
        if self.early_stopping and n_trajectories > n_val:
            split = torch.Generator().manual_seed(self._validation_seed)
            held_out = torch.randperm(n_trajectories, generator=split)[:n_val]
            is_val = torch.isin(trajectory, held_out.to(device))
            train_rows, val_rows = rows[~is_val], rows[is_val]
        self._training_rows = _TrainingRows(
            U0=self._tensor((initial - self.x_mean_) / self.x_scale_),
            trajectory=trajectory,
            t=self._tensor((X[:, -1] - self.t_min_) / self.t_scale_),
            y=self._tensor((y - self.y_mean_) / self.y_scale_),
        )
        return train_rows, val_rows

    def _end_training(self):
        self.__dict__.pop("_training_rows", None)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Train the model on rows ``[u0 | t] -> u(., t)``.

        Parameters
        ----------
        X : array-like of shape (n_rows, n_features)
            Initial conditions (all columns but the last) and times (the last
            column). Rows with equal initial conditions form one trajectory.
        y : array-like of shape (n_rows,) or (n_rows, n_outputs)
            The solution at each row's time.

        Returns
        -------
        self : object
            Fitted estimator.
        """
        self._check_params()
        return self._fit(X, y, self.max_iter, incremental=False)

    # ------------------------------------------------------------- inference
    def predict(self, X):
        """Predict the solution ``u(., t)`` of each row ``[u0 | t]``.

        Parameters
        ----------
        X : array-like of shape (n_rows, n_features)
            Initial conditions and times (last column), as in :meth:`fit`.

        Returns
        -------
        y_pred : ndarray of shape (n_rows,) or (n_rows, n_outputs)
            The posterior-mean prediction ``D(E(mu(u0), t))``, in the units of
            ``y``; 1-D when ``y`` was 1-D.
        """
        X = self._check_ready(X)
        U0, t = self._scaled_inputs(X)
        with torch.no_grad():
            output = self._in_chunks(self._predict_scaled, U0, t)
        output = output.cpu().numpy() * self.y_scale_ + self.y_mean_
        output = output.astype(X.dtype, copy=False)
        self._require_finite(output, "The prediction", inputs="rows")
        return output.ravel() if self._y_ndim == 1 else output

    def predict_trajectories(self, initial_conditions, times):
        """Predict whole trajectories from initial conditions.

        Parameters
        ----------
        initial_conditions : array-like of shape (n_trajectories, n_features - 1)
            Initial conditions on the training grid.
        times : array-like of shape (n_times,)
            Times at which to predict (any real values; the training range is
            where the model has seen data).

        Returns
        -------
        Y_pred : ndarray of shape (n_trajectories, n_times, n_outputs)
            ``Y_pred[i, j]`` is the prediction for ``initial_conditions[i]`` at
            ``times[j]``.
        """
        check_is_fitted(self)
        U0 = check_array(initial_conditions, dtype=[np.float64, np.float32])
        times = check_array(
            np.asarray(times).reshape(1, -1), dtype=U0.dtype, ensure_min_features=1
        ).ravel()
        if U0.shape[1] != self.n_features_in_ - 1:
            raise ValueError(
                f"initial_conditions has {U0.shape[1]} features, but "
                f"{self.__class__.__name__} was fitted on initial conditions of "
                f"{self.n_features_in_ - 1} features (plus the time column)."
            )
        X = np.concatenate(
            [np.repeat(U0, len(times), axis=0), np.tile(times, len(U0))[:, None]],
            axis=1,
        )
        if hasattr(self, "feature_names_in_"):
            import pandas as pd

            X = pd.DataFrame(X, columns=self.feature_names_in_)
        Y = self.predict(X)
        return Y.reshape(len(U0), len(times), -1)

    def encode(self, X):
        """Posterior mean ``mu(u0)`` of each row's latent coordinates.

        Parameters
        ----------
        X : array-like of shape (n_rows, n_features)
            Rows ``[u0 | t]`` (the time is not used).

        Returns
        -------
        codes : ndarray of shape (n_rows, n_components)
        """
        X = self._check_ready(X)
        U0, _ = self._scaled_inputs(X)
        with torch.no_grad():
            codes = self._in_chunks(lambda u0: self.encoder_(u0)[0], U0)
        return codes.cpu().numpy().astype(X.dtype, copy=False)

    def embed(self, X):
        """Point ``E(mu(u0), t)`` of the latent manifold ``M_t`` for each row.

        Parameters
        ----------
        X : array-like of shape (n_rows, n_features)
            Rows ``[u0 | t]``.

        Returns
        -------
        points : ndarray of shape (n_rows, n_components + 1)
        """
        X = self._check_ready(X)
        U0, t = self._scaled_inputs(X)
        with torch.no_grad():
            points = self._in_chunks(
                lambda u0, s: self.manifold_(
                    torch.cat([self.encoder_(u0)[0], s[:, None]], dim=1)
                ),
                U0,
                t,
            )
        return points.cpu().numpy().astype(X.dtype, copy=False)

    def metric_diagnostics(self, X):
        """The latent geometry at each row's posterior mean and time.

        Parameters
        ----------
        X : array-like of shape (n_rows, n_features)
            Rows ``[u0 | t]``.

        Returns
        -------
        diagnostics : dict of ndarray
            ``metric`` (``g``, shape (n_rows, d, d)), ``pullback`` (``J^T J`` of
            the manifold encoder), ``target`` (``g_S``), ``residual`` (the flow
            residual ``dg/dt + Lambda g + rate (g - g_S)``), ``operator``
            (``Lambda``) and ``min_eigenvalue`` (of ``g - g_S``, shape (n_rows,)).
        """
        X = self._check_ready(X)
        if self.metric_ is None:
            raise ValueError(
                "This model was fitted with geometry=None: it has no metric network."
            )
        U0, t = self._scaled_inputs(X)
        parts = []
        for begin in range(0, len(U0), CHUNK_ROWS):
            with torch.no_grad():
                mean, _ = self.encoder_(U0[begin : begin + CHUNK_ROWS])
            # Reverse mode differentiates with autograd; forward mode needs no graph.
            with torch.set_grad_enabled(self.derivative_mode == "reverse"):
                _, tensors = self._geometry(mean, t[begin : begin + CHUNK_ROWS])
            parts.append({k: v.detach() for k, v in tensors.items()})
        result = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        result["target"] = torch.diag_embed(result["target"])
        result["min_eigenvalue"] = torch.linalg.eigvalsh(
            result["metric"] - result["target"]
        )[:, 0]
        return {
            name: values.cpu().numpy().astype(X.dtype, copy=False)
            for name, values in result.items()
        }

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.non_deterministic = False
        return tags
