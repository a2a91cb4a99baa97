"""Hand-written latent derivatives of the decoders against autograd."""

import itertools

import pytest
import torch

from skgfe._flow.derivatives import (
    loss_and_gradient,
    loss_gradient_and_gauss_newton,
    supports_explicit_derivatives,
)
from skgfe._flow.objective import ReconstructionObjective
from skgfe._losses import LOSSES
from skgfe._networks import make_mlp

ACTIVATIONS = ["identity", "relu", "elu", "tanh", "gelu", "sigmoid"]
HIDDEN = [(), (16,), (16, 16)]
N_COMPONENTS, N_FEATURES = 3, 7

NETWORKS = list(
    itertools.product(["mlp", "modified_mlp"], ACTIVATIONS, HIDDEN, [False, True])
)


def network_id(params):
    architecture, activation, hidden, skip = params
    layers = "x".join(map(str, hidden)) or "linear"
    return f"{architecture}-{activation}-{layers}-{'skip' if skip else 'noskip'}"


def make_problem(architecture, activation, hidden, skip, loss, n_rows, seed=0):
    """A float64 decoder with non-trivial weights, codes and targets for ``loss``."""
    generator = torch.Generator().manual_seed(seed)
    decoder = make_mlp(
        N_COMPONENTS,
        hidden,
        N_FEATURES,
        activation,
        architecture,
        generator=generator,
        dtype=torch.float64,
        skip=skip,
    )
    z = 1.5 * torch.randn(
        n_rows, N_COMPONENTS, generator=generator, dtype=torch.float64
    )
    if loss == "mse":
        X = torch.randn(n_rows, N_FEATURES, generator=generator, dtype=torch.float64)
    else:
        X = torch.rand(n_rows, N_FEATURES, generator=generator, dtype=torch.float64)
    return decoder, z, X


def autograd_reference(decoder, loss, z, X):
    """Per-row losses, gradients and J^T W J, all by autograd."""
    function = LOSSES[loss]
    z_in = z.clone().requires_grad_(True)
    values = function(decoder(z_in), X)
    (grad,) = torch.autograd.grad(values.sum(), z_in)
    # Rows are independent: the Jacobian of the batch is block diagonal.
    full = torch.autograd.functional.jacobian(decoder, z)  # (n, p, n, k)
    jac = torch.stack([full[i, :, i, :] for i in range(len(z))])  # (n, p, k)
    with torch.no_grad():
        output = decoder(z)
    if loss == "mse":
        weights = torch.full_like(output, 2.0 / N_FEATURES)
    else:
        s = torch.sigmoid(output)
        weights = s * (1 - s) / N_FEATURES
    gn = jac.transpose(1, 2) @ (weights.unsqueeze(-1) * jac)
    return values.detach(), grad, gn


@pytest.mark.parametrize("params", NETWORKS, ids=network_id)
@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_explicit_derivatives_match_autograd(params, loss):
    decoder, z, X = make_problem(*params, loss, n_rows=6)
    assert (decoder.skip is not None) == (params[3] and len(params[2]) > 0)
    assert supports_explicit_derivatives(decoder, LOSSES[loss])
    values, grad, gn = autograd_reference(decoder, loss, z, X)
    # Far above the tolerance: the comparison is not of (near) zeros.
    assert grad.abs().max() > 1e-5 and gn.abs().max() > 1e-7

    v1, g1 = loss_and_gradient(decoder, LOSSES[loss], z, X)
    v2, g2, gn2 = loss_gradient_and_gauss_newton(decoder, LOSSES[loss], z, X)
    for mine, reference in [(v1, values), (g1, grad), (v2, values), (g2, grad)]:
        assert mine.shape == reference.shape and mine.dtype == torch.float64
        torch.testing.assert_close(mine, reference, rtol=0, atol=1e-10)
    assert gn2.shape == (6, N_COMPONENTS, N_COMPONENTS)
    torch.testing.assert_close(gn2, gn, rtol=0, atol=1e-10)
    # A Gauss-Newton matrix is symmetric positive semi-definite.
    torch.testing.assert_close(gn2, gn2.transpose(1, 2), rtol=0, atol=1e-14)
    assert torch.linalg.eigvalsh(gn2).min() > -1e-12
    # No graph is built: these are plain tensors.
    assert not any(t.requires_grad for t in (v1, g1, v2, g2, gn2))


