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
    """

    def __init__(self, decoder, loss, X):
        self.decoder = decoder
        self.loss = loss
        self.X = X

    def __call__(self, z, rows=None):
        x = self.X if rows is None else self.X[rows]
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            values = self.loss(self.decoder(z), x)
            (grad,) = torch.autograd.grad(values.sum(), z)
        return values.detach(), grad
