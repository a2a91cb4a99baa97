"""Hand-written latent derivatives of skgfe's decoders.

A flow step needs, for every sample, the loss ``l_i(z_i) = loss(D(z_i), x_i)`` and
its gradient in ``z_i``; the Gauss-Newton solver also needs the Jacobian ``dD/dz``.
Autograd gives them, but at the batch sizes of a flow its cost is per-call
overhead (graph recording, a generic backward), not arithmetic. For the networks
skgfe builds (:class:`~skgfe._networks.MLP` and
:class:`~skgfe._networks.ModifiedMLP`, with any of their activations and an optional
skip path) this module computes the same quantities with explicit formulas:

- :func:`loss_and_gradient`: one forward pass that keeps the pre-activations, then a
  reverse sweep of the chain rule (the same cost as autograd's backward, without
  its bookkeeping);
- :func:`loss_gradient_and_gauss_newton`: the same loss and gradient, plus the
  Jacobian ``J = dD/dz`` of every sample from the ``n_components`` tangent
  directions pushed through the network (forward mode, optionally in a
  coarser dtype), and the (generalised) Gauss-Newton matrix ``J^T W J`` of the
  loss, ``W`` being the Hessian of the loss in the decoder output: ``2/p I``
  for 'mse', ``1/p diag(s (1 - s))`` with ``s = sigmoid(D)`` for 'bce'
  (Bernoulli weights).

Everything is evaluated over the same fixed blocks of rows as the networks' own
forward pass, so a sample's results do not depend on its batch mates: values and
Gauss-Newton matrices are bit-identical alone or in a batch; the reverse-mode
gradient can change in the last bit (about 1e-17) when a row moves to another
position within its block, as the decoder's own output can. So can the
Gauss-Newton matrix (in the last bits of float32) for narrow layers: with about
10 or fewer outputs of a product (hidden units or features) and an odd inner
width, the batched products round a row by its place in its block (measured
with MKL; not at 16 or more, nor at the default 128 hidden units). Autograd
remains the reference (the tests compare both to 1e-10 in float64) and the path
for differentiable (adjoint) flows.
"""

import math

import torch

from .._losses import LOSSES
from .._networks import MLP, ROW_BLOCK, ModifiedMLP, _pad_to_blocks

_SQRT_2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _gelu_derivative(pre, post):
    cdf = 0.5 * (1.0 + torch.erf(pre / _SQRT_2))
    return cdf + pre * _INV_SQRT_2PI * torch.exp(-0.5 * pre * pre)


# Derivative of each activation from its pre-activation and its output.
_ACTIVATION_DERIVATIVES = {
    "identity": lambda pre, post: torch.ones_like(pre),
    "relu": lambda pre, post: (pre > 0).to(pre.dtype),
    # exp(pre) = post + 1 where pre <= 0, and 1 where pre > 0 (post > 0 there).
    "elu": lambda pre, post: post.clamp(max=0.0) + 1.0,
    "tanh": lambda pre, post: 1.0 - post * post,
    "sigmoid": lambda pre, post: post * (1.0 - post),
    "gelu": _gelu_derivative,
}


def _activation_derivative(name, pre, post):
    """Derivative of activation ``name`` at pre-activation ``pre`` (output ``post``)."""
    return _ACTIVATION_DERIVATIVES[name](pre, post)


def supports_explicit_derivatives(decoder, loss):
    """Whether this module can differentiate ``decoder`` under ``loss``."""
    if loss not in LOSSES.values():
        return False
    if type(decoder) not in (MLP, ModifiedMLP):
        return False
    if not getattr(decoder, "gate_first_layer", True):
        return False
    exact_gelu = getattr(decoder.act, "approximate", "none") == "none"
    return exact_gelu and decoder.activation in _ACTIVATION_DERIVATIVES


