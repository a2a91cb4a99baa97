"""Autoencoder baselines: GradientFlowEncoder's decoder, trained with an encoder.

:class:`Autoencoder` (undercomplete, sparse, denoising) and
:class:`VariationalAutoencoder` share everything with GradientFlowEncoder except
how a sample is encoded: the decoder factory, the training loop, the internal
scaling, the parameters and the API. The only difference is an encoder network
that mirrors the decoder and is trained jointly with it.
"""

import math
from numbers import Integral, Real

import torch
from sklearn.utils._param_validation import Interval, StrOptions

from ._base import BaseDecoderTransformer
from ._torch_estimator import CHUNK_ROWS

# Mean activations of sigmoid codes are clipped away from 0 and 1 inside the KL
# sparsity penalty, whose logarithms are infinite there.
_EPS_ACTIVATION = 1e-6


def l1_penalty(Z):
    """Mean absolute code, over samples and components."""
    return Z.abs().mean()


def kl_sparsity_penalty(Z, target):
    """Mean over components of KL(target || mean activation), for codes in (0, 1)."""
    rho_hat = Z.mean(dim=0).clamp(_EPS_ACTIVATION, 1 - _EPS_ACTIVATION)
    rho = target
    kl = rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log(
        (1 - rho) / (1 - rho_hat)
    )
    return kl.mean()


def gaussian_kl(mean, log_var):
    """KL(N(mean, exp(log_var)) || N(0, I)) of each row, summed over components."""
    # expm1(v) - v is exp(v) - 1 - v without the cancellation near v = 0.
    return 0.5 * (mean**2 + torch.expm1(log_var) - log_var).sum(dim=1)


def _standard_normal(shape, generator, like):
    # Drawn on the CPU, where the generator lives, so the draws do not depend on
    # the device and torch's global random state is never used.
    return torch.randn(shape, generator=generator, dtype=like.dtype).to(like.device)


class _BaseAutoencoder(BaseDecoderTransformer):
    """Encoder and decoder trained end to end. Not for direct use."""

    def _n_encoder_outputs(self):
        return self.n_components

    def _build_modules(self, n_features, generator, dtype, device):
        # The decoder is drawn first, so with the same random_state it starts from
        # the very weights GradientFlowEncoder's decoder starts from.
        self.decoder_ = self._make_decoder(n_features, generator, dtype, device)
        self.encoder_ = self._make_encoder(
            n_features, self._n_encoder_outputs(), generator, dtype, device
        )

    def _modules(self):
        return [self.encoder_, self.decoder_]


