"""
Profiles with a detector gap: imputation with error bars
========================================================

A decoder-only encoder can fit a code to the entries a sample *has*: the code of
a profile with dead channels is the decoder's best code for its live channels,
and decoding it fills the dead ones. No encoder network or PCA projection can do
this without first guessing the missing inputs.

:class:`~skgfe.GradientFlowImputer` wraps this as a scikit-learn imputer, and
``transform(X, return_std=True)`` adds a predictive standard deviation to every
filled entry (a Laplace approximation at the code; see :ref:`missing`). We hide a
contiguous band of 20 channels in held-out profiles (solutions of a
reaction-diffusion equation, as a line detector would record them), fill it, and
compare with scikit-learn's :class:`~sklearn.impute.KNNImputer` and
:class:`~sklearn.impute.IterativeImputer`.

What a gap hides must be predictable from what the sample shows: here the fronts
of the profiles continue smoothly into the gap. On data whose features inside
the gap are independent of those outside (peaks at random places, say) no
imputer beats the column means, and the missing-values benchmark
(``benchmarks/results/missing.md``) says how GFE fares across data sets.
"""

import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.experimental import enable_iterative_imputer  # noqa: F401
from sklearn.impute import IterativeImputer, KNNImputer

from skgfe import GradientFlowEncoder, GradientFlowImputer
from skgfe.datasets import make_reaction_diffusion

# %%
# Profiles, and a dead band of channels
# -------------------------------------
#
# 300 training profiles (complete) and 100 held-out profiles whose channels 50 to
# 69 read nothing (NaN).

X = make_reaction_diffusion(n_samples=400, random_state=0)
X_train, X_test = X[:300], X[300:]
gap = slice(50, 70)
X_test_gap = X_test.copy()
X_test_gap[:, gap] = np.nan

# %%
# Fill the gap
# ------------
#
# The imputer trains a default :class:`~skgfe.GradientFlowEncoder` of 8
# components; KNN averages the 5 training profiles closest on the live channels;
# IterativeImputer regresses each channel on the others.

with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)
    gfe = GradientFlowImputer(GradientFlowEncoder(n_components=8, random_state=0))
    gfe.fit(X_train)
    filled, std = gfe.transform(X_test_gap, return_std=True)
    knn = KNNImputer(n_neighbors=5).fit(X_train).transform(X_test_gap)
    iterative = IterativeImputer(random_state=0).fit(X_train).transform(X_test_gap)

baseline = np.mean((X_train[:, gap].mean(axis=0) - X_test[:, gap]) ** 2)
for name, X_filled in (("GFE", filled), ("KNN", knn), ("Iterative", iterative)):
    error = np.mean((X_filled[:, gap] - X_test[:, gap]) ** 2) / baseline
    print(
        f"{name}: squared error in the gap, relative to the column means: {error:.4f}"
    )
inside = np.abs(filled[:, gap] - X_test[:, gap]) <= 1.645 * std[:, gap]
print(f"share of the gap's entries inside GFE's 90% intervals: {inside.mean():.2f}")

# %%
# The filled values are far closer than KNN's, but the intervals are too narrow
# here: the Laplace approximation treats the decoder as exact and its code's
# posterior as Gaussian (see :ref:`missing` for when to distrust the error bars).
#
# Three held-out profiles
# -----------------------
#
# The band is GFE's value +- 1.645 standard deviations (a nominal 90% interval).

channels = np.arange(X.shape[1])
fig, axes = plt.subplots(3, 1, figsize=(7, 7), sharex=True)
for ax, i in zip(axes, range(3)):
    ax.plot(channels, X_test[i], color="0.6", lw=1, label="truth")
    ax.plot(channels, X_test_gap[i], color="k", lw=1.5, label="observed")
    ax.plot(channels[gap], filled[i, gap], color="C0", label="GFE")
    ax.fill_between(
        channels[gap],
        filled[i, gap] - 1.645 * std[i, gap],
        filled[i, gap] + 1.645 * std[i, gap],
        color="C0",
        alpha=0.25,
        label="GFE 90% interval",
    )
    ax.plot(channels[gap], knn[i, gap], color="C1", ls="--", label="KNN")
    ax.axvspan(gap.start, gap.stop - 1, color="0.9", zorder=0)
axes[0].legend(loc="lower right", fontsize=8)
axes[-1].set_xlabel("channel")
fig.suptitle("Held-out profiles with dead channels 50-69")
fig.tight_layout()
plt.show()