class DecoderPlan:
    """A decoder's weights as plain tensors, for the derivatives of one solve.

    Reading a parameter through ``nn.Module`` attribute and ``ModuleList``
    lookups costs microseconds each time, which at the few rows of a solve's
    later iterations is a noticeable part of an evaluation. A plan reads them
    once; the weights must not change while it is in use (a solve, during
    which the decoder is fixed). It also keeps the transposed weights in the
    Jacobian's dtype, made on first use.
    """

    @torch.no_grad()
    def __init__(self, decoder):
        def affine(layer):
            return layer.weight, layer.weight.T, layer.bias

        self.activation = decoder.activation
        self.act = decoder.act.forward
        self.layers = [affine(layer) for layer in decoder.layers]
        self.skip = None if decoder.skip is None else affine(decoder.skip)
        gates = getattr(decoder, "gates", ())
        self.gates = [affine(gate) for gate in gates] if len(gates) else None
        self._transposed = {}
        self._output_gram = {}

    @torch.no_grad()
    def output_gram(self, dtype):
        """The output layer's ``W^T W`` ``(H, H)``, and with a skip path
        ``W^T S^T`` ``(H, k)`` (stored as its contiguous transpose ``(k, H)``) and
        ``S S^T`` ``(k, k)``, in ``dtype`` (else None, None); made on first use."""
        if dtype not in self._output_gram:
            weight = self.layers[-1][0].to(dtype)  # (p, H)
            gram = weight.T @ weight
            gram = 0.5 * (gram + gram.T)  # exactly symmetric: its .T view is equal
            cross = skip_gram = None
            if self.skip is not None:
                skip = self.skip[0].to(dtype)  # (p, k)
                cross = (skip.T @ weight).contiguous()  # (k, H)
                skip_gram = skip.T @ skip
                skip_gram = 0.5 * (skip_gram + skip_gram.T)
            self._output_gram[dtype] = (gram, cross, skip_gram)
        return self._output_gram[dtype]

    @torch.no_grad()
    def transposed(self, dtype):
        """Transposed weights in ``dtype``: gates, layers, skip (first ones
        contiguous, as broadcasting a transposed view is several times slower)."""
        if dtype not in self._transposed:

            def cast(affine, contiguous=False):
                weight_t = affine[1].to(dtype)
                return weight_t.contiguous() if contiguous else weight_t

            first = self.gates is None
            self._transposed[dtype] = (
                None if first else [cast(g, contiguous=True) for g in self.gates],
                [cast(a, contiguous=i == 0) for i, a in enumerate(self.layers)],
                None if self.skip is None else cast(self.skip),
            )
        return self._transposed[dtype]


def _plan(decoder):
    return decoder if isinstance(decoder, DecoderPlan) else DecoderPlan(decoder)


def _apply(h, affine):
    """An affine map ``(weight, weight.T, bias)`` on row blocks ``(b, R, d)``
    (the bias added in place: the product is a new tensor)."""
    return torch.matmul(h, affine[1]).add_(affine[2])


def _forward(plan, z):
    """Decoder output over row blocks ``(b, R, p)``, and the cache for derivatives."""
    act, name, layers = plan.act, plan.activation, plan.layers
    h0 = _pad_to_blocks(z)
    last = len(layers) - 1
    cache = {"hidden": []}
    h = h0
    if plan.gates is not None:
        pre_u, pre_v = _apply(h0, plan.gates[0]), _apply(h0, plan.gates[1])
        u, v = act(pre_u), act(pre_v)
        du = _activation_derivative(name, pre_u, u)
        dv = _activation_derivative(name, pre_v, v)
        cache["gates"] = (u, v, du, dv)
        for i in range(last):
            pre = _apply(h, layers[i])
            gate = act(pre)
            cache["hidden"].append((gate, _activation_derivative(name, pre, gate)))
            h = (1 - gate) * u + gate * v
    else:
        for i in range(last):
            pre = _apply(h, layers[i])
            h = act(pre)
            cache["hidden"].append((None, _activation_derivative(name, pre, h)))
    output = _apply(h, layers[last])
    if plan.skip is not None:
        output.add_(_apply(h0, plan.skip))
    return output, cache


