"""GradientFlowEncoder: dimensionality reduction with a decoder and no encoder."""

from numbers import Integral, Real

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, StrOptions

from ._base import BaseDecoderTransformer, _fingerprint
from ._devices import rows_at_once
from ._error_bars import (
    code_moments,
    code_prior_term,
    fit_error_model,
    laplace_terms,
    training_code_prior,
)
from ._flow import FLOWS, INITS, SOLVERS, initial_codes, linear_path_codes, run_flow
from ._flow.diagnostics import ConvergenceReport, ShortSolves, flow_info
from ._flow.result import keep_better_solves
from ._intrinsic_dimension import two_nn_dimension
from ._missing import iterative_pca
from ._networks import make_mlp, set_linear_path
from ._start_encoder import (
    amortized_start_codes,
    build_neighbour_codes,
    build_start_encoder,
    codes_of_samples,
    fit_neighbour_codes,
    fit_start_encoder,
    nearest_samples,
    pool_rows,
)
from ._torch_estimator import CHUNK_ROWS

# Evaluations per training sample and epoch when training codes are warm-started
# (solver='lm'): the solve from last epoch's code is left inexact and resumes in
# the next epoch, block-coordinate descent on (decoder, codes). On digits and
# spectra (n=200) 3 gave the held-out error of full solves at 0.4-0.6 times the
# fit time. Each sample's first evaluation gives the Gauss-Newton matrix of all
# its steps (see lm_solve's fixed_metric).
TRAINING_MAX_EVALS = 3

# code_prior_weight='auto': the prior's weight where n_components is at least
# EXCESS_COMPONENTS_FACTOR times the TwoNN estimate of the training data's
# intrinsic dimension (benchmarks/results/code_prior.md: 0.3 lowers the error
# where codes outnumber the data's dimensions and is neutral in the other cells
# with many features, but unfolds a curved 2-dimensional manifold in 3 features
# badly, so it stays off where n_components is close to the dimension).
AUTO_CODE_PRIOR_WEIGHT = 0.3
EXCESS_COMPONENTS_FACTOR = 2.0


