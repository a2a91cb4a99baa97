"""The per-sample objective that a gradient flow descends."""

import torch


class ReconstructionObjective:
    """Per-sample reconstruction loss of a batch and its gradient in latent space.

    ``objective(z, rows)`` returns ``l_i(z_i) = loss(decoder(z_i), x_i)`` for the
    samples ``rows`` of ``X`` and ``grad_z l_i(z_i)``, one row per sample. Because the
    decoder evaluates rows independently (see :class:`skgfe._networks.MLP`) and the
    loss is a per-row mean, row ``i`` of both results depends on ``z_i`` and ``x_i``
    alone.

    Parameters
    ----------
    decoder : torch.nn.Module
        Maps codes ``(n, n_components)`` to outputs ``(n, n_features)``.
    loss : callable
        ``loss(output, target)`` returning one value per row.
    X : torch.Tensor of shape (n_samples, n_features)
        The (already scaled) samples to encode.
    create_graph : bool, default=False
        Return values and gradients that stay differentiable with respect to
        ``z`` (when ``z`` carries a graph) and to the decoder's parameters, for
        backpropagation through the unrolled flow. Otherwise both are detached.
    """

    def __init__(self, decoder, loss, X, create_graph=False):
        self.decoder = decoder
        self.loss = loss
        self.X = X
        self.create_graph = create_graph

    def __call__(self, z, rows=None):
        x = self.X if rows is None else self.X[rows]
        with torch.enable_grad():
            if self.create_graph and z.requires_grad:
                z_in = z
            else:
                z_in = z.detach().requires_grad_(True)
            values = self.loss(self.decoder(z_in), x)
            (grad,) = torch.autograd.grad(
                values.sum(), z_in, create_graph=self.create_graph
            )
        if self.create_graph:
            return values, grad
        return values.detach(), grad