def _hidden_tangents(plan, cache, dtype):
    """Tangents ``dh/dz`` of the last hidden layer, ``(b, R, k, H)``, or None.

    Forward mode from the cache of :func:`_forward`: the ``k`` tangent directions
    go through the network together, in ``dtype``. The first layer's tangents are
    its weights (the input's tangents are the identity), so no product is spent
    on them. None stands for a decoder without hidden layers (the identity).
    """
    gates_t, layers_t, _ = plan.transposed(dtype)

    def cast(t):
        return t.to(dtype).unsqueeze(-2)

    last = len(layers_t) - 1
    t_h = None
    if "gates" in cache:
        u, v, du, dv = (cast(t) for t in cache["gates"])
        t_u = gates_t[0] * du
        t_v = gates_t[1] * dv
        for i in range(last):
            gate, dgate = (cast(t) for t in cache["hidden"][i])
            t_gate = _push(t_h, layers_t[i]) * dgate
            t_h = t_u + t_gate * (v - u) + gate * (t_v - t_u)
    else:
        for i in range(last):
            t_h = _push(t_h, layers_t[i]) * cast(cache["hidden"][i][1])
    return t_h


def _push(t_h, weight_t):
    """Tangents through a linear layer; None stands for the identity.

    The transposed view makes torch multiply every row's tangents by its own
    (batched) product, whose rounding does not depend on the row's position.
    """
    return weight_t if t_h is None else t_h @ weight_t


def _jacobian(plan, t_h, shape, dtype):
    """Jacobians ``dD/dz`` of all rows, ``(b, R, k, p)`` (row ``j`` is ``dD/dz_j``),
    from the last hidden layer's tangents ``t_h``."""
    _, layers_t, skip_t = plan.transposed(dtype)
    t_out = _push(t_h, layers_t[-1])
    if skip_t is not None:
        # In place unless t_out is the cached first-layer weight itself.
        t_out = t_out + skip_t if t_h is None else t_out.add_(skip_t)
    return t_out.expand(*shape)


def _uses_output_gram(plan, t_h, weights):
    """Whether ``J J^T`` is cheaper through the output layer's Gram matrices.

    For the squared error (no per-entry weights) and an output much wider than
    the last hidden layer, ``J = T W^T + S^T`` gives ``J J^T`` from
    ``T (W^T W) T^T`` and two small terms: ``k H^2`` multiply-adds per row
    instead of ``k H p`` for the Jacobian alone.
    """
    if weights is not None or t_h is None:
        return False
    n_hidden, n_features = plan.layers[-1][1].shape
    return n_features > 2 * n_hidden


def _gauss_newton_from_gram(plan, t_h, dtype):
    """``J J^T`` per row, ``(b, R, k, k)``, from the output layer's Gram matrices."""
    gram, cross, skip_gram = plan.output_gram(dtype)
    # Transposed views of symmetric / contiguous tensors: batched per-row
    # products, as in _push.
    product = (t_h @ gram.T) @ t_h.transpose(-1, -2)
    if cross is not None:
        mixed = t_h @ cross.T
        product = product.add_(mixed).add_(mixed.transpose(-1, -2)).add_(skip_gram)
    return product


def _reverse(plan, cache, g_out):
    """Gradient in the input ``z`` (blocks) of ``<g_out, D(z)>``, by the chain rule."""
    layers = plan.layers
    last = len(layers) - 1
    g_h = g_out @ layers[last][0]
    if "gates" in cache:
        u, v, du, dv = cache["gates"]
        g_u = torch.zeros_like(u)
        g_v = torch.zeros_like(v)
        diff = v - u
        for i in range(last - 1, -1, -1):
            gate, dgate = cache["hidden"][i]
            g_u = g_u + g_h * (1 - gate)
            g_v = g_v + g_h * gate
            g_h = ((g_h * diff) * dgate) @ layers[i][0]
        g_z = g_h + (g_u * du) @ plan.gates[0][0] + (g_v * dv) @ plan.gates[1][0]
    else:
        for i in range(last - 1, -1, -1):
            g_h = (g_h * cache["hidden"][i][1]) @ layers[i][0]
        g_z = g_h
    if plan.skip is not None:
        g_z = g_z.add_(g_out @ plan.skip[0])
    return g_z


