"""The amortized start of a GradientFlowEncoder's flows.

``transform`` finds each sample's code by a solve in latent space; the closer
its start, the fewer decoder evaluations it takes. After ``fit`` trains the
decoder, :func:`fit_start_encoder` fits a small network from the training
samples to their codes, and :func:`amortized_start_codes` starts each sample at
the better (by its reconstruction loss) of that network's guess and the linear
start. The code the flow returns is still a stationary point of the decoder's
loss: the network only moves where the solve starts.

The network is an :class:`~skgfe._networks.MLP`, whose rows are computed
independently of their batch mates, so the start of a sample, like its code,
does not depend on its batch.
"""

import torch

from ._networks import make_mlp
from ._training import make_optimizer

# One hidden layer of this width, as the prototype's MLPRegressor (issue 23).
HIDDEN_LAYER_SIZES = (128,)
# Adam on minibatches for a fixed budget. Measured on digits, spectra and
# reaction-diffusion snapshots (1000 training samples, 8 components): 25 epochs
# cost about 2% of a default fit; 50 to 200 epochs cost 4-18% and lowered
# transform's mean evaluations no further (digits 6.0 -> 5.7 at most, spectra
# and reaction-diffusion not at all).
EPOCHS = 25
BATCH_SIZE = 100
LEARNING_RATE = 3e-3
# Fewer complete training samples than this many per component: no network
# (too few to generalise from; the linear start remains).
MIN_SAMPLES_PER_COMPONENT = 2


def build_start_encoder(n_features, n_components, activation, dtype, device):
    """An untrained start encoder ``n_features -> 128 -> n_components``.

    Its weights are drawn from a fixed seed; :func:`fit_start_encoder` and
    loading a saved model overwrite them.
    """
    network = make_mlp(
        n_features,
        HIDDEN_LAYER_SIZES,
        n_components,
        activation,
        generator=torch.Generator().manual_seed(0),
        dtype=dtype,
        device=device,
    )
    return network.requires_grad_(False)


def fit_start_encoder(X, Z, activation, generator):
    """Fit a network from the scaled samples ``X`` to their codes ``Z``.

    Parameters
    ----------
    X : torch.Tensor of shape (n_samples, n_features)
        Scaled training samples; rows with missing entries (NaN) are left out,
        since the network needs complete inputs.
    Z : torch.Tensor of shape (n_samples, n_components)
        Their codes under the fitted decoder; rows that are not finite are
        left out.
    activation : str
        The hidden layer's activation (the decoder's).
    generator : torch.Generator
        Draws the initial weights and the minibatches (never torch's global
        random state).

    Returns
    -------
    network : MLP or None
        The fitted network, in ``X``'s dtype and on its device, with gradients
        switched off; None when fewer than ``MIN_SAMPLES_PER_COMPONENT *
        n_components`` complete samples remain.
    """
    keep = ~torch.isnan(X).any(dim=1) & torch.isfinite(Z).all(dim=1)
    X, Z = X[keep], Z[keep].to(X.dtype)
    n_samples, n_components = Z.shape
    if n_samples < max(2, MIN_SAMPLES_PER_COMPONENT * n_components):
        return None
    # Standardised targets, so that every component weighs alike in the fit
    # whatever the spread of the codes; folded into the output layer afterwards.
    mean = Z.mean(dim=0)
    scale = Z.std(dim=0)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    target = (Z - mean) / scale
    network = make_mlp(
        X.shape[1],
        HIDDEN_LAYER_SIZES,
        n_components,
        activation,
        generator=generator,
        dtype=X.dtype,
        device=X.device,
    )
    optimizer = make_optimizer("adam", network.parameters(), LEARNING_RATE)
    n_batches = max(1, round(n_samples / BATCH_SIZE))
    with torch.enable_grad():
        for _ in range(EPOCHS):
            order = torch.randperm(n_samples, generator=generator).to(X.device)
            for rows in order.tensor_split(n_batches):
                optimizer.zero_grad(set_to_none=True)
                loss = (network(X[rows]) - target[rows]).pow(2).mean()
                loss.backward()
                optimizer.step()
    output = network.layers[-1]
    with torch.no_grad():
        output.weight.mul_(scale[:, None])
        output.bias.mul_(scale).add_(mean)
    return network.requires_grad_(False)


def amortized_start_codes(encoder, decoder, loss_function, X, linear_codes):
    """Per row of ``X``, the better start of the encoder's and the linear one.

    Parameters
    ----------
    encoder : MLP
        The start encoder of :func:`fit_start_encoder`.
    decoder : torch.nn.Module
        The fitted decoder.
    loss_function : callable
        The per-row reconstruction loss ``loss_function(output, X)``.
    X : torch.Tensor of shape (n_samples, n_features)
        Scaled samples, NaN for a missing entry.
    linear_codes : torch.Tensor of shape (n_samples, n_components)
        Their linear starts.

    Returns
    -------
    codes : torch.Tensor of shape (n_samples, n_components)
        The encoder's code where its reconstruction loss is lower than the
        linear code's, else the linear code (always for rows with missing
        entries, which the encoder cannot take, and where the encoder's loss is
        not finite).
    """
    complete = ~torch.isnan(X).any(dim=1)
    if not complete.any():
        return linear_codes
    with torch.no_grad():
        # Every row through the encoder (missing entries as zeros, their
        # guesses discarded), so that each keeps its place in the row blocks.
        guesses = encoder(X.nan_to_num(0.0))
        rows = complete.nonzero().squeeze(1)
        x = X[rows]
        start = linear_codes[rows]
        better = loss_function(decoder(guesses[rows]), x) < loss_function(
            decoder(start), x
        )
        codes = linear_codes.clone()
        codes[rows] = torch.where(better[:, None], guesses[rows], start)
        return codes
