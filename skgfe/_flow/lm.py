"""Levenberg-Marquardt: a per-sample damped Gauss-Newton solver of the flow's end point.

The gradient flow ``dz/dt = -grad l(z)`` of a sample ends at a stationary point of its
loss ``l(z) = loss(D(z), x)``. This solver finds such a point directly, with damped
Gauss-Newton steps

    (G(z) + mu I) delta = -grad l(z),    G = J^T W J,

``J = dD/dz`` being the decoder's Jacobian and ``W`` the Hessian of the loss in the
decoder's output (``2/p I`` for 'mse'; Bernoulli weights ``s (1 - s) / p`` for
'bce', the generalised Gauss-Newton matrix). With large damping ``mu`` a step is a
short gradient step ``-grad l / mu`` (the flow itself); without damping it is a step
of the natural-gradient flow under the decoder's pull-back metric ``J^T J``, which
converges in a few steps where the plain gradient flow needs hundreds.

Every sample keeps its own damping, accept/reject decision and stopping flag
(Nielsen's update: ``mu`` shrinks by ``max(1/3, 1 - (2 rho - 1)^3)`` after a step
whose gain ratio ``rho`` (actual over predicted decrease) is positive, and grows
by ``nu`` (doubling) after a rejected one), so, as with AMD, a sample's code does not
depend on its batch mates. A sample stops once the norm of its gradient is at most
``tol`` (the flow's own criterion), when no step lowers its loss any more at
working precision ('stalled'), or after ``max_steps`` accepted steps.

References
----------
K. Madsen, H. B. Nielsen, O. Tingleff. "Methods for non-linear least squares
problems", 2nd ed., Technical University of Denmark, 2004 (section 3.2).
"""

import torch

from .result import (
    CONVERGED,
    MAX_STEPS,
    RUNNING,
    STALLED,
    FlowResult,
    require_finite_start,
)

# Initial damping relative to the largest diagonal entry of the Gauss-Newton matrix.
INITIAL_DAMPING = 1e-3
# Damping never falls below this (relative to that diagonal entry): keeps the
# damped matrix positive definite where the Jacobian loses rank.
MIN_DAMPING = 1e-12


