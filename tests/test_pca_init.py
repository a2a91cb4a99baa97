"""decoder_init='pca' (the default for 'mse') and init='linear'."""

import warnings

import numpy as np
import pytest
import torch
from _helpers import fit_quietly, skip_training
from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from sklearn.decomposition import PCA
from sklearn.model_selection import train_test_split

from skgfe import GradientFlowEncoder


def held_out_mse(model, X_test):
    return np.mean((X_test - model.inverse_transform(model.transform(X_test))) ** 2)


def aligned(Z, Z_reference):
    """``Z`` with each column's sign flipped to match ``Z_reference``."""
    signs = np.sign(np.sum(Z * Z_reference, axis=0))
    return Z * signs


@pytest.mark.parametrize(
    "hidden_layer_sizes, architecture",
    [((), "mlp"), ((32,), "mlp"), ((16, 16), "mlp"), ((16, 16), "modified_mlp")],
)
def test_untrained_decoder_is_pca(
    digits_split, monkeypatch, hidden_layer_sizes, architecture
):
    # Training skipped: the decoder is the PCA of all the training samples (no
    # early-stopping split), and the codes (from init='linear') are PCA's scores
    # in the estimator's internal scale, up to the sign of each axis.
    # fit runs run_epochs from skgfe._torch_estimator (was _base, issue 21).
    monkeypatch.setattr("skgfe._torch_estimator.run_epochs", skip_training)
    X_pool, X_test = digits_split
    X_train = X_pool[:300]
    pca = PCA(n_components=6).fit(X_train)
    gfe = GradientFlowEncoder(
        n_components=6,
        hidden_layer_sizes=hidden_layer_sizes,
        architecture=architecture,
        activation="tanh",
        early_stopping=False,
        random_state=0,
    ).fit(X_train)
    assert (gfe.decoder_.skip is not None) == (len(hidden_layer_sizes) > 0)
    Z_pca = pca.transform(X_test)
    Z = gfe.transform(X_test) * gfe.scale_
    np.testing.assert_allclose(aligned(Z, Z_pca), Z_pca, rtol=0, atol=1e-8)
    np.testing.assert_allclose(
        gfe.inverse_transform(gfe.transform(X_test)),
        pca.inverse_transform(Z_pca),
        rtol=0,
        atol=1e-8,
    )
    # The codes start at the PCA scores, which are already stationary.
    _, info = gfe.encode(X_test[:50], return_info=True)
    assert np.all(info["n_steps"] == 0) and info["converged"].all()


def test_barely_trained_default_model_scores_as_pca(digits_split):
    X_pool, X_test = digits_split
    X_train = X_pool[:300]
    pca = PCA(n_components=5).fit(X_train)
    gfe = GradientFlowEncoder(
        n_components=5,
        max_iter=1,
        learning_rate_init=1e-12,
        early_stopping=False,
        random_state=0,
    )
    fit_quietly(gfe, X_train)
    assert gfe.score(X_test) == pytest.approx(-held_out_mse(pca, X_test), rel=1e-6)


def test_untrained_model_is_refitted_on_all_data_when_training_never_beats_it(
    digits_split, monkeypatch
):
    # With early stopping the decoder is initialised from the PCA of the training
    # part; when no check beats that initial model on the validation samples, it
    # is kept and initialised again from all the data: PCA of all of it.
    X_pool, X_test = digits_split
    X_train = X_pool[:200]
    original = GradientFlowEncoder._validation_loss
    calls = []

    def worse_after_training(self, X):
        calls.append(len(calls))
        return original(self, X) + (0.0 if len(calls) == 1 else 1e3)

    monkeypatch.setattr(GradientFlowEncoder, "_validation_loss", worse_after_training)
    monkeypatch.setattr("skgfe._training.MIN_TRAINING_STEPS", 0)  # count checks
    gfe = GradientFlowEncoder(
        n_components=4, hidden_layer_sizes=(16,), max_iter=200, random_state=0
    )
    fit_quietly(gfe, X_train)
    # The initial model, the first trained check (the bar for the plateau test)
    # and n_iter_no_change checks that do not beat it.
    assert len(calls) == 2 + gfe.n_iter_no_change
    assert gfe.kept_start_
    pca = PCA(n_components=4).fit(X_train)
    np.testing.assert_allclose(
        gfe.inverse_transform(gfe.transform(X_test)),
        pca.inverse_transform(pca.transform(X_test)),
        rtol=0,
        atol=1e-8,
    )
    assert not gfe.decoder_.layers[-1].weight.any()  # the residual is still zero


