"""skgfe: gradient flow encoding for scikit-learn."""

from ._autoencoders import Autoencoder, VariationalAutoencoder
from ._gfe import GradientFlowEncoder

__version__ = "0.1.0.dev0"

__all__ = [
    "Autoencoder",
    "GradientFlowEncoder",
    "VariationalAutoencoder",
    "__version__",
]
