"""skgfe: gradient flow encoding for scikit-learn."""

from ._gfe import GradientFlowEncoder

__version__ = "0.1.0.dev0"

__all__ = ["GradientFlowEncoder", "__version__"]