class Autoencoder(_BaseAutoencoder):
    """Autoencoder with GradientFlowEncoder's decoder: undercomplete, sparse, denoising.

    An encoder MLP that mirrors the decoder (``hidden_layer_sizes`` reversed) and
    the decoder GradientFlowEncoder builds are trained end to end to reconstruct
    their input. ``transform`` applies the encoder, ``inverse_transform`` the
    decoder. The variants known from the literature are parameters:

    - undercomplete (the default): ``n_components`` below the number of features;
    - sparse: ``sparsity > 0`` adds ``sparsity`` times an L1 penalty on the code
      (``sparsity_penalty='l1'``), or a KL penalty pulling the mean activation of
      each sigmoid code unit towards ``sparsity_target``
      (``sparsity_penalty='kl'`` with ``code_activation='sigmoid'``);
    - denoising: ``noise`` corrupts the input during training only, and the
      network learns to reconstruct the clean sample.

    Read more in the :ref:`User Guide <user_guide>`.

    Parameters
    ----------
    n_components : int, default=2
        Dimension of the code (the number of output features). Codes wider than
        the data (``n_components > n_features``) are overcomplete, and can copy
        the input instead of compressing it: ``fit`` warns about them unless
        ``sparsity`` or ``noise`` regularise the code (sparse and denoising
        autoencoders are often overcomplete on purpose).

    hidden_layer_sizes : array-like of int, default=(128,)
        Widths of the decoder's hidden layers, from the code side to the output
        side; the encoder uses them in reverse order. ``()`` gives linear maps.

    activation : {'elu', 'relu', 'tanh', 'gelu', 'identity'}, default='elu'
        Non-linearity of the hidden layers of both networks.

    architecture : {'mlp', 'modified_mlp'}, default='mlp'
        Network of the encoder and the decoder: a plain MLP, or the gated
        "modified MLP" of physics-informed networks (Wang, Teng, Perdikaris 2021;
        use it with ``activation='tanh'`` and hidden layers of equal width).

    loss : {'mse', 'bce'}, default='mse'
        Per-sample reconstruction loss: the mean squared error, or the binary
        cross-entropy for data in [0, 1] (the decoder then outputs logits and
        :meth:`inverse_transform` applies a sigmoid).

    code_activation : {'identity', 'sigmoid'}, default='identity'
        Non-linearity applied to the encoder's output: 'sigmoid' gives codes in
        (0, 1), as the KL sparsity penalty needs.

    sparsity : float, default=0.0
        Weight of the sparsity penalty added to the training loss; 0 disables it.

    sparsity_penalty : {'l1', 'kl'}, default='l1'
        'l1': the mean absolute code (over the samples of a minibatch and the
        code components). 'kl': the mean over code components of
        ``KL(sparsity_target || mean activation over the minibatch)``, for
        ``code_activation='sigmoid'``.

    sparsity_target : float, default=0.05
        Target mean activation of each code unit for ``sparsity_penalty='kl'``.

    noise : {'gaussian', 'masking'} or None, default=None
        Corruption of the training input (a denoising autoencoder); None trains
        on clean inputs. 'gaussian' adds noise of standard deviation
        ``noise_level`` (relative to the data's scale: in units of ``scale_``).
        'masking' sets a random fraction ``noise_level`` of the entries of each
        sample to 0, in the units of ``X`` (Vincent et al. 2008). Never applied
        by :meth:`transform` or :meth:`score`.

    noise_level : float, default=0.1
        Standard deviation of 'gaussian' noise, or the fraction of entries
        dropped by 'masking' (below 1).

    max_iter : int, default=1000
        Largest number of training epochs. Training normally ends earlier, on
        the plateau test of ``tol`` and ``n_iter_no_change``.

    batch_size : int or 'auto', default=64
        Largest minibatch size of training; 'auto' is ``min(200, n_samples)``.
        An epoch's minibatches are equal in size to within one sample (900
        samples in batches of 64 make 15 of 60): no small last minibatch gives
        the optimiser a full-size step on a noisy gradient.

    learning_rate_init : float, default=3e-3
        Learning rate of the optimiser.

    optimizer : {'adam', 'rmsprop'}, default='adam'
        Torch optimiser of the network weights.

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
        Seeds the initialisation, the minibatch order and the training noise
        through a local ``torch.Generator`` (torch's global seed is never
        touched). Pass an int for reproducible results.

    verbose : int, default=0
        1 prints one line per epoch (loss, seconds); 2 also shows a progress bar
        (needs tqdm).

    warm_start : bool, default=False
        Reuse the previous fit's networks and continue training them. When a
        parameter that shapes them changed since (``n_components``,
        ``hidden_layer_sizes``, ``activation``, ``architecture``, ``loss`` or
        ``code_activation``), ``fit`` warns and trains new networks instead, and
        :meth:`partial_fit` raises.

    device : str or torch.device, default='cpu'
        Torch device of training and encoding: any device string torch parses
        ('cpu', 'cuda', 'cuda:1', 'mps', ...), a :class:`torch.device`, or
        'auto', which picks CUDA when available. A device that does not parse or
        that torch cannot reach raises a ValueError in ``fit`` or ``transform``.

    Attributes
    ----------
    n_components_ : int
        Dimension of the fitted codes: ``n_components`` when the networks were
        built.

    encoder_ : torch.nn.Module
        The trained encoder, mapping scaled samples to codes (before
        ``code_activation``).

    decoder_ : torch.nn.Module
        The trained decoder, mapping codes to (scaled) reconstructions.

    mean_ : ndarray of shape (n_features_in_,)
        Per-feature mean removed before encoding ('mse'; zeros for 'bce').

    scale_ : float
        Global scale the centred data are divided by ('mse'; 1 for 'bce').

    loss_curve_ : list of float
        Mean training loss (on the scaled data, penalty included) of each epoch.

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
        the weights it started from (``kept_start_``).

    kept_start_ : bool
        Whether ``fit`` kept the weights it started from because no trained
        weights measured better. Not set by ``partial_fit``.

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
    GradientFlowEncoder : The same decoder, with codes found by a gradient flow.
    VariationalAutoencoder : The same decoder with a Gaussian encoder.
    sklearn.decomposition.PCA : The optimal linear encoder-decoder pair.

    Notes
    -----
    A fitted model keeps the ``n_components``, ``hidden_layer_sizes``,
    ``activation``, ``architecture``, ``loss`` and ``code_activation`` it was
    fitted with: changed with ``set_params``, they take effect at the next
    ``fit`` (see ``warm_start``).

    References
    ----------
    G. E. Hinton, R. R. Salakhutdinov. "Reducing the dimensionality of data with
    neural networks", Science 313(5786), 2006.

    A. Ng. "Sparse autoencoder", CS294A lecture notes, Stanford, 2011.

    P. Vincent, H. Larochelle, Y. Bengio, P.-A. Manzagol. "Extracting and
    composing robust features with denoising autoencoders", ICML 2008.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from skgfe import Autoencoder
    >>> X = load_digits().data[:200]
    >>> ae = Autoencoder(n_components=4, max_iter=5, random_state=0)
    >>> Z = ae.fit_transform(X)
    >>> Z.shape
    (200, 4)
    >>> ae.inverse_transform(Z).shape
    (200, 64)
    >>> denoising = Autoencoder(4, noise="masking", noise_level=0.3, max_iter=5)
    >>> denoising.fit(X).transform(X).shape
    (200, 4)
    """

    _parameter_constraints: dict = {
        **BaseDecoderTransformer._parameter_constraints,
        "code_activation": [StrOptions({"identity", "sigmoid"})],
        "sparsity": [Interval(Real, 0, None, closed="left")],
        "sparsity_penalty": [StrOptions({"l1", "kl"})],
        "sparsity_target": [Interval(Real, 0, 1, closed="neither")],
        "noise": [StrOptions({"gaussian", "masking"}), None],
        "noise_level": [Interval(Real, 0, None, closed="left")],
    }

    def __init__(
        self,
        n_components=2,
        *,
        hidden_layer_sizes=(128,),
        activation="elu",
        architecture="mlp",
        loss="mse",
        code_activation="identity",
        sparsity=0.0,
        sparsity_penalty="l1",
        sparsity_target=0.05,
        noise=None,
        noise_level=0.1,
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
        self.code_activation = code_activation
        self.sparsity = sparsity
        self.sparsity_penalty = sparsity_penalty
        self.sparsity_target = sparsity_target
        self.noise = noise
        self.noise_level = noise_level
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

    def _check_params(self):
        super()._check_params()
        if (
            self.sparsity > 0
            and self.sparsity_penalty == "kl"
            and self.code_activation != "sigmoid"
        ):
            raise ValueError(
                "sparsity_penalty='kl' penalises mean activations in (0, 1) and "
                "needs code_activation='sigmoid'; got code_activation="
                f"{self.code_activation!r}. Use sparsity_penalty='l1' for "
                "unbounded codes."
            )
        if self.noise == "masking" and self.noise_level >= 1:
            raise ValueError(
                "noise='masking' drops a fraction noise_level of the entries and "
                f"needs noise_level < 1, got {self.noise_level}."
            )

    def _architecture(self):
        # The decoder is trained on codes after code_activation.
        return {**super()._architecture(), "code_activation": self.code_activation}

    def _overcomplete_is_intended(self):
        # Sparse and denoising autoencoders are often overcomplete on purpose.
        return self.sparsity > 0 or (self.noise is not None and self.noise_level > 0)

    def _encode(self, X):
        Z = self.encoder_(X)
        sigmoid = self._fitted_architecture["code_activation"] == "sigmoid"
        return torch.sigmoid(Z) if sigmoid else Z

    def _corrupt(self, X, generator):
        """Training input of the denoising variant: ``X`` with noise (scaled units)."""
        if self.noise is None or self.noise_level == 0:
            return X
        if self.noise == "gaussian":
            return X + self.noise_level * _standard_normal(X.shape, generator, X)
        drop = torch.rand(X.shape, generator=generator, dtype=X.dtype).to(X.device)
        # 0 in the units of X is -mean_ / scale_ in the scaled units.
        zero = self._scale(X.new_zeros((1, X.shape[1])))
        return torch.where(drop < self.noise_level, zero, X)

    def _sparsity_term(self, Z):
        if self.sparsity_penalty == "kl":
            return kl_sparsity_penalty(Z, self.sparsity_target)
        return l1_penalty(Z)

    def _batch_loss(self, X_batch, generator, rows=None):
        Z = self._encode(self._corrupt(X_batch, generator))
        loss = self._loss_function(self.decoder_(Z), X_batch).mean()
        if self.sparsity > 0:
            loss = loss + self.sparsity * self._sparsity_term(Z)
        return loss, {}


class VariationalAutoencoder(_BaseAutoencoder):
    """Variational autoencoder (beta-VAE) with GradientFlowEncoder's decoder.

    A Gaussian encoder (the mirrored MLP, outputting the mean and the log-variance
    of ``q(z | x)``) and the decoder GradientFlowEncoder builds are trained on the
    negative evidence lower bound (ELBO) with a weight ``beta`` on its KL term,
    with one reparameterised sample ``z = mean + exp(log_var / 2) * eps`` per
    training sample. The minibatch loss is, per sample,
    ``l(x, decoder(z)) + beta * KL(q(z | x) || N(0, I)) / n_features``, where ``l``
    is the per-feature mean reconstruction loss that all skgfe estimators use;
    with ``beta=1`` this is the negative ELBO divided by ``n_features`` for a
    Bernoulli likelihood ('bce') or, up to a constant, for a Gaussian likelihood
    of variance ``scale_**2 / 2`` per feature ('mse').

    ``transform`` returns the posterior mean (deterministic), ``inverse_transform``
    decodes, and ``score`` is the negative reconstruction error of the posterior
    mean, like the other estimators; :meth:`elbo` estimates the ELBO itself.

    Read more in the :ref:`User Guide <user_guide>`.

    Parameters
    ----------
    n_components : int, default=2
        Dimension of the latent space (the number of output features). Codes
        wider than the data (``n_components > n_features``) are overcomplete:
        they do not compress it, and ``fit`` warns about them.

    hidden_layer_sizes : array-like of int, default=(128,)
        Widths of the decoder's hidden layers, from the latent side to the output
        side; the encoder uses them in reverse order. ``()`` gives linear maps.

    activation : {'elu', 'relu', 'tanh', 'gelu', 'identity'}, default='elu'
        Non-linearity of the hidden layers of both networks.

    architecture : {'mlp', 'modified_mlp'}, default='mlp'
        Network of the encoder and the decoder: a plain MLP, or the gated
        "modified MLP" of physics-informed networks (Wang, Teng, Perdikaris 2021;
        use it with ``activation='tanh'`` and hidden layers of equal width).

    loss : {'mse', 'bce'}, default='mse'
        Per-sample reconstruction loss: the mean squared error, or the binary
        cross-entropy for data in [0, 1] (the decoder then outputs logits and
        :meth:`inverse_transform` applies a sigmoid).

    beta : float, default=1.0
        Weight of the KL term. 1 is the ELBO; larger values favour a latent
        space closer to the prior, and ``beta -> 0`` approaches a (noisy)
        autoencoder.

    max_iter : int, default=1000
        Largest number of training epochs. Training normally ends earlier, on
        the plateau test of ``tol`` and ``n_iter_no_change``.

    batch_size : int or 'auto', default=64
        Largest minibatch size of training; 'auto' is ``min(200, n_samples)``.
        An epoch's minibatches are equal in size to within one sample (900
        samples in batches of 64 make 15 of 60): no small last minibatch gives
        the optimiser a full-size step on a noisy gradient.

    learning_rate_init : float, default=3e-3
        Learning rate of the optimiser.

    optimizer : {'adam', 'rmsprop'}, default='adam'
        Torch optimiser of the network weights.

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
        Seeds the initialisation, the minibatch order and the reparameterised
        samples (in training and in :meth:`elbo`) through a local
        ``torch.Generator`` (torch's global seed is never touched). Pass an int
        for reproducible results.

    verbose : int, default=0
        1 prints one line per epoch (loss, mean KL term, seconds); 2 also shows a
        progress bar (needs tqdm).

    warm_start : bool, default=False
        Reuse the previous fit's networks and continue training them. When a
        parameter that shapes them changed since (``n_components``,
        ``hidden_layer_sizes``, ``activation``, ``architecture`` or ``loss``),
        ``fit`` warns and trains new networks instead, and :meth:`partial_fit`
        raises.

    device : str or torch.device, default='cpu'
        Torch device of training and encoding: any device string torch parses
        ('cpu', 'cuda', 'cuda:1', 'mps', ...), a :class:`torch.device`, or
        'auto', which picks CUDA when available. A device that does not parse or
        that torch cannot reach raises a ValueError in ``fit`` or ``transform``.

    Attributes
    ----------
    n_components_ : int
        Dimension of the fitted codes: ``n_components`` when the networks were
        built.

    encoder_ : torch.nn.Module
        The trained encoder, mapping scaled samples to the posterior mean
        (first ``n_components`` outputs) and log-variance (last ones).

    decoder_ : torch.nn.Module
        The trained decoder, mapping codes to (scaled) reconstructions.

    mean_ : ndarray of shape (n_features_in_,)
        Per-feature mean removed before encoding ('mse'; zeros for 'bce').

    scale_ : float
        Global scale the centred data are divided by ('mse'; 1 for 'bce').

    loss_curve_ : list of float
        Mean training loss (the beta-weighted negative ELBO per feature, on the
        scaled data) of each epoch.

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
        the weights it started from (``kept_start_``).

    kept_start_ : bool
        Whether ``fit`` kept the weights it started from because no trained
        weights measured better. Not set by ``partial_fit``.

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
    Autoencoder : The same networks with a deterministic code.
    GradientFlowEncoder : The same decoder, with codes found by a gradient flow.

    Notes
    -----
    A fitted model keeps the ``n_components``, ``hidden_layer_sizes``,
    ``activation``, ``architecture`` and ``loss`` it was fitted with: changed
    with ``set_params``, they take effect at the next ``fit`` (see
    ``warm_start``).

    References
    ----------
    D. P. Kingma, M. Welling. "Auto-encoding variational Bayes", ICLR 2014.

    I. Higgins et al. "beta-VAE: Learning basic visual concepts with a
    constrained variational framework", ICLR 2017.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from skgfe import VariationalAutoencoder
    >>> X = load_digits().data[:200]
    >>> vae = VariationalAutoencoder(n_components=4, max_iter=5, random_state=0)
    >>> Z = vae.fit_transform(X)
    >>> Z.shape
    (200, 4)
    >>> vae.inverse_transform(Z).shape
    (200, 64)
    >>> vae.elbo(X[:3]).shape
    (3,)
    """

    _parameter_constraints: dict = {
        **BaseDecoderTransformer._parameter_constraints,
        "beta": [Interval(Real, 0, None, closed="left")],
    }

    def __init__(
        self,
        n_components=2,
        *,
        hidden_layer_sizes=(128,),
        activation="elu",
        architecture="mlp",
        loss="mse",
        beta=1.0,
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
        self.beta = beta
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

    def _n_encoder_outputs(self):
        return 2 * self.n_components

    def _posterior(self, X):
        """Mean and log-variance of ``q(z | x)`` for scaled samples ``X``."""
        output = self.encoder_(X)
        return output[:, : self.n_components_], output[:, self.n_components_ :]

    def _encode(self, X):
        return self._posterior(X)[0]

    def _sample_codes(self, mean, log_var, generator):
        eps = _standard_normal(mean.shape, generator, mean)
        return mean + torch.exp(0.5 * log_var) * eps

    def _batch_loss(self, X_batch, generator, rows=None):
        mean, log_var = self._posterior(X_batch)
        Z = self._sample_codes(mean, log_var, generator)
        reconstruction = self._loss_function(self.decoder_(Z), X_batch)
        kl = gaussian_kl(mean, log_var)
        loss = (reconstruction + self.beta * kl / X_batch.shape[1]).mean()
        return loss, {"kl": kl.mean().item()}

    def _log_likelihood(self, X, Z):
        """``log p(x | z)`` of scaled samples, in nats, for densities in units of X."""
        n_features = X.shape[1]
        log_p = -n_features * self._loss_function(self.decoder_(Z), X)
        if self._fitted_loss == "mse":
            # Gaussian of variance 1/2 in scaled units (scale_**2 / 2 in units of
            # X), the likelihood whose negative log is n_features * mse + const.
            log_p = log_p - n_features * (
                0.5 * math.log(math.pi) + math.log(self.scale_)
            )
        return log_p

    def elbo(self, X, *, n_draws=1, return_terms=False):
        """Evidence lower bound of each sample (with ``beta=1``).

        ``E_q[log p(x | z)] - KL(q(z | x) || N(0, I))``, a lower bound on the
        log-likelihood ``log p(x)`` in nats, for densities in the units of ``X``.
        The likelihood is Bernoulli for ``loss='bce'`` and, for ``loss='mse'``,
        Gaussian with variance ``scale_**2 / 2`` per feature (the one the
        training loss corresponds to). The KL term is exact; the expectation is
        a Monte Carlo average over ``n_draws`` reparameterised samples drawn from
        ``random_state``, so an int ``random_state`` gives the same values on
        every call.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples.
        n_draws : int, default=1
            Codes drawn from ``q(z | x)`` per sample to estimate the expectation.
        return_terms : bool, default=False
            Also return the two terms.

        Returns
        -------
        elbo : ndarray of shape (n_samples,)
            The ELBO of each sample; higher is better.
        terms : dict of ndarray
            Only when ``return_terms`` is True: ``log_likelihood`` (the estimate
            of ``E_q[log p(x | z)]``) and ``kl`` (``KL(q(z | x) || N(0, I))``,
            non-negative), each of shape (n_samples,).
        """
        if (
            not isinstance(n_draws, Integral)
            or isinstance(n_draws, bool)
            or n_draws < 1
        ):
            raise ValueError(f"n_draws must be a positive integer, got {n_draws!r}.")
        X = self._check_ready(X)
        X_t = self._scale(self._to_tensor(X))
        generator = self._torch_generator()
        log_likelihood, kl = [], []
        with torch.no_grad():
            for i in range(0, len(X_t), CHUNK_ROWS):
                chunk = X_t[i : i + CHUNK_ROWS]
                mean, log_var = self._posterior(chunk)
                draws = [
                    self._log_likelihood(
                        chunk, self._sample_codes(mean, log_var, generator)
                    )
                    for _ in range(n_draws)
                ]
                log_likelihood.append(torch.stack(draws).mean(dim=0))
                kl.append(gaussian_kl(mean, log_var))
        log_likelihood = torch.cat(log_likelihood).cpu().numpy()
        kl = torch.cat(kl).cpu().numpy()
        elbo = log_likelihood - kl
        self._require_finite(elbo, "The ELBO")
        if return_terms:
            return elbo, {"log_likelihood": log_likelihood, "kl": kl}
        return elbo
