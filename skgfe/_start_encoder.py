"""The amortized start of a GradientFlowEncoder's flows.

``transform`` finds each sample's code by a solve in latent space; the closer
its start, the fewer decoder evaluations it takes, and on a curved manifold the
start also decides which fold the solve ends on. After ``fit`` trains the
decoder, :func:`fit_start_encoder` fits a small network from the training
samples to their codes, :func:`fit_neighbour_codes` keeps (a subset of) the
training samples with their codes, and :func:`amortized_start_codes` starts
each sample at the best (by its reconstruction loss) of the linear start, the
network's guess and the code of its nearest training sample. The code the flow
returns is still a stationary point of the decoder's loss: these only move
where the solve starts.

The network is an :class:`~skgfe._networks.MLP`, and the nearest training
sample is found over the same fixed-size blocks of rows, so the start of a
sample, like its code, does not depend on its batch.
"""

import torch
from torch import nn

from ._networks import ROW_BLOCK, _pad_to_blocks, _unpad, make_mlp
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


# The most training samples kept for the nearest-sample start (and searched
# by the validation loss during training): the search costs n_features
# multiply-adds per kept sample and encoded sample, and its distances take
# NEIGHBOUR_POOL_SIZE numbers per row of a block of NEIGHBOUR_BLOCK_ROWS.
NEIGHBOUR_POOL_SIZE = 1000
NEIGHBOUR_BLOCK_ROWS = 4096


def pool_rows(X):
    """Indices of at most ``NEIGHBOUR_POOL_SIZE`` complete rows of ``X``,
    evenly spaced over them (deterministic: no random draw).

    Rows with missing entries are not kept: compared over the entries both
    they and a new sample observe, they made no better starts (digits trained
    and imputed with 30% of the entries missing, 3 seeds: 0.509 of the mean
    imputer's error against 0.516 without kept rows; with 50% missing 0.760
    against 0.733).
    """
    complete = (~torch.isnan(X).any(dim=1)).nonzero().squeeze(1)
    if len(complete) > NEIGHBOUR_POOL_SIZE:
        spaced = torch.linspace(0, len(complete) - 1, NEIGHBOUR_POOL_SIZE)
        complete = complete[spaced.round().long().to(complete.device)]
    return complete


def nearest_codes(X, samples, codes):
    """The code of each row's nearest sample in ``samples``.

    Parameters
    ----------
    X : torch.Tensor of shape (n_samples, n_features)
        Scaled samples. A row with missing entries (NaN) is compared on its
        observed entries only (the Euclidean distance of the entries it has);
        a row with no observed entry gets NaN codes.
    samples : torch.Tensor of shape (n_pool, n_features)
        Scaled samples; those with a missing entry are never chosen.
    codes : torch.Tensor of shape (n_pool, n_components)
        Their codes.

    Returns
    -------
    codes : torch.Tensor of shape (n_samples, n_components)
    """
    return codes_of_samples(nearest_samples(X, samples), codes.to(X.dtype))


def codes_of_samples(index, codes):
    """``codes`` at the sample indices ``index`` of :func:`nearest_samples`,
    NaN where it is -1."""
    if not len(codes):
        return codes.new_full((len(index), codes.shape[1]), torch.nan)
    found = codes.index_select(0, index.clamp(min=0))
    return torch.where((index < 0)[:, None], torch.nan, found)


def nearest_samples(X, samples):
    """The index of each row's nearest sample in ``samples`` (see
    :func:`nearest_codes`), -1 for a row with no observed entry or where no
    sample is complete."""
    index = torch.full((len(X),), -1, dtype=torch.long, device=X.device)
    usable = (~torch.isnan(samples).any(dim=1)).nonzero().squeeze(1)
    if not len(usable):
        return index
    search = _NearestSearch(samples[usable].to(X.dtype))
    missing = torch.isnan(X)
    incomplete = missing.any(dim=1)
    # Chunks of rows bound the memory of the distances.
    for start in range(0, len(X), NEIGHBOUR_BLOCK_ROWS):
        stop = start + NEIGHBOUR_BLOCK_ROWS
        found = search.screened(X[start:stop], incomplete[start:stop])
        index[start:stop] = usable[found]
    return index.masked_fill(missing.all(dim=1), -1)


