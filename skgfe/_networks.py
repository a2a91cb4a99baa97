"""Multilayer perceptrons whose rows are computed independently of each other.

A gradient flow encodes every sample separately, so the code of a sample must not
depend on which other samples share its batch. A plain ``torch.nn.Linear`` does not
guarantee that: BLAS picks a different kernel (and a different summation order) for
different numbers of rows, which changes results in the last bits, and a flow with
discrete accept/reject decisions can amplify that. :class:`MLP` therefore evaluates
its layers as a batched matrix product over fixed-size blocks of rows: every row then
goes through the very same kernel whatever the batch size, its position in the batch or
its batch mates are.
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

# Rows are evaluated in blocks of this many; any fixed number gives batch
# invariance, 32 keeps the padding overhead small for small batches.
ROW_BLOCK = 32


def _pad_to_blocks(x):
    """Reshape ``(n, d)`` into ``(n_blocks, ROW_BLOCK, d)``, padding with zeros."""
    n_rows = x.shape[0]
    n_pad = (-n_rows) % ROW_BLOCK
    if n_pad:
        x = torch.cat([x, x.new_zeros((n_pad, x.shape[1]))])
    return x.view(-1, ROW_BLOCK, x.shape[1])


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

    Notes
    -----
    The layers are ordinary :class:`torch.nn.Linear` modules (``self.layers``), so the
    network can be inspected, saved and reused like any torch module. Only the forward
    pass differs: it evaluates blocks of :data:`ROW_BLOCK` rows with one batched
    matrix product, so each row is computed bit-for-bit the same whatever batch it is
    in.
    """

    def __init__(
        self, layer_sizes, activation="elu", *, generator=None, dtype=None, device=None
    ):
        super().__init__()
        layer_sizes = [int(s) for s in layer_sizes]
        self.layer_sizes = tuple(layer_sizes)
        self.activation = activation
        self.layers = nn.ModuleList(
            # skip_init: the weights are drawn below from `generator`, never from
            # torch's global random state.
            torch.nn.utils.skip_init(nn.Linear, n_in, n_out, dtype=dtype, device=device)
            for n_in, n_out in zip(layer_sizes[:-1], layer_sizes[1:])
        )
        self.act = ACTIVATIONS[activation]()
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator=None):
        """Draw fresh weights: torch's default (Kaiming-uniform) scheme, seeded."""
        for layer in self.layers:
            bound = 1.0 / math.sqrt(layer.in_features)
            layer.weight.uniform_(-bound, bound, generator=generator)
            layer.bias.uniform_(-bound, bound, generator=generator)

    def forward(self, x):
        n_rows = x.shape[0]
        h = _pad_to_blocks(x)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            h = torch.matmul(h, layer.weight.T) + layer.bias
            if i < last:
                h = self.act(h)
        return h.reshape(-1, h.shape[-1])[:n_rows]


def make_mlp(n_inputs, hidden_layer_sizes, n_outputs, activation, **kwargs):
    """Build an :class:`MLP` from the scikit-learn style ``hidden_layer_sizes``."""
    sizes = [n_inputs, *hidden_layer_sizes, n_outputs]
    return MLP(sizes, activation, **kwargs)