class GradientFlowEncoder(BaseDecoderTransformer):
    """Gradient flow encoding (GFE): encode each sample as its decoder's best code.

    ``fit`` trains an MLP decoder (by default initialised from PCA, so training
    starts from PCA's reconstructions). ``transform`` has no encoder network: the
    code of each sample is the end point of the gradient flow
    ``dz/dt = -grad_z l(x, decoder(z))``, the point of latent space that the
    decoder maps closest to the sample. By default a per-sample
    Levenberg-Marquardt solver finds that stationary point directly, in a few
    Gauss-Newton steps; the paper's flows (first order or Nesterov's second
    order, integrated by the adaptive AMD solver or by torchdiffeq) are
    available through ``solver``.
    ``inverse_transform`` decodes.

    With 'lm', AMD and the fixed-grid solvers every sample is solved with its own
    step size (or damping) and stopping rule, so its code does not depend on the
    other samples in the batch, nor on their order (see Notes for adaptive solvers).

    Samples may miss entries (NaN) in ``fit``, ``transform`` and ``score``: every
    loss averages the observed entries only, so a sample's code fits what was
    measured, and ``encode(X, return_std=True)`` and :meth:`reconstruct` give
    error bars (see :ref:`missing` and :class:`GradientFlowImputer`).

    Read more in the :ref:`User Guide <user_guide>`.

    Parameters
    ----------
    n_components : int, default=2
        Dimension of the latent space (the number of output features). Codes
        wider than the data (``n_components > n_features``) are overcomplete:
        they do not compress it and many codes reconstruct a sample equally well,
        so ``fit`` warns about them.

    hidden_layer_sizes : array-like of int, default=(128,)
        Widths of the decoder's hidden layers, from the latent side to the output
        side. ``()`` gives a linear decoder, whose optimum spans PCA's subspace.

    activation : {'elu', 'relu', 'tanh', 'gelu', 'identity'}, default='elu'
        Non-linearity of the decoder's hidden layers.

    architecture : {'mlp', 'modified_mlp'}, default='mlp'
        Decoder network: a plain MLP, or the gated "modified MLP" of
        physics-informed networks (Wang, Teng, Perdikaris 2021; use it with
        ``activation='tanh'`` and hidden layers of equal width).

    loss : {'mse', 'bce'}, default='mse'
        Per-sample reconstruction loss: the mean squared error, or the binary
        cross-entropy for data in [0, 1] (the decoder then outputs logits and
        :meth:`inverse_transform` applies a sigmoid).

    flow : {'gradient', 'nesterov'}, default='gradient'
        The flow that encodes. 'gradient' is the gradient flow
        ``dz/dt = -grad_z l``. 'nesterov' is the second-order flow
        ``z'' + 3/(t + eps) z' + grad_z l = 0`` with ``z'(0) = 0`` (continuous
        Nesterov acceleration), integrated as the system ``dz/dt = m``,
        ``dm/dt = -3/(t + eps) m - grad_z l``. With ``solver='amd'`` a step
        updates the momentum ``m`` (exact decay of the friction over the step,
        then the gradient kick) and then ``z`` with the new momentum; a step
        that does not lower the loss restarts the momentum (``m = 0``, the
        friction's clock back to 0) and, when there was no momentum to drop,
        halves the step (restarted Nesterov descent), so the loss still falls
        at every accepted step.

    solver : str, default='lm'
        How the end point of the flow is found.

        - 'lm': Levenberg-Marquardt, a per-sample damped Gauss-Newton solver for
          the stationary code where the flow ends (generalised Gauss-Newton with
          Bernoulli weights for 'bce'). It is a Newton-type solver of the flow's
          fixed point, not an integrator of the flow: with large damping a step
          is a short gradient step (the flow), without damping a step of the
          natural-gradient flow under the decoder's pull-back metric ``J^T J``.
          It needs a handful of evaluations where the flow needs hundreds, and
          is the fastest by far (see Notes for how often it lands on another
          stationary point than the flow). It ignores ``flow``, ``flow_time``,
          ``step_size`` and ``max_step_size``, and cannot be used with
          ``training='adjoint'``.
        - 'amd': explicit Euler with a per-sample step size that is accepted only
          where it lowers the loss ("adaptive minimise distance"), the paper's
          solver. Prefer it (or a torchdiffeq solver) when the code must be the
          end point of the flow itself, e.g. to study the flow.
        - torchdiffeq fixed-grid solvers, 'euler', 'midpoint', 'heun2', 'heun3',
          'rk4': steps of ``step_size`` up to ``flow_time`` or
          ``max_flow_steps`` steps, whichever comes first. They do not control
          stability: a step that is too large for the decoder's curvature
          diverges (reported as 'diverged'; lower ``step_size``).
        - torchdiffeq adaptive solvers, 'dopri5', 'dopri8', 'bosh3',
          'fehlberg2', 'adaptive_heun': error control with ``rtol`` and
          ``atol``, steps up to ``max_step_size``. Their codes depend on the
          batch within the tolerance (see Notes).
        - torchode adaptive solvers, 'torchode-dopri5', 'torchode-tsit5'
          (optional dependency: ``pip install skgfe[torchode]``): the same error
          control, but every sample takes its own steps, so its code does not
          depend on its batch mates. Not for ``training='adjoint'``.

        With torchdiffeq's and torchode's solvers the convergence of each sample
        is checked every 10 grid steps (fixed grid) or at the times
        ``step_size * 1.5**k`` (adaptive), and a sample stops at the first
        check where its gradient norm is at most ``flow_tol``.

    training : {'approximate', 'adjoint'}, default='approximate'
        Gradient of the training loss with respect to the decoder weights.
        'approximate' holds the codes fixed and backpropagates through the
        decoder only (exact at stationary codes, by the envelope theorem; the
        paper's method). 'adjoint' is the exact gradient through the encoding:
        backpropagation through the unrolled accepted steps for 'amd', and
        ``torchdiffeq.odeint_adjoint`` (with the decoder's weights as adjoint
        parameters) for torchdiffeq's solvers. It costs second derivatives of
        the decoder and, for 'amd', memory for every step of the flow.

    decoder_init : {'auto', 'pca', 'random'}, default='auto'
        Initial decoder. 'pca' (the default for 'mse') is a linear path set to
        PCA's principal axes (an isometry from codes to PCA's subspace) plus a
        non-linear residual whose output layer starts at zero: the untrained
        decoder reconstructs exactly as PCA does and training starts from there.
        With ``early_stopping`` the untrained model is kept when training does
        not beat it on the validation samples, so nearly linear data are never
        encoded worse than by PCA in practice. 'random' draws every weight
        (torch's default scheme); it is the default for 'bce', whose decoder
        outputs logits.

    init : {'auto', 'amortized', 'zeros', 'random', 'linear'}, default='auto'
        Initial code of the flow. 'zeros' starts at the origin. 'linear' starts
        at the least-squares code of the decoder's linear path (for a decoder
        initialised from PCA: the sample's PCA projection at first, a close
        start after training), computed for each sample on its own.
        'amortized' starts each sample at the best, by its reconstruction
        loss, of the linear start, the guess of a small encoder network (one
        hidden layer of 128) and the code of its nearest training sample
        (Euclidean, among up to 1000 training samples that ``fit`` keeps with
        their codes); the network and the kept codes are fitted after the
        decoder, on the training samples and their codes. The flow still ends
        at a stationary code of the decoder: the start only decides which one
        (on a curved manifold, which fold) and how fast (fewer decoder
        evaluations in :meth:`transform`, see :ref:`performance`). Training
        itself starts from the linear code; the validation loss starts each
        held-out sample at the better of its linear code and, with
        ``warm_codes=True`` and ``solver='lm'`` (which keep the training codes
        current), its nearest training sample's code. A sample
        with missing entries has no network guess; it is solved twice, from
        its linear code and from the code of its nearest training sample on
        its observed entries, and keeps the end point of lower loss (observed
        entries and code prior). Every sample of a model without the network
        and kept codes (one last trained by ``partial_fit``, or fitted with
        another ``init``) starts from the linear code. 'auto' is 'amortized' for
        decoders initialised from PCA and 'zeros' otherwise.
        'random' starts each sample at a point drawn
        uniformly from ``[-1, 1]^n_components`` by a generator seeded with a
        hash of a seed drawn at fit time from ``random_state`` and of the
        sample's own (scaled) values: the start differs between samples, yet a
        sample always starts at the same point, whatever its batch, so
        ``transform`` stays deterministic and batch-invariant. As a consequence
        two samples that differ in any bit start at unrelated points.

    warm_codes : bool, default=True
        With ``solver='lm'``: during training, start each training sample's
        solve from its code of the previous epoch, and stop it after 3
        evaluations (the Gauss-Newton matrix of the first serving all three);
        the next epoch resumes it (block-coordinate descent on the decoder and
        the codes; measured in :ref:`performance`). The codes of about 512
        training samples are solved together, before their minibatches' steps.
        :meth:`transform` and the validation loss start from ``init`` (see
        there: with 'amortized' the validation loss also tries each held-out
        sample's nearest training sample's current code as its start).

    code_prior_weight : 'auto' or float, default='auto'
        With ``solver='lm'`` and ``warm_codes`` (otherwise it is not used):
        solve the training samples' codes under a Gaussian prior, each
        minimising its reconstruction loss plus ``code_prior_weight`` times the
        prior's term in the posterior: ``s^2 (z - m)^T C^-1 (z - m) / n_obs``
        for 'mse' (``n_obs``: the sample's observed entries; ``m``, ``C``:
        mean and covariance of the codes training starts from, fixed for the
        fit and kept by a warm-start fit on the same samples, or, with start
        codes that are all equal or random (``init='zeros'`` or 'random'), of
        the codes once each has been solved, so not in a one-epoch fit or
        ``partial_fit``; ``s^2``: the current mean squared residual of the
        training samples, refitted for every group of about 512) and
        ``(z - m)^T C^-1 (z - m) / (2 n_obs)`` for 'bce'. With more
        components than the data's intrinsic dimension the free per-sample
        codes fit noise, and the prior shrinks the code directions that vary
        little (16 components of a 6-dimensional manifold in 64 features:
        held-out error 0.16 of PCA's with 0.3, 0.37 without, the Autoencoder
        0.23; ``benchmarks/results/code_prior.md``). But it holds back curved
        data whose codes must unfold: 2 components of an S-curve, 0.54 of
        PCA's error with 0.3, 0.026 without; a Swiss roll, 0.19 against 0.14.
        'auto' therefore uses 0.3 only where ``n_components`` is at least twice
        the training samples' intrinsic dimension (the TwoNN estimate of Facco
        et al. 2017, ``intrinsic_dimension_``), and 0 otherwise
        (``code_prior_weight_``). Only training uses it: :meth:`transform` and
        the validation loss find each sample's best code under the decoder
        alone.

    flow_time : float, default=1e4
        Integration horizon tau of the flow.

    step_size : float, default=1.0
        'amd': initial step, and the smallest step after an accepted step.
        Fixed-grid solvers: the grid step (often worth raising, e.g. to 5 for
        'rk4'). Adaptive solvers: the time of the first convergence check.

    max_step_size : float, default=10.0
        Largest step of 'amd' and of the adaptive solvers.

    rtol : float, default=1e-4
        Relative tolerance of the adaptive torchdiffeq and torchode solvers.

    atol : float, default=1e-6
        Absolute tolerance of the adaptive torchdiffeq and torchode solvers.

    flow_tol : float, default=1e-3
        A sample's flow stops once the norm of the gradient of its loss with
        respect to its code falls to ``flow_tol``: the code is then stationary.
        The loss is computed on internally scaled data, so the tolerance does not
        depend on the units of ``X``. Along flat directions of the loss a code
        is only determined to about ``flow_tol`` divided by the curvature: lower
        it when the codes themselves must be precise, not only the
        reconstructions (see :ref:`performance` for what it costs).

    max_flow_steps : int, default=1000
        Largest number of accepted solver steps per sample (grid steps for
        fixed-grid solvers; for adaptive solvers, a flow that runs out of steps
        keeps the code of its last convergence check).

    max_iter : int, default=1000
        Largest number of training epochs. Training normally ends earlier, on
        the plateau test of ``tol`` and ``n_iter_no_change``.

    batch_size : int or 'auto', default=64
        Largest minibatch size of training; 'auto' is ``min(200, n_samples)``.
        An epoch's minibatches are equal in size to within one sample (900
        samples in batches of 64 make 15 of 60): no small last minibatch gives
        the optimiser a full-size step on a noisy gradient. Small batches make
        more decoder updates per epoch, which matters with little data.

    learning_rate_init : float, default=3e-3
        Learning rate of the optimiser.

    optimizer : {'adam', 'rmsprop'}, default='adam'
        Torch optimiser of the decoder weights.

    weight_averaging : float in [0, 1), default=0.99
        Decay of an exponential moving average of the weights over the
        optimiser steps of ``fit`` (Polyak averaging). The progress checks
        measure the averaged weights and ``fit`` keeps the best of them: the
        average of the last ``1 / (1 - weight_averaging)`` steps or so lies
        nearer the minimum that single steps scatter around. The decay warms
        up as ``min(weight_averaging, (1 + t) / (10 + t))`` over the ``t``
        steps averaged so far, so that a short fit is not dominated by its
        first weights. ``0`` measures and keeps the weights themselves;
        ``partial_fit`` never averages.

    tol : float, default=1e-4
        Relative tolerance of the plateau test. Progress is checked after every
        epoch, but at most every 10 optimiser steps (with few samples an epoch is
        a single minibatch). A check measures the current weights (their
        validation loss with ``early_stopping``, else their training loss on all
        training samples); one that does not lower that loss below
        ``(1 - tol)`` times the best value of the trained checks counts as no
        improvement (the weights fit started from are not part of this test, so
        that training goes on while it improves, even before it passes them).
        The best measured weights are kept, those fit started from included. If the loss
        turns non-finite, training stops with a ConvergenceWarning and the best
        measured weights are restored. ``partial_fit`` only counts plateaus of
        the mean minibatch loss and keeps its last weights.

    n_iter_no_change : int, default=10
        Number of checks without improvement before training stops.
        A plateau never ends ``fit`` before 1000 optimiser steps (unless
        ``max_iter`` does): a small network can sit on a validation plateau for
        hundreds of steps before its loss falls. Nor does it end ``fit`` while
        the monitored loss still falls: while the best of the last
        ``5 * n_iter_no_change`` checks of this ``fit`` is more than 2% (and
        more than ``tol`` per check) below the best before them; ``max_iter``
        still ends it. The best measured weights are kept either way.

    early_stopping : bool, default=True
        Hold out ``validation_fraction`` of the training data, monitor its
        reconstruction loss, stop when it no longer improves and keep the
        weights that did best on it (the untrained model included). With
        little data this is what keeps a flexible network from overfitting.

    validation_fraction : float, default=0.1
        Fraction of the training data held out when ``early_stopping`` is True.

    random_state : int, RandomState instance or None, default=None
        Seeds the decoder initialisation and the minibatch order through a local
        ``torch.Generator`` (torch's global seed is never touched). Pass an int for
        reproducible results: the same seed, data, torch version, device and
        number of torch threads give the same model (see the User Guide).

    verbose : int, default=0
        1 prints one line per epoch (loss, mean flow steps, seconds); 2 also shows
        a progress bar (needs tqdm).

    warm_start : bool, default=False
        Reuse the previous fit's decoder and continue training it. When a
        parameter that shapes the decoder changed since (``n_components``,
        ``hidden_layer_sizes``, ``activation``, ``architecture``, ``loss`` or
        ``decoder_init``), ``fit`` warns and trains a new decoder instead, and
        :meth:`partial_fit` raises.

    device : str or torch.device, default='cpu'
        Torch device of training and encoding: any device string torch parses
        ('cpu', 'cuda', 'cuda:1', 'mps', ...), a :class:`torch.device`, or
        'auto', which picks CUDA when available. A device that does not parse or
        that torch cannot reach raises a ValueError in ``fit`` or ``transform``.

    Attributes
    ----------
    n_components_ : int
        Dimension of the fitted latent space: ``n_components`` when the decoder
        was built.

    decoder_ : torch.nn.Module
        The trained decoder, mapping codes to (scaled) reconstructions.

    mean_ : ndarray of shape (n_features_in_,)
        Per-feature mean removed before encoding ('mse'; zeros for 'bce').

    scale_ : float
        Global scale the centred data are divided by ('mse'; 1 for 'bce').

    loss_curve_ : list of float
        Mean training loss (on the scaled data) of each epoch.

    best_loss_ : float
        Training loss of the kept weights (the smallest measured at a check)
        when ``early_stopping`` is False; inf otherwise (see
        ``best_validation_score_``). ``partial_fit`` sets it to the smallest
        mean minibatch loss of its checks instead.

    validation_scores_ : list of float or None
        Negative validation loss of each progress check of ``fit`` (after every
        epoch, but at most every 10 optimiser steps) when ``early_stopping`` is
        True (``partial_fit`` does not validate, the list stays empty).

    best_validation_score_ : float or None
        Negative validation loss of the kept weights: an entry of
        ``validation_scores_``, or the untrained model's score when fit kept
        the weights it started from (``kept_start_``). It can be below
        ``max(validation_scores_)``: a check whose epochs fit the training data
        worse than GFE's PCA start is no candidate (see the User Guide).

    kept_start_ : bool
        Whether ``fit`` kept the weights it started from because no trained
        weights measured better (for a PCA-initialised GFE: the data are close
        enough to linear for this model, and it encodes as PCA does). Not set
        by ``partial_fit``.

    code_prior_weight_ : float
        The weight of the training codes' prior this fit used: ``code_prior_weight``,
        or what 'auto' chose from ``intrinsic_dimension_``.

    intrinsic_dimension_ : float or None
        With ``code_prior_weight='auto'``: the TwoNN maximum-likelihood estimate
        of the intrinsic dimension of the training samples (those without
        missing entries, at most 1000 of them, evenly strided), from the ratio
        of each sample's distances to its two nearest neighbours. None with a
        numeric weight, or with fewer than 20 distinct complete samples (then
        'auto' uses no prior). A warm-start fit or ``partial_fit`` keeps the
        first fit's estimate.

    noise_variance_ : ndarray of shape (n_features,)
        Variance of the noise of each feature, in the units of ``X``: the mean
        squared residual of the samples held out for early stopping (of the
        training samples without early stopping), missing entries left out.
        A feature that fewer than 5 of them observe, and fewer than half as
        many as the median feature, takes at least its variance over all
        samples (the typical feature's where fewer than 5 observe it): the
        decoder barely learns it. Behind the error bars of
        ``encode(X, return_std=True)`` and :meth:`reconstruct`. Set by
        ``fit``, not by ``partial_fit``.

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

    Notes
    -----
    **Parameters fixed by fitting.** A fitted model keeps the ``n_components``,
    ``hidden_layer_sizes``, ``activation``, ``architecture``, ``loss`` and
    ``decoder_init`` it was fitted with: changed with ``set_params``, they take
    effect at the next ``fit`` (see ``warm_start``). The settings of the flow
    (``flow``, ``solver``, ``init``, ``flow_tol`` and the like) apply to the next
    :meth:`transform`.

    **Batch dependence of adaptive solvers.** torchdiffeq's adaptive solvers
    choose one step size per batch from an error norm over all its rows, so
    with them a code depends on its batch mates (and on their order) within the
    solver's tolerance, and a sample may stop at a different convergence check
    (by how much: :ref:`solver-measurements`). 'lm', 'amd' and the fixed-grid
    solvers give the same codes whatever the batch; scikit-learn's invariance
    checks are expected to fail for torchdiffeq's adaptive solvers only.
    torchode's solvers ('torchode-dopri5', 'torchode-tsit5') keep a step size,
    error norm and stopping time per sample, so they give the same codes
    whatever the batch, with error control, and pass these checks; they are not
    differentiable.

    **Second-order flow.** With 'amd' it needs fewer decoder evaluations than
    the gradient flow. Integrated as an ODE by torchdiffeq it is not reliably
    faster: the friction ``3/t`` fades, so the state circles the optimum and
    converges only polynomially; explicit Euler and the midpoint rule are
    unstable on it (measurements: :ref:`solver-measurements`).

    **Adjoint training.** With 'amd' the gradient is the exact derivative of the
    discrete procedure (accept/reject decisions, step sizes and stopping times
    are piecewise constant in the weights and are not differentiated); it keeps
    the graph of every accepted step in memory. With torchdiffeq's solvers it
    is the continuous adjoint solved by the same method: it matches the
    derivative of the discretised flow up to the solver's truncation error. The
    state is stored at every grid point (fixed grid) or every
    ``max_step_size`` time units (adaptive), because re-integrating a
    contracting flow backwards is unstable (accuracy and cost:
    :ref:`solver-measurements`).

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
        "flow": [StrOptions(set(FLOWS))],
        "solver": [StrOptions(set(SOLVERS))],
        "training": [StrOptions({"approximate", "adjoint"})],
        "init": [StrOptions(set(INITS))],
        "rtol": [Interval(Real, 0, None, closed="neither")],
        "atol": [Interval(Real, 0, None, closed="neither")],
        "flow_time": [Interval(Real, 0, None, closed="neither")],
        "step_size": [Interval(Real, 0, None, closed="neither")],
        "max_step_size": [Interval(Real, 0, None, closed="neither")],
        "flow_tol": [Interval(Real, 0, None, closed="left")],
        "max_flow_steps": [Interval(Integral, 1, None, closed="left")],
        "decoder_init": [StrOptions({"auto", "pca", "random"})],
        "warm_codes": ["boolean"],
        "code_prior_weight": [
            StrOptions({"auto"}),
            Interval(Real, 0, None, closed="left"),
        ],
    }
    # Missing entries (NaN) are left out of every loss: see the user guide.
    _accepts_missing = True

    def __init__(
        self,
        n_components=2,
        *,
        hidden_layer_sizes=(128,),
        activation="elu",
        architecture="mlp",
        loss="mse",
        decoder_init="auto",
        flow="gradient",
        solver="lm",
        training="approximate",
        init="auto",
        warm_codes=True,
        code_prior_weight="auto",
        flow_time=1e4,
        step_size=1.0,
        max_step_size=10.0,
        rtol=1e-4,
        atol=1e-6,
        flow_tol=1e-3,
        max_flow_steps=1000,
        max_iter=1000,
        batch_size=64,
        learning_rate_init=3e-3,
        optimizer="adam",
        weight_averaging=0.99,
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
        self.architecture = architecture
        self.loss = loss
        self.decoder_init = decoder_init
        self.flow = flow
        self.solver = solver
        self.training = training
        self.init = init
        self.warm_codes = warm_codes
        self.code_prior_weight = code_prior_weight
        self.flow_time = flow_time
        self.step_size = step_size
        self.max_step_size = max_step_size
        self.rtol = rtol
        self.atol = atol
        self.flow_tol = flow_tol
        self.max_flow_steps = max_flow_steps
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.optimizer = optimizer
        self.weight_averaging = weight_averaging
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start
        self.device = device

    def _resolved_decoder_init(self):
        """``decoder_init`` with 'auto' resolved: 'pca' or 'random'."""
        if self.decoder_init == "auto":
            return "pca" if self.loss == "mse" else "random"
        return self.decoder_init

    def _architecture(self):
        # decoder_init decides whether the decoder has a linear path (and the
        # default init); resolved, so 'auto' and what it stands for are equal.
        return {
            **super()._architecture(),
            "decoder_init": self._resolved_decoder_init(),
        }

    def _check_params(self):
        super()._check_params()
        if self.decoder_init == "pca" and self.loss != "mse":
            raise ValueError(
                "decoder_init='pca' needs loss='mse' (PCA is the optimal linear "
                "decoder for the squared error, not for logits); use "
                "decoder_init='random' or 'auto'."
            )
        solver = SOLVERS[self.solver]
        if self.training == "adjoint" and not solver.differentiable:
            reason = (
                f"and solver={self.solver!r} is not differentiable"
                if solver.integrates
                else f"which solver={self.solver!r} does not integrate"
            )
            raise ValueError(
                f"training='adjoint' differentiates through the flow, {reason}; use "
                "solver='amd' (or a torchdiffeq solver) with training='adjoint'."
            )

    def _build_modules(self, n_features, generator, dtype, device):
        self.decoder_ = make_mlp(
            self.n_components,
            self._hidden_sizes(),
            n_features,
            self.activation,
            architecture=self.architecture,
            generator=generator,
            dtype=dtype,
            device=device,
            skip=self._resolved_decoder_init() == "pca",
        )

    def _fit_starting_weights(self, X):
        """The PCA start: the decoder's linear path spans the principal axes."""
        if self._resolved_decoder_init() != "pca":
            return
        # The scaled data are centred, so the principal axes are the right
        # singular vectors. The linear path maps a code to its point in PCA's
        # subspace isometrically: at initialisation the optimal code of a sample
        # is its PCA projection and the decoder reconstructs exactly as PCA does.
        n_axes = min(self.n_components, *X.shape)
        if torch.isnan(X).any():
            # Missing entries: the axes of iterative PCA on the observed ones.
            _, vh, _ = iterative_pca(X.double(), self.n_components)
        else:
            _, _, vh = torch.linalg.svd(X.double(), full_matrices=False)
        weight = X.new_zeros((X.shape[1], self.n_components))
        weight[:, :n_axes] = vh[:n_axes].T.to(X.dtype)
        set_linear_path(self.decoder_, weight)

    def _training_data(self, X, y, generator, new_model, incremental):
        X_train, X_val = super()._training_data(X, y, generator, new_model, incremental)
        self._resolve_code_prior_weight(X_train, new_model)
        return X_train, X_val

    def _resolve_code_prior_weight(self, X_train, new_model):
        """``code_prior_weight_`` and ``intrinsic_dimension_`` of this fit.

        'auto' estimates the dimension of a new model's (scaled) training
        samples; a resumed fit keeps the estimate it has.
        """
        if self.code_prior_weight != "auto":
            self.code_prior_weight_ = float(self.code_prior_weight)
            self.intrinsic_dimension_ = None
            return
        if new_model or getattr(self, "intrinsic_dimension_", None) is None:
            self.intrinsic_dimension_ = two_nn_dimension(X_train.cpu().numpy())
        dimension = self.intrinsic_dimension_
        excess = (
            dimension is not None
            and self.n_components >= EXCESS_COMPONENTS_FACTOR * dimension
        )
        self.code_prior_weight_ = AUTO_CODE_PRIOR_WEIGHT if excess else 0.0

    def _begin_training(self, X):
        # Training and its validation encode without the code prior, and
        # without the start encoder and the kept training codes (they fit the
        # old decoder); fit estimates them afresh afterwards, partial_fit not.
        self._code_covariance = self._code_mean = None
        self._start_encoder = self._neighbour_codes = None
        self._n_neighbour_samples = None
        self._train_codes = self._train_prior = None
        # The validation loss starts held-out samples from their nearest
        # training sample's current code too (see _validation_loss).
        self._train_pool = pool_rows(X)
        self._train_samples = X
        self._validation_neighbours = None
        resumed = False
        if self.warm_codes and SOLVERS[self.solver].resumable:
            # A warm-start fit on the same training samples resumes from the codes
            # the previous fit reached (restarting them from init would undo the
            # codes' part of the block-coordinate descent).
            last = getattr(self, "_last_train_codes", None)
            self._train_fingerprint = _fingerprint(X) if self.warm_start else None
            resumed = last is not None and last[0] == self._train_fingerprint
            if resumed:
                self._train_codes = last[1].to(X.device).clone()
            else:
                self._train_codes = self._flow_start_codes(X)
        self._start_code_moments = self._code_prior_moments(at_start=True)
        last_moments = getattr(self, "_last_code_prior_moments", None)
        if resumed and last_moments is not None and self.code_prior_weight_:
            # The resumed codes were solved under the prior: refitted to them,
            # it would tighten with every warm-start fit.
            self._start_code_moments = last_moments
        # Rows not yet solved while the prior waits for codes that vary.
        self._prior_waiting_rows = None
        if self.code_prior_weight_ and self._start_code_moments is None:
            if self._train_codes is not None:
                self._prior_waiting_rows = torch.ones(
                    len(self._train_codes), dtype=torch.bool, device=X.device
                )
        # The current epoch's training flows that stopped short of flow_tol.
        self._short_solves = ShortSolves()

    def _code_prior_moments(self, at_start=False):
        """Mean and covariance of the training's code prior, or None for none.

        From the codes training starts from, fixed for the whole fit: refitted
        to the codes it shrinks, the prior would feed on itself (S-curve, 2
        components: the smaller code variance fell 0.59 -> 0.001 and the
        held-out error rose from 0.003 to 0.12 of the data's variance). Start
        codes that are all equal (init='zeros') or random (init='random') give
        none (``at_start``): the prior is then fitted once every training code
        has been solved once (see _prepare_minibatches).
        """
        codes = self._train_codes
        if not self.code_prior_weight_ or codes is None or len(codes) < 2:
            return None
        if at_start and self._resolved_init() == "random":
            # Random start codes say nothing of the data: wait as for equal ones.
            return None
        if not codes.double().var(dim=0).sum() > 0:
            return None
        return code_moments(codes)

    def _end_training(self):
        if self._train_codes is not None and self.warm_start:
            self._last_train_codes = (
                self._train_fingerprint,
                self._train_codes.detach().cpu(),
            )
            self._last_code_prior_moments = self._start_code_moments
        # Close to the final decoder's codes: where the start encoder's
        # training codes are solved from.
        self._final_train_codes = self._train_codes
        self._train_codes = self._train_samples = self._train_pool = None
        self._validation_neighbours = None
        self._train_prior = self._start_code_moments = None
        self._prior_waiting_rows = None
        short = getattr(self, "_short_solves", None)
        self._short_solves = None
        if short is not None and short.status:
            self._convergence_report().warn_trained(short)

    def _forget_resume_state(self):
        super()._forget_resume_state()
        self._last_train_codes = self._last_code_prior_moments = None

    def _record_short_solves(self, result, warm):
        """Count the training flows of this epoch that stopped short of flow_tol."""
        record = getattr(self, "_short_solves", None)
        if record is not None:
            record.record(result, self.n_iter_, warm)

    def _convergence_report(self):
        return ConvergenceReport(
            self.flow, self.solver, self.flow_tol, self._dtype == torch.float64
        )

    def _draw_model_seeds(self, generator):
        """With init='random': the seed of the random start codes."""
        if self._resolved_init() == "random":
            self._random_start_seed = self._draw_random_start_seed(generator)

    def _draw_random_start_seed(self, generator=None):
        """A seed for init='random', from ``generator`` or else ``random_state``."""
        if generator is None:
            generator = self._torch_generator()
        return int(torch.randint(2**62, (1,), generator=generator).item())

    def _resolved_init(self):
        """``init`` with 'auto' resolved: how the flows' start codes are chosen."""
        if self.init == "auto":
            pca = self._fitted_architecture["decoder_init"] == "pca"
            return "amortized" if pca else "zeros"
        return self.init

    def _flow_start_codes(self, X):
        """The codes the flows of the scaled samples ``X`` start from."""
        init = self._resolved_init()
        if init in ("linear", "amortized"):
            codes = linear_path_codes(self.decoder_, X)
            encoder = getattr(self, "_start_encoder", None)
            neighbours = getattr(self, "_neighbour_codes", None)
            if init == "linear" or (encoder is None and neighbours is None):
                return codes
            return amortized_start_codes(
                encoder, self.decoder_, self._loss_function, X, codes, neighbours
            )
        if init == "random" and getattr(self, "_random_start_seed", None) is None:
            # init was switched to 'random' after fitting with 'zeros'.
            self._random_start_seed = self._draw_random_start_seed()
        return initial_codes(
            X, self.n_components_, init, getattr(self, "_random_start_seed", 0)
        )

    def _training_loss(self, X):
        # The training codes solved to full tolerance from their warm start
        # (close already, so cheap); the next epoch starts from the better
        # codes. Under a code prior the loss is that of the decoder's own best
        # codes, as transform finds them and as the loss of the start that
        # training compares with was measured; the warm codes stay the prior's.
        codes = getattr(self, "_train_codes", None)
        with torch.no_grad():
            result = self._flow(X, z0=codes)
            if codes is not None and getattr(self, "_train_prior", None) is None:
                self._train_codes = result.z
            return self._loss_function(self.decoder_(result.z), X).mean().item()

    def _validation_loss(self, X):
        """Mean reconstruction loss of the held-out scaled samples ``X``.

        With init='amortized', ``transform`` starts a sample at the best of
        several candidate codes, and on a curved manifold that start decides
        the fold its solve ends on. The start encoder and the kept training
        codes are fitted after training, so here each sample starts, as in
        ``transform``, at the better by its loss of its linear code and the
        current code of its nearest training sample (among those of
        ``pool_rows``). From the linear start alone, a decoder that learnt to
        bend would be judged on the wrong fold (S-curve, 200 samples: held-out
        loss rising 0.035 -> 0.23 while the decoder improved, so early
        stopping kept the weights of epoch 40). Scoring the better of two
        solves instead would judge what ``transform`` does not do: with 36
        components on a 12-dimensional manifold it kept weights whose
        held-out error in ``transform`` was 60 times the validation loss.
        """
        codes = getattr(self, "_train_codes", None)
        if self._resolved_init() != "amortized" or codes is None:
            return super()._validation_loss(X)
        with torch.no_grad():
            # The samples do not change during a fit, only their codes: the
            # nearest training sample of each held-out one is searched once.
            cached = getattr(self, "_validation_neighbours", None)
            if cached is None or cached[0] is not X:
                pool_samples = self._train_samples[self._train_pool]
                cached = (X, nearest_samples(X, pool_samples))
                self._validation_neighbours = cached
            nearest = codes_of_samples(cached[1], codes[self._train_pool].to(X.dtype))
            start = amortized_start_codes(
                None,
                self.decoder_,
                self._loss_function,
                X,
                linear_path_codes(self.decoder_, X),
                lambda _: nearest,
            )
            z = self._flow(X, z0=start).z
            return self._loss_function(self.decoder_(z), X).mean().item()

    def _start_description(self):
        if self._fitted_architecture["decoder_init"] == "pca":
            return (
                "the PCA start (the untrained decoder, which reconstructs as PCA "
                "does: the data are close enough to linear for this model size)"
            )
        return super()._start_description()

    def _reference_training_loss(self, X):
        # Early stopping keeps no weights that fit the training data worse than
        # this (see run_epochs): for a decoder initialised from PCA, the training
        # loss of the weights training starts from, PCA's optimum when untrained.
        if self._resolved_decoder_init() != "pca":
            return None
        return self._training_loss(X)

    def _flow(
        self,
        X,
        differentiable=False,
        z0=None,
        max_evals=None,
        prior=None,
        max_rows=None,
    ):
        """Run the flow on the scaled samples ``X`` and return its FlowResult.

        With ``differentiable=True`` the codes carry a graph to the decoder's
        parameters (adjoint training); otherwise no graph is built. ``z0``
        overrides the initial codes; ``max_rows`` bounds the rows 'lm' iterates
        at once (None: its default).
        """
        with torch.set_grad_enabled(differentiable):
            return run_flow(
                self.decoder_,
                self._loss_function,
                X,
                self._flow_start_codes(X) if z0 is None else z0,
                flow=self.flow,
                solver=self.solver,
                t_end=self.flow_time,
                step_size=self.step_size,
                max_step_size=self.max_step_size,
                rtol=self.rtol,
                atol=self.atol,
                tol=self.flow_tol,
                max_steps=self.max_flow_steps,
                differentiable=differentiable,
                max_evals=max_evals,
                prior=prior,
                max_rows=max_rows,
            )

    def _inference_prior(self, X):
        """The code prior for samples with missing entries, or None.

        Fitted after training (:func:`~skgfe._error_bars.fit_error_model`), so
        that training and its validation encode without it.
        """
        if getattr(self, "_code_covariance", None) is None:
            return None
        return code_prior_term(self, X.dtype, X.device)

    def _encode(self, X):
        return self._infer(X, self._inference_prior(X)).z

    def _infer(self, X, prior, max_rows=None):
        """The FlowResult of the scaled samples ``X`` as inference solves them.

        A complete row is solved once, from its amortized start. A row with
        missing entries is solved from its linear start and from the code of
        its nearest training sample (on its observed entries), and keeps the
        end point of lower objective (its observed entries' loss plus the code
        prior's term): with fewer entries a start that fits them better can
        still lead the solve to a worse stationary point, so the two starts'
        losses do not tell which one ends best (digits, 30% missing: the
        better start 0.394 of the mean imputer's error, the better end point
        0.396, the linear start alone 0.425; spectra, 50% missing: 0.304,
        0.278 and 0.281). Each row's answer depends on that row alone.
        """
        neighbours = getattr(self, "_neighbour_codes", None)
        incomplete = torch.isnan(X).any(dim=1)
        if (
            neighbours is None
            or self._resolved_init() != "amortized"
            or not incomplete.any()
        ):
            return self._flow(X, prior=prior, max_rows=max_rows)
        rows = incomplete.nonzero().squeeze(1)
        with torch.no_grad():
            # Complete rows start as _flow_start_codes starts them; the rows
            # with missing entries from their linear code (their neighbour's
            # code is the second solve's start), so neither is searched twice.
            linear = linear_path_codes(self.decoder_, X[rows])
            start = linear.new_empty((len(X), linear.shape[1]))
            start[rows] = linear
            if len(rows) < len(X):
                start[~incomplete] = self._flow_start_codes(X[~incomplete])
            nearest = neighbours(X[rows])
            found = torch.isfinite(nearest).all(dim=1)
            nearest = torch.where(found[:, None], nearest, linear)
        result = self._flow(X, z0=start, prior=prior, max_rows=max_rows)
        second = self._flow(X[rows], z0=nearest, prior=prior, max_rows=max_rows)
        return keep_better_solves(result, second, rows)

    def _diagnose_start(self, X):
        """After a flow could not start: say for how many scaled samples, and why.

        The flow only knows that some loss of its batch is not finite; this counts
        the samples of all of ``X`` and tells weights that are not finite from
        inputs that overflow the decoder.
        """
        with torch.no_grad():
            loss = self._in_chunks(
                lambda chunk: self._loss_function(
                    self.decoder_(self._flow_start_codes(chunk)), chunk
                ),
                X,
            )
        self._require_finite(
            loss.cpu().numpy(), "The reconstruction loss at the initial code"
        )

    def _reconstruct(self, X):
        try:
            return super()._reconstruct(X)
        except FloatingPointError:
            self._diagnose_start(self._scale(self._to_tensor(X)))
            raise

    def _prepare_minibatches(self, X_train, rows):
        # Warm training codes are solved (inexactly, from where the last epoch
        # left them) for a group of minibatches at once: see
        # MINIBATCH_GROUP_ROWS. Their steps then use these codes as they are.
        if getattr(self, "_train_codes", None) is None:
            return
        X_rows, codes = X_train[rows], self._train_codes[rows]
        self._train_prior = self._training_code_prior(X_rows, codes)
        result = self._flow(
            X_rows, z0=codes, max_evals=TRAINING_MAX_EVALS, prior=self._train_prior
        )
        self._train_codes[rows] = result.z
        waiting = getattr(self, "_prior_waiting_rows", None)
        if waiting is not None:
            waiting[rows] = False
            if not waiting.any():
                self._prior_waiting_rows = None
                self._start_code_moments = self._code_prior_moments()
        self._record_short_solves(result, warm=True)
        self._group_flow_steps = result.n_steps.double().mean().item()

    def _training_code_prior(self, X_rows, codes):
        """The prior of the warm solves of the training samples ``X_rows``
        (scaled) from their codes ``codes``; None without one (see
        ``code_prior_weight``)."""
        moments = getattr(self, "_start_code_moments", None)
        if moments is None:
            return None
        residual = None
        if self._fitted_loss == "mse":
            with torch.no_grad():
                residual = X_rows - self.decoder_(codes)
        return training_code_prior(
            moments, residual, self._fitted_loss, self.code_prior_weight_, codes.dtype
        )

    def _batch_loss(self, X_batch, generator, rows=None):
        # 'approximate': the codes are held fixed and the gradient flows through
        # the decoder only (exact at stationary codes, by the envelope theorem).
        # 'adjoint': the codes carry their graph through the flow. Warm codes
        # were solved by _prepare_minibatches.
        if rows is not None and getattr(self, "_train_codes", None) is not None:
            codes, flow_steps = self._train_codes[rows], self._group_flow_steps
        else:
            result = self._flow(X_batch, differentiable=self.training == "adjoint")
            self._record_short_solves(result, warm=False)
            codes, flow_steps = result.z, result.n_steps.double().mean().item()
        output = self.decoder_(codes)
        loss = self._loss_function(output, X_batch).mean()
        return loss, {"flow steps": flow_steps}

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    def _fit_error_model(self, X_train, X_val):
        fit_error_model(self, X_train, X_val)

    def _fit_amortized_start(self, X_train, generator, incremental):
        """After ``fit``: the start encoder of init='amortized' (see ``init``).

        Its targets are the training samples' codes under the final decoder,
        solved from the training's warm codes where there are some (close
        already, so cheap), else from the linear start; up to
        ``NEIGHBOUR_POOL_SIZE`` of those samples are kept with their codes for
        the nearest-sample start. ``partial_fit`` (``incremental``) fits
        neither: the model starts from the linear code.
        """
        warm = getattr(self, "_final_train_codes", None)
        self._final_train_codes = None
        self._start_encoder = self._neighbour_codes = None
        self._n_neighbour_samples = None
        if incremental or self._resolved_init() != "amortized":
            return
        with torch.no_grad():
            codes = self._flow(X_train, z0=warm).z
        self._start_encoder = fit_start_encoder(
            X_train, codes, self._fitted_architecture["activation"], generator
        )
        self._neighbour_codes = fit_neighbour_codes(X_train, codes)
        # Saved with the model: the size of the kept samples, to rebuild them.
        self._n_neighbour_samples = (
            None if self._neighbour_codes is None else len(self._neighbour_codes.codes)
        )

    def _build_start_encoder(self, fitted, dtype, device):
        """An untrained start encoder for the recorded fitted attributes
        ``fitted`` (loading a saved model: its weights are copied in next)."""
        self._start_encoder = build_start_encoder(
            fitted["n_features_in_"],
            fitted["n_components_"],
            fitted["_fitted_architecture"]["activation"],
            dtype,
            device,
        )

    def _build_neighbour_codes(self, fitted, dtype, device):
        """Empty kept training codes for the recorded fitted attributes
        ``fitted`` (loading a saved model: its tensors are copied in next)."""
        n_samples = fitted.get("_n_neighbour_samples")
        if not isinstance(n_samples, int) or not 0 < n_samples <= 10**7:
            raise ValueError(
                "_n_neighbour_samples must be a positive int where "
                "_neighbour_codes is saved"
            )
        self._neighbour_codes = build_neighbour_codes(
            n_samples,
            fitted["n_features_in_"],
            fitted["n_components_"],
            dtype,
            device,
        )

    def _ensure_on_device(self):
        super()._ensure_on_device()
        for name in ("_start_encoder", "_neighbour_codes"):
            module = getattr(self, name, None)
            if module is not None:
                module.to(self._device())

    def encode(self, X, return_info=False, return_std=False):
        """Encode ``X``, optionally with per-sample diagnostics of the flow.

        Like :meth:`transform`, it warns with a
        :class:`~sklearn.exceptions.ConvergenceWarning` when some samples did not
        converge, saying how many and which setting to change.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples to encode, NaN for a missing entry (see :ref:`missing`).
        return_info : bool, default=False
            Also return a dict of per-sample arrays:

            - ``loss``: final reconstruction loss (on the scaled data);
            - ``grad_norm``: norm of the loss gradient at the code;
            - ``n_steps``: solver steps (accepted steps for 'amd' and adaptive
              solvers, grid steps for fixed-grid solvers);
            - ``n_evals``: decoder evaluations, each a forward and a backward
              pass (solver stages, rejected trials and convergence checks
              included);
            - ``time``: flow time reached;
            - ``converged``: bool;
            - ``status``: why the flow stopped: 'converged' (gradient norm <=
              ``flow_tol``), 'stalled' ('amd': no step lowers the loss any
              more; counts as converged when the gradient norm is within 10
              times ``flow_tol``, as happens at float32 precision), 'horizon'
              (reached ``flow_time``), 'max_steps' (used up
              ``max_flow_steps``) or 'diverged' (a torchdiffeq solver became
              unstable or non-finite; the code is its last good checkpoint).

        return_std : bool, default=False
            Also return the standard deviation of each code from a Laplace
            approximation of its posterior (the noise variance and code prior
            that ``fit`` estimates; see :ref:`missing`).

        Returns
        -------
        Z : ndarray of shape (n_samples, n_components)
            The codes, as :meth:`transform` returns them.
        Z_std : ndarray of shape (n_samples, n_components)
            Only when ``return_std`` is True.
        info : dict of ndarray
            Only when ``return_info`` is True.
        """
        X = self._check_ready(X)
        if return_std:
            self._check_error_model()
        X_t = self._scale(self._to_tensor(X))
        Z_t, results = self._encode_in_chunks(X_t)
        Z = Z_t.cpu().numpy().astype(X.dtype, copy=False)
        self._require_finite(Z, "The code")
        info = flow_info(results)
        self._convergence_report().warn_encoded(info)
        out = (Z,)
        if return_std:
            covariance, _ = self._laplace_in_chunks(X_t, Z_t)
            std = covariance.diagonal(dim1=1, dim2=2).sqrt()
            out += (std.cpu().numpy().astype(X.dtype, copy=False),)
        if return_info:
            out += (info,)
        return out[0] if len(out) == 1 else out

    def _encoding_block(self, X_t):
        """Rows encoded per chunk, and per 'lm' iteration set (None: its default).

        The CPU keeps :data:`CHUNK_ROWS` and the solver's default; a CUDA device
        takes as many rows as a quarter of its free memory holds, in one
        iteration set (see :func:`~skgfe._devices.rows_at_once`).
        """
        n_features = X_t.shape[1]
        widths = n_features + sum(self._hidden_sizes())
        # A row's Jacobians through every layer, its outputs and activations,
        # with room for the temporaries of their products.
        row_bytes = 4 * X_t.element_size() * (self.n_components_ + 1) * widths
        rows = rows_at_once(X_t.device, row_bytes, CHUNK_ROWS)
        return rows, (rows if X_t.device.type == "cuda" else None)

    def _encode_in_chunks(self, X_t):
        """Codes of the scaled samples ``X_t`` and the flows' results, by chunks."""
        rows, lm_rows = self._encoding_block(X_t)
        try:
            with torch.no_grad():
                prior = self._inference_prior(X_t)
                results = [
                    self._infer(X_t[i : i + rows], prior, max_rows=lm_rows)
                    for i in range(0, len(X_t), rows)
                ]
        except FloatingPointError:
            self._diagnose_start(X_t)
            raise
        return torch.cat([r.z for r in results]), results

    def _laplace_in_chunks(self, X_t, Z_t):
        """Code covariances and output variances of the Laplace approximation."""
        parts = [
            laplace_terms(self, X_t[i : i + CHUNK_ROWS], Z_t[i : i + CHUNK_ROWS])
            for i in range(0, len(X_t), CHUNK_ROWS)
        ]
        return tuple(torch.cat(tensors) for tensors in zip(*parts))

    def _check_error_model(self):
        if getattr(self, "_code_covariance", None) is None:
            raise ValueError(
                "Error bars need the noise variance and code prior that fit "
                "estimates after training; this model was last trained by "
                "partial_fit. Fit it with fit to get error bars."
            )

    def reconstruct(self, X, return_std=False):
        """Encode and decode ``X``: each sample's reconstruction from its code.

        Samples with missing entries (NaN) are encoded from their observed
        entries and reconstructed in full, so this fills the missing entries
        (see :class:`GradientFlowImputer`).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples, NaN for a missing entry.
        return_std : bool, default=False
            Also return the predictive standard deviation of every entry: the
            spread of a new measurement of it given the sample's observed
            entries (the code's uncertainty pushed through the decoder, plus
            the noise ``noise_variance_``; for ``loss='bce'`` the uncertainty
            of the decoded probability only). See :ref:`missing`.

        Returns
        -------
        X_hat : ndarray of shape (n_samples, n_features)
            ``inverse_transform(transform(X))``.
        std : ndarray of shape (n_samples, n_features)
            Only with ``return_std``.
        """
        X = self._check_ready(X)
        if return_std:
            self._check_error_model()
        X_t = self._scale(self._to_tensor(X))
        Z_t, results = self._encode_in_chunks(X_t)
        self._convergence_report().warn_encoded(flow_info(results))
        with torch.no_grad():
            X_hat = self._unscale(self._in_chunks(self._decode_scaled, Z_t))
        X_hat = X_hat.cpu().numpy().astype(X.dtype, copy=False)
        self._require_finite(X_hat, "The reconstruction")
        if not return_std:
            return X_hat
        _, output_variance = self._laplace_in_chunks(X_t, Z_t)
        variance = output_variance.double().cpu().numpy() * self.scale_**2
        if self._fitted_loss == "mse":
            variance = variance + self.noise_variance_
        return X_hat, np.sqrt(variance).astype(X.dtype, copy=False)

    def transform(self, X):
        """Encode ``X`` by integrating each sample's flow.

        Warns with a :class:`~sklearn.exceptions.ConvergenceWarning` when some
        samples did not converge; :meth:`encode` gives per-sample diagnostics.

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
