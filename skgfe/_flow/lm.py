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
converges in a few steps where the plain gradient flow needs hundreds. The
matrix of a trial is formed only for the samples that step on from it (the
Jacobian is most of an evaluation's cost): a rejected trial keeps the sample's
matrix, and a sample that stops at its trial needs none.

Every sample keeps its own damping, accept/reject decision and stopping flag
(Nielsen's update: ``mu`` shrinks by ``max(1/3, 1 - (2 rho - 1)^3)`` after a step
whose gain ratio ``rho`` (actual over predicted decrease) is positive, and grows
by ``nu`` (doubling) after a rejected one), so, as with AMD, a sample's code does not
depend on its batch mates (but for the rounding of narrow layers that
:mod:`.derivatives` describes: there a sample's place among the running ones
can change its matrix in the last bits, and on an ill-posed problem the end
point). A sample stops once the norm of its gradient is at most
``tol`` (the flow's own criterion), when no step lowers its loss any more at
working precision ('stalled'), or after ``max_steps`` accepted steps.

At most ``max_rows`` samples are iterated at once (each carries its Gauss-Newton
matrix, and its Jacobian while it is evaluated); the others wait in order and take
the places of samples that stop. A few slow samples then share their iterations
with the next ones instead of running on alone at the end of every chunk, whose
iterations cost per-call overhead more than arithmetic.

References
----------
K. Madsen, H. B. Nielsen, O. Tingleff. "Methods for non-linear least squares
problems", 2nd ed., Technical University of Denmark, 2004 (section 3.2).
"""

import torch

from .result import CONVERGED, MAX_STEPS, RUNNING, STALLED, require_finite_start
from .state import FlowState

# Initial damping relative to the largest diagonal entry of the Gauss-Newton matrix.
INITIAL_DAMPING = 1e-3
# Damping never falls below this (relative to that diagonal entry): keeps the
# damped matrix positive definite where the Jacobian loses rank.
MIN_DAMPING = 1e-12


def lm_solve(
    objective,
    z0,
    *,
    tol=1e-3,
    max_steps=1000,
    max_evals=None,
    max_rows=None,
    fixed_metric=False,
):
    """Find a stationary code of every sample by per-sample Levenberg-Marquardt.

    Parameters
    ----------
    objective : ReconstructionObjective
        Provides ``evaluate(z, rows)``: per-sample losses ``(m,)``, gradients
        ``(m, k)`` and a function that forms the Gauss-Newton matrices
        ``(m', k, k)`` of given positions among the sample indices ``rows``
        (only samples that step on from a trial need its matrix: one that
        rejects the trial keeps its own, one that stops needs none), and,
        with ``fixed_metric``, ``objective(z, rows)``: losses and gradients.
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
    max_rows : int or None
        Largest number of samples iterated at once (None: all); it bounds the
        memory, not the results.
    fixed_metric : bool, default=False
        Keep each sample's first Gauss-Newton matrix for all its steps instead
        of evaluating it at every trial code: later evaluations cost a loss and
        a gradient only (about a third of an evaluation with the Jacobian).
        The steps are then those of a fixed-metric (quasi-Newton) method,
        whose convergence is linear rather than quadratic: the damping and the
        gain ratio still accept only steps that lower the loss, and the solve
        still stops on the gradient. Training uses it for its few evaluations
        from warm codes, close to their stationary points.

    Returns
    -------
    FlowResult
        ``n_steps`` counts accepted steps, ``n_evals`` evaluations (each a forward
        pass, with the Jacobian where the sample steps on from it); ``t`` is NaN
        (no flow time is integrated).
    """
    n_samples, k = z0.shape
    device, dtype = z0.device, z0.dtype
    max_rows = n_samples if max_rows is None else max(1, max_rows)
    out = FlowState.waiting(z0, tol=tol)
    eye = torch.eye(k, dtype=dtype, device=device)
    eps = torch.finfo(dtype).eps
    running = None
    n_waiting = n_samples

    while running is not None or n_waiting:
        n_running = 0 if running is None else len(running.rows)
        # Waiting samples join in groups of at least a quarter of max_rows (or
        # all that are left), so that admitting them costs few extra calls.
        n_new = min(max_rows - n_running, n_waiting)
        if n_new < min(max_rows // 4, n_waiting):
            n_new = 0
        if n_new:
            first = n_samples - n_waiting
            new_rows = torch.arange(first, first + n_new, device=device)
            n_waiting -= n_new

        if running is not None:
            delta, predicted, factored = _damped_step(running, eye)
            z_try = running.z + delta
        if fixed_metric and running is not None:
            # The running samples keep their metric: loss and gradient only;
            # joining samples get their first Gauss-Newton matrix apart.
            loss, grad = objective(z_try, running.rows)
            trial_metric = None
            if n_new:
                joining = objective.evaluate(out.z[new_rows], new_rows)
        elif running is not None:
            rows = torch.cat([running.rows, new_rows]) if n_new else running.rows
            z_eval = torch.cat([z_try, out.z[new_rows]]) if n_new else z_try
            # One evaluation of the running and the joining samples; the
            # Gauss-Newton matrices only of those that go on from it.
            loss, grad, trial_metric = objective.evaluate(z_eval, rows)
            if n_new:
                joining = _offset(loss, grad, trial_metric, n_running)
                loss, grad = loss[:n_running], grad[:n_running]
        else:
            joining = objective.evaluate(out.z[new_rows], new_rows)

        if running is not None:
            running = _update(
                running,
                delta,
                predicted,
                factored,
                (z_try, loss, grad, trial_metric),
                out,
                tol=tol,
                max_steps=max_steps,
                max_evals=max_evals,
                eps=eps,
            )
        if n_new:
            joined = _admit(new_rows, out.z[new_rows], *joining, out, tol)
            running = joined if running is None else running.extend(joined)
        # The evaluation's forward pass is not needed any more: free it before
        # the next one.
        joining = trial_metric = None
        if running is not None and not len(running.rows):
            running = None
    return out.result()


def _offset(loss, grad, gauss_newton, first):
    """The losses, gradients and deferred Gauss-Newton matrices of the rows of
    an evaluation from position ``first`` on."""

    def shifted(positions):
        return gauss_newton(positions + first)

    return loss[first:], grad[first:], shifted


class _Running:
    """The state of the samples being iterated, one row each (compacted)."""

    NAMES = (
        "rows",
        "z",
        "loss",
        "grad",
        "gn",
        "grad_norm",
        "mu",
        "nu",
        "min_mu",
        "n_steps",
        "n_evals",
    )

    def __init__(self, **tensors):
        for name, tensor in tensors.items():
            setattr(self, name, tensor)

    def take(self, index):
        """The samples at the positions ``index`` (a tensor of indices)."""
        return _Running(
            **{name: getattr(self, name).index_select(0, index) for name in self.NAMES}
        )

    def extend(self, other):
        return _Running(
            **{
                name: torch.cat([getattr(self, name), getattr(other, name)])
                for name in self.NAMES
            }
        )


def _admit(rows, z, loss, grad, gauss_newton, out, tol):
    """Start the samples ``rows`` from their first evaluation (``gauss_newton``
    gives the Gauss-Newton matrices of its rows at given positions); return
    the running."""
    require_finite_start(loss, grad)
    grad_norm = torch.linalg.vector_norm(grad, dim=1)
    out.loss[rows], out.grad_norm[rows] = loss, grad_norm
    out.n_evals[rows] = 1
    done = grad_norm <= tol
    out.status[rows[done]] = CONVERGED
    keep = (~done).nonzero().squeeze(1)
    # A sample that converged at its start needs no Gauss-Newton matrix.
    gn = gauss_newton(keep) if len(keep) else z.new_empty((0, *z.shape[1:2] * 2))
    scale = gn.diagonal(dim1=1, dim2=2).amax(dim=1)
    scale = scale.clamp(min=torch.finfo(z.dtype).tiny)
    n_kept = len(scale)
    return _Running(
        rows=rows[keep],
        z=z[keep],
        loss=loss[keep],
        grad=grad[keep],
        gn=gn,
        grad_norm=grad_norm[keep],
        mu=INITIAL_DAMPING * scale,
        nu=torch.full_like(scale, 2.0),
        min_mu=MIN_DAMPING * scale,
        n_steps=torch.zeros(n_kept, dtype=torch.long, device=z.device),
        n_evals=torch.ones(n_kept, dtype=torch.long, device=z.device),
    )


def _damped_step(s, eye):
    """Each sample's damped Gauss-Newton step, its predicted decrease, and
    whether the damped matrix could be factorised."""
    damped = s.gn + s.mu[:, None, None] * eye
    factor, info = torch.linalg.cholesky_ex(damped)
    factored = info == 0
    # A failed factorisation (rounding where the damping is tiny) counts as a
    # rejected trial; the identity stands in so that the solve stays finite.
    factor = torch.where(factored[:, None, None], factor, eye)
    delta = -torch.cholesky_solve(s.grad.unsqueeze(-1), factor).squeeze(-1)
    # Decrease predicted by the damped quadratic model, > 0 for delta != 0.
    predicted = 0.5 * (delta * (s.mu[:, None] * delta - s.grad)).sum(dim=1)
    return delta, predicted, factored


def _update(
    s, delta, predicted, factored, trial, out, *, tol, max_steps, max_evals, eps
):
    """Accept or reject each sample's trial, adapt its damping, retire the
    samples that stop (into ``out``); return the samples still running."""
    z_try, loss_try, grad_try, trial_metric = trial
    s.n_evals += 1
    decrease = s.loss - loss_try
    grad_norm_try = torch.linalg.vector_norm(grad_try, dim=1)
    # A trial loss that is NaN or infinite gives no decrease > 0, a gradient
    # that is not finite no finite norm: both trials are rejected.
    accept = factored & (decrease > 0) & (predicted > 0) & torch.isfinite(grad_norm_try)
    # Gain ratio; only used where the trial is accepted.
    rho = decrease / predicted
    # No step lowers the loss and this one was already at rounding level of
    # the code: the loss is flat to working precision.
    flat = factored & (
        torch.linalg.vector_norm(delta, dim=1)
        <= 4 * eps * (torch.linalg.vector_norm(s.z, dim=1) + 1.0)
    )

    s.z = torch.where(accept[:, None], z_try, s.z)
    s.loss = torch.where(accept, loss_try, s.loss)
    s.grad = torch.where(accept[:, None], grad_try, s.grad)
    s.grad_norm = torch.where(accept, grad_norm_try, s.grad_norm)
    s.n_steps += accept
    shrink = (1 - (2 * rho - 1) ** 3).clamp(min=1.0 / 3.0)
    s.mu = torch.where(accept, torch.maximum(s.mu * shrink, s.min_mu), s.mu * s.nu)
    s.nu = (s.nu * 2.0).masked_fill_(accept, 2.0)

    stalled = ~accept & (flat | ~torch.isfinite(s.mu))
    out_of_budget = accept & (s.n_steps >= max_steps)
    if max_evals is not None:
        out_of_budget |= ~stalled & (s.n_evals >= max_evals)
    converged = accept & (s.grad_norm <= tol)
    stopped = stalled | out_of_budget | converged
    if trial_metric is not None:
        # The new metric of the samples that step on from their trial; those
        # that keep their code keep theirs, and those that stop need none.
        moved = (accept & ~stopped).nonzero().squeeze(1)
        if len(moved):
            s.gn = s.gn.index_copy(0, moved, trial_metric(moved))
    if not stopped.any():
        return s
    # Index tensors, computed once: masks would search the rows again for every
    # state tensor, and at a few rows that search is what an iteration costs.
    done = stopped.nonzero().squeeze(1)
    status = torch.where(stalled, STALLED, RUNNING)
    status = torch.where(out_of_budget, MAX_STEPS, status)
    status = torch.where(converged, CONVERGED, status)
    rows = s.rows.index_select(0, done)
    for name in ("z", "loss", "grad_norm", "n_steps", "n_evals"):
        getattr(out, name).index_copy_(0, rows, getattr(s, name).index_select(0, done))
    out.status.index_copy_(0, rows, status.index_select(0, done))
    return s.take((~stopped).nonzero().squeeze(1))
