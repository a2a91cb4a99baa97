"""The per-sample objective that a gradient flow descends."""

from typing import NamedTuple

import torch

from .._networks import _pad_to_blocks
from .derivatives import (
    DecoderPlan,
    _masked_loss_terms,
    _rows,
    loss_and_gradient,
    loss_gradient_and_deferred_gauss_newton,
    supports_explicit_derivatives,
)

# Precision of the Jacobian behind the Gauss-Newton matrices. The matrix only
# shapes a solver's steps; losses and gradients, which decide acceptance and
# stopping, stay in the data's precision. The forward-mode Jacobian dominates
# the cost of a Gauss-Newton evaluation, and runs about 4x faster in float32
# on a CPU (measured on the default decoder).
JACOBIAN_DTYPE = torch.float32


class GaussianCodePrior(NamedTuple):
    """A Gaussian prior's term in the per-sample loss (see
    :meth:`ReconstructionObjective._with_prior`).

    ``mean`` ``(k,)`` and ``weight`` ``(k, k)``; ``all_rows``: the term applies
    to every row (training's code prior), not only to rows with missing
    entries (the error model's prior at inference).
    """

    mean: torch.Tensor
    weight: torch.Tensor
    all_rows: bool = False


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

    Notes
    -----
    Without ``create_graph`` the gradient of skgfe's own decoders comes from the
    hand-written chain rule of :mod:`.derivatives` (same values to rounding, far
    less overhead than autograd); with it, or for any other module, from autograd.

    Missing entries (NaN in ``X``) are left out: the loss of a row with missing
    entries is its mean over its observed ones (a row must observe at least
    one), plus the term of a Gaussian ``prior`` on the code when one is given
    (see :meth:`_with_prior`). Rows without missing entries are evaluated apart
    from the others, by the same computation as when ``X`` has no NaN at all,
    so their results do not depend on whether their batch mates miss entries.
    """

    def __init__(self, decoder, loss, X, create_graph=False, prior=None):
        self.decoder = decoder
        self.loss = loss
        self.create_graph = create_graph
        self.prior = prior
        self.explicit = not create_graph and supports_explicit_derivatives(
            decoder, loss
        )
        # The decoder is fixed while an objective is in use (one solve).
        self.plan = DecoderPlan(decoder) if self.explicit else None
        missing = torch.isnan(X)
        self.observed = None
        if missing.any():
            self.observed = (~missing).to(X.dtype)
            self.incomplete = missing.any(dim=1)
            X = X.masked_fill(missing, 0.0)
        self.X = X

    def __call__(self, z, rows=None):
        return self._by_completeness(self._loss_and_gradient, z, rows)

    def _loss_and_gradient(self, z, x, observed):
        if self.explicit:
            return loss_and_gradient(self.plan, self.loss, z.detach(), x, observed)
        with torch.enable_grad():
            if self.create_graph and z.requires_grad:
                z_in = z
            else:
                z_in = z.detach().requires_grad_(True)
            output = self.decoder(z_in)
            if observed is None:
                values = self.loss(output, x)
            else:
                blocks = _pad_to_blocks(output)
                terms = _masked_loss_terms(self.loss, blocks, x, observed)
                values = _rows(terms[0], len(x))
            (grad,) = torch.autograd.grad(
                values.sum(), z_in, create_graph=self.create_graph
            )
        if self.create_graph:
            return values, grad
        return values.detach(), grad

    def _by_completeness(self, evaluate, z, rows):
        """``evaluate(z, x, observed)`` on the rows ``rows`` (None: all), the
        complete rows apart from the incomplete ones, with the prior's term;
        results in row order."""
        groups = self._groups(z, rows)
        results = [
            self._with_prior(evaluate(z_g, x_g, observed_g), z_g, count)
            for _, z_g, x_g, observed_g, count in groups
        ]
        return _in_row_order(groups, results, len(z))

    def _groups(self, z, rows):
        """The rows ``rows`` (None: all) in the groups evaluated alike: all
        together, or the complete ones apart from those with missing entries.

        One ``(where, z, x, observed, count)`` per group: its positions among
        the rows (None: all), codes, samples, observed entries (None: all)
        and each row's count of entries for the prior's term (None: no term).
        """
        x = self.X if rows is None else self.X[rows]
        if self.observed is None:
            return [(None, z, x, None, self._complete_count(z))]
        incomplete = self.incomplete if rows is None else self.incomplete[rows]
        observed = self.observed if rows is None else self.observed[rows]
        if incomplete.all():
            return [(None, z, x, observed, observed.sum(dim=1))]
        if not incomplete.any():
            return [(None, z, x, None, self._complete_count(z))]
        full = (~incomplete).nonzero().squeeze(1)
        part = incomplete.nonzero().squeeze(1)
        return [
            (full, z[full], x[full], None, self._complete_count(z[full])),
            (part, z[part], x[part], observed[part], observed[part].sum(dim=1)),
        ]

    def _complete_count(self, z):
        """Each complete row's count of entries, where the prior applies to it
        (``all_rows``); None where no prior term applies."""
        if self.prior is None or not self.prior.all_rows:
            return None
        return torch.full((len(z),), self.X.shape[1], dtype=z.dtype, device=z.device)

    def _with_prior(self, results, z, count):
        """Add the prior's term to the losses and gradients of rows observing
        ``count`` entries each (None: no term; its Gauss-Newton term is added
        by :meth:`_deferred`).

        A row's loss gains ``(z - mean)^T weight (z - mean) / count``, the
        Gaussian prior's negative log-density in the units of the loss (a mean
        over the observed entries), so its optimum is the maximum a posteriori
        code.
        """
        if self.prior is None or count is None:
            return results
        mean, weight = self.prior.mean, self.prior.weight
        offset = z - mean
        pulled = offset @ weight
        values = results[0] + (offset * pulled).sum(dim=1) / count
        grad = results[1] + 2.0 * pulled / count[:, None]
        return values, grad

    def gauss_newton(self, z, rows=None):
        """Losses, gradients and Gauss-Newton matrices ``(n, k, k)`` at ``z``.

        Only for skgfe's own decoders without ``create_graph`` (the Gauss-Newton
        solver is not differentiated through). The matrices are formed in
        :data:`JACOBIAN_DTYPE` (when that is coarser than the data's) and
        returned in the data's dtype.
        """
        loss, grad, gauss_newton = self.evaluate(z, rows)
        return loss, grad, gauss_newton()

    def evaluate(self, z, rows=None):
        """:meth:`gauss_newton` with the matrices formed on demand.

        Returns the losses, the gradients and ``gauss_newton(positions=None)``,
        which gives the Gauss-Newton matrices of the rows at ``positions`` (a
        tensor of indices into ``z``'s rows; None: all of them), each
        bit-identical to its row of :meth:`gauss_newton`'s.
        """
        if not self.explicit:
            raise ValueError(
                "The Gauss-Newton solver needs skgfe's own decoders and no "
                "differentiable (adjoint) flow."
            )
        groups = self._groups(z, rows)
        results = [
            self._deferred(z_g, x_g, observed_g, count)
            for _, z_g, x_g, observed_g, count in groups
        ]
        if len(groups) == 1:
            return results[0]
        loss, grad = _in_row_order(groups, [r[:2] for r in results], len(z))
        (full, *_), (part, *_) = groups
        # Each row's place within its group.
        place = torch.empty(len(z), dtype=torch.long, device=z.device)
        place[full] = torch.arange(len(full), device=z.device)
        place[part] = torch.arange(len(part), device=z.device)
        incomplete = torch.zeros(len(z), dtype=torch.bool, device=z.device)
        incomplete[part] = True

        def gauss_newton(positions=None):
            if positions is None:
                positions = torch.arange(len(z), device=z.device)
            gn = z.new_empty((len(positions), z.shape[1], z.shape[1]))
            chosen = incomplete[positions]
            for mask, (_, _, group_gn) in zip((~chosen, chosen), results):
                if mask.any():
                    gn[mask] = group_gn(place[positions[mask]])
            return gn

        return loss, grad, gauss_newton

    def _deferred(self, z, x, observed, count):
        """Losses, gradients and deferred Gauss-Newton matrices of one group of
        rows, with the prior's term for rows observing ``count`` entries each
        (None: no prior term)."""
        loss, grad, gauss_newton = loss_gradient_and_deferred_gauss_newton(
            self.plan,
            self.loss,
            z.detach(),
            x,
            jacobian_dtype=JACOBIAN_DTYPE,
            observed=observed,
        )
        if self.prior is None or count is None:
            return loss, grad, gauss_newton
        loss, grad = self._with_prior((loss, grad), z, count)
        curvature = 2.0 * self.prior.weight

        def with_prior(positions=None):
            rows = count if positions is None else count[positions]
            return gauss_newton(positions) + curvature / rows[:, None, None]

        return loss, grad, with_prior


def _in_row_order(groups, results, n_rows):
    """The results of the groups of :meth:`ReconstructionObjective._groups`
    (a tuple of tensors each) put back in row order."""
    if len(groups) == 1:
        return results[0]
    merged = []
    for parts in zip(*results):
        result = parts[0].new_empty((n_rows, *parts[0].shape[1:]))
        for (where, *_), part in zip(groups, parts):
            result[where] = part
        merged.append(result)
    return tuple(merged)
