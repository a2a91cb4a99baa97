"""The parameters and attributes the estimators share are documented alike."""

import pytest
from sklearn.utils._testing import assert_docstring_consistency

from skgfe import Autoencoder, GradientFlowEncoder, VariationalAutoencoder

pytest.importorskip("numpydoc")

TRANSFORMERS = [GradientFlowEncoder, Autoencoder, VariationalAutoencoder]
# Parameters and attributes whose behaviour is the same in the three
# transformers (the others describe a decoder, an encoder or both, or the
# codes' origin, and differ on purpose).
SHARED_PARAMETERS = [
    "device",
    "early_stopping",
    "learning_rate_init",
    "loss",
    "max_iter",
    "n_iter_no_change",
    "tol",
    "validation_fraction",
    "weight_averaging",
]
SHARED_ATTRIBUTES = [
    "best_loss_",
    "validation_scores_",
    "n_iter_",
    "t_",
    "n_features_in_",
    "feature_names_in_",
    "decoder_",
]


@pytest.mark.parametrize("name", SHARED_PARAMETERS)
def test_shared_parameters_are_documented_alike(name):
    assert_docstring_consistency(TRANSFORMERS, include_params=[name])


@pytest.mark.parametrize("name", SHARED_ATTRIBUTES)
def test_shared_attributes_are_documented_alike(name):
    assert_docstring_consistency(TRANSFORMERS, include_attrs=[name])