def test_linear_decoder_at_defaults_matches_pca_on_digits():
    X = load_digits().data
    X_train, X_test = X[:500], X[500:]
    pca_error = held_out_mse(PCA(n_components=8).fit(X_train), X_test)
    gfe = GradientFlowEncoder(n_components=8, hidden_layer_sizes=(), random_state=0)
    fit_quietly(gfe, X_train)
    ratio = held_out_mse(gfe, X_test) / pca_error
    assert abs(ratio - 1) <= 0.005, ratio


@pytest.mark.parametrize("n_components", [2, 3, 4])
@pytest.mark.parametrize(
    "load", [load_wine, load_breast_cancer], ids=["wine", "cancer"]
)
def test_default_model_is_never_worse_than_pca_on_raw_real_data(load, n_components):
    # Raw, unscaled features (wine: from ~0.1 to ~1000; breast cancer: up to
    # ~4000). Nearly linear data: the PCA start is kept when training cannot beat
    # it, otherwise training beats it. Measured ratios (random_state=0): wine 1.0
    # (PCA kept) for 2-4 components; breast cancer 0.70, 0.74, 0.77.
    X = load().data
    X_train, X_test = train_test_split(X, test_size=0.3, random_state=0)
    pca_error = held_out_mse(PCA(n_components=n_components).fit(X_train), X_test)
    gfe = GradientFlowEncoder(n_components=n_components, random_state=0)
    fit_quietly(gfe, X_train)
    # 1 + 1e-9, not 1: when the PCA start is kept its reconstruction is PCA's up
    # to rounding (observed ratios 1 +- 2e-15).
    assert held_out_mse(gfe, X_test) <= pca_error * (1 + 1e-9)


def test_decoder_init_pca_needs_mse():
    X = np.random.default_rng(0).random((20, 4))
    with pytest.raises(ValueError, match="decoder_init='pca' needs loss='mse'"):
        GradientFlowEncoder(decoder_init="pca", loss="bce").fit(X)


@pytest.mark.parametrize(
    "params, skip, init",
    [
        (dict(), True, "amortized"),
        (dict(loss="bce"), False, "zeros"),
        (dict(decoder_init="random"), False, "zeros"),
        (dict(decoder_init="pca", init="zeros"), True, "zeros"),
        (dict(decoder_init="random", init="linear"), False, "linear"),
    ],
)
def test_auto_settings_resolve(params, skip, init, monkeypatch):
    # fit runs run_epochs from skgfe._torch_estimator (was _base, issue 21).
    monkeypatch.setattr("skgfe._torch_estimator.run_epochs", skip_training)
    X = np.random.default_rng(0).random((20, 4))
    gfe = GradientFlowEncoder(n_components=2, hidden_layer_sizes=(8,), **params)
    gfe.fit(X)
    assert (gfe.decoder_.skip is not None) == skip
    assert gfe._resolved_init() == init  # init resolved (was _init)
    assert np.all(np.isfinite(gfe.transform(X)))


def test_linear_init_on_a_random_decoder_starts_at_zero_codes():
    # A decoder without a linear path has no least-squares code: 'linear' falls
    # back to the origin.
    from skgfe._flow import linear_path_codes
    from skgfe._networks import make_mlp

    decoder = make_mlp(2, (8,), 5, "tanh", dtype=torch.float64)
    X = torch.ones(3, 5, dtype=torch.float64)
    assert torch.equal(linear_path_codes(decoder, X), torch.zeros(3, 2).double())