def _loss_terms(loss, output, target, observed=None):
    """Per-row loss values, ``dl/dD`` and the loss Hessian weights in ``D``.

    ``output`` is in blocks ``(b, R, p)``; ``target`` is ``(n, p)``. With
    ``observed`` (``(n, p)``, 1 for an observed entry, 0 for a missing one, whose
    target must be finite, e.g. 0), each row's loss is its mean over its observed
    entries.
    """
    if observed is not None:
        return _masked_loss_terms(loss, output, target, observed)
    target = _pad_to_blocks(target)
    n_features = output.shape[-1]
    if loss is LOSSES["mse"]:
        residual = output - target
        values = residual.pow(2).mean(dim=-1)
        return values, (2.0 / n_features) * residual, None
    probability = torch.sigmoid(output)
    values = LOSSES["bce"](
        output.reshape(-1, n_features), target.reshape(-1, n_features)
    ).view(output.shape[:-1])
    weights = probability * (1 - probability) / n_features
    return values, (probability - target) / n_features, weights


def _masked_loss_terms(loss, output, target, observed):
    """:func:`_loss_terms` over the observed entries only (see there)."""
    target = _pad_to_blocks(target)
    observed = _pad_to_blocks(observed.to(output.dtype))
    # Padding rows observe nothing; their count stays 1 to keep them finite.
    per_entry = observed / observed.sum(dim=-1, keepdim=True).clamp(min=1.0)
    if loss is LOSSES["mse"]:
        residual = (output - target) * observed
        values = (residual.pow(2) * per_entry).sum(dim=-1)
        return values, 2.0 * per_entry * residual, 2.0 * per_entry
    probability = torch.sigmoid(output)
    entries = torch.nn.functional.binary_cross_entropy_with_logits(
        output, target, reduction="none"
    )
    values = (entries * per_entry).sum(dim=-1)
    weights = probability * (1 - probability) * per_entry
    return values, (probability - target) * per_entry, weights


def _rows(blocks, n_rows):
    return blocks.reshape(-1, *blocks.shape[2:])[:n_rows]


def loss_and_gradient(decoder, loss, z, X, observed=None):
    """Per-sample losses ``(n,)`` and their gradients in the codes ``(n, k)``.

    Equal (to rounding) to ``autograd.grad(loss(decoder(z), X).sum(), z)``.
    ``observed`` (``(n, p)``, 1 or 0): the loss of a row is its mean over its
    observed entries (missing entries of ``X`` must hold finite values).
    """
    n_rows = z.shape[0]
    plan = _plan(decoder)
    with torch.no_grad():
        output, cache = _forward(plan, z)
        values, g_out, _ = _loss_terms(loss, output, X, observed)
        grad = _reverse(plan, cache, g_out)
    return _rows(values, n_rows), _rows(grad, n_rows)


def loss_gradient_and_gauss_newton(
    decoder, loss, z, X, jacobian_dtype=None, observed=None
):
    """Per-sample losses, gradients and (generalised) Gauss-Newton matrices.

    Returns ``values (n,)``, ``grad (n, k)`` and ``gn (n, k, k)`` where
    ``gn_i = J_i^T W_i J_i`` with ``J_i = dD/dz`` at ``z_i`` and ``W_i`` the Hessian
    of the loss in the decoder output (see the module docstring).

    ``jacobian_dtype`` (default: ``z``'s) is the precision of the Jacobian and of
    the Gauss-Newton matrix, returned in ``z``'s dtype. The forward mode costs
    ``n_components`` passes and dominates; in float32 it runs about four times
    faster than in float64 on a CPU. Values and gradients are always in ``z``'s
    precision (the gradient from the reverse sweep, not from ``J``), so a solver
    that stops on the gradient reaches the same stationary points either way.
    ``observed`` as in :func:`loss_and_gradient`: ``W`` weighs the observed
    entries only.
    """
    values, grad, gauss_newton = loss_gradient_and_deferred_gauss_newton(
        decoder, loss, z, X, jacobian_dtype, observed
    )
    return values, grad, gauss_newton()


