"""GradientFlowEncoder: accuracy against references, invariances, API and bad input."""

import pickle
import re
import warnings

import numpy as np
import pytest
import torch
from scipy import sparse
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import skgfe._flow.dispatch as dispatch
from skgfe import GradientFlowEncoder
from skgfe._training import MIN_TRAINING_STEPS


def small_gfe(**params):
    """A quick configuration for API tests that do not measure accuracy."""
    defaults = dict(
        n_components=3, hidden_layer_sizes=(16,), max_iter=3, random_state=0
    )
    return GradientFlowEncoder(**{**defaults, **params})


def held_out_mse(model, X_test):
    return np.mean((X_test - model.inverse_transform(model.transform(X_test))) ** 2)


@pytest.fixture(scope="module")
def fitted_small(digits_split):
    # Three full epochs (no early stopping): with it, three epochs do not beat the
    # PCA start on the validation samples, and the decoder would stay linear.
    X_pool, _ = digits_split
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # No weight averaging: the weights of the last step, the furthest from
        # the PCA start that three epochs get.
        gfe = small_gfe(early_stopping=False, weight_averaging=0.0).fit(X_pool[:150])
    assert gfe.decoder_.layers[-1].weight.abs().max() > 0  # trained residual
    return gfe


# The paper's setting: AMD flows from z = 0 on a randomly initialised decoder,
# trained for a fixed number of epochs.
PAPER_SETTINGS = dict(
    solver="amd", decoder_init="random", init="zeros", early_stopping=False
)


@pytest.fixture(scope="module")
def fitted_paper(digits_split):
    X_pool, _ = digits_split
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return small_gfe(**PAPER_SETTINGS).fit(X_pool[:150])


# --------------------------------------------------------------- accuracy


