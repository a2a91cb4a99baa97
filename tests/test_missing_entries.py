"""Missing entries (NaN) in the per-sample objective: masked losses, gradients and
Gauss-Newton matrices against autograd on the observed entries alone, and rows
without missing entries left exactly as they were."""

import itertools

import numpy as np
import pytest
import torch

from skgfe._flow.derivatives import loss_gradient_and_gauss_newton
from skgfe._flow.lm import lm_solve
from skgfe._flow.objective import GaussianCodePrior, ReconstructionObjective
from skgfe._flow.uncertainty import laplace_covariance
from skgfe._losses import LOSSES
from skgfe._missing import check_observed_rows, iterative_pca
from skgfe._networks import make_mlp

N_COMPONENTS, N_FEATURES = 3, 9
NETWORKS = list(itertools.product(["mlp", "modified_mlp"], [(), (16,)], [False, True]))


def make_problem(architecture, hidden, skip, loss, n_rows=7, seed=0):
    generator = torch.Generator().manual_seed(seed)
    decoder = make_mlp(
        N_COMPONENTS,
        hidden,
        N_FEATURES,
        "tanh",
        architecture,
        generator=generator,
        dtype=torch.float64,
        skip=skip,
    )
    z = torch.randn(n_rows, N_COMPONENTS, generator=generator, dtype=torch.float64)
    draw = torch.randn if loss == "mse" else torch.rand
    X = draw(n_rows, N_FEATURES, generator=generator, dtype=torch.float64)
    # Row 0 complete, row 1 observes a single entry, the others ~1/3 missing.
    missing = torch.rand(n_rows, N_FEATURES, generator=generator) < 1 / 3
    missing[0] = False
    missing[1] = True
    missing[1, 4] = False
    return decoder, z, X.masked_fill(missing, float("nan")), missing


def reference_row(decoder, loss, z_row, x_row):
    """Loss, gradient and J_O^T W_O J_O of one row from its observed entries only."""
    observed = ~torch.isnan(x_row)

    def row_loss(z):
        out = decoder(z[None])[0][observed]
        return LOSSES[loss](out[None], x_row[observed][None])[0]

    z_in = z_row.clone().requires_grad_(True)
    value = row_loss(z_in)
    (grad,) = torch.autograd.grad(value, z_in)
    jac = torch.autograd.functional.jacobian(lambda z: decoder(z[None])[0], z_row)
    jac = jac[observed]
    with torch.no_grad():
        out = decoder(z_row[None])[0][observed]
    n_observed = int(observed.sum())
    if loss == "mse":
        weights = torch.full_like(out, 2.0 / n_observed)
    else:
        s = torch.sigmoid(out)
        weights = s * (1 - s) / n_observed
    return value.detach(), grad, jac.T @ (weights[:, None] * jac)


