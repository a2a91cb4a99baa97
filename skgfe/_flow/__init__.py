"""Latent-space flows that encode a sample as its decoder's best code.

One module per solver family (as torchdiffeq lays out its solvers): ``amd`` (the
per-sample AMD solver), ``torchdiffeq_solvers`` (torchdiffeq's fixed-grid and
adaptive solvers with per-sample stopping), ``torchode_solvers`` (torchode's
adaptive solvers, a step size per sample; optional dependency), ``fields`` (the
vector fields as ``nn.Module``), and ``dispatch`` (:func:`run_flow`, one entry
point for all).
"""

from .amd import amd_flow
from .dispatch import FLOWS, SOLVERS, run_flow
from .fields import GradientField, NesterovField
from .initial import INITS, initial_codes, linear_path_codes
from .lm import lm_solve
from .objective import ReconstructionObjective
from .result import STATUS_NAMES, FlowResult
from .torchdiffeq_solvers import ADAPTIVE_SOLVERS, FIXED_GRID_SOLVERS, odeint_flow
from .torchode_solvers import TORCHODE_SOLVERS, torchode_flow

__all__ = [
    "ADAPTIVE_SOLVERS",
    "FIXED_GRID_SOLVERS",
    "FLOWS",
    "INITS",
    "SOLVERS",
    "STATUS_NAMES",
    "TORCHODE_SOLVERS",
    "FlowResult",
    "GradientField",
    "NesterovField",
    "ReconstructionObjective",
    "amd_flow",
    "initial_codes",
    "linear_path_codes",
    "lm_solve",
    "odeint_flow",
    "run_flow",
    "torchode_flow",
]
