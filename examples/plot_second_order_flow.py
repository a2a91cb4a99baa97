r"""
======================================================
Second-order (Nesterov) versus first-order flow
======================================================

:class:`~skgfe.GradientFlowEncoder` encodes a sample :math:`x` by following a flow
in latent space towards the code that the decoder :math:`D` maps closest to it.
The default, first-order flow (``flow="gradient"``) is the gradient flow

.. math::

    \dot z = -\alpha \nabla_z \ell(x, D(z)).

With ``flow='nesterov'`` the code follows instead the continuous limit of
Nesterov's accelerated gradient method (Su, Boyd and Candès),

.. math::

    \ddot z + \frac{3}{t} \dot z + \alpha \nabla_z \ell(x, D(z)) = 0,

a heavy ball with a vanishing friction, which travels faster along the flat
valleys of the loss. Both flows come to rest at stationary codes of the same loss,
so they can share one trained decoder. This example measures how
quickly each of them gets there, with the per-sample diagnostics of
:meth:`~skgfe.GradientFlowEncoder.encode`.
"""

# %%
# A trained decoder
# -----------------
#
# We train a gradient flow encoder with 8 latent dimensions on 500 digits, with
# the default first-order flow.
import time
import warnings

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

from skgfe import GradientFlowEncoder

X = load_digits().data
X_train, X_test = train_test_split(X, train_size=500, random_state=0)

# Ten epochs keep the example fast; silence the warning that training (and, below,
# flows cut short on purpose) did not converge.
warnings.filterwarnings("ignore", category=ConvergenceWarning)

gfe = GradientFlowEncoder(n_components=8, max_iter=10, random_state=0).fit(X_train)
print(f"default flow: {gfe.flow!r}, held-out MSE {-gfe.score(X_test):.3f}")

# %%
# Encoding diagnostics
# --------------------
#
# ``encode(X, return_info=True)`` returns the codes and a dict of per-sample
# arrays: the final loss, the number of accepted solver steps, the number of
# decoder evaluations (each a forward and a backward pass) and whether the flow
# converged. We encode the held-out digits with both flows through the same
# decoder, changing only the ``flow`` parameter of the fitted model.
info = {}
for flow in ["gradient", "nesterov"]:
    gfe.set_params(flow=flow)
    start = time.perf_counter()
    Z, info[flow] = gfe.encode(X_test, return_info=True)
    seconds = time.perf_counter() - start
    i = info[flow]
    print(
        f"{flow:>10}: loss {i['loss'].mean():.4f}, steps {i['n_steps'].mean():6.1f}, "
        f"decoder evaluations {i['n_evals'].mean():6.1f}, "
        f"converged {i['converged'].mean():.1%}, {seconds:.2f} s"
    )
ratio = info["gradient"]["n_evals"].mean() / info["nesterov"]["n_evals"].mean()
print(f"the second-order flow spends {ratio:.1f} times fewer decoder evaluations")

# %%
# Convergence per iteration
# -------------------------
#
# To follow the flows on their way, we cap the number of solver steps with
# ``max_flow_steps`` and record the mean loss reached, and the mean number of
# decoder evaluations spent, at each cap. (Flows stopped by the cap warn that
# they did not converge; we silenced that above.)
budgets = [1, 2, 4, 8, 16, 32, 64, 128, 256]
curves = {}
for flow in ["gradient", "nesterov"]:
    losses, evals = [], []
    for budget in budgets:
        gfe.set_params(flow=flow, max_flow_steps=budget)
        _, i = gfe.encode(X_test, return_info=True)
        losses.append(i["loss"].mean())
        evals.append(i["n_evals"].mean())
    curves[flow] = (np.array(evals), np.array(losses))
gfe.set_params(flow="gradient", max_flow_steps=1000)

# The excess of the mean loss over its converged value, against the mean number
# of decoder evaluations spent (the cost that matters, whatever the flow does
# per step):
final = min(info[flow]["loss"].mean() for flow in info)
fig, ax = plt.subplots(figsize=(6, 4))
for flow, (evals, losses) in curves.items():
    label = "first order" if flow == "gradient" else "second order (Nesterov)"
    excess = losses - final
    # Once every flow has converged the excess is 0, off a logarithmic axis.
    ax.plot(evals, np.where(excess > 0, excess, np.nan), "o-", label=label)
ax.set_xscale("log")
ax.set_yscale("log")
ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
ax.xaxis.set_major_formatter(ScalarFormatter())
ax.xaxis.set_minor_formatter(NullFormatter())
ax.set_xlabel("mean decoder evaluations per sample")
ax.set_ylabel("mean loss above the converged loss")
ax.set_title("How fast the flows approach the codes")
ax.legend()
fig.tight_layout()

# %%
# Per-sample cost
# ---------------
#
# Every sample is integrated with its own step size and stops on its own, so
# the cost of encoding varies from sample to sample.
fig, ax = plt.subplots(figsize=(6, 3.5))
bins = np.linspace(
    0, max(info[flow]["n_evals"].max() for flow in info), 30, dtype=float
)
for flow in info:
    label = "first order" if flow == "gradient" else "second order (Nesterov)"
    ax.hist(info[flow]["n_evals"], bins=bins, alpha=0.6, label=label)
ax.set_xlabel("decoder evaluations until convergence")
ax.set_ylabel("held-out digits")
ax.legend()
fig.tight_layout()
plt.show()

# %%
# Training with the second-order flow
# -----------------------------------
#
# The flow also runs inside ``fit``, on every training batch, so the choice of
# flow changes the cost of training as well. Here we train a decoder with each
# flow from the same initial weights.
for flow in ["gradient", "nesterov"]:
    model = GradientFlowEncoder(n_components=8, max_iter=10, flow=flow, random_state=0)
    start = time.perf_counter()
    model.fit(X_train)
    seconds = time.perf_counter() - start
    print(f"{flow:>10}: fit {seconds:5.2f} s, held-out MSE {-model.score(X_test):.3f}")
