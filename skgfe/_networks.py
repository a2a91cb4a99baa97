"""Multilayer perceptrons whose rows are computed independently of each other.

A gradient flow encodes every sample separately, so the code of a sample must not
depend on which other samples share its batch. A plain ``torch.nn.Linear`` does not
guarantee that: BLAS picks a different kernel (and a different summation order) for
different numbers of rows, which changes results in the last bits, and a flow with
discrete accept/reject decisions can amplify that. :class:`MLP` therefore evaluates
its layers over fixed-size blocks of rows (padded with zeros), so the kernel is the
same whatever the batch size. Measured on CPU: a row's result is bit-identical across
batch sizes; when a row moves to another position inside its block it can differ in
the last bit (about 1e-16 relative in float64), far below the flow's tolerance, so
codes agree to 1e-7 or better whatever the batch (the tests check that).

The flows' solvers do not differentiate these networks with autograd:
:mod:`skgfe._flow.derivatives` writes their forward pass and its latent
derivatives out by hand (the blocks of rows, :class:`MLP`'s layers and skip
path, :class:`ModifiedMLP`'s gates, and each activation's derivative). A change
to a network here must be mirrored there; ``tests/test_derivatives.py`` compares
both with autograd.
"""

import math

import torch
from torch import nn

ACTIVATIONS = {
    "identity": nn.Identity,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
}

# Rows are evaluated in blocks of this many; any fixed number gives the same kernel
# for every batch size, 32 keeps the padding overhead small for small batches.
ROW_BLOCK = 32


@torch.no_grad()
def reset_linear(layer, generator=None):
    """Draw ``layer``'s weight and bias from torch's default uniform scheme.

    The values are drawn on the generator's device (a CPU generator for a model on
    a GPU: torch refuses to fill a CUDA tensor from one) and then copied, so a
    seed gives the same weights on every device.
    """
    bound = 1.0 / math.sqrt(layer.in_features)
    device = generator.device if generator is not None else layer.weight.device
    for parameter in (layer.weight, layer.bias):
        values = torch.empty(parameter.shape, dtype=parameter.dtype, device=device)
        parameter.copy_(values.uniform_(-bound, bound, generator=generator))


def _pad_to_blocks(x):
    """Reshape ``(n, d)`` into ``(n_blocks, ROW_BLOCK, d)``, padding with zeros."""
    n_pad = (-x.shape[0]) % ROW_BLOCK
    if n_pad:
        x = nn.functional.pad(x, (0, 0, 0, n_pad))
    return x.view(-1, ROW_BLOCK, x.shape[1])


def _unpad(h, n_rows):
    """Inverse of :func:`_pad_to_blocks`: the first ``n_rows`` rows, as a matrix."""
    return h.reshape(-1, h.shape[-1])[:n_rows]


def _linear(n_in, n_out, dtype, device):
    # skip_init: the weights are drawn by reset_parameters from a generator, never
    # from torch's global random state. It builds on the meta device and moves to
    # `device`, so None must become the default device explicitly.
    if device is None:
        # torch.get_default_device is torch >= 2.3; an empty tensor says the same.
        device = torch.empty(0).device
    return torch.nn.utils.skip_init(nn.Linear, n_in, n_out, dtype=dtype, device=device)


def _affine(h, layer):
    """Apply the ``nn.Linear`` ``layer`` to row blocks ``h`` of shape (b, R, d)."""
    return torch.matmul(h, layer.weight.T) + layer.bias


class MLP(nn.Module):
    """Fully connected network ``in -> hidden... -> out`` with batch-invariant rows.

    Parameters
    ----------
    layer_sizes : sequence of int
        Sizes of all layers, input and output included, e.g. ``(8, 128, 64)``.
        Two entries give a single affine map (a linear decoder).
    activation : str
        Name of the hidden-layer non-linearity, one of :data:`ACTIVATIONS`.
        The output layer is affine.
    generator : torch.Generator, optional
        Source of randomness for the initial weights, so that initialisation
        never touches torch's global random state.
    dtype, device : torch dtype and device of the parameters.
    skip : bool, default=False
        Add an affine map from the input straight to the output
        (``self.skip``), so that the network is a linear map plus a non-linear
        residual. Used by decoders initialised from PCA. Ignored (no skip) for a
        network without hidden layers, which is affine already.

    Notes
    -----
    The layers are ordinary :class:`torch.nn.Linear` modules (``self.layers``), so the
    network can be inspected, saved and reused like any torch module. Only the forward
    pass differs: it evaluates blocks of :data:`ROW_BLOCK` rows with one batched
    matrix product, so each row goes through the same kernel whatever batch it is
    in.
    """

    def __init__(
        self,
        layer_sizes,
        activation="elu",
        *,
        generator=None,
        dtype=None,
        device=None,
        skip=False,
    ):
        super().__init__()
        layer_sizes = [int(s) for s in layer_sizes]
        self.layer_sizes = tuple(layer_sizes)
        self.activation = activation
        self.layers = nn.ModuleList(
            _linear(n_in, n_out, dtype, device)
            for n_in, n_out in zip(layer_sizes[:-1], layer_sizes[1:])
        )
        self._add_modules(dtype, device)
        # Registered last, so that the other layers draw the same initial weights
        # from a given generator with or without it.
        self.skip = (
            _linear(layer_sizes[0], layer_sizes[-1], dtype, device)
            if skip and len(layer_sizes) > 2
            else None
        )
        self.act = ACTIVATIONS[activation]()
        self.reset_parameters(generator)

    def _add_modules(self, dtype, device):
        """Hook for subclasses: register further layers before initialisation."""

    @torch.no_grad()
    def reset_parameters(self, generator=None):
        """Draw fresh weights: torch's default (Kaiming-uniform) scheme, seeded.

        Every ``nn.Linear`` is drawn in registration order, so a given generator
        state always gives the same network.
        """
        for layer in self.modules():
            if isinstance(layer, nn.Linear):
                reset_linear(layer, generator)

    def forward(self, x):
        n_rows = x.shape[0]
        h = _pad_to_blocks(x)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            h = _affine(h, layer)
            if i < last:
                h = self.act(h)
        return self._add_skip(_unpad(h, n_rows), x)

    def _add_skip(self, output, x):
        if self.skip is None:
            return output
        return output + _unpad(_affine(_pad_to_blocks(x), self.skip), x.shape[0])


