"""
===================================================
Choosing ``n_components`` with GridSearchCV
===================================================

:class:`~skgfe.GradientFlowEncoder` is a scikit-learn estimator, so the usual
model-selection tools apply to it. This example tunes the size of its latent
space with :class:`~sklearn.model_selection.GridSearchCV`.

A reconstruction error keeps decreasing, if ever more slowly, as the latent space
grows, so taking the best cross-validated score would pick the largest
``n_components`` offered. Instead we ask, like ``PCA(n_components=0.99)`` does,
for the *smallest* latent space that explains 99% of the variance of held-out
data, with a custom scorer and a ``refit`` callable.
"""

# %%
# Data with a known intrinsic dimension
# -------------------------------------
#
# :func:`~skgfe.datasets.make_reaction_diffusion` solves the Fisher-KPP
# reaction-diffusion equation from random initial conditions made of three
# Fourier modes, each with a random amplitude and phase: 6 free parameters per
# solution, sampled on 64 grid points.
import warnings

import matplotlib.pyplot as plt
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, KFold

from skgfe import GradientFlowEncoder
from skgfe.datasets import make_reaction_diffusion
from skgfe.metrics import explained_variance_scorer, smallest_n_components

X, params = make_reaction_diffusion(
    n_samples=300, n_features=64, return_params=True, random_state=0
)
print(
    f"{X.shape[0]} solutions on {X.shape[1]} grid points, "
    f"intrinsic dimension {params.intrinsic_dim}"
)

fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(params.x, X[:5].T)
ax.set_xlabel("x")
ax.set_ylabel("u(x, t=1)")
ax.set_title("Five solutions of the reaction-diffusion equation")
fig.tight_layout()

# %%
# Scorer and selection rule
# -------------------------
#
# The scorer, :func:`skgfe.metrics.explained_variance_scorer`, is the fraction of
# the variance of a held-out fold that the model reconstructs: one minus the mean
# squared reconstruction error over the variance. (``GradientFlowEncoder.score``
# is the negative mean squared error, but ``PCA.score`` is a log-likelihood, so
# the scorer computes the error from ``transform`` and ``inverse_transform`` for
# both.) The ``refit`` rule, :func:`skgfe.metrics.smallest_n_components`, receives
# the ``cv_results_`` of the search and returns the index of the candidate to
# refit on all the data: the smallest ``n_components`` that reaches the target
# (without a target: the smallest within one standard error of the best).
target = 0.99


# %%
# Grid search
# -----------
#
# Each candidate trains a small decoder for 10 epochs only, to keep the example
# fast (we silence the warning that training stopped at ``max_iter``). The same
# search over PCA gives the linear reference.
warnings.filterwarnings("ignore", category=ConvergenceWarning)

grid = {"n_components": [2, 4, 6, 8]}
cv = KFold(n_splits=3, shuffle=True, random_state=0)
gfe = GradientFlowEncoder(
    hidden_layer_sizes=(64,),
    max_iter=10,
    batch_size=32,
    learning_rate_init=1e-2,
    random_state=0,
)
searches = {
    "GFE": GridSearchCV(
        gfe,
        grid,
        scoring=explained_variance_scorer,
        cv=cv,
        refit=smallest_n_components(target),
    ),
    "PCA": GridSearchCV(
        PCA(),
        grid,
        scoring=explained_variance_scorer,
        cv=cv,
        refit=smallest_n_components(target),
    ),
}
for search in searches.values():
    search.fit(X)

print(f"{'n_components':>12}" + "".join(f"{name:>14}" for name in searches))
for k, n in enumerate(grid["n_components"]):
    row = "".join(
        f"{1 - s.cv_results_['mean_test_score'][k]:>14.2e}" for s in searches.values()
    )
    print(f"{n:>12}{row}")
print("(fraction of held-out variance left unexplained)")
for name, search in searches.items():
    print(f"{name}: chosen n_components={search.best_params_['n_components']}")

# %%
# The validation curve
# --------------------
#
# The unexplained variance drops steeply until the latent space has as many
# dimensions as the data have generating parameters, and only slowly after that.
fig, ax = plt.subplots(figsize=(6, 4))
for (name, search), marker in zip(searches.items(), ["o", "s"]):
    unexplained = 1 - search.cv_results_["mean_test_score"]
    errors = search.cv_results_["std_test_score"]
    ax.errorbar(
        grid["n_components"], unexplained, yerr=errors, fmt=f"{marker}-", label=name
    )
ax.axhline(1 - target, color="grey", ls=":", label=f"target: {target:.0%} explained")
ax.axvline(params.intrinsic_dim, color="tab:red", ls="--", label="intrinsic dim.")
ax.set_yscale("log")
ax.set_xlabel("n_components")
ax.set_ylabel("held-out variance unexplained")
ax.set_title("Tuning n_components")
# sphinx_gallery_thumbnail_number = 2
ax.legend()
fig.tight_layout()
plt.show()

# %%
# The refitted model is an ordinary fitted transformer:
best = searches["GFE"].best_estimator_
Z = best.transform(X[:5])
print(f"codes of 5 solutions: shape {Z.shape}")
