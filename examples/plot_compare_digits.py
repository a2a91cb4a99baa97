"""
=======================================================
Gradient flow encoding, PCA and autoencoders on digits
=======================================================

This example compresses scikit-learn's 8x8 handwritten digits to 8 numbers per
image with four transformers and compares how well each reconstructs images it has
not seen:

- :class:`~sklearn.decomposition.PCA`, the best *linear* encoder-decoder pair;
- :class:`~skgfe.Autoencoder`, an MLP encoder and an MLP decoder trained together;
- :class:`~skgfe.VariationalAutoencoder`, its probabilistic variant;
- :class:`~skgfe.GradientFlowEncoder` (GFE), which trains only a decoder and
  encodes each image by following the gradient flow of its reconstruction loss
  through latent space.

The three neural models share the decoder architecture (one hidden layer of 128
units) and the training budget (10 epochs), so the comparison is like for like.
"""

# %%
# Data
# ----
#
# 1000 images train the models and the remaining 797 measure the reconstruction
# error. The pixel values are grey levels from 0 to 16; the models work on them
# as they are (GFE centres the data and divides them by one global scale
# internally).
import time
import warnings

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

from skgfe import Autoencoder, GradientFlowEncoder, VariationalAutoencoder

X = load_digits().data
X_train, X_test = train_test_split(X, train_size=1000, random_state=0)
print(f"train: {X_train.shape}, test: {X_test.shape}")

# %%
# Models
# ------
#
# Ten epochs are far from convergence for the neural models; they keep the
# example fast. Each of them warns that training has not converged, which we
# silence here.
warnings.filterwarnings("ignore", category=ConvergenceWarning)

n_components = 8
common = dict(hidden_layer_sizes=(128,), max_iter=10, random_state=0)
models = {
    "PCA": PCA(n_components=n_components, random_state=0),
    "Autoencoder": Autoencoder(n_components=n_components, **common),
    "VAE": VariationalAutoencoder(n_components=n_components, **common),
    "GFE": GradientFlowEncoder(n_components=n_components, **common),
}

# %%
# Fit, encode, decode
# -------------------
#
# Every model is a scikit-learn transformer: ``fit`` on the training images,
# ``transform`` the test images to codes and ``inverse_transform`` the codes back
# to images. The held-out mean squared error is measured in grey levels squared.
results = {}
for name, model in models.items():
    start = time.perf_counter()
    model.fit(X_train)
    fit_time = time.perf_counter() - start
    start = time.perf_counter()
    codes = model.transform(X_test)
    transform_time = time.perf_counter() - start
    reconstructions = model.inverse_transform(codes)
    mse = np.mean((X_test - reconstructions) ** 2)
    results[name] = dict(
        mse=mse, fit=fit_time, transform=transform_time, recon=reconstructions
    )

print(f"{'model':<12}{'test MSE':>10}{'fit s':>8}{'transform s':>13}")
for name, r in results.items():
    print(f"{name:<12}{r['mse']:>10.3f}{r['fit']:>8.2f}{r['transform']:>13.3f}")

# %%
# Size of the models
# ------------------
#
# The gradient flow encoder has no encoder network, so it has about half the
# parameters of the autoencoder. The price is paid at ``transform`` time: the
# code of a sample is found by integrating a flow, which takes many evaluations
# of the decoder instead of one pass through an encoder.


def n_parameters(model):
    """Number of trained weights of the torch modules of a fitted model."""
    modules = [v for v in vars(model).values() if isinstance(v, torch.nn.Module)]
    return sum(p.numel() for module in modules for p in module.parameters())


for name in ("Autoencoder", "VAE", "GFE"):
    print(f"{name:<12}{n_parameters(models[name]):>7} parameters")

# %%
# Reconstruction error
# --------------------
fig, ax = plt.subplots(figsize=(6, 3))
names = list(results)
ax.barh(names, [results[n]["mse"] for n in names], color="tab:blue")
ax.invert_yaxis()
ax.set_xlabel("held-out mean squared error (lower is better)")
ax.set_title(f"Digits compressed to {n_components} numbers")
fig.tight_layout()

# %%
# Reconstructed test images
# -------------------------
n_images = 10
rows = {"original": X_test, **{n: r["recon"] for n, r in results.items()}}
fig, axes = plt.subplots(
    len(rows), n_images, figsize=(n_images * 0.9, len(rows) * 1.0), squeeze=False
)
for i, (name, images) in enumerate(rows.items()):
    for j in range(n_images):
        ax = axes[i, j]
        ax.imshow(images[j].reshape(8, 8), cmap="gray_r", vmin=0, vmax=16)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[i, 0].set_ylabel(name, rotation=0, ha="right", va="center")
fig.suptitle("Held-out digits and their reconstructions")
# sphinx_gallery_thumbnail_number = 2
fig.tight_layout()
plt.show()

# %%
# Conclusion
# ----------
best = min(results, key=lambda name: results[name]["mse"])
print(f"lowest held-out error: {best}")

# %%
# GFE's code of an image is the decoder's own optimum for that image, not an
# encoder's estimate of it, so it does not suffer from an encoder that
# generalises worse than the decoder, and every parameter it trains is a decoder
# parameter. See :ref:`sphx_glr_auto_examples_plot_data_efficiency_spectra.py`
# for how the gap between the models depends on the amount of training data.