class ModifiedMLP(MLP):
    """Gated "modified MLP" of physics-informed networks, with batch-invariant rows.

    Two gates are computed from the input, ``U = act(x W_u + b_u)`` and
    ``V = act(x W_v + b_v)``, and every hidden layer mixes them,
    ``H_k = (1 - Z_k) * U + Z_k * V`` with ``Z_k = act(H_{k-1} W_k + b_k)`` and
    ``H_0 = x``; the output layer is affine. The gates carry the input to every
    layer, which helps smooth targets such as PDE solutions.

    Parameters
    ----------
    layer_sizes : sequence of int
        Sizes of all layers, input and output included, e.g. ``(8, 64, 64, 3)``.
        The hidden layers must all have the same width (that of the gates).
        Two entries give a single affine map, without gates.
    activation : str
        Name of the non-linearity of the gates and hidden layers, one of
        :data:`ACTIVATIONS`; the reference uses 'tanh'.
    generator : torch.Generator, optional
        Source of randomness for the initial weights.
    dtype, device : torch dtype and device of the parameters.
    skip : bool, default=False
        Add an affine map from the input straight to the output, as in
        :class:`MLP`.
    gate_first_layer : bool, default=True
        Gate the first hidden layer too (``H_1 = (1 - Z_1) * U + Z_1 * V``), as
        the reference implementation does. With False the first hidden layer is
        plain, ``H_1 = act(x W_1 + b_1)``, and the gates enter from the second
        hidden layer on (the variant of the VAE-DLM author's code).

    Notes
    -----
    Rows are evaluated in blocks of :data:`ROW_BLOCK` rows, exactly as in
    :class:`MLP`, so each row goes through the same kernel whatever batch it
    is in.

    References
    ----------
    S. Wang, Y. Teng, P. Perdikaris. "Understanding and mitigating gradient flow
    pathologies in physics-informed neural networks", SIAM Journal on Scientific
    Computing 43(5), 2021.
    """

    # Class default, so that a network pickled before the flag existed still loads.
    gate_first_layer = True

    def __init__(
        self,
        layer_sizes,
        activation="tanh",
        *,
        generator=None,
        dtype=None,
        device=None,
        skip=False,
        gate_first_layer=True,
    ):
        self.gate_first_layer = bool(gate_first_layer)
        hidden = tuple(int(s) for s in layer_sizes[1:-1])
        if hidden and len(hidden) < 2 and not self.gate_first_layer:
            raise ValueError(
                "ModifiedMLP(gate_first_layer=False) needs at least two hidden "
                "layers: with one, the gates would feed no layer."
            )
        if len(set(hidden)) > 1:
            raise ValueError(
                "ModifiedMLP needs hidden layers of equal width (the width of its "
                f"gates), got {hidden}."
            )
        super().__init__(
            layer_sizes,
            activation,
            generator=generator,
            dtype=dtype,
            device=device,
            skip=skip,
        )

    def _add_modules(self, dtype, device):
        n_inputs, *hidden, _ = self.layer_sizes
        # U and V; none for a network without hidden layers (a single affine map).
        self.gates = nn.ModuleList(
            _linear(n_inputs, hidden[0], dtype, device)
            for _ in range(2 if hidden else 0)
        )

    def forward(self, x):
        n_rows = x.shape[0]
        h = _pad_to_blocks(x)
        if len(self.gates):
            u = self.act(_affine(h, self.gates[0]))
            v = self.act(_affine(h, self.gates[1]))
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            h = _affine(h, layer)
            if i < last:
                z = self.act(h)
                h = (1 - z) * u + z * v if i or self.gate_first_layer else z
        return self._add_skip(_unpad(h, n_rows), x)


ARCHITECTURES = {"mlp": MLP, "modified_mlp": ModifiedMLP}


def make_mlp(
    n_inputs, hidden_layer_sizes, n_outputs, activation, architecture="mlp", **kwargs
):
    """Build a network from the scikit-learn style ``hidden_layer_sizes``.

    The one factory of every encoder and decoder of skgfe: ``architecture`` picks
    :class:`MLP` ('mlp') or the gated :class:`ModifiedMLP` ('modified_mlp');
    ``kwargs`` (``generator``, ``dtype``, ``device``, ``skip``) go to its
    constructor.
    """
    sizes = [n_inputs, *hidden_layer_sizes, n_outputs]
    return ARCHITECTURES[architecture](sizes, activation, **kwargs)


@torch.no_grad()
def set_linear_path(network, weight):
    """Make ``network`` the affine map ``x -> x @ weight.T`` plus a zero residual.

    The linear path is the skip connection (or, for a network without hidden
    layers, its only layer); the output layer of the non-linear residual is zeroed,
    so the network computes exactly the linear map until training moves it.
    ``weight`` has shape ``(n_outputs, n_inputs)``; the biases become zero.
    """
    linear = network.skip if network.skip is not None else network.layers[-1]
    linear.weight.copy_(weight)
    linear.bias.zero_()
    if network.skip is not None:
        network.layers[-1].weight.zero_()
        network.layers[-1].bias.zero_()
