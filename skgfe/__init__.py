"""skgfe: gradient flow encoding for scikit-learn."""

from ._autoencoders import Autoencoder, VariationalAutoencoder
from ._gfe import GradientFlowEncoder
from ._persistence import load, save

__version__ = "0.1.0.dev0"

__all__ = [
    "Autoencoder",
    "GradientFlowEncoder",
    "VariationalAutoencoder",
    "__version__",
    "load",
    "save",
]
