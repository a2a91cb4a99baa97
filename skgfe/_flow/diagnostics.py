"""Convergence diagnostics of the flows: per-sample arrays and warnings."""

from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

from .._warnings import warn_user
from .dispatch import SOLVERS
from .result import MAX_STEPS, STALL_TOL_FACTOR, STATUS_NAMES


def flow_info(results):
    """Per-sample diagnostics of flows, as ``GradientFlowEncoder.encode`` gives them.

    Parameters
    ----------
    results : list of FlowResult
        The results of consecutive chunks of the samples.

    Returns
    -------
    info : dict of ndarray
        ``loss``, ``grad_norm``, ``n_steps``, ``n_evals``, ``time``,
        ``converged`` and ``status`` (names of :data:`STATUS_NAMES`), one entry
        per sample.
    """
    status = torch.cat([r.status for r in results]).cpu().numpy()
    return {
        "loss": torch.cat([r.loss for r in results]).cpu().numpy(),
        "grad_norm": torch.cat([r.grad_norm for r in results]).cpu().numpy(),
        "n_steps": torch.cat([r.n_steps for r in results]).cpu().numpy(),
        "n_evals": torch.cat([r.n_evals for r in results]).cpu().numpy(),
        "time": torch.cat([r.t for r in results]).cpu().numpy(),
        "converged": torch.cat([r.converged for r in results]).cpu().numpy(),
        "status": np.array([STATUS_NAMES[s] for s in status]),
    }


@dataclass
class ShortSolves:
    """The training flows of one epoch that stopped short of the tolerance.

    Attributes
    ----------
    epoch : int or None
        The epoch recorded (None before the first record).
    n_solves : int
        Number of flows the epoch ran.
    status, grad_norm : list of torch.Tensor
        Status codes and gradient norms of the flows that stopped short.
    """

    epoch: int | None = None
    n_solves: int = 0
    status: list = field(default_factory=list)
    grad_norm: list = field(default_factory=list)

    def record(self, result, epoch, warm):
        """Count the flows of ``result``, run in ``epoch``, that stopped short.

        A new epoch starts a new count. With ``warm`` (warm-started training
        codes) a flow that used up its evaluations is not short: it was capped
        on purpose and resumes next epoch.
        """
        short = ~result.converged
        if warm:
            short &= result.status != MAX_STEPS
        if self.epoch != epoch:
            self.epoch, self.n_solves, self.status, self.grad_norm = epoch, 0, [], []
        self.n_solves += len(short)
        if short.any():
            self.status.append(result.status[short])
            self.grad_norm.append(result.grad_norm[short].detach())


@dataclass(frozen=True)
class ConvergenceReport:
    """Warnings about flows that stopped before their gradient norm reached flow_tol.

    Parameters
    ----------
    flow, solver : str
        The estimator's ``flow`` and ``solver``.
    flow_tol : float
        The estimator's ``flow_tol``.
    float64 : bool
        Whether the estimator computes in float64.
    """

    flow: str
    solver: str
    flow_tol: float
    float64: bool

    def warn_encoded(self, info):
        """Warn when some encoded samples did not converge.

        ``info`` is the dict of :func:`flow_info`.
        """
        not_converged = ~info["converged"]
        if not not_converged.any():
            return
        details = self.details(
            info["status"][not_converged], info["grad_norm"][not_converged]
        )
        warn_user(
            f"The {self.flow} flow ({self.solver!r} solver) of "
            f"{not_converged.sum()} of {len(not_converged)} samples stopped before "
            f"its gradient norm reached flow_tol={self.flow_tol} ({details}); or "
            "raise flow_tol. encode(X, return_info=True) tells which samples.",
            ConvergenceWarning,
        )

    def warn_trained(self, short):
        """Warn about the training flows of the last epoch that stopped short.

        ``short`` is a :class:`ShortSolves` with at least one such flow.
        """
        statuses = torch.cat(short.status).cpu().numpy()
        statuses = np.array([STATUS_NAMES[s] for s in statuses])
        grad_norms = torch.cat(short.grad_norm).cpu().numpy()
        details = self.details(statuses, grad_norms)
        warn_user(
            f"In the last epoch of training, the {self.flow} flow ({self.solver!r} "
            f"solver) of {len(statuses)} of {short.n_solves} training samples "
            f"stopped before its gradient norm reached flow_tol={self.flow_tol} "
            f"({details}); or raise flow_tol. The decoder was trained on codes "
            "short of the flows' end points.",
            ConvergenceWarning,
        )

    def details(self, statuses, grad_norms):
        """'count reason: advice' for the flows that stopped short of flow_tol.

        ``statuses`` (names) and ``grad_norms`` are those of these flows only.
        """
        stalled = "fit and transform float64 data"
        if self.float64 and "stalled" in statuses:
            # A stalled flow counts as converged when its gradient norm is
            # within STALL_TOL_FACTOR times flow_tol (and the flows up to the
            # stall do not depend on the tolerance).
            top = np.max(grad_norms[statuses == "stalled"])
            enough = 10 ** np.ceil(np.log10(top / STALL_TOL_FACTOR))
            stalled = (
                "the loss is flat at float64 precision, at gradient norms up to "
                f"{top:.2g} (higher for samples with larger losses): "
                f"flow_tol={enough:.0e} accepts them"
            )
        advice = {
            "horizon": "raise flow_time",
            "max_steps": "raise max_flow_steps",
            "stalled": stalled,
            "diverged": (
                "lower rtol and atol"
                if SOLVERS[self.solver].adaptive
                else "lower step_size, or use solver='amd'"
            ),
        }
        return "; ".join(
            f"{np.sum(statuses == reason)} {reason}: {advice[reason]}"
            for reason in sorted(set(statuses))
        )