# A handful of networks for the batch-invariance checks (each evaluates 70 rows
# one at a time).
INVARIANCE_NETWORKS = [
    ("mlp", "elu", (16,), True),
    ("mlp", "tanh", (16, 16), False),
    ("mlp", "identity", (), False),
    ("modified_mlp", "tanh", (16, 16), True),
    ("modified_mlp", "gelu", (16,), False),
]


@pytest.mark.parametrize("params", INVARIANCE_NETWORKS, ids=network_id)
@pytest.mark.parametrize("loss", ["mse", "bce"])
@pytest.mark.parametrize("jacobian_dtype", [torch.float64, torch.float32])
def test_gauss_newton_of_a_row_is_the_same_alone_or_in_a_batch(
    params, loss, jacobian_dtype
):
    decoder, z, X = make_problem(*params, loss, n_rows=70)
    batch = loss_gradient_and_gauss_newton(
        decoder, LOSSES[loss], z, X, jacobian_dtype=jacobian_dtype
    )
    for i in range(70):
        values, grad, gn = loss_gradient_and_gauss_newton(
            decoder, LOSSES[loss], z[i : i + 1], X[i : i + 1], jacobian_dtype
        )
        assert torch.equal(values[0], batch[0][i]), i
        assert torch.equal(gn[0], batch[2][i]), i
        # The gradient comes from the reverse sweep (see the next test).
        torch.testing.assert_close(grad[0], batch[1][i], rtol=4e-16, atol=4e-16)


@pytest.mark.parametrize("params", INVARIANCE_NETWORKS, ids=network_id)
@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_float32_jacobian_gives_float32_accurate_gauss_newton_and_exact_gradient(
    params, loss
):
    decoder, z, X = make_problem(*params, loss, n_rows=40)
    v64, g64, gn64 = loss_gradient_and_gauss_newton(decoder, LOSSES[loss], z, X)
    v32, g32, gn32 = loss_gradient_and_gauss_newton(
        decoder, LOSSES[loss], z, X, jacobian_dtype=torch.float32
    )
    # Losses and gradients do not go through the Jacobian: unchanged, bit for bit.
    assert torch.equal(v32, v64) and torch.equal(g32, g64)
    assert gn32.dtype == torch.float64
    # The matrix itself is rounded to float32 (and so differs from float64's).
    scale = gn64.abs().amax(dim=(1, 2), keepdim=True)
    error = ((gn32 - gn64).abs() / scale).max()
    assert 0 < error < 1e-5


@pytest.mark.parametrize("params", INVARIANCE_NETWORKS, ids=network_id)
@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_loss_and_gradient_of_a_row_do_not_depend_on_its_batch_mates(params, loss):
    decoder, z, X = make_problem(*params, loss, n_rows=70)
    values, grad = loss_and_gradient(decoder, LOSSES[loss], z, X)
    # Same positions in the row blocks, other batch mates: bit for bit.
    for n_rows in (1, 31, 32, 33, 64):
        v, g = loss_and_gradient(decoder, LOSSES[loss], z[:n_rows], X[:n_rows])
        assert torch.equal(v, values[:n_rows]) and torch.equal(g, grad[:n_rows])
    other_z = torch.cat([z[:40], -z[40:]])
    v, g = loss_and_gradient(decoder, LOSSES[loss], other_z, X)
    assert torch.equal(v[:40], values[:40]) and torch.equal(g[:40], grad[:40])
    # Alone: the losses are bit for bit the same; the gradients agree to a few
    # units in the last place: the reverse sweep's matrix products can round a
    # row differently at another position of its block (as autograd's do).
    alone = [
        loss_and_gradient(decoder, LOSSES[loss], z[i : i + 1], X[i : i + 1])
        for i in range(70)
    ]
    assert torch.equal(torch.cat([a[0] for a in alone]), values)
    torch.testing.assert_close(
        torch.cat([a[1] for a in alone]), grad, rtol=4e-16, atol=4e-16
    )


