"""
Predict whole spectra from a few descriptors through GFE codes
==============================================================

A common task in the physical sciences is the inverse of dimensionality
reduction: predict a whole measured curve (a spectrum, a diffraction pattern)
from a handful of descriptors of the sample. Regressing every point of the curve
on the descriptors wastes the structure of the curves; a better recipe is to
compress the curves to a few codes, regress the codes on the descriptors, and
decode the predicted codes.

scikit-learn's :class:`~sklearn.compose.TransformedTargetRegressor` does exactly
this with ``transformer=GradientFlowEncoder(...)``: ``fit`` encodes the target
spectra and fits the regressor to their codes, ``predict`` decodes what the
regressor predicts. We compare GFE codes with PCA codes of the same size, under
the same regressor.

``check_inverse=False`` is right for any lossy reducer: by default the wrapper
checks that ``inverse_transform(transform(y))`` returns ``y`` and warns
"not strictly inverse" when it does not, which a reducer to a few components never
does (that is the point of reducing).
"""

import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.compose import TransformedTargetRegressor
from sklearn.decomposition import PCA
from sklearn.ensemble import ExtraTreesRegressor
from sklearn.exceptions import ConvergenceWarning

from skgfe import GradientFlowEncoder
from skgfe.datasets import make_spectra

# %%
# Spectra and their descriptors
# -----------------------------
#
# Generated spectra of two peaks on a background (Poisson noise); the
# descriptors are the peaks' centres, widths and heights, as a spectroscopist
# might tabulate them. 300 spectra train, 100 are held out.
Y, params = make_spectra(
    n_samples=400, n_features=128, n_peaks=2, return_params=True, random_state=0
)
descriptors = np.hstack([params.centers, params.widths, params.amplitudes])
train, test = slice(0, 300), slice(300, None)

# %%
# The same regressor through GFE codes and through PCA codes
# ----------------------------------------------------------
#
# A short training keeps the example fast (we silence the warning that it
# stopped at ``max_iter``); the defaults train longer and do better.
warnings.filterwarnings("ignore", category=ConvergenceWarning)
reducers = {
    "GFE codes": GradientFlowEncoder(n_components=4, max_iter=60, random_state=0),
    "PCA codes": PCA(n_components=4),
}
predictions = {}
for name, reducer in reducers.items():
    model = TransformedTargetRegressor(
        regressor=ExtraTreesRegressor(n_estimators=100, random_state=0),
        transformer=reducer,
        check_inverse=False,  # a lossy reducer is never an exact inverse
    )
    model.fit(descriptors[train], Y[train])
    predictions[name] = model.predict(descriptors[test])
    unexplained = (
        np.mean((Y[test] - predictions[name]) ** 2) / Y[test].var(axis=0).mean()
    )
    print(f"{name}: fraction of the held-out variance left {unexplained:.3f}")

# %%
# Two held-out spectra and their predictions
# ------------------------------------------
fig, axes = plt.subplots(1, 2, figsize=(8, 3), sharey=True)
for ax, i in zip(axes, [0, 1]):
    ax.plot(params.x, Y[test][i], color="0.6", label="measured")
    for name, prediction in predictions.items():
        ax.plot(params.x, prediction[i], label=name)
    ax.set_xlabel("x")
axes[0].set_ylabel("intensity")
axes[0].legend(fontsize=8)
fig.suptitle("Spectra predicted from their descriptors")
fig.tight_layout()