class _NearestSearch:
    """The nearest of ``samples`` (complete) to rows of scaled samples.

    :meth:`exact` compares ``|s|^2 - 2 x.s`` (``|x - s|^2`` less ``|x|^2``,
    the same for every ``s``; over a row's observed entries, ``|s|^2`` sums
    ``s_j^2`` over them). Its products run over fixed blocks of rows (as
    MLP's layers), so that a row's nearest sample does not depend on its
    batch mates. :meth:`screened` gives the same indices in less time for
    float64 data: it compares in float32 first (about half the time, the
    search costing ``n_features`` multiply-adds per sample and row), and
    compares exactly only the rows whose two best samples lie closer than
    the float32 rounding can tell apart.
    """

    def __init__(self, samples):
        self.samples = samples
        self.squares = samples.pow(2)
        self.squared_norms = self.squares.sum(dim=1)
        self.coarse = None
        if samples.dtype == torch.float64 and len(samples) > 1:
            self.coarse = samples.to(torch.float32)
            self.coarse_norms = self.squared_norms.to(torch.float32)
            # Largest |s| and |s|^2, for the bound on the rounding.
            self.largest_norm = self.squared_norms.max().sqrt().item()
            self.largest_squared_norm = self.squared_norms.max().item()

    def exact(self, X, incomplete, rows=None):
        """Positions in ``samples`` of the nearest sample of each row of ``X``
        (of the rows ``rows`` only, when given: the row blocks that hold them
        are compared whole, so each row keeps its place in its block)."""
        blocks = _pad_to_blocks(X.nan_to_num(0.0))
        blocks_incomplete = _pad_to_blocks(incomplete[:, None])
        if rows is not None:
            chosen, inverse = torch.unique(rows // ROW_BLOCK, return_inverse=True)
            blocks = blocks.index_select(0, chosen)
            blocks_incomplete = blocks_incomplete.index_select(0, chosen)
        distances = torch.matmul(blocks, self.samples.T)
        norms = self.squared_norms.expand_as(distances)
        if blocks_incomplete.any():
            observed = _pad_to_blocks((~torch.isnan(X)).to(X.dtype))
            if rows is not None:
                observed = observed.index_select(0, chosen)
            observed_norms = torch.matmul(observed, self.squares.T)
            norms = torch.where(blocks_incomplete, observed_norms, norms)
        found = (norms - 2 * distances).argmin(dim=-1)
        if rows is None:
            return _unpad(found[..., None], len(X)).squeeze(1)
        return found[inverse, rows % ROW_BLOCK]

    def screened(self, X, incomplete):
        """:meth:`exact`'s positions, screened in float32 where that decides."""
        if self.coarse is None or incomplete.all():
            return self.exact(X, incomplete)
        found = torch.empty(len(X), dtype=torch.long, device=X.device)
        rows = (~incomplete).nonzero().squeeze(1)
        complete = X[rows]
        blocks = _pad_to_blocks(complete.to(torch.float32))
        products = _unpad(torch.matmul(blocks, self.coarse.T), len(complete))
        scores = self.coarse_norms - 2 * products
        best, position = scores.topk(2, dim=1, largest=False)
        # A bound on |float32 score - float64 score| of every sample: the
        # products' rounding in any order of summation, (p + 3) u |x| |s|
        # (casts included), twice, plus that of |s|^2 and of the difference;
        # doubled for safety, in float32's and float64's unit roundoff.
        unit = torch.finfo(torch.float32).eps / 2 + torch.finfo(torch.float64).eps / 2
        x_norms = complete.pow(2).sum(dim=1).sqrt()
        n_features = X.shape[1]
        bound = (2 * unit) * (
            2 * self.largest_squared_norm
            + 2 * (n_features + 4) * x_norms * self.largest_norm
        )
        gap = best[:, 1] - best[:, 0]
        decided = torch.isfinite(gap) & (gap > 2 * bound)
        found[rows] = position[:, 0]
        undecided = torch.cat([rows[~decided], incomplete.nonzero().squeeze(1)])
        if len(undecided):
            found[undecided] = self.exact(X, incomplete, undecided)
        return found


class NeighbourCodes(nn.Module):
    """Training samples and their codes, for the nearest-sample start.

    Buffers, not parameters: saved with the model's weights and moved with it
    between devices.
    """

    def __init__(self, samples, codes):
        super().__init__()
        self.register_buffer("samples", samples)
        self.register_buffer("codes", codes)

    def forward(self, X):
        return nearest_codes(X, self.samples, self.codes)


def fit_neighbour_codes(X, Z):
    """Keep up to ``NEIGHBOUR_POOL_SIZE`` complete training samples and codes.

    Parameters
    ----------
    X : torch.Tensor of shape (n_samples, n_features)
        Scaled training samples (rows with a missing entry are left out).
    Z : torch.Tensor of shape (n_samples, n_components)
        Their codes (rows that are not finite are left out).

    Returns
    -------
    neighbours : NeighbourCodes or None
        The rows of :func:`pool_rows` among the usable ones; None when no row
        remains.
    """
    usable = torch.isfinite(Z).all(dim=1)
    keep = pool_rows(X.masked_fill(~usable[:, None], torch.nan))
    if len(keep) == 0:
        return None
    return NeighbourCodes(X[keep].clone(), Z[keep].to(X.dtype).clone())


def build_neighbour_codes(n_samples, n_features, n_components, dtype, device):
    """Empty :class:`NeighbourCodes` of the given size (loading a saved model)."""
    return NeighbourCodes(
        torch.zeros((n_samples, n_features), dtype=dtype, device=device),
        torch.zeros((n_samples, n_components), dtype=dtype, device=device),
    )


def best_start_codes(decoder, loss_function, X, candidates):
    """Per row of ``X``, the candidate code of lowest reconstruction loss.

    ``candidates[0]`` must be finite (the linear start); a later candidate's
    row that is not finite (NaN for a sample it cannot take) is never chosen.
    """
    best = candidates[0]
    with torch.no_grad():
        best_loss = loss_function(decoder(best), X)
        for candidate in candidates[1:]:
            usable = torch.isfinite(candidate).all(dim=1)
            loss = loss_function(decoder(candidate.nan_to_num(0.0)), X)
            better = usable & (loss < best_loss)
            best = torch.where(better[:, None], candidate, best)
            best_loss = torch.where(better, loss, best_loss)
    return best


def amortized_start_codes(
    encoder, decoder, loss_function, X, linear_codes, neighbours=None
):
    """Per row of ``X``, the best start of the encoder's, the nearest training
    sample's code and the linear one.

    Parameters
    ----------
    encoder : MLP or None
        The start encoder of :func:`fit_start_encoder`.
    decoder : torch.nn.Module
        The fitted decoder.
    loss_function : callable
        The per-row reconstruction loss ``loss_function(output, X)``.
    X : torch.Tensor of shape (n_samples, n_features)
        Scaled samples, NaN for a missing entry.
    linear_codes : torch.Tensor of shape (n_samples, n_components)
        Their linear starts.
    neighbours : callable or None
        Maps ``X`` to the code of each row's nearest training sample (NaN
        where it has none): the :class:`NeighbourCodes` of
        :func:`fit_neighbour_codes`, or codes searched before.

    Returns
    -------
    codes : torch.Tensor of shape (n_samples, n_components)
        The candidate of lowest reconstruction loss (over a row's observed
        entries). A row with missing entries has no encoder guess (the network
        needs complete inputs); its nearest training sample is the nearest on
        its observed entries. The linear code stands wherever another
        candidate's loss is not finite.
    """
    if encoder is None and neighbours is None:
        return linear_codes
    with torch.no_grad():
        candidates = [linear_codes]
        if encoder is not None:
            # Every row through the encoder (missing entries as zeros), so that
            # each keeps its place in the row blocks; the guesses for rows with
            # missing entries are discarded.
            complete = ~torch.isnan(X).any(dim=1)
            guesses = encoder(X.nan_to_num(0.0))
            candidates.append(torch.where(complete[:, None], guesses, torch.nan))
        if neighbours is not None:
            candidates.append(neighbours(X))
        return best_start_codes(decoder, loss_function, X, candidates)