def test_more_components_than_the_data_have(monkeypatch):
    # PCA fills as many axes as the data have (3 features); the others start as
    # zero columns of the linear path, and the codes stay finite.
    X = np.random.default_rng(0).normal(size=(40, 3)) * [1.0, 10.0, 100.0]
    gfe = GradientFlowEncoder(n_components=5, max_iter=5, random_state=0)
    fit_quietly(gfe, X)
    Z = gfe.transform(X)
    assert Z.shape == (40, 5) and np.all(np.isfinite(Z))
    assert held_out_mse(gfe, X) <= 1e-6 * np.mean((X - X.mean(axis=0)) ** 2)
    # Fewer samples than components.
    tiny = GradientFlowEncoder(n_components=5, max_iter=2, random_state=0)
    fit_quietly(tiny, X[:3])
    assert np.all(np.isfinite(tiny.transform(X)))


def test_linear_data_keep_the_pca_start_and_say_so_without_a_warning(capsys):
    # Rank-3 linear data plus noise: PCA is the optimum, training cannot beat it
    # on held-out samples, and fit says so (an attribute and, with verbose, the
    # closing line) without warning: that is the right answer.
    rng = np.random.RandomState(0)
    X = rng.normal(size=(200, 3)) @ rng.normal(size=(3, 12))
    X += 0.01 * rng.normal(size=X.shape)
    gfe = GradientFlowEncoder(n_components=3, random_state=0, verbose=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gfe.fit(X)
    assert gfe.kept_start_
    end = capsys.readouterr().out.strip().splitlines()[-1]
    assert end.startswith(f"Training stopped after {gfe.n_iter_} epochs: the ")
    assert "kept the PCA start" in end
    pca = PCA(n_components=3).fit(X)
    np.testing.assert_allclose(
        gfe.inverse_transform(gfe.transform(X)),
        pca.inverse_transform(pca.transform(X)),
        atol=1e-8,
    )


def test_curved_data_leave_the_pca_start():
    # A curve through 3-D (a helix, one latent variable): one component of PCA
    # is a poor fit, and training leaves the PCA start for good.
    t = np.random.RandomState(0).uniform(0, 3 * np.pi, size=300)
    X = np.c_[np.cos(t), np.sin(t), 0.3 * t]
    gfe = fit_quietly(GradientFlowEncoder(n_components=1, random_state=0), X)
    assert not gfe.kept_start_
    assert held_out_mse(gfe, X) < 0.8 * held_out_mse(PCA(1).fit(X), X)


def test_warm_start_resumes_the_training_codes(monkeypatch):
    # A second fit on the same samples goes on from the training codes the
    # first reached (the block-coordinate descent of warm codes continues);
    # other samples start their codes from init.
    X = load_digits().data[:120]
    gfe = GradientFlowEncoder(
        n_components=3,
        hidden_layer_sizes=(16,),
        max_iter=20,
        tol=0,
        warm_start=True,
        random_state=0,
    )
    n_train = len(X) - round(0.1 * len(X))
    starts = []
    # _flow_start_codes: the codes the flows start from (was _initial_codes).
    original = GradientFlowEncoder._flow_start_codes

    def record(self, X_scaled):
        starts.append(len(X_scaled))
        return original(self, X_scaled)

    monkeypatch.setattr(GradientFlowEncoder, "_flow_start_codes", record)
    fit_quietly(gfe, X)
    assert starts.count(n_train) == 1 and not gfe.kept_start_
    starts.clear()
    fit_quietly(gfe, X)
    assert starts.count(n_train) == 0 and gfe.n_iter_ == 40
    fit_quietly(gfe, X[:100])
    assert starts.count(100 - 10) == 1


def test_best_validation_score_is_the_kept_weights_score(digits_split):
    # The score of the weights fit keeps: a check's (an entry of the list) or,
    # when the start was kept, the untrained model's, measured again here.
    X_pool, _ = digits_split
    for n_components, kept in [(8, False), (2, None)]:
        gfe = fit_quietly(
            GradientFlowEncoder(
                n_components, hidden_layer_sizes=(16,), max_iter=30, random_state=0
            ),
            X_pool[:150],
        )
        assert kept is None or gfe.kept_start_ == kept
        if gfe.kept_start_:
            assert gfe.best_validation_score_ not in gfe.validation_scores_
        else:
            assert gfe.best_validation_score_ in gfe.validation_scores_
