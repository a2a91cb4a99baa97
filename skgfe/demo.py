"""Compare gradient flow encoding with PCA and autoencoders on scikit-learn's digits.

Run with ``python -m skgfe.demo``. Prints a table of held-out reconstruction error and
timings for several training-set sizes and writes a PNG of original versus
reconstructed test digits.
"""

import argparse
import time
import warnings

import numpy as np
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

from skgfe import Autoencoder, GradientFlowEncoder, VariationalAutoencoder


def make_models(n_components, random_state):
    """The models compared, by display name.

    The three neural models use their (shared) defaults: the same decoder
    (``hidden_layer_sizes=(128,)``, ELU), the same batch size, learning rate,
    optimiser and stopping rule. The encoding differs: a gradient flow (solved
    per sample by Levenberg-Marquardt, from a decoder initialised at PCA), an
    encoder network, or a Gaussian encoder network trained on the ELBO.
    """
    return {
        "PCA": PCA(n_components=n_components, random_state=random_state),
        "GradientFlowEncoder": GradientFlowEncoder(
            n_components=n_components, random_state=random_state
        ),
        "Autoencoder": Autoencoder(
            n_components=n_components, random_state=random_state
        ),
        "VariationalAutoencoder": VariationalAutoencoder(
            n_components=n_components, random_state=random_state
        ),
    }


def evaluate(model, X_train, X_test):
    """Fit ``model`` and return held-out MSE, fit and transform seconds, recons."""
    start = time.perf_counter()
    with warnings.catch_warnings():
        # The neural models stop on their own early-stopping rule; a fit that
        # reaches max_iter first still gives a usable model.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X_train)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    codes = model.transform(X_test)
    transform_seconds = time.perf_counter() - start
    reconstructions = model.inverse_transform(codes)
    mse = float(np.mean((X_test - reconstructions) ** 2))
    return mse, fit_seconds, transform_seconds, reconstructions


def plot_reconstructions(X_test, reconstructions, path, n_digits=10):
    """Save a grid: first row originals, one row per model of reconstructions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {"original": X_test, **reconstructions}
    fig, axes = plt.subplots(
        len(rows), n_digits, figsize=(n_digits, 1.1 * len(rows)), squeeze=False
    )
    for r, (name, images) in enumerate(rows.items()):
        for c in range(n_digits):
            ax = axes[r, c]
            ax.imshow(images[c].reshape(8, 8), cmap="gray_r", vmin=0, vmax=16)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle("Held-out digits and their reconstructions")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-components", type=int, default=8)
    parser.add_argument(
        "--train-sizes", type=int, nargs="+", default=[200, 1000], metavar="N"
    )
    parser.add_argument("--plot", default="skgfe_demo.png", help="PNG to write")
    parser.add_argument("--random-state", type=int, default=0)
    args = parser.parse_args(argv)

    X = load_digits().data
    X_pool, X_test = train_test_split(X, test_size=597, random_state=args.random_state)
    print(
        f"digits: {len(X_pool)} training pool, {len(X_test)} held-out samples, "
        f"{X.shape[1]} features, n_components={args.n_components}; neural models "
        "at their defaults, each trained until its early-stopping rule ends it "
        f"(at most max_iter={GradientFlowEncoder().max_iter} epochs)\n"
    )
    header = (
        f"{'model':<24}{'n_train':>8}{'test MSE':>11}{'fit s':>9}{'transform s':>13}"
    )
    print(header)
    print("-" * len(header))
    last_reconstructions = {}
    for n_train in args.train_sizes:
        X_train = X_pool[:n_train]
        for name, model in make_models(args.n_components, args.random_state).items():
            mse, fit_s, transform_s, recon = evaluate(model, X_train, X_test)
            print(
                f"{name:<24}{n_train:>8}{mse:>11.3f}{fit_s:>9.2f}{transform_s:>13.3f}"
            )
            last_reconstructions[name] = recon
        print()
    plot_reconstructions(X_test, last_reconstructions, args.plot)
    print(f"wrote {args.plot} (reconstructions after training on {n_train} samples)")


if __name__ == "__main__":
    main()