@pytest.mark.parametrize("params", NETWORKS, ids=str)
@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_masked_derivatives_match_autograd_on_observed_entries(params, loss):
    decoder, z, X, _ = make_problem(*params, loss)
    objective = ReconstructionObjective(decoder, LOSSES[loss], X)
    values, grad = objective(z)
    values_gn, grad_gn, gn = loss_gradient_and_gauss_newton(
        decoder,
        LOSSES[loss],
        z,
        objective.X,
        jacobian_dtype=torch.float64,
        observed=objective.observed,
    )
    for i in range(len(z)):
        ref_value, ref_grad, ref_gn = reference_row(decoder, loss, z[i], X[i])
        torch.testing.assert_close(values[i], ref_value, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(grad[i], ref_grad, rtol=1e-10, atol=1e-13)
        torch.testing.assert_close(values_gn[i], ref_value, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(grad_gn[i], ref_grad, rtol=1e-10, atol=1e-13)
        torch.testing.assert_close(gn[i], ref_gn, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_autograd_path_masks_the_same_way(loss):
    decoder, z, X, _ = make_problem("mlp", (16,), False, loss)
    explicit = ReconstructionObjective(decoder, LOSSES[loss], X)
    graph = ReconstructionObjective(decoder, LOSSES[loss], X, create_graph=True)
    assert explicit.explicit and not graph.explicit
    for a, b in zip(explicit(z), graph(z)):
        torch.testing.assert_close(a, b.detach(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_complete_rows_do_not_depend_on_missing_batch_mates(loss):
    decoder, z, X, missing = make_problem("mlp", (16,), True, loss, n_rows=40)
    complete = ~missing.any(dim=1)
    assert 0 < complete.sum() < len(z)
    X_full = torch.where(torch.isnan(X), 0.5, X)
    with_gaps = ReconstructionObjective(decoder, LOSSES[loss], X)
    without = ReconstructionObjective(decoder, LOSSES[loss], X_full)
    assert without.observed is None
    for a, b in zip(with_gaps.gauss_newton(z), without.gauss_newton(z)):
        assert torch.equal(a[complete], b[complete])
    for a, b in zip(with_gaps(z), without(z)):
        assert torch.equal(a[complete], b[complete])


def test_masked_gauss_newton_of_a_row_is_the_same_alone_or_in_a_batch():
    decoder, z, X, missing = make_problem("mlp", (16,), False, "mse", n_rows=40)
    objective = ReconstructionObjective(decoder, LOSSES["mse"], X)
    batch = objective.gauss_newton(z)
    for i in (1, 5, 39):
        values, grad, gn = objective.gauss_newton(z[i : i + 1], torch.tensor([i]))
        assert torch.equal(values[0], batch[0][i])
        assert torch.equal(gn[0], batch[2][i])
        # The reverse sweep's last bit may change with the row's place in its
        # block, as without missing entries (see skgfe._flow.derivatives).
        torch.testing.assert_close(grad[0], batch[1][i], rtol=1e-14, atol=1e-16)


def linear_decoder_and_samples(seed, missing_rate, n_rows=30):
    """A linear decoder, random samples and a random mask of missing entries."""
    generator = torch.Generator().manual_seed(seed)
    decoder = make_mlp(
        N_COMPONENTS, (), N_FEATURES, "tanh", generator=generator, dtype=torch.float64
    )
    X = torch.randn(n_rows, N_FEATURES, generator=generator, dtype=torch.float64)
    missing = torch.rand(n_rows, N_FEATURES, generator=generator) < missing_rate
    return decoder, X, missing


def test_lm_on_a_linear_decoder_gives_least_squares_on_observed_entries():
    decoder, X, missing = linear_decoder_and_samples(seed=3, missing_rate=0.4)
    missing[:, :N_COMPONENTS] = False  # at least n_components observed per row
    X = X.masked_fill(missing, float("nan"))
    result = lm_solve(
        ReconstructionObjective(decoder, LOSSES["mse"], X),
        torch.zeros(30, N_COMPONENTS, dtype=torch.float64),
        tol=1e-12,
    )
    W = decoder.layers[0].weight.detach().numpy()
    b = decoder.layers[0].bias.detach().numpy()
    for i in range(30):
        observed = ~missing[i].numpy()
        expected, *_ = np.linalg.lstsq(
            W[observed], X[i].numpy()[observed] - b[observed], rcond=None
        )
        # LM stops where the loss is flat to rounding, within about
        # sqrt(eps) of the minimiser (as without missing entries).
        np.testing.assert_allclose(result.z[i].numpy(), expected, rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------ error bars
def linear_problem(n_rows=25, missing_rate=0.4, seed=5):
    generator = torch.Generator().manual_seed(seed)
    decoder = make_mlp(
        N_COMPONENTS, (), N_FEATURES, "tanh", generator=generator, dtype=torch.float64
    )
    z = torch.randn(n_rows, N_COMPONENTS, generator=generator, dtype=torch.float64)
    missing = torch.rand(n_rows, N_FEATURES, generator=generator) < missing_rate
    missing[0] = False
    W = decoder.layers[0].weight.detach()
    return decoder, z, missing, W


def test_laplace_with_a_unit_prior_is_probabilistic_pcas_posterior_covariance():
    decoder, z, missing, W = linear_problem()
    noise_var = 0.3
    precision = (~missing).double() / noise_var
    covariance, output_variance = laplace_covariance(
        decoder, z, precision, torch.eye(N_COMPONENTS, dtype=torch.float64)
    )
    for i in range(len(z)):
        W_O = W[~missing[i]]
        # Tipping & Bishop: M = W_O^T W_O + s^2 I, posterior covariance s^2 M^-1.
        M = W_O.T @ W_O + noise_var * torch.eye(N_COMPONENTS, dtype=torch.float64)
        expected = noise_var * torch.linalg.inv(M)
        torch.testing.assert_close(covariance[i], expected, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(
            output_variance[i], torch.diag(W @ expected @ W.T), rtol=1e-10, atol=1e-12
        )


def test_laplace_without_prior_is_the_least_squares_covariance():
    decoder, z, missing, W = linear_problem(missing_rate=0.3)
    missing[:, :N_COMPONENTS] = False
    noise_var = torch.linspace(0.1, 2.0, N_FEATURES, dtype=torch.float64)
    precision = (~missing).double() / noise_var
    covariance, _ = laplace_covariance(decoder, z, precision)
    for i in range(len(z)):
        observed = ~missing[i]
        W_O, s2 = W[observed], noise_var[observed]
        expected = torch.linalg.inv(W_O.T @ (W_O / s2[:, None]))
        torch.testing.assert_close(covariance[i], expected, rtol=1e-10, atol=1e-12)


def test_laplace_reports_undetermined_codes_as_infinite_without_prior():
    decoder, z, missing, _ = linear_problem()
    missing[3] = True
    missing[3, 0] = False  # one observed entry for three components
    covariance, output_variance = laplace_covariance(decoder, z, (~missing).double())
    assert torch.isinf(covariance[3]).all()
    assert torch.isinf(output_variance[3]).all()
    assert torch.isfinite(covariance[0]).all()
    prior = torch.eye(N_COMPONENTS, dtype=torch.float64)
    covariance, _ = laplace_covariance(decoder, z, (~missing).double(), prior)
    # With the prior, the unobserved directions keep the prior's variance, 1.
    assert torch.isfinite(covariance[3]).all()
    assert torch.linalg.eigvalsh(covariance[3]).max() == pytest.approx(1.0, rel=1e-9)


def test_laplace_matches_autograd_jacobian_on_a_nonlinear_decoder():
    decoder, z, X, missing = make_problem("modified_mlp", (16,), True, "mse")
    precision = (~missing).double() * 4.0
    prior = 0.5 * torch.eye(N_COMPONENTS, dtype=torch.float64)
    covariance, output_variance = laplace_covariance(decoder, z, precision, prior)
    for i in range(len(z)):
        jac = torch.autograd.functional.jacobian(lambda v: decoder(v[None])[0], z[i])
        expected = torch.linalg.inv(jac.T @ (precision[i][:, None] * jac) + prior)
        torch.testing.assert_close(covariance[i], expected, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(
            output_variance[i],
            torch.diag(jac @ expected @ jac.T),
            rtol=1e-9,
            atol=1e-12,
        )
    alone = laplace_covariance(decoder, z[2:3], precision[2:3], prior)
    assert torch.equal(alone[0][0], covariance[2])
    assert torch.equal(alone[1][0], output_variance[2])


# ---------------------------------------------------------------------- losses
@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_losses_average_observed_entries_and_send_no_gradient_to_missing(loss):
    generator = torch.Generator().manual_seed(0)
    output = torch.randn(6, 5, generator=generator, dtype=torch.float64)
    target = torch.rand(6, 5, generator=generator, dtype=torch.float64)
    missing = torch.rand(6, 5, generator=generator) < 0.4
    missing[0] = False
    missing[1, 1:] = True
    missing[1, 0] = False
    output.requires_grad_(True)
    values = LOSSES[loss](output, target.masked_fill(missing, float("nan")))
    (grad,) = torch.autograd.grad(values.sum(), output)
    for i in range(6):
        observed = ~missing[i]
        expected = LOSSES[loss](output[i, observed][None], target[i, observed][None])
        torch.testing.assert_close(values[i], expected[0], rtol=1e-14, atol=0)
    assert torch.isfinite(grad).all()
    assert (grad[missing] == 0).all()
    # A target without NaN: exactly the former computation.
    complete = LOSSES[loss](output, target)
    if loss == "mse":
        former = ((output - target) ** 2).mean(dim=1)
    else:
        former = torch.nn.functional.binary_cross_entropy_with_logits(
            output, target, reduction="none"
        ).mean(dim=1)
    assert torch.equal(complete, former)


# ----------------------------------------------------------------- PCA start
def test_iterative_pca_without_missing_entries_is_pca():
    from sklearn.decomposition import PCA

    X = torch.randn(50, 8, generator=torch.Generator().manual_seed(0)).double()
    mean, components, filled = iterative_pca(X, 3)
    pca = PCA(3).fit(X.numpy())
    np.testing.assert_allclose(mean.numpy(), pca.mean_, rtol=1e-12)
    # Axes agree up to sign.
    np.testing.assert_allclose(
        np.abs(components.numpy() @ pca.components_.T), np.eye(3), atol=1e-10
    )
    assert torch.equal(filled, X)


def test_iterative_pca_recovers_a_low_rank_matrix_from_its_observed_entries():
    generator = torch.Generator().manual_seed(1)
    low_rank = torch.randn(200, 3, generator=generator, dtype=torch.float64) @ (
        torch.randn(3, 12, generator=generator, dtype=torch.float64)
    ) + torch.linspace(-2, 2, 12, dtype=torch.float64)
    missing = torch.rand(200, 12, generator=generator) < 0.3
    mean, components, filled = iterative_pca(
        low_rank.masked_fill(missing, float("nan")), 3, max_iter=2000, tol=1e-20
    )
    torch.testing.assert_close(filled, low_rank, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(mean, low_rank.mean(dim=0), rtol=1e-6, atol=1e-6)


def test_rows_without_observed_entries_are_refused():
    X = np.ones((6, 3))
    X[[2, 4]] = np.nan
    with pytest.raises(ValueError, match=r"2 sample\(s\) have none \(rows 2, 4\)"):
        check_observed_rows(X, "GradientFlowEncoder")
    X[2, 1] = 0.0
    X[4, 0] = 1.0
    check_observed_rows(X, "GradientFlowEncoder")


def test_linear_path_codes_of_incomplete_rows_are_least_squares_on_observed_entries():
    from skgfe._flow.initial import linear_path_codes

    generator = torch.Generator().manual_seed(2)
    decoder = make_mlp(
        N_COMPONENTS, (16,), N_FEATURES, "tanh", generator=generator,
        dtype=torch.float64, skip=True,
    )  # fmt: skip
    X = torch.randn(40, N_FEATURES, generator=generator, dtype=torch.float64)
    missing = torch.rand(40, N_FEATURES, generator=generator) < 0.3
    missing[:10] = False
    codes = linear_path_codes(decoder, X.masked_fill(missing, float("nan")))
    # Complete rows: exactly as without any missing entry in the batch.
    assert torch.equal(codes[:10], linear_path_codes(decoder, X[:10]))
    W = decoder.skip.weight.detach()
    offset = decoder(torch.zeros(1, N_COMPONENTS, dtype=torch.float64)).detach()[0]
    for i in range(10, 40):
        observed = ~missing[i]
        expected = torch.linalg.lstsq(W[observed], (X[i] - offset)[observed][:, None])
        torch.testing.assert_close(
            codes[i], expected.solution[:, 0], rtol=1e-9, atol=1e-10
        )


def test_map_codes_of_a_linear_decoder_are_probabilistic_pcas_posterior_mean():
    decoder, X, missing = linear_decoder_and_samples(seed=4, missing_rate=0.5)
    missing[:5] = False  # complete rows: no prior, least squares as before
    missing[5, 1:] = True  # one observed entry: only the prior determines the rest
    missing[5, 0] = False
    X_missing = X.masked_fill(missing, float("nan"))
    noise = 0.3
    eye = torch.eye(N_COMPONENTS, dtype=torch.float64)
    mean = torch.zeros(N_COMPONENTS, dtype=torch.float64)
    prior = GaussianCodePrior(mean, noise * eye)
    start = torch.zeros(30, N_COMPONENTS, dtype=torch.float64)
    objective = ReconstructionObjective(decoder, LOSSES["mse"], X_missing, prior=prior)
    result = lm_solve(objective, start, tol=1e-13)
    W = decoder.layers[0].weight.detach()
    b = decoder.layers[0].bias.detach()
    for i in range(30):
        observed = ~missing[i]
        W_O, r_O = W[observed], (X[i] - b)[observed]
        if missing[i].any():
            # Tipping & Bishop: M^-1 W_O^T (x_O - mu_O), M = W_O^T W_O + s^2 I.
            expected = torch.linalg.solve(W_O.T @ W_O + noise * eye, W_O.T @ r_O)
        else:
            expected = torch.linalg.lstsq(W_O, r_O[:, None]).solution[:, 0]
        torch.testing.assert_close(result.z[i], expected, rtol=1e-6, atol=1e-7)