def test_objective_uses_explicit_derivatives_only_without_a_graph():
    decoder, z, X = make_problem("mlp", "elu", (16,), True, "mse", n_rows=5)
    explicit = ReconstructionObjective(decoder, LOSSES["mse"], X)
    graph = ReconstructionObjective(decoder, LOSSES["mse"], X, create_graph=True)
    assert explicit.explicit and not graph.explicit
    v1, g1 = explicit(z)
    v2, g2 = graph(z.clone().requires_grad_(True))
    torch.testing.assert_close(v1, v2.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(g1, g2.detach(), rtol=0, atol=1e-12)
    rows = torch.tensor([3, 1])
    v3, g3 = explicit(z[rows], rows)
    torch.testing.assert_close(v3, v1[rows], rtol=0, atol=1e-15)
    torch.testing.assert_close(g3, g1[rows], rtol=0, atol=1e-15)
    loss, grad, gn = explicit.gauss_newton(z[rows], rows)
    assert gn.shape == (2, N_COMPONENTS, N_COMPONENTS)
    with pytest.raises(ValueError, match="Gauss-Newton"):
        graph.gauss_newton(z)


def test_unsupported_decoders_and_losses_fall_back_to_autograd():
    decoder, z, X = make_problem("mlp", "gelu", (16,), False, "mse", n_rows=4)
    assert supports_explicit_derivatives(decoder, LOSSES["mse"])
    assert not supports_explicit_derivatives(decoder, lambda out, x: (out - x).abs())
    sequential = torch.nn.Sequential(torch.nn.Linear(3, 7)).double()
    assert not supports_explicit_derivatives(sequential, LOSSES["mse"])
    decoder.act = torch.nn.GELU(approximate="tanh")
    assert not supports_explicit_derivatives(decoder, LOSSES["mse"])
    objective = ReconstructionObjective(decoder, LOSSES["mse"], X)
    assert not objective.explicit
    values, grad = objective(z)
    z_in = z.clone().requires_grad_(True)
    reference = LOSSES["mse"](decoder(z_in), X)
    (expected,) = torch.autograd.grad(reference.sum(), z_in)
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-14)


# Outputs wider than twice the last hidden layer: the squared error's
# Gauss-Newton matrix comes from the output layer's Gram matrices instead of the
# Jacobian (see derivatives._uses_output_gram).
WIDE_NETWORKS = [
    ("mlp", "tanh", (8,), True),
    ("mlp", "elu", (8, 8), False),
    ("modified_mlp", "gelu", (8, 8), True),
]


@pytest.mark.parametrize("params", WIDE_NETWORKS, ids=network_id)
@pytest.mark.parametrize("jacobian_dtype", [torch.float64, torch.float32])
def test_wide_output_gauss_newton_matches_autograd_and_the_batch(
    params, jacobian_dtype, monkeypatch
):
    monkeypatch.setattr(__import__(__name__), "N_FEATURES", 40)
    decoder, z, X = make_problem(*params, "mse", n_rows=30)
    assert decoder.layers[-1].weight.shape == (40, 8)
    values, grad, gn = autograd_reference(decoder, "mse", z, X)
    v, g, gn2 = loss_gradient_and_gauss_newton(
        decoder, LOSSES["mse"], z, X, jacobian_dtype=jacobian_dtype
    )
    torch.testing.assert_close(v, values, rtol=0, atol=1e-10)
    torch.testing.assert_close(g, grad, rtol=0, atol=1e-10)
    scale = gn.abs().max()
    atol = 1e-12 if jacobian_dtype == torch.float64 else 1e-5
    torch.testing.assert_close(gn2, gn, rtol=0, atol=atol * scale)
    torch.testing.assert_close(gn2, gn2.transpose(1, 2), rtol=0, atol=atol * scale)
    for i in range(len(z)):
        alone = loss_gradient_and_gauss_newton(
            decoder, LOSSES["mse"], z[i : i + 1], X[i : i + 1], jacobian_dtype
        )
        assert torch.equal(alone[2][0], gn2[i]), i
