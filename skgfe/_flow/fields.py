"""Vector fields of the latent flows, as ``torch.nn.Module`` for torchdiffeq.

A field holds the decoder (a submodule, so its parameters are the field's
parameters), the per-sample loss and the samples it encodes. Called by a
torchdiffeq solver as ``field(t, state)`` it returns ``d state / dt``. The gradient
in latent space is taken with ``create_graph=True`` whenever autograd is
recording, so that ``torchdiffeq.odeint_adjoint`` can differentiate the field
with respect to the state and to the decoder's parameters; in inference (under
``torch.no_grad``) no graph is kept.

Every row of the state is a sample and depends on its own row of ``X`` only (the
decoder computes rows independently and the loss is a per-row mean), so a fixed-grid
solver integrates each sample independently of its batch mates.
"""

import torch
from torch import nn

# Keeps the 3/(t + eps) friction of the second-order flow finite at t = 0.
NESTEROV_EPS = 1e-6


class GradientField(nn.Module):
    """The gradient flow ``dz/dt = -grad_z l(x, decoder(z))``.

    Parameters
    ----------
    decoder : torch.nn.Module
        Maps codes ``(n, d)`` to outputs ``(n, n_features)``.
    loss : callable
        ``loss(output, target)`` returning one value per row; a module-level
        function, so that the field pickles.
    X : torch.Tensor of shape (n, n_features)
        The (scaled) samples, one per row of the state.

    Attributes
    ----------
    n_calls : int
        Number of evaluations so far (each is a decoder forward and backward pass
        over all rows).
    n_accepted : int
        Number of steps an adaptive solver accepted so far.
    """

    def __init__(self, decoder, loss, X):
        super().__init__()
        self.decoder = decoder
        self.loss = loss
        self.X = X
        self.n_calls = 0
        self.n_accepted = 0
        self.max_accepted = None
        self.last_dt = None

    def rows(self, X):
        """A field of the same kind and decoder for other samples ``X``."""
        return type(self)(self.decoder, self.loss, X)

    def gradient(self, z):
        """Per-sample losses and their gradients with respect to the codes ``z``."""
        create_graph = torch.is_grad_enabled()
        self.n_calls += 1
        with torch.enable_grad():
            if create_graph and z.requires_grad:
                z_in = z
            else:
                z_in = z.detach().requires_grad_(True)
            values = self.loss(self.decoder(z_in), self.X)
            (grad,) = torch.autograd.grad(values.sum(), z_in, create_graph=create_graph)
        return values, grad

    def forward(self, t, z):
        return -self.gradient(z)[1]

    def count_accepted_step(self, t0, y0, dt):
        """Count an accepted step of an adaptive solver, within the budget.

        The torchdiffeq flow installs it as the field's ``callback_accept_step``
        for adaptive solvers only.
        """
        self.n_accepted += 1
        self.last_dt = dt
        if self.max_accepted is not None and self.n_accepted > self.max_accepted:
            raise StepBudgetExceeded


class NesterovField(GradientField):
    """The second-order flow of state ``(z, m)``.

    ``dz/dt = m`` and ``dm/dt = -3 / (t + eps) m - grad_z l(x, decoder(z))``, the
    continuous limit of Nesterov's accelerated gradient (Su, Boyd and Candes).
    """

    def forward(self, t, state):
        z, m = state
        grad = self.gradient(z)[1]
        return m, -3.0 / (t + NESTEROV_EPS) * m - grad


class StepBudgetExceeded(Exception):
    """An adaptive solver accepted more steps than the flow allows."""