@pytest.mark.slow
def test_linear_decoder_matches_pca_optimum(digits_split):
    # PCA is the optimal linear decoder for squared error (Eckart-Young), so a
    # linear GFE trained to convergence must reach its held-out error. From a
    # random decoder, trained on all samples: the default PCA start (and early
    # stopping's fallback to it) would make this test vacuous; see
    # tests/test_pca_init.py for the defaults.
    X_pool, X_test = digits_split
    X_train = X_pool[:500]
    pca = PCA(n_components=8).fit(X_train)
    gfe = GradientFlowEncoder(
        n_components=8,
        hidden_layer_sizes=(),
        decoder_init="random",
        early_stopping=False,
        max_iter=60,
        batch_size=100,
        learning_rate_init=1e-2,
        tol=0,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gfe.fit(X_train)
    ratio = held_out_mse(gfe, X_test) / held_out_mse(pca, X_test)
    assert 0.98 <= ratio <= 1.02, ratio


@pytest.mark.slow
def test_default_decoder_beats_pca(digits_split):
    X_pool, X_test = digits_split
    X_train = X_pool[:1000]
    pca_error = held_out_mse(PCA(n_components=8).fit(X_train), X_test)
    gfe = GradientFlowEncoder(n_components=8, random_state=0).fit(X_train)
    gfe_error = held_out_mse(gfe, X_test)
    assert gfe_error < 0.8 * pca_error, (gfe_error, pca_error)
    assert -gfe.score(X_test) == pytest.approx(gfe_error, rel=1e-10)


@pytest.mark.parametrize("model", ["fitted_small", "fitted_paper"])
def test_codes_are_stationary_points(model, digits_split, request):
    # Recompute the gradient of each sample's loss at its returned code with a
    # plain torch evaluation of the decoder (nn.Linear layers, not the solver's
    # path) and check it against the tolerance the flow claims to have met.
    # 'fitted_small': the defaults (LM from the linear path's code, a decoder
    # with a skip path); 'fitted_paper': AMD from z = 0 on a random decoder.
    _, X_test = digits_split
    gfe = request.getfixturevalue(model)
    Z, info = gfe.encode(X_test[:100], return_info=True)
    assert info["converged"].mean() > 0.95
    assert np.median(info["n_steps"]) > 0  # the solver had work to do
    X_scaled = torch.tensor((X_test[:100] - gfe.mean_) / gfe.scale_)
    z = torch.tensor(Z, requires_grad=True)
    h = z
    layers = gfe.decoder_.layers
    for i, layer in enumerate(layers):
        h = torch.nn.functional.linear(h, layer.weight, layer.bias)
        if i < len(layers) - 1:
            h = torch.nn.functional.elu(h)
    skip = gfe.decoder_.skip  # the linear path of a PCA-initialised decoder
    if skip is not None:
        h = h + torch.nn.functional.linear(z, skip.weight, skip.bias)
    loss = ((h - X_scaled) ** 2).mean(dim=1)
    (grad,) = torch.autograd.grad(loss.sum(), z)
    grad_norm = grad.norm(dim=1).numpy()
    converged = info["status"] == "converged"
    assert np.all(grad_norm[converged] <= gfe.flow_tol * (1 + 1e-6))
    np.testing.assert_allclose(grad_norm, info["grad_norm"], rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(loss.detach().numpy(), info["loss"], rtol=1e-10)


@pytest.mark.parametrize("model", ["fitted_small", "fitted_paper"])
def test_flow_lowers_loss_below_starting_code(model, digits_split, request):
    _, X_test = digits_split
    gfe = request.getfixturevalue(model)
    X = X_test[:50]
    Z, info = gfe.encode(X, return_info=True)
    with torch.no_grad():
        # _flow_start_codes: the codes the flows start from (was _initial_codes).
        z0 = gfe._flow_start_codes(gfe._scale(gfe._to_tensor(X))).numpy()
    if model == "fitted_paper":
        assert not z0.any()
    error_at_start = np.mean((X - gfe.inverse_transform(z0)) ** 2, axis=1)
    error = -gfe.score_samples(X)
    moved = info["n_steps"] > 0
    assert moved.mean() > 0.9
    assert np.all(error[moved] < error_at_start[moved])
    assert np.all(error <= error_at_start)


# ------------------------------------------------------------- invariance


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_batch_one_by_one_and_shuffled_codes_agree(digits_split, dtype):
    X_pool, X_test = digits_split
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # Full epochs: a trained, non-linear decoder whose codes take LM steps.
        gfe = small_gfe(early_stopping=False).fit(X_pool[:150].astype(dtype))
    X = X_test[:40].astype(dtype)
    Z_batch = gfe.transform(X)
    Z_single = np.vstack([gfe.transform(X[i : i + 1]) for i in range(len(X))])
    order = np.random.RandomState(0).permutation(len(X))
    Z_shuffled = gfe.transform(X[order])
    assert Z_batch.dtype == dtype
    np.testing.assert_allclose(Z_single, Z_batch, rtol=0, atol=1e-7)
    np.testing.assert_allclose(Z_shuffled, Z_batch[order], rtol=0, atol=1e-7)


def test_same_random_state_gives_identical_codes(digits_split):
    X_pool, X_test = digits_split
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # A random decoder: a PCA-initialised one that training does not move
        # past PCA (3 epochs) is the same whatever the seed.
        first = small_gfe(random_state=3, decoder_init="random").fit(X_pool[:120])
        second = small_gfe(random_state=3, decoder_init="random").fit(X_pool[:120])
        other = small_gfe(random_state=4, decoder_init="random").fit(X_pool[:120])
    np.testing.assert_array_equal(first.transform(X_test), second.transform(X_test))
    assert first.loss_curve_ == second.loss_curve_
    assert not np.allclose(first.transform(X_test), other.transform(X_test))


def test_random_state_does_not_touch_global_torch_seed(digits_split):
    X_pool, _ = digits_split
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        small_gfe(random_state=0).fit(X_pool[:60])
    assert torch.equal(torch.rand(3), expected)


def test_float64_input_computes_in_float64(digits_split):
    X_pool, _ = digits_split
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gfe64 = small_gfe().fit(X_pool[:60])
        gfe32 = small_gfe().fit(X_pool[:60].astype(np.float32))
    assert all(p.dtype == torch.float64 for p in gfe64.decoder_.parameters())
    assert all(p.dtype == torch.float32 for p in gfe32.decoder_.parameters())
    assert gfe32.transform(X_pool[:5]).dtype == np.float64  # output follows input


# -------------------------------------------------------------- API / sklearn


def test_pickle_round_trip_gives_identical_transforms(fitted_small, digits_split):
    _, X_test = digits_split
    restored = pickle.loads(pickle.dumps(fitted_small))
    np.testing.assert_array_equal(
        restored.transform(X_test[:30]), fitted_small.transform(X_test[:30])
    )
    # A restored model can keep training.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        restored.partial_fit(X_test[:30])
    assert restored.n_iter_ == fitted_small.n_iter_ + 1


def test_grid_search_over_pipeline_in_parallel(digits_split):
    X_pool, _ = digits_split
    pipe = make_pipeline(StandardScaler(), small_gfe(max_iter=2))
    search = GridSearchCV(
        pipe,
        {"gradientflowencoder__n_components": [1, 4]},
        cv=2,
        n_jobs=2,
        error_score="raise",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search.fit(X_pool[:80])
    scores = search.cv_results_["mean_test_score"]
    assert np.all(np.isfinite(scores)) and np.all(scores < 0)
    # More components reconstruct better, so the search must pick 4.
    assert search.best_params_ == {"gradientflowencoder__n_components": 4}


def test_set_output_pandas_names_columns(fitted_small, digits_split):
    pd = pytest.importorskip("pandas")
    _, X_test = digits_split
    gfe = clone(fitted_small).set_output(transform="pandas")
    df = pd.DataFrame(X_test[:60], columns=[f"pixel{i}" for i in range(64)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        out = gfe.fit(df).transform(df)
    assert list(out.columns) == [f"gradientflowencoder{i}" for i in range(3)]
    assert list(gfe.feature_names_in_) == list(df.columns)


def test_partial_fit_and_warm_start_continue_training(digits_split):
    X_pool, _ = digits_split
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # Enough epochs to beat the PCA start (a fit that keeps its start
        # restarts from it, with a fresh optimiser, on the next warm start).
        gfe = small_gfe(max_iter=20, warm_start=True, tol=0).fit(X_pool[:100])
        assert not gfe.kept_start_
        first_curve = list(gfe.loss_curve_)
        gfe.fit(X_pool[:100])
    assert gfe.n_iter_ == 40
    assert gfe.loss_curve_[:20] == first_curve
    assert gfe.loss_curve_[-1] < gfe.loss_curve_[0]
    online = small_gfe()
    for _ in range(3):
        online.partial_fit(X_pool[:100])
    assert online.n_iter_ == 3 and len(online.loss_curve_) == 3


def test_early_stopping_keeps_validation_scores(digits_split):
    X_pool, _ = digits_split
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gfe = small_gfe(early_stopping=True, max_iter=25).fit(X_pool[:100])
    # 90 training samples, batch 64: 2 steps per epoch, a check every 5 epochs
    # (at most one per 10 steps), plus the untrained model as a candidate.
    assert len(gfe.validation_scores_) == gfe.n_iter_ // 5
    assert gfe.best_validation_score_ >= max(gfe.validation_scores_)


def test_verbose_prints_one_line_per_epoch(digits_split, capsys):
    X_pool, _ = digits_split
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        small_gfe(max_iter=2, verbose=1).fit(X_pool[:50])
    *lines, end = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert len(lines) == 2
    assert re.match(r"Training stopped after 2 epochs: max_iter=2 epochs", end)
    assert re.match(
        r"Iteration 1, loss = [\d.]+, flow steps = [\d.]+, time = [\d.]+s", lines[0]
    )


def test_default_fit_converges_without_warning_on_tiny_data():
    X = np.random.RandomState(0).normal(size=(30, 5))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        gfe = GradientFlowEncoder(n_components=2, random_state=0, max_iter=300)
        gfe.fit(X)
    # 27 training samples make one optimiser step an epoch: the budget ends
    # before the floor of MIN_TRAINING_STEPS steps, on a plateau (no warning).
    assert gfe.n_iter_ == 300 < MIN_TRAINING_STEPS


def test_get_feature_names_out(fitted_small):
    names = fitted_small.get_feature_names_out()
    assert list(names) == [
        "gradientflowencoder0",
        "gradientflowencoder1",
        "gradientflowencoder2",
    ]


def test_cuda_request_without_cuda_is_a_clear_error(digits_split):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(ValueError, match="device='cuda'"):
        small_gfe(device="cuda").fit(digits_split[0][:20])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("lm_rows", [None, 7])
def test_cuda_matches_cpu(digits_split, lm_rows, monkeypatch):
    if lm_rows is not None:  # waiting samples join the running ones on the GPU too
        monkeypatch.setattr(dispatch, "LM_CHUNK_ROWS", lm_rows)
    X_pool, X_test = digits_split
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        cpu = small_gfe().fit(X_pool[:100])
    gpu = pickle.loads(pickle.dumps(cpu)).set_params(device="cuda")
    np.testing.assert_allclose(
        gpu.transform(X_test[:20]), cpu.transform(X_test[:20]), atol=1e-6
    )
    restored = pickle.loads(pickle.dumps(gpu))  # a GPU model pickles to CPU tensors
    assert next(restored.decoder_.parameters()).device.type == "cpu"


# --------------------------------------------------------------- data scale


@pytest.mark.parametrize(
    "make_X",
    [
        lambda rng: 100 + 5 * rng.normal(size=(120, 10)),
        lambda rng: rng.normal(size=(120, 10)) * np.logspace(-3, 6, 10),
    ],
    ids=["around-100", "1e-3-to-1e6"],
)
def test_unscaled_data_stays_stable(make_X):
    rng = np.random.RandomState(0)
    latent = rng.normal(size=(120, 2))
    X = make_X(rng) + latent @ rng.normal(size=(2, 10)) * make_X(rng).std(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # the flow must converge
        gfe = GradientFlowEncoder(n_components=2, max_iter=20, random_state=0)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Stochastic optimizer")
            gfe.fit(X)
        Z = gfe.transform(X)
    assert np.all(np.isfinite(Z))
    # Reconstruction beats predicting the mean, in the data's own units.
    assert -gfe.score(X) < 0.9 * np.mean((X - X.mean(axis=0)) ** 2)


def test_bce_rejects_data_outside_unit_interval(digits_split):
    with pytest.raises(ValueError, match=r"loss='bce' needs data in \[0, 1\]"):
        small_gfe(loss="bce").fit(digits_split[0][:20])


def test_bce_reconstructs_probabilities(digits_split):
    X = digits_split[0][:100] / 16.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gfe = small_gfe(loss="bce", max_iter=20, max_flow_steps=3000).fit(X)
    X_hat = gfe.inverse_transform(gfe.transform(X))
    assert X_hat.min() >= 0 and X_hat.max() <= 1
    assert -gfe.score(X) < np.mean((X - X.mean(axis=0)) ** 2)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "X, error, match",
    [
        # NaN is a missing entry (tests/test_gfe_missing.py); a sample that
        # observes nothing is refused.
        (np.vstack([np.full(64, np.nan), np.ones(64)]), ValueError, r"rows 0\)"),
        (np.array([[1.0, np.inf], [2.0, 3.0]]), ValueError, "infinity"),
        (np.arange(5.0), ValueError, "Expected 2D array"),
        (np.zeros((2, 2, 2)), ValueError, "dim 3"),
        (np.zeros((0, 3)), ValueError, "0 sample"),
        (np.array([["a", "b"], ["c", "d"]], dtype=object), ValueError, "convert"),
        (np.ones((3, 2), dtype=complex), ValueError, "Complex data not supported"),
        (sparse.csr_matrix(np.eye(3)), TypeError, "dense data is required"),
    ],
    ids=["nan", "inf", "1d", "3d", "empty", "strings", "complex", "sparse"],
)
@pytest.mark.parametrize("method", ["fit", "transform"])
def test_bad_input_raises_clear_error(fitted_small, X, error, match, method):
    if method == "fit":
        with pytest.raises(error, match=match):
            small_gfe().fit(X)
    else:
        with pytest.raises(error, match=match):
            fitted_small.transform(X)


def test_wrong_number_of_features_at_transform(fitted_small):
    with pytest.raises(ValueError, match="expecting 64 features"):
        fitted_small.transform(np.ones((2, 10)))
    with pytest.raises(ValueError, match="n_components=3"):
        fitted_small.inverse_transform(np.ones((2, 5)))


def test_unfitted_model_raises_not_fitted():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        small_gfe().transform(np.ones((2, 3)))


def test_inputs_are_never_modified(digits_split):
    X = digits_split[0][:60].copy()
    X_before = X.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gfe = small_gfe().fit(X)
    Z = gfe.transform(X)
    Z_before = Z.copy()
    gfe.inverse_transform(Z)
    gfe.score(X)
    np.testing.assert_array_equal(X, X_before)
    np.testing.assert_array_equal(Z, Z_before)


def test_read_only_memmap_input_emits_no_warning(tmp_path, digits_split):
    X = digits_split[0][:60]
    path = tmp_path / "X.npy"
    np.save(path, X)
    X_mm = np.load(path, mmap_mode="r")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        gfe = small_gfe().fit(X_mm)
        Z = gfe.transform(X_mm)
    np.testing.assert_array_equal(Z, gfe.transform(np.array(X)))


def test_keyboard_interrupt_leaves_usable_model(digits_split, monkeypatch):
    X_pool, X_test = digits_split
    gfe = small_gfe(max_iter=10, batch_size=50)
    original = GradientFlowEncoder._batch_loss
    calls = {"n": 0}

    def interrupted(self, X_batch, generator, rows=None):
        calls["n"] += 1
        if calls["n"] == 5:  # second batch of the third epoch
            raise KeyboardInterrupt
        return original(self, X_batch, generator, rows=rows)

    monkeypatch.setattr(GradientFlowEncoder, "_batch_loss", interrupted)
    with pytest.warns(UserWarning, match="interrupted after 2 epochs"):
        gfe.fit(X_pool[:100])
    assert gfe.n_iter_ == 2 and len(gfe.loss_curve_) == 2
    Z = gfe.transform(X_test[:10])
    assert np.all(np.isfinite(Z))


def test_nan_training_loss_restores_the_starting_weights(digits_split, monkeypatch):
    # Two minibatches per epoch, so the first check comes after epoch 5: a NaN
    # in epoch 2 comes before any measured weights, and those fit started from
    # come back (not the weights of the epoch that produced the NaN).
    X_pool, X_test = digits_split
    gfe = small_gfe(max_iter=5, batch_size=50, early_stopping=False)
    original = GradientFlowEncoder._batch_loss
    calls = {"n": 0}
    snapshots = []

    def poisoned(self, X_batch, generator, rows=None):
        calls["n"] += 1
        if calls["n"] == 1:  # before the first step: the starting weights
            snapshots.append([p.detach().clone() for p in self.decoder_.parameters()])
        loss, info = original(self, X_batch, generator, rows=rows)
        if calls["n"] == 4:
            loss = loss * float("nan")
        return loss, info

    monkeypatch.setattr(GradientFlowEncoder, "_batch_loss", poisoned)
    with pytest.warns(ConvergenceWarning, match="training loss became nan"):
        gfe.fit(X_pool[:100])
    assert gfe.n_iter_ == 1
    for p, saved in zip(gfe.decoder_.parameters(), snapshots[0]):
        torch.testing.assert_close(p.detach(), saved, rtol=0, atol=0)
    assert np.all(np.isfinite(gfe.transform(X_test[:10])))


@pytest.mark.parametrize("model", ["fitted_small", "fitted_paper"])
def test_non_finite_decoder_raises_instead_of_nan_codes(model, digits_split, request):
    broken = pickle.loads(pickle.dumps(request.getfixturevalue(model)))
    with torch.no_grad():
        broken.decoder_.layers[-1].bias[0] = float("nan")
    with pytest.raises(FloatingPointError, match="not finite"):
        broken.transform(digits_split[1][:5])


def test_overflowing_steps_are_rejected_not_returned(fitted_paper, digits_split):
    # A first step of 1e200 overflows the decoder output to infinity. AMD must
    # reject it and shrink (hundreds of halvings) until a step lowers the loss,
    # then go on to the same stationary codes: never NaN or inf.
    # A tight flow_tol: the two flows take different paths, and along flat
    # directions a code is determined only to about flow_tol / curvature.
    _, X_test = digits_split
    tight = pickle.loads(pickle.dumps(fitted_paper)).set_params(flow_tol=1e-4)
    reference = tight.transform(X_test[:20])
    wild = pickle.loads(pickle.dumps(tight)).set_params(step_size=1e200)
    Z, info = wild.encode(X_test[:20], return_info=True)
    assert np.all(np.isfinite(Z))
    assert info["converged"].all()
    assert np.all(info["n_evals"] > 600)  # log2(1e200) ~ 664 rejected steps
    np.testing.assert_allclose(Z, reference, atol=0.05)


def test_stalled_flow_is_reported_not_counted_as_converged():
    # An objective whose loss no step can lower (flat to working precision) while
    # its gradient is not small: the flow must stop and report it as stalled.
    from skgfe._flow import STATUS_NAMES, amd_flow

    def flat(z, rows):
        return torch.zeros(len(z), dtype=z.dtype), torch.ones_like(z)

    result = amd_flow(flat, torch.zeros(4, 2, dtype=torch.float64), tol=1e-2)
    assert not result.converged.any()
    assert {STATUS_NAMES[int(s)] for s in result.status} == {"stalled"}
    assert torch.all(result.z == 0)  # no rejected step was taken
    assert torch.all(result.n_evals == 1 + 21)  # dt: 1, 1/2, ..., 2**-20, stop