def loss_gradient_and_deferred_gauss_newton(
    decoder, loss, z, X, jacobian_dtype=None, observed=None
):
    """:func:`loss_gradient_and_gauss_newton` with the Gauss-Newton matrices
    left to be formed on demand.

    Returns ``values (n,)``, ``grad (n, k)`` and a :class:`DeferredGaussNewton`
    whose call with row positions gives those rows' matrices (all rows without
    positions). A solver that rejects a trial, or stops at it, never needs its
    matrix: the forward-mode Jacobian, most of an evaluation's cost, is then
    spent on the rows that step on only.
    """
    plan = _plan(decoder)
    with torch.no_grad():
        output, cache = _forward(plan, z.detach())
        values, g_out, weights = _loss_terms(loss, output, X, observed)
        grad = _reverse(plan, cache, g_out)
    n_rows = z.shape[0]
    deferred = DeferredGaussNewton(
        plan,
        cache,
        weights,
        n_rows,
        output.shape[-1],
        z.dtype if jacobian_dtype is None else jacobian_dtype,
        z.dtype,
    )
    return _rows(values, n_rows), _rows(grad, n_rows), deferred


class DeferredGaussNewton:
    """The Gauss-Newton matrices of one evaluation's rows, formed on demand
    from its forward pass (see :func:`loss_gradient_and_deferred_gauss_newton`).

    Only the row blocks that hold an asked row are computed, whole: a row's
    matrix comes from the same products, at the same place in the same
    block, whichever rows are asked for with it (for small layers the
    batched products round a row differently at another place in a block).
    """

    def __init__(self, plan, cache, weights, n_rows, n_features, dtype, out_dtype):
        self.plan = plan
        self.cache = cache
        self.weights = weights
        self.n_rows = n_rows
        self.n_features = n_features
        self.dtype = dtype
        self.out_dtype = out_dtype

    def __call__(self, positions=None):
        """Gauss-Newton matrices ``(m, k, k)`` of the rows at ``positions`` (a
        tensor of indices into the evaluation's rows; None: all rows)."""
        if positions is None:
            with torch.no_grad():
                gn = self._blocks(self.cache, self.weights, self.n_rows)
            return _rows(gn, self.n_rows).to(self.out_dtype)
        blocks, inverse = torch.unique(positions // ROW_BLOCK, return_inverse=True)

        def gather(tensor):
            return None if tensor is None else tensor.index_select(0, blocks)

        cache = {"hidden": [tuple(map(gather, pair)) for pair in self.cache["hidden"]]}
        if "gates" in self.cache:
            cache["gates"] = tuple(map(gather, self.cache["gates"]))
        with torch.no_grad():
            gn = self._blocks(cache, gather(self.weights), len(blocks) * ROW_BLOCK)
        rows = inverse * ROW_BLOCK + positions % ROW_BLOCK
        return gn.reshape(-1, *gn.shape[2:]).index_select(0, rows).to(self.out_dtype)

    def _blocks(self, cache, weights, n_rows):
        plan, dtype, n_features = self.plan, self.dtype, self.n_features
        t_h = _hidden_tangents(plan, cache, dtype)
        if _uses_output_gram(plan, t_h, weights):
            return (2.0 / n_features) * _gauss_newton_from_gram(plan, t_h, dtype)
        k = plan.layers[0][0].shape[1]
        n_blocks = -(-n_rows // ROW_BLOCK)
        jac = _jacobian(plan, t_h, (n_blocks, ROW_BLOCK, k, n_features), dtype)
        if weights is None:
            return (2.0 / n_features) * (jac @ jac.transpose(-1, -2))
        return (jac * weights.to(dtype).unsqueeze(-2)) @ jac.transpose(-1, -2)