def lm_solve(objective, z0, *, tol=1e-3, max_steps=1000, max_evals=None):
    """Find a stationary code of every sample by per-sample Levenberg-Marquardt.

    Parameters
    ----------
    objective : ReconstructionObjective
        Provides ``gauss_newton(z, rows)``: per-sample losses ``(m,)``, gradients
        ``(m, k)`` and Gauss-Newton matrices ``(m, k, k)`` for the sample indices
        ``rows``.
    z0 : torch.Tensor of shape (n_samples, k)
        Initial codes.
    tol : float
        A sample has converged once the Euclidean norm of its gradient is ``<= tol``.
    max_steps : int
        Largest number of accepted steps per sample.
    max_evals : int or None
        Largest number of evaluations per sample (the first one included); a
        sample that uses them up stops with the status 'max_steps'. Training
        uses it for an inexact solve from warm-started codes.

    Returns
    -------
    FlowResult
        ``n_steps`` counts accepted steps, ``n_evals`` evaluations (each a forward
        pass with the Jacobian); ``t`` is NaN (no flow time is integrated).
    """
    n_samples, k = z0.shape
    device, dtype = z0.device, z0.dtype
    all_rows = torch.arange(n_samples, device=device)
    z_all = z0.detach().clone()
    loss, grad, gn = objective.gauss_newton(z_all, all_rows)
    require_finite_start(loss, grad)
    grad_norm = torch.linalg.vector_norm(grad, dim=1)
    loss_all, grad_norm_all = loss.clone(), grad_norm.clone()
    n_steps_all = torch.zeros(n_samples, dtype=torch.long, device=device)
    n_evals_all = torch.ones(n_samples, dtype=torch.long, device=device)
    status_all = torch.full((n_samples,), RUNNING, dtype=torch.long, device=device)
    status_all[grad_norm <= tol] = CONVERGED

    # The running samples' state, compacted: rows leave it when they stop, so an
    # iteration touches only running rows and scatters nothing until one stops.
    running = status_all == RUNNING
    rows = all_rows[running]
    z, loss, grad, gn = z_all[running], loss[running], grad[running], gn[running]
    grad_norm = grad_norm[running]
    eye = torch.eye(k, dtype=dtype, device=device)
    scale = gn.diagonal(dim1=1, dim2=2).amax(dim=1).clamp(min=torch.finfo(dtype).tiny)
    mu = INITIAL_DAMPING * scale
    nu = torch.full_like(mu, 2.0)
    n_steps = torch.zeros_like(rows)
    n_evals = torch.ones_like(rows)
    eps = torch.finfo(dtype).eps

    while rows.numel():
        damped = gn + mu[:, None, None] * eye
        factor, info = torch.linalg.cholesky_ex(damped)
        factored = info == 0
        # A failed factorisation (rounding where the damping is tiny) counts as a
        # rejected trial; the identity stands in so that the solve stays finite.
        factor = torch.where(factored[:, None, None], factor, eye)
        delta = -torch.cholesky_solve(grad.unsqueeze(-1), factor).squeeze(-1)
        # Decrease predicted by the damped quadratic model, > 0 for delta != 0.
        predicted = 0.5 * (delta * (mu[:, None] * delta - grad)).sum(dim=1)
        z_try = z + delta
        loss_try, grad_try, gn_try = objective.gauss_newton(z_try, rows)
        n_evals += 1
        decrease = loss - loss_try
        finite = torch.isfinite(loss_try) & torch.isfinite(grad_try).all(dim=1)
        accept = factored & finite & (decrease > 0) & (predicted > 0)
        rho = torch.where(accept, decrease / predicted, torch.zeros_like(decrease))
        # No step lowers the loss and this one was already at rounding level of
        # the code: the loss is flat to working precision.
        flat = factored & (
            torch.linalg.vector_norm(delta, dim=1)
            <= 4 * eps * (torch.linalg.vector_norm(z, dim=1) + 1.0)
        )

        z = torch.where(accept[:, None], z_try, z)
        loss = torch.where(accept, loss_try, loss)
        grad = torch.where(accept[:, None], grad_try, grad)
        gn = torch.where(accept[:, None, None], gn_try, gn)
        grad_norm = torch.where(
            accept, torch.linalg.vector_norm(grad_try, dim=1), grad_norm
        )
        n_steps += accept
        shrink = (1 - (2 * rho - 1) ** 3).clamp(min=1.0 / 3.0)
        mu = torch.where(
            accept, torch.maximum(mu * shrink, MIN_DAMPING * scale), mu * nu
        )
        nu = torch.where(accept, torch.full_like(nu, 2.0), nu * 2.0)

        stalled = ~accept & (flat | ~torch.isfinite(mu))
        out_of_budget = accept & (n_steps >= max_steps)
        if max_evals is not None:
            out_of_budget |= ~stalled & (n_evals >= max_evals)
        status = torch.where(stalled, STALLED, RUNNING)
        status = torch.where(out_of_budget, MAX_STEPS, status)
        status = torch.where(accept & (grad_norm <= tol), CONVERGED, status)
        stopped = status != RUNNING
        if not stopped.any():
            continue
        done = rows[stopped]
        z_all[done] = z[stopped]
        loss_all[done] = loss[stopped]
        grad_norm_all[done] = grad_norm[stopped]
        n_steps_all[done] = n_steps[stopped]
        n_evals_all[done] = n_evals[stopped]
        status_all[done] = status[stopped]
        keep = ~stopped
        rows, z, loss, grad, gn = rows[keep], z[keep], loss[keep], grad[keep], gn[keep]
        grad_norm, mu, nu, scale = grad_norm[keep], mu[keep], nu[keep], scale[keep]
        n_steps, n_evals = n_steps[keep], n_evals[keep]

    return FlowResult(
        z=z_all,
        loss=loss_all,
        grad_norm=grad_norm_all,
        n_steps=n_steps_all,
        n_evals=n_evals_all,
        status=status_all,
        t=torch.full((n_samples,), float("nan"), dtype=dtype, device=device),
        tol=tol,
    )
