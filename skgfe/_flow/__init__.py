"""Latent-space flows that encode a sample as its decoder's best code."""

from .amd import STATUS_NAMES, FlowResult, amd_flow
from .objective import ReconstructionObjective

__all__ = ["FlowResult", "ReconstructionObjective", "STATUS_NAMES", "amd_flow"]
