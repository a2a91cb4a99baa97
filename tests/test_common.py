"""scikit-learn's estimator checks, plus the ones check_estimator skips by default."""

import pytest
from sklearn.utils.estimator_checks import (
    check_dataframe_column_names_consistency,
    check_global_output_transform_pandas,
    check_global_set_output_transform_polars,
    check_inplace_ensure_writeable,
    check_param_validation,
    check_set_output_transform,
    check_set_output_transform_pandas,
    check_set_output_transform_polars,
    check_transformer_get_feature_names_out,
    check_transformer_get_feature_names_out_pandas,
    parametrize_with_checks,
)

from skgfe import (
    Autoencoder,
    GradientFlowEncoder,
    GradientFlowImputer,
    VariationalAutoencoder,
)


def cheap_estimators():
    """Small, fast configurations of every public estimator."""
    return [
        GradientFlowEncoder(
            n_components=2,
            hidden_layer_sizes=(8,),
            max_iter=5,
            max_flow_steps=300,
            flow_tol=1e-3,
            random_state=0,
        ),
        # A paper's flow with its own settings (a random decoder, flows from
        # z = 0): the checks see AMD at work, not a PCA start that is already
        # stationary.
        GradientFlowEncoder(
            n_components=2,
            hidden_layer_sizes=(8,),
            flow="nesterov",
            solver="amd",
            decoder_init="random",
            init="zeros",
            max_iter=5,
            max_flow_steps=300,
            flow_tol=1e-3,
            random_state=0,
        ),
        GradientFlowEncoder(
            n_components=2,
            hidden_layer_sizes=(8,),
            solver="rk4",
            step_size=2.0,
            max_iter=5,
            max_flow_steps=300,
            flow_tol=1e-3,
            random_state=0,
        ),
        Autoencoder(
            n_components=2, hidden_layer_sizes=(8,), max_iter=5, random_state=0
        ),
        Autoencoder(
            n_components=2,
            hidden_layer_sizes=(8,),
            code_activation="sigmoid",
            sparsity=0.1,
            sparsity_penalty="kl",
            max_iter=5,
            random_state=0,
        ),
        Autoencoder(
            n_components=2,
            hidden_layer_sizes=(8,),
            noise="masking",
            noise_level=0.2,
            max_iter=5,
            random_state=0,
        ),
        GradientFlowImputer(
            GradientFlowEncoder(
                n_components=2, hidden_layer_sizes=(8,), max_iter=5, random_state=0
            )
        ),
        VariationalAutoencoder(
            n_components=2, hidden_layer_sizes=(8,), max_iter=5, random_state=0
        ),
        VariationalAutoencoder(
            n_components=2,
            hidden_layer_sizes=(8, 8),
            architecture="modified_mlp",
            activation="tanh",
            max_iter=5,
            random_state=0,
        ),
    ]


@parametrize_with_checks(cheap_estimators())
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


EXTRA_CHECKS = [
    check_param_validation,
    check_set_output_transform,
    check_set_output_transform_pandas,
    check_global_output_transform_pandas,
    check_set_output_transform_polars,
    check_global_set_output_transform_polars,
    check_transformer_get_feature_names_out,
    check_transformer_get_feature_names_out_pandas,
    check_dataframe_column_names_consistency,
    check_inplace_ensure_writeable,
]


@pytest.mark.parametrize(
    "estimator", cheap_estimators(), ids=lambda e: type(e).__name__
)
@pytest.mark.parametrize("check", EXTRA_CHECKS, ids=lambda c: c.__name__)
def test_extra_checks(estimator, check):
    check(type(estimator).__name__, estimator)
