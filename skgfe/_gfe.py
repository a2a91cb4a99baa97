"""GradientFlowEncoder: dimensionality reduction with a decoder and no encoder."""

import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval, StrOptions

from ._base import CHUNK_ROWS, BaseDecoderTransformer
from ._flow import STATUS_NAMES, ReconstructionObjective, amd_flow
from ._networks import make_mlp


class GradientFlowEncoder(BaseDecoderTransformer):
    """Gradient flow encoding (GFE): encode each sample as its decoder's best code.

    ``fit`` trains an MLP decoder. ``transform`` has no encoder network: it finds the
    code of each sample by integrating the gradient flow
    ``dz/dt = -grad_z l(x, decoder(z))`` from ``z = 0`` with the adaptive AMD solver,
    so the code is the point of latent space that the decoder maps closest to the
    sample. ``inverse_transform`` decodes.

    Every sample is integrated with its own step size and stopping rule, so its code
    does not depend on the other samples in the batch, nor on their order.

    Read more in the :ref:`User Guide <user_guide>`.

    Parameters
    ----------
    n_components : int, default=2
        Dimension of the latent space (the number of output features).

    hidden_layer_sizes : array-like of int, default=(128,)
        Widths of the decoder's hidden layers, from the latent side to the output
        side. ``()`` gives a linear decoder, whose optimum spans PCA's subspace.

    activation : {'elu', 'relu', 'tanh', 'gelu', 'identity'}, default='elu'
        Non-linearity of the decoder's hidden layers.

    loss : {'mse', 'bce'}, default='mse'
        Per-sample reconstruction loss: the mean squared error, or the binary
        cross-entropy for data in [0, 1] (the decoder then outputs logits and
        :meth:`inverse_transform` applies a sigmoid).

    solver : {'amd'}, default='amd'
        ODE solver of the flow. 'amd' is explicit Euler with a per-sample step
        size that is accepted only where it lowers the loss.

    flow_time : float, default=1e4
        Integration horizon tau of the flow.

    step_size : float, default=1.0
        Initial step of the solver; after an accepted step the step never falls
        below it.

    max_step_size : float, default=10.0
        Largest step of the solver.

    flow_tol : float, default=1e-4
        A sample's flow stops once the norm of the gradient of its loss with
        respect to its code falls to ``flow_tol``: the code is then stationary.
        The loss is computed on internally scaled data, so the tolerance does not
        depend on the units of ``X``.

    max_flow_steps : int, default=1000
        Largest number of accepted solver steps per sample.

    max_iter : int, default=30
        Largest number of training epochs.

    batch_size : int or 'auto', default=64
        Minibatch size of training; 'auto' is ``min(200, n_samples)``. Small
        batches make more decoder updates per epoch, which matters with little
        data.

    learning_rate_init : float, default=3e-3
        Learning rate of the optimiser.

    optimizer : {'adam', 'rmsprop'}, default='adam'
        Torch optimiser of the decoder weights.

    tol : float, default=1e-3
        Training stops when the epoch loss (or, with ``early_stopping``, the
        validation score) has not improved by at least ``tol`` for
        ``n_iter_no_change`` consecutive epochs.

    n_iter_no_change : int, default=5
        Number of epochs without improvement before training stops.

    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data, stop on its
        reconstruction loss and keep the weights of the best epoch.

    validation_fraction : float, default=0.1
        Fraction of the training data held out when ``early_stopping`` is True.

    random_state : int, RandomState instance or None, default=None
        Seeds the decoder initialisation and the minibatch order through a local
        ``torch.Generator`` (torch's global seed is never touched). Pass an int for
        reproducible results.

    verbose : int, default=0
        1 prints one line per epoch (loss, mean flow steps, seconds); 2 also shows
        a progress bar (needs tqdm).

    warm_start : bool, default=False
        Reuse the previous fit's decoder and continue training it.

    device : {'cpu', 'cuda', 'auto'}, default='cpu'
        Torch device of training and encoding; 'auto' picks CUDA when available.

    Attributes
    ----------
    decoder_ : torch.nn.Module
        The trained decoder, mapping codes to (scaled) reconstructions.

    mean_ : ndarray of shape (n_features_in_,)
        Per-feature mean removed before encoding ('mse'; zeros for 'bce').

    scale_ : float
        Global scale the centred data are divided by ('mse'; 1 for 'bce').

    loss_curve_ : list of float
        Mean training loss (on the scaled data) of each epoch.

    best_loss_ : float
        Smallest entry of ``loss_curve_``.

    validation_scores_ : list of float or None
        Negative validation loss of each epoch when ``early_stopping`` is True.

    best_validation_score_ : float or None
        Best entry of ``validation_scores_``.

    n_iter_ : int
        Number of epochs run.

    t_ : int
        Number of training samples seen.

    n_features_in_ : int
        Number of features seen during :term:`fit`.

    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during :term:`fit`. Defined only when `X`
        has feature names that are all strings.

    See Also
    --------
    sklearn.decomposition.PCA : The optimal linear encoder-decoder pair.

    References
    ----------
    K. Flouris, A. Volokitin, G. Bredell, E. Konukoglu. "Explicit and
    data-Efficient Encoding via Gradient Flow", arXiv:2412.00864, 2024.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from skgfe import GradientFlowEncoder
    >>> X = load_digits().data[:200]
    >>> gfe = GradientFlowEncoder(n_components=4, max_iter=5, random_state=0)
    >>> Z = gfe.fit_transform(X)
    >>> Z.shape
    (200, 4)
    >>> gfe.inverse_transform(Z).shape
    (200, 64)
    """

    _parameter_constraints: dict = {
        **BaseDecoderTransformer._parameter_constraints,
        "solver": [StrOptions({"amd"})],
        "flow_time": [Interval(Real, 0, None, closed="neither")],
        "step_size": [Interval(Real, 0, None, closed="neither")],
        "max_step_size": [Interval(Real, 0, None, closed="neither")],
        "flow_tol": [Interval(Real, 0, None, closed="left")],
        "max_flow_steps": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        n_components=2,
        *,
        hidden_layer_sizes=(128,),
        activation="elu",
        loss="mse",
        solver="amd",
        flow_time=1e4,
        step_size=1.0,
        max_step_size=10.0,
        flow_tol=1e-4,
        max_flow_steps=1000,
        max_iter=30,
        batch_size=64,
        learning_rate_init=3e-3,
        optimizer="adam",
        tol=1e-3,
        n_iter_no_change=5,
        early_stopping=False,
        validation_fraction=0.1,
        random_state=None,
        verbose=0,
        warm_start=False,
        device="cpu",
    ):
        self.n_components = n_components
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.loss = loss
        self.solver = solver
        self.flow_time = flow_time
        self.step_size = step_size
        self.max_step_size = max_step_size
        self.flow_tol = flow_tol
        self.max_flow_steps = max_flow_steps
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.optimizer = optimizer
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start
        self.device = device

    def _build_modules(self, n_features, generator, dtype, device):
        self.decoder_ = make_mlp(
            self.n_components,
            self._hidden_sizes(),
            n_features,
            self.activation,
            generator=generator,
            dtype=dtype,
            device=device,
        )

    def _flow(self, X):
        """Run the flow on the scaled samples ``X`` and return its FlowResult."""
        objective = ReconstructionObjective(self.decoder_, self._loss_function, X)
        z0 = X.new_zeros((X.shape[0], self.n_components))
        return amd_flow(
            objective,
            z0,
            t_end=self.flow_time,
            step_size=self.step_size,
            max_step_size=self.max_step_size,
            tol=self.flow_tol,
            max_steps=self.max_flow_steps,
        )

    def _encode(self, X):
        return self._flow(X).z

    def _batch_loss(self, X_batch, generator):
        # Approximate gradient: the codes are held fixed and the gradient flows
        # through the decoder only (exact at stationary codes, by the envelope
        # theorem).
        result = self._flow(X_batch)
        output = self.decoder_(result.z)
        loss = self._loss_function(output, X_batch).mean()
        return loss, {"flow steps": result.n_steps.double().mean().item()}

    def encode(self, X, return_info=False):
        """Encode ``X``, optionally with per-sample diagnostics of the flow.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples to encode.
        return_info : bool, default=False
            Also return a dict of per-sample arrays: ``loss`` (final
            reconstruction loss on the scaled data), ``grad_norm`` (norm of the
            loss gradient at the code), ``n_steps`` (accepted solver steps),
            ``n_evals`` (decoder evaluations, each a forward and a backward pass),
            ``converged`` (bool) and ``status`` (why the flow stopped:
            'converged' (gradient norm <= ``flow_tol``), 'stalled' (no step
            lowers the loss any more; counts as converged when the gradient norm
            is within 10 times ``flow_tol``, as happens at float32 precision),
            'horizon' or 'max_steps').

        Returns
        -------
        Z : ndarray of shape (n_samples, n_components)
            The codes, as :meth:`transform` returns them.
        info : dict of ndarray
            Only when ``return_info`` is True.
        """
        X = self._check_ready(X)
        X_t = self._scale(self._to_tensor(X))
        with torch.no_grad():
            results = [
                self._flow(X_t[i : i + CHUNK_ROWS])
                for i in range(0, len(X_t), CHUNK_ROWS)
            ]
        Z = torch.cat([r.z for r in results]).cpu().numpy().astype(X.dtype, copy=False)
        status = torch.cat([r.status for r in results]).cpu().numpy()
        info = {
            "loss": torch.cat([r.loss for r in results]).cpu().numpy(),
            "grad_norm": torch.cat([r.grad_norm for r in results]).cpu().numpy(),
            "n_steps": torch.cat([r.n_steps for r in results]).cpu().numpy(),
            "n_evals": torch.cat([r.n_evals for r in results]).cpu().numpy(),
            "converged": torch.cat([r.converged for r in results]).cpu().numpy(),
            "status": np.array([STATUS_NAMES[s] for s in status]),
        }
        self._warn_unconverged(info)
        return (Z, info) if return_info else Z

    def transform(self, X):
        """Encode ``X`` by integrating each sample's gradient flow.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples to encode.

        Returns
        -------
        X_new : ndarray of shape (n_samples, n_components)
            Codes, in the dtype of ``X``.
        """
        return self.encode(X)

    def _warn_unconverged(self, info):
        not_converged = ~info["converged"]
        if not_converged.any():
            reasons = sorted(set(info["status"][not_converged]))
            setting = {
                "horizon": "flow_time",
                "max_steps": "max_flow_steps",
                "stalled": "the precision (float64 input)",
            }
            hints = " or ".join(setting[r] for r in reasons)
            warnings.warn(
                f"The gradient flow of {not_converged.sum()} of {len(not_converged)} "
                f"samples stopped before its gradient norm reached flow_tol="
                f"{self.flow_tol} ({', '.join(reasons)}); raise {hints}, or raise "
                "flow_tol.",
                ConvergenceWarning,
                stacklevel=3,
            )
