"""Autoencoder baselines and the modified MLP: variants, determinism, API, bad input."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from _helpers import skip_training
from scipy import sparse
from sklearn.exceptions import ConvergenceWarning, NotFittedError

from skgfe import Autoencoder, GradientFlowEncoder, VariationalAutoencoder
from skgfe._autoencoders import gaussian_kl
from skgfe._networks import MLP, ModifiedMLP, make_mlp

ESTIMATORS = [Autoencoder, VariationalAutoencoder]

# Small enough that a fit takes a fraction of a second, large enough that the
# variants differ clearly (the margins below hold for several seeds).
# Fixed-length training (no validation split), as these tests were calibrated.
SMALL = dict(
    n_components=8, hidden_layer_sizes=(32,), max_iter=15, early_stopping=False
)


# Few epochs on purpose: reaching max_iter is expected here.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def data(digits_split):
    X_pool, X_test = digits_split
    return X_pool[:500], X_test[:300]


def held_out_mse(model, X_clean, X_input=None):
    X_input = X_clean if X_input is None else X_input
    return np.mean((model.inverse_transform(model.transform(X_input)) - X_clean) ** 2)


@pytest.fixture(scope="module")
def fitted(data):
    X_train, _ = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return {
            cls: cls(
                n_components=3, hidden_layer_sizes=(16,), max_iter=3, random_state=0
            ).fit(X_train[:150])
            for cls in ESTIMATORS
        }


# ------------------------------------------------------------------ variants


def test_denoising_reconstructs_masked_inputs_closer_to_clean(data):
    X_train, X_test = data
    rng = np.random.default_rng(0)
    X_masked = np.where(rng.random(X_test.shape) < 0.3, 0.0, X_test)
    plain = Autoencoder(**SMALL, random_state=0).fit(X_train)
    denoising = Autoencoder(
        **SMALL, noise="masking", noise_level=0.3, random_state=0
    ).fit(X_train)
    plain_error = held_out_mse(plain, X_test, X_masked)
    denoising_error = held_out_mse(denoising, X_test, X_masked)
    # Observed: about 0.85-0.9 of the undercomplete error over several seeds.
    assert denoising_error < 0.95 * plain_error, (denoising_error, plain_error)


def test_gaussian_noise_is_training_only(data):
    X_train, X_test = data
    model = Autoencoder(**SMALL, noise="gaussian", noise_level=0.5, random_state=0).fit(
        X_train
    )
    # transform and score see the clean input: the codes are the encoder's output.
    with torch.no_grad():
        expected = model.encoder_(model._scale(torch.tensor(X_test))).numpy()
    assert np.array_equal(model.transform(X_test), expected)
    assert -model.score(X_test) == pytest.approx(held_out_mse(model, X_test))
    assert model.loss_curve_[-1] < model.loss_curve_[0]


def test_l1_sparsity_shrinks_the_code(data):
    X_train, X_test = data
    mean_abs_code = [
        np.abs(
            Autoencoder(**SMALL, sparsity=weight, random_state=0)
            .fit(X_train)
            .transform(X_test)
        ).mean()
        for weight in (0.0, 0.1, 1.0)
    ]
    # Observed: about 1.3, 0.57, 0.12.
    assert mean_abs_code[1] < 0.8 * mean_abs_code[0], mean_abs_code
    assert mean_abs_code[2] < 0.5 * mean_abs_code[1], mean_abs_code


def test_kl_sparsity_pulls_mean_activation_towards_target(data):
    X_train, X_test = data
    params = dict(
        SMALL,
        code_activation="sigmoid",
        sparsity_penalty="kl",
        sparsity_target=0.05,
        random_state=0,
    )
    free = Autoencoder(**params, sparsity=0.0).fit(X_train).transform(X_test)
    sparse_codes = Autoencoder(**params, sparsity=1.0).fit(X_train).transform(X_test)
    assert ((free > 0) & (free < 1)).all() and (
        (sparse_codes > 0) & (sparse_codes < 1)
    ).all()
    # Observed: mean activation about 0.47 without the penalty, 0.13-0.14 with it.
    assert abs(sparse_codes.mean() - 0.05) < 0.5 * abs(free.mean() - 0.05)


def test_vae_transform_is_the_deterministic_posterior_mean(fitted, digits_split):
    vae = fitted[VariationalAutoencoder]
    X = digits_split[1][:40]
    Z = vae.transform(X)
    assert np.array_equal(Z, vae.transform(X))
    # Rows do not depend on their batch mates.
    np.testing.assert_allclose(Z[7:8], vae.transform(X[7:8]), rtol=0, atol=1e-12)
    assert np.array_equal(Z[:20], vae.transform(X[:20]))
    with torch.no_grad():
        output = vae.encoder_(vae._scale(torch.tensor(X, dtype=torch.float64)))
    np.testing.assert_allclose(Z, output[:, :3].numpy(), rtol=1e-12)


def test_vae_kl_term_is_non_negative_and_exact(fitted, digits_split):
    vae = fitted[VariationalAutoencoder]
    X = digits_split[1][:100]
    elbo, terms = vae.elbo(X, n_draws=4, return_terms=True)
    assert elbo.shape == terms["kl"].shape == (100,)
    assert (terms["kl"] >= 0).all() and np.isfinite(elbo).all()
    np.testing.assert_allclose(elbo, terms["log_likelihood"] - terms["kl"])
    # The closed form against torch.distributions, also at the awkward values
    # (tiny and huge variances, log-variance near 0).
    mean = torch.tensor([[0.0, 0.0, 3.0], [1e-8, -2.0, 0.5]], dtype=torch.float64)
    log_var = torch.tensor(
        [[0.0, 1e-9, -20.0], [15.0, -1e-9, 0.3]], dtype=torch.float64
    )
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean, torch.exp(0.5 * log_var)),
        torch.distributions.Normal(0.0, 1.0),
    ).sum(dim=1)
    kl = gaussian_kl(mean, log_var)
    assert (kl >= 0).all()
    torch.testing.assert_close(kl, expected, rtol=1e-10, atol=1e-15)


def test_vae_elbo_is_reproducible_and_tightens_with_a_better_fit(data):
    X_train, X_test = data
    vae = VariationalAutoencoder(**SMALL, random_state=0)
    vae.partial_fit(X_train)
    early = vae.elbo(X_test, n_draws=2).mean()
    assert np.array_equal(vae.elbo(X_test, n_draws=2), vae.elbo(X_test, n_draws=2))
    for _ in range(10):
        vae.partial_fit(X_train)
    assert vae.elbo(X_test, n_draws=2).mean() > early
    with pytest.raises(ValueError, match="n_draws"):
        vae.elbo(X_test, n_draws=0)


def test_vae_with_vanishing_beta_matches_the_autoencoder(data):
    X_train, X_test = data
    ae_error = held_out_mse(Autoencoder(**SMALL, random_state=0).fit(X_train), X_test)
    nearly_ae = VariationalAutoencoder(**SMALL, beta=1e-3, random_state=0).fit(X_train)
    vae = VariationalAutoencoder(**SMALL, beta=1.0, random_state=0).fit(X_train)
    # Stated tolerance: held-out error within 15% of the autoencoder's (observed
    # within 5% over several seeds), while beta=1 is clearly worse.
    assert held_out_mse(nearly_ae, X_test) == pytest.approx(ae_error, rel=0.15)
    assert held_out_mse(vae, X_test) > 1.05 * ae_error
    # The KL weight does what it says: beta=1 keeps posteriors closer to the prior.
    kl_small_beta = nearly_ae.elbo(X_test, return_terms=True)[1]["kl"].mean()
    kl_beta_one = vae.elbo(X_test, return_terms=True)[1]["kl"].mean()
    assert kl_beta_one < 0.5 * kl_small_beta


def test_vae_score_is_negative_reconstruction_error(fitted, digits_split):
    vae = fitted[VariationalAutoencoder]
    X = digits_split[1][:50]
    assert -vae.score(X) == pytest.approx(held_out_mse(vae, X), rel=1e-10)


# -------------------------------------------------------------- modified MLP


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_modified_mlp_shapes_and_batch_invariance(dtype):
    generator = torch.Generator().manual_seed(0)
    net = make_mlp(
        5, (16, 16), 3, "tanh", "modified_mlp", generator=generator, dtype=dtype
    )
    assert isinstance(net, ModifiedMLP)
    assert net.layer_sizes == (5, 16, 16, 3)
    assert [tuple(g.weight.shape) for g in net.gates] == [(16, 5), (16, 5)]
    X = torch.randn(100, 5, generator=generator, dtype=dtype)
    full = net(X)
    assert full.shape == (100, 3) and full.dtype == dtype
    # Blocks of ROW_BLOCK rows: a row's result is bit-for-bit the same whatever the
    # batch size and whatever rows follow it.
    assert torch.equal(net(X[:40]), full[:40])
    assert torch.equal(net(torch.cat([X[:40], -X[:30]]))[:40], full[:40])
    # Moved to another position in its block, a row may differ in the last bits
    # (CPU kernels treat row positions of a tile differently), as in MLP.
    atol = 1e-12 if dtype == torch.float64 else 1e-6
    alone = torch.cat([net(X[i : i + 1]) for i in range(len(X))])
    torch.testing.assert_close(alone, full, rtol=0, atol=atol)
    order = torch.randperm(100, generator=generator)
    torch.testing.assert_close(net(X[order]), full[order], rtol=0, atol=atol)
    # The gated layer: H1 = (1 - Z) U + Z V from the input, then affine output.
    u, v = torch.tanh(net.gates[0](X)), torch.tanh(net.gates[1](X))
    h = X
    for layer in net.layers[:-1]:
        z = torch.tanh(layer(h))
        h = (1 - z) * u + z * v
    torch.testing.assert_close(full, net.layers[-1](h))


def test_modified_mlp_needs_equal_widths_and_has_no_gates_when_linear():
    with pytest.raises(ValueError, match="equal width"):
        ModifiedMLP((4, 8, 16, 2))
    linear = ModifiedMLP((4, 2))
    assert len(linear.gates) == 0 and linear(torch.zeros(3, 4)).shape == (3, 2)
    with pytest.raises(ValueError, match="modified_mlp"):
        Autoencoder(architecture="modified_mlp", hidden_layer_sizes=(8, 16)).fit(
            np.random.default_rng(0).random((20, 4))
        )


def test_modified_mlp_fit_reduces_the_loss(data):
    X_train, _ = data
    model = Autoencoder(
        n_components=4,
        hidden_layer_sizes=(16, 16),
        architecture="modified_mlp",
        activation="tanh",
        max_iter=10,
        early_stopping=False,
        random_state=0,
    ).fit(X_train[:200])
    assert isinstance(model.encoder_, ModifiedMLP)
    assert isinstance(model.decoder_, ModifiedMLP)
    assert model.loss_curve_[-1] < 0.7 * model.loss_curve_[0], model.loss_curve_


def test_all_estimators_share_the_decoder(data):
    # Same factory: GFE gets `architecture` too, and the autoencoders' decoder is
    # the one GFE builds, with a mirrored encoder.
    X = data[0][:40]
    params = dict(
        n_components=3,
        hidden_layer_sizes=(8, 8),
        architecture="modified_mlp",
        activation="tanh",
        max_iter=1,
        random_state=0,
    )
    gfe = GradientFlowEncoder(**params, max_flow_steps=20, flow_tol=1e-2).fit(X)
    ae = Autoencoder(**params).fit(X)
    vae = VariationalAutoencoder(**params).fit(X)
    for model in (gfe, ae, vae):
        assert type(model.decoder_) is ModifiedMLP
        assert model.decoder_.layer_sizes == (3, 8, 8, 64)
    assert ae.encoder_.layer_sizes == (64, 8, 8, 3)
    assert vae.encoder_.layer_sizes == (64, 8, 8, 6)
    plain = Autoencoder(n_components=3, hidden_layer_sizes=(16, 8), max_iter=1)
    plain.fit(X)
    assert type(plain.decoder_) is MLP and plain.encoder_.layer_sizes == (64, 8, 16, 3)


def test_autoencoders_start_from_gfe_initial_decoder(data, monkeypatch):
    # A fair comparison: with one random_state, all three start from the very same
    # decoder weights (training is skipped to look at the initialisation).
    # fit runs run_epochs from skgfe._torch_estimator (was _base, issue 21).
    monkeypatch.setattr("skgfe._torch_estimator.run_epochs", skip_training)
    X = data[0][:40]
    decoders = [
        cls(n_components=3, hidden_layer_sizes=(8,), random_state=5, **params)
        .fit(X)
        .decoder_
        for cls, params in (
            # GFE's default decoder starts from PCA; 'random' is the shared draw.
            (GradientFlowEncoder, {"decoder_init": "random"}),
            (Autoencoder, {}),
            (VariationalAutoencoder, {}),
        )
    ]
    states = [decoder.state_dict() for decoder in decoders]
    for state in states[1:]:
        assert all(torch.equal(state[key], states[0][key]) for key in states[0])


def test_pca_initialised_gfe_decoder_shares_the_random_hidden_layers(data, monkeypatch):
    # With the default decoder_init ('pca' for mse) GFE's decoder gets a skip path
    # (drawn after every other layer) and a zeroed output layer; its hidden layers
    # are the very weights the autoencoders' decoders start from.
    # fit runs run_epochs from skgfe._torch_estimator (was _base, issue 21).
    monkeypatch.setattr("skgfe._torch_estimator.run_epochs", skip_training)
    X = data[0][:40]
    params = dict(n_components=3, hidden_layer_sizes=(8, 8), random_state=5)
    gfe = GradientFlowEncoder(**params).fit(X).decoder_
    ae = Autoencoder(**params).fit(X).decoder_
    assert gfe.skip is not None and ae.skip is None
    for mine, theirs in zip(gfe.layers[:-1], ae.layers[:-1]):
        assert torch.equal(mine.weight, theirs.weight)
        assert torch.equal(mine.bias, theirs.bias)
    assert not gfe.layers[-1].weight.any() and not gfe.layers[-1].bias.any()


# ------------------------------------------------------- determinism and API


@pytest.mark.parametrize(
    "make",
    [
        lambda **p: Autoencoder(**p, noise="masking", noise_level=0.2),
        lambda **p: Autoencoder(**p, noise="gaussian", sparsity=0.1),
        lambda **p: VariationalAutoencoder(**p),
    ],
    ids=["masking", "gaussian-sparse", "vae"],
)
def test_same_random_state_gives_identical_codes(make, data):
    X_train, X_test = data
    X_train = X_train[:120]
    params = dict(n_components=3, hidden_layer_sizes=(16,), max_iter=3)
    state = torch.random.get_rng_state()
    first = make(**params, random_state=1).fit(X_train).transform(X_test)
    again = make(**params, random_state=1).fit(X_train).transform(X_test)
    other = make(**params, random_state=2).fit(X_train).transform(X_test)
    assert np.array_equal(first, again)
    assert not np.allclose(first, other)
    # Noise and sampling come from a local generator, never the global one.
    assert torch.equal(state, torch.random.get_rng_state())


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_pickle_round_trip_gives_identical_outputs(cls, fitted, digits_split):
    model = fitted[cls]
    X = digits_split[1][:30]
    restored = pickle.loads(pickle.dumps(model))
    assert np.array_equal(model.transform(X), restored.transform(X))
    Z = model.transform(X)
    assert np.array_equal(model.inverse_transform(Z), restored.inverse_transform(Z))
    if cls is VariationalAutoencoder:
        assert np.array_equal(model.elbo(X), restored.elbo(X))
    # The restored model trains on (its optimiser is rebuilt).
    restored.partial_fit(X)
    assert restored.n_iter_ == model.n_iter_ + 1


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_feature_names_and_pandas_output(cls, fitted, digits_split):
    pd = pytest.importorskip("pandas")
    model = fitted[cls]
    prefix = cls.__name__.lower()
    names = [f"{prefix}{i}" for i in range(3)]
    assert list(model.get_feature_names_out()) == names
    model = pickle.loads(pickle.dumps(model)).set_output(transform="pandas")
    out = model.transform(pd.DataFrame(digits_split[1][:5]))
    assert list(out.columns) == names


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_verbose_and_early_stopping(cls, data, capsys):
    model = cls(
        n_components=2,
        hidden_layer_sizes=(8,),
        max_iter=4,
        early_stopping=True,
        n_iter_no_change=10,
        verbose=1,
        random_state=0,
    ).fit(data[0][:100])
    *lines, end = capsys.readouterr().out.strip().splitlines()
    # 90 training samples in batches of 64: 2 steps per epoch, so progress is
    # checked every 5 epochs (at most once per 10 steps) and on the last epoch.
    assert len(lines) == model.n_iter_ == 4
    # The last line says why training stopped and which weights were kept.
    assert end.startswith("Training stopped after 4 epochs: max_iter=4 epochs")
    assert end.endswith("kept the weights measured after epoch 4.") or (
        "kept the initial weights" in end
    )
    assert len(model.validation_scores_) == 1
    assert "validation score" in lines[-1]
    assert not any("validation score" in line for line in lines[:-1])
    assert all(("kl = " in line) == (cls is VariationalAutoencoder) for line in lines)


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_validation_is_scored_after_every_epoch_of_ten_steps(cls, data, capsys):
    # 90 training samples in minibatches of 9: ten optimiser steps per epoch, so
    # progress (and the validation score) is checked after every epoch.
    model = cls(
        n_components=2,
        hidden_layer_sizes=(8,),
        max_iter=4,
        batch_size=9,
        early_stopping=True,
        n_iter_no_change=10,
        verbose=1,
        random_state=0,
    ).fit(data[0][:100])
    *lines, end = capsys.readouterr().out.strip().splitlines()
    assert end.startswith("Training stopped after 4 epochs")
    assert len(lines) == model.n_iter_ == len(model.validation_scores_) == 4
    assert all("validation score" in line for line in lines)
    # The untrained model is a candidate too.
    assert model.best_validation_score_ >= max(model.validation_scores_)


@pytest.mark.parametrize("cls", ESTIMATORS)
@pytest.mark.parametrize(
    "X, error",
    [
        (np.array([[0.0, np.nan, 1.0, 2.0]] * 5), ValueError),
        (sparse.csr_matrix(np.eye(5, 4)), TypeError),
        (np.ones((5, 3)), ValueError),  # wrong number of features at transform
    ],
    ids=["nan", "sparse", "n_features"],
)
def test_bad_input_raises(cls, X, error):
    model = cls(n_components=2, hidden_layer_sizes=(4,), max_iter=1, random_state=0)
    model.fit(np.random.default_rng(0).random((12, 4)))
    with pytest.raises(error):
        model.transform(X)
    if X.shape[1] == 4:
        with pytest.raises(error):
            cls().fit(X)
    with pytest.raises(ValueError, match="n_components=2"):
        model.inverse_transform(np.ones((3, 5)))


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_unfitted_model_raises_not_fitted(cls):
    with pytest.raises(NotFittedError):
        cls().transform(np.ones((2, 3)))


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(sparsity=0.1, sparsity_penalty="kl"), "code_activation='sigmoid'"),
        (dict(noise="masking", noise_level=1.0), "noise_level < 1"),
        (dict(noise="blur"), "noise"),
        (dict(sparsity=-1.0), "sparsity"),
        (dict(architecture="resnet"), "architecture"),
    ],
)
def test_invalid_autoencoder_parameters(params, match):
    with pytest.raises(ValueError, match=match):
        Autoencoder(**params).fit(np.random.default_rng(0).random((10, 4)))
