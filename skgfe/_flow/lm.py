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
    z = z0.detach().clone()
    all_rows = torch.arange(n_samples, device=device)
    loss, grad, gn = objective.gauss_newton(z, all_rows)
    require_finite_start(loss, grad)
    eye = torch.eye(k, dtype=dtype, device=device)
    grad_norm = torch.linalg.vector_norm(grad, dim=1)
    scale = gn.diagonal(dim1=1, dim2=2).amax(dim=1).clamp(min=torch.finfo(dtype).tiny)
    mu = INITIAL_DAMPING * scale
    nu = torch.full_like(mu, 2.0)
    eps = torch.finfo(dtype).eps
    n_steps = torch.zeros(n_samples, dtype=torch.long, device=device)
    n_evals = torch.ones(n_samples, dtype=torch.long, device=device)
    status = torch.full((n_samples,), RUNNING, dtype=torch.long, device=device)
    status[grad_norm <= tol] = CONVERGED

    while True:
        rows = torch.nonzero(status == RUNNING).squeeze(1)
        if rows.numel() == 0:
            break
        g_rows, mu_rows = grad[rows], mu[rows]
        damped = gn[rows] + mu_rows[:, None, None] * eye
        factor, info = torch.linalg.cholesky_ex(damped)
        factored = info == 0
        # A failed factorisation (rounding where the damping is tiny) counts as a
        # rejected trial; the identity stands in so that the solve stays finite.
        factor = torch.where(factored[:, None, None], factor, eye)
        delta = -torch.cholesky_solve(g_rows.unsqueeze(-1), factor).squeeze(-1)
        # Decrease predicted by the damped quadratic model, > 0 for delta != 0.
        predicted = 0.5 * (delta * (mu_rows[:, None] * delta - g_rows)).sum(dim=1)
        z_rows = z[rows]
        z_try = z_rows + delta
        loss_try, grad_try, gn_try = objective.gauss_newton(z_try, rows)
        n_evals[rows] += 1
        decrease = loss[rows] - loss_try
        finite = torch.isfinite(loss_try) & torch.isfinite(grad_try).all(dim=1)
        accept = factored & finite & (decrease > 0) & (predicted > 0)
        rho = torch.where(accept, decrease / predicted, torch.zeros_like(decrease))

        acc, rej = rows[accept], rows[~accept]
        z[acc] = z_try[accept]
        loss[acc] = loss_try[accept]
        grad[acc] = grad_try[accept]
        gn[acc] = gn_try[accept]
        grad_norm[acc] = torch.linalg.vector_norm(grad_try[accept], dim=1)
        n_steps[acc] += 1
        shrink = (1 - (2 * rho[accept] - 1) ** 3).clamp(min=1.0 / 3.0)
        mu[acc] = torch.maximum(mu[acc] * shrink, MIN_DAMPING * scale[acc])
        nu[acc] = 2.0
        mu[rej] = mu[rej] * nu[rej]
        nu[rej] = nu[rej] * 2.0

        # No step lowers the loss and the last one was already at rounding level
        # of the code: the loss is flat to working precision.
        step_norm = torch.linalg.vector_norm(delta[~accept], dim=1)
        code_norm = torch.linalg.vector_norm(z_rows[~accept], dim=1)
        flat = factored[~accept] & (step_norm <= 4 * eps * (code_norm + 1.0))
        status[rej[flat | ~torch.isfinite(mu[rej])]] = STALLED
        status[acc[n_steps[acc] >= max_steps]] = MAX_STEPS
        if max_evals is not None:
            out_of_evals = rows[n_evals[rows] >= max_evals]
            status[out_of_evals[status[out_of_evals] == RUNNING]] = MAX_STEPS
        status[acc[grad_norm[acc] <= tol]] = CONVERGED

    return FlowResult(
        z=z,
        loss=loss,
        grad_norm=grad_norm,
        n_steps=n_steps,
        n_evals=n_evals,
        status=status,
        t=torch.full((n_samples,), float("nan"), dtype=dtype, device=device),
        tol=tol,
    )
