"""skgfe: gradient flow encoding for scikit-learn."""

from ._autoencoders import Autoencoder, VariationalAutoencoder
from ._gfe import GradientFlowEncoder
from ._imputer import GradientFlowImputer
from ._persistence import load, save
from ._vae_dlm import VAEDLMRegressor

__version__ = "0.1.0.dev0"

__all__ = [
    "Autoencoder",
    "GradientFlowEncoder",
    "GradientFlowImputer",
    "VAEDLMRegressor",
    "VariationalAutoencoder",
    "__version__",
    "load",
    "save",
]
