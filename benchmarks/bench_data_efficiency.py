"""Data efficiency: held-out reconstruction error against training-set size.

Compares GradientFlowEncoder, Autoencoder, VariationalAutoencoder, PCA and KernelPCA
(``fit_inverse_transform=True``) at a fixed ``n_components`` on digits and on the two
generated scientific families of :mod:`skgfe.datasets`, over several training-set
sizes and seeds. In the same run it times fit and transform (per 1000 samples, and as
ratios to the Autoencoder) and measures how transform time grows with the number of
samples. Writes ``data_efficiency.md`` and ``data_efficiency.png`` to the output
folder.

Usage::

    python benchmarks/bench_data_efficiency.py          # full run (~10 min on 2 cores)
    python benchmarks/bench_data_efficiency.py --quick  # smoke run for CI
"""

import argparse
import os
import platform
import subprocess
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path

import gfe_checks
import numpy as np
import sklearn
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA, KernelPCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import pairwise_distances
from sklearn.model_selection import KFold

import skgfe
from skgfe import Autoencoder, GradientFlowEncoder, VariationalAutoencoder
from skgfe.datasets import make_reaction_diffusion, make_spectra

N_TEST = 500


def load_digits_split():
    """Digits as (pool of training candidates, held-out test set)."""
    digits = load_digits().data
    order = np.random.RandomState(0).permutation(len(digits))
    return digits[order[N_TEST:]], digits[order[:N_TEST]]


def load_datasets():
    """Each data set as (pool of training candidates, held-out test set)."""
    spectra = make_spectra(n_samples=1000 + N_TEST, n_features=128, random_state=0)
    pde = make_reaction_diffusion(n_samples=1000 + N_TEST, random_state=0)
    return {
        "digits": load_digits_split(),
        "spectra": (spectra[N_TEST:], spectra[:N_TEST]),
        "reaction_diffusion": (pde[N_TEST:], pde[:N_TEST]),
    }


def make_models(n_components, seed, max_iter=None):
    """The compared models, at their defaults (``max_iter`` only for smoke runs).

    The neural ones share decoder architecture, optimiser and stopping rule; each
    trains until its own early-stopping rule ends it.
    """
    shared = dict(n_components=n_components, random_state=seed)
    if max_iter is not None:
        shared["max_iter"] = max_iter
    return {
        "GFE": GradientFlowEncoder(**shared),
        "Autoencoder": Autoencoder(**shared),
        "VAE": VariationalAutoencoder(**shared),
        "PCA": PCA(n_components=n_components, random_state=seed),
        "KernelPCA": TunedKernelPCA(n_components=n_components, random_state=seed),
    }


class TunedKernelPCA(TransformerMixin, BaseEstimator):
    """RBF KernelPCA whose kernel width and pre-image ridge are chosen by 3-fold CV.

    KernelPCA's defaults (``gamma = 1 / n_features``, ``alpha = 1``) are far off on
    unscaled data, and a baseline left at a bad setting says nothing. The width is
    a multiple of the median heuristic (``gamma = c / median squared distance``);
    the selection uses the training data only and its time counts as fit time.
    """

    GAMMA_FACTORS = (0.1, 1.0, 10.0)
    ALPHAS = (1e-4, 1e-2)

    def __init__(self, n_components=8, random_state=None):
        self.n_components = n_components
        self.random_state = random_state

    @staticmethod
    def _median_squared_distance(X):
        distances = pairwise_distances(X, squared=True)
        return np.median(distances[np.triu_indices(len(X), 1)])

    def _make(self, n_samples, median, gamma_factor, alpha):
        return KernelPCA(
            n_components=min(self.n_components, n_samples - 1),
            kernel="rbf",
            gamma=gamma_factor / median,
            alpha=alpha,
            fit_inverse_transform=True,
            random_state=self.random_state,
        )

    def fit(self, X, y=None):
        splitter = KFold(3, shuffle=True, random_state=self.random_state)
        # The median heuristic depends on the fold only, not on the grid point.
        folds = [
            (X[train], X[val], self._median_squared_distance(X[train]))
            for train, val in splitter.split(X)
        ]
        errors = {}
        for gamma_factor in self.GAMMA_FACTORS:
            for alpha in self.ALPHAS:
                error = 0.0
                for X_fit, X_val, median in folds:
                    model = self._make(len(X_fit), median, gamma_factor, alpha)
                    model.fit(X_fit)
                    reconstruction = model.inverse_transform(model.transform(X_val))
                    error += np.mean((X_val - reconstruction) ** 2)
                errors[gamma_factor, alpha] = error
        self.gamma_factor_, self.alpha_ = min(errors, key=errors.get)
        median = self._median_squared_distance(X)
        self.model_ = self._make(len(X), median, self.gamma_factor_, self.alpha_)
        self.model_.fit(X)
        return self

    def transform(self, X):
        return self.model_.transform(X)

    def inverse_transform(self, X):
        return self.model_.inverse_transform(X)


def run_one(model, X_train, X_test):
    """Normalised held-out MSE, fit seconds and transform seconds per 1000 samples."""
    start = time.perf_counter()
    model.fit(X_train)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    codes = model.transform(X_test)
    transform_seconds = (time.perf_counter() - start) * 1000 / len(X_test)
    reconstruction = model.inverse_transform(codes)
    # Normalised by the test set's total variance: 1.0 = predicting the mean.
    nmse = np.mean((X_test - reconstruction) ** 2) / np.mean(X_test.var(axis=0))
    return nmse, fit_seconds, transform_seconds


def transform_scaling(X_pool, sizes, n_components, max_iter):
    """Transform seconds for growing numbers of samples (models fitted on 200)."""
    rng = np.random.RandomState(0)
    models = make_models(n_components, 0, max_iter)
    timings = defaultdict(dict)
    for name in ["GFE", "Autoencoder", "PCA"]:
        model = models[name].fit(X_pool[:200])
        model.transform(X_pool[:10])  # warm-up: first-call overheads are not timed
        for n in sizes:
            X = X_pool[rng.randint(len(X_pool), size=n)]
            X = X + 0.1 * rng.normal(size=X.shape) * X.std(axis=0)
            start = time.perf_counter()
            model.transform(X)
            timings[name][n] = time.perf_counter() - start
    return timings


MEMORY_TRANSFORM_SIZE = 10_000


def _proc_status_mib(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1]) / 1024
    raise KeyError(field)


def memory_probe(name, n_train, max_iter, n_components):
    """In a fresh process: fit ``name`` on digits, transform and reconstruct 10000
    samples, and print the peak resident memory (MiB) above the resident memory
    just before ``fit``, then that resident memory.

    Linux only: the peak (VmHWM) is reset through ``/proc/self/clear_refs`` once
    torch's runtime has started, so the increment measures the model rather than
    imports or torch's first use.
    """
    X_pool = load_digits_split()[0]
    rng = np.random.RandomState(0)
    X_big = X_pool[rng.randint(len(X_pool), size=MEMORY_TRANSFORM_SIZE)]
    # Start torch's runtime (kernels, thread pools, autograd) with a tiny model.
    layer = torch.nn.Linear(X_pool.shape[1], n_components, dtype=torch.float64)
    layer(torch.as_tensor(X_pool[:10])).pow(2).sum().backward()
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak to current
    before = _proc_status_mib("VmRSS")
    model = make_models(n_components, 0, max_iter)[name]
    model.fit(X_pool[:n_train])
    model.inverse_transform(model.transform(X_big))
    print(_proc_status_mib("VmHWM") - before, before)


def peak_memory(models, args):
    """Peak memory increment of each model's fit + transform, one fresh process
    per model; None where the platform cannot measure it (not Linux)."""
    if not Path("/proc/self/clear_refs").exists():
        return None
    increments, before = {}, []
    for name in models:
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--memory-probe",
            name,
        ]
        command += ["--quick"] if args.quick else []
        command += ["--n-components", str(args.n_components)]
        output = subprocess.run(command, capture_output=True, text=True, check=True)
        increment, resident = map(float, output.stdout.split()[-2:])
        increments[name] = increment
        before.append(resident)
    return increments, float(np.median(before))


def machine_description():
    return (
        f"{platform.platform()}, {os.cpu_count()} CPUs, torch threads "
        f"{torch.get_num_threads()}; Python {platform.python_version()}, "
        f"torch {torch.__version__}, scikit-learn {sklearn.__version__}, "
        f"numpy {np.__version__}, skgfe {skgfe.__version__}"
    )


def format_report(results, timings, scaling, memory, args, seconds):
    lines = [
        "# Data efficiency: held-out reconstruction error vs training-set size",
        "",
        f"Generated by `python benchmarks/bench_data_efficiency.py"
        f"{' --quick' if args.quick else ''}` in {seconds / 60:.1f} min.",
        "",
        f"- Machine: {machine_description()}",
        f"- n_components = {args.n_components}; held-out set of {N_TEST} samples; "
        f"seeds {args.seeds}; neural models: all at their defaults"
        + (f" except max_iter={args.max_iter}" if args.max_iter else "")
        + " (each stops on its own early-stopping rule); KernelPCA: RBF kernel, "
        "width and pre-image ridge chosen by 3-fold CV on the training set "
        "(counted in its fit time).",
        "- Error: held-out mean squared reconstruction error divided by the test "
        "set's mean feature variance (1.0 = predicting the mean); mean ± std over "
        "seeds. Lower is better; **bold** = best at that size.",
        "",
    ]
    for dataset, by_model in results.items():
        lines += [f"## {dataset}", ""]
        sizes = args.train_sizes
        lines.append("| model | " + " | ".join(f"n={n}" for n in sizes) + " |")
        lines.append("|---" * (len(sizes) + 1) + "|")
        best = {
            n: min(np.mean(by_model[m][n]) for m in by_model if n in by_model[m])
            for n in sizes
        }
        for model, by_size in by_model.items():
            cells = []
            for n in sizes:
                if n not in by_size:
                    cells.append("–")
                    continue
                mean, std = np.mean(by_size[n]), np.std(by_size[n])
                cell = f"{mean:.4f} ± {std:.4f}"
                cells.append(f"**{cell}**" if mean == best[n] else cell)
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        lines.append("")
        wins = [n for n in sizes if np.mean(by_model["GFE"][n]) == best[n]]
        ae_wins = [
            n
            for n in sizes
            if np.mean(by_model["GFE"][n]) < np.mean(by_model["Autoencoder"][n])
        ]
        lines.append(
            f"GFE is best at n in {wins or 'none'}; it beats the Autoencoder at n in "
            f"{ae_wins or 'none'}."
        )
        lines.append("")

    lines += target_summary(results, timings, args)
    lines += [
        "## Time (median over seeds, per data set and training-set size)",
        "",
        "Fit seconds and transform seconds per 1000 samples, and their ratios to the "
        "Autoencoder's (same data, same run).",
        "",
        "| data set | n | model | fit s | fit / AE | transform s per 1000 | "
        "transform / AE |",
        "|---|---|---|---|---|---|---|",
    ]
    for (dataset, n), by_model in timings.items():
        ae_fit, ae_tr = np.median(by_model["Autoencoder"], axis=0)
        for model, runs in by_model.items():
            fit_s, tr_s = np.median(runs, axis=0)
            lines.append(
                f"| {dataset} | {n} | {model} | {fit_s:.2f} | {fit_s / ae_fit:.2f} | "
                f"{tr_s:.4f} | {tr_s / ae_tr:.1f} |"
            )
    lines += [
        "",
        "## Transform time against the number of samples (digits, fitted on 200)",
        "",
        "| model | " + " | ".join(f"n={n:.0e}" for n in args.scaling_sizes) + " |",
        "|---" * (len(args.scaling_sizes) + 1) + "|",
    ]
    for model, by_n in scaling.items():
        lines.append(
            f"| {model} | "
            + " | ".join(f"{by_n[n]:.3f} s" for n in args.scaling_sizes)
            + " |"
        )
    lines += [
        "",
        f"## Peak memory (digits: fit on n={args.timing_size}, then transform and "
        f"reconstruct {MEMORY_TRANSFORM_SIZE} samples)",
        "",
    ]
    if memory is None:
        lines.append("Not measured: needs Linux's /proc/self/clear_refs.")
    else:
        increments, resident = memory
        lines += [
            "Peak resident memory during fit + transform, above the process's "
            "resident memory just before fit (about "
            f"{resident:.0f} MiB: Python, numpy, scikit-learn, torch and the data); "
            "one fresh process per model.",
            "",
            "| model | peak MiB above start | ratio to AE |",
            "|---|---|---|",
        ]
        ae = max(increments["Autoencoder"], 1e-9)
        for model, mib in increments.items():
            lines.append(f"| {model} | {mib:.1f} | {mib / ae:.2f} |")
    lines.append("")
    return "\n".join(lines)


def target_summary(results, timings, args):
    """GFE's error and time as ratios to PCA and the Autoencoder (issue targets)."""
    lines = [
        "## GFE against PCA and the Autoencoder",
        "",
        "Held-out error ratios (mean over seeds, and the worst seed's ratio, seed "
        "by seed), and time ratios to the Autoencoder (median over seeds).",
        "",
        "| data set | n | GFE / PCA (mean) | GFE / PCA (worst seed) | GFE / AE |",
        "|---|---|---|---|---|",
    ]
    for dataset, by_model in results.items():
        for n in args.train_sizes:
            gfe = np.array(by_model["GFE"][n])
            pca = np.array(by_model["PCA"][n])
            ae = np.array(by_model["Autoencoder"][n])
            lines.append(
                f"| {dataset} | {n} | {gfe.mean() / pca.mean():.3f} | "
                f"{np.max(gfe / pca):.3f} | {gfe.mean() / ae.mean():.3f} |"
            )
    lines.append("")
    return lines


def plot(results, scaling, args, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_panels = len(results) + 1
    fig, axes = plt.subplots(1, n_panels, figsize=(4.2 * n_panels, 3.8))
    for ax, (dataset, by_model) in zip(axes, results.items()):
        for model, by_size in by_model.items():
            sizes = [n for n in args.train_sizes if n in by_size]
            means = [np.mean(by_size[n]) for n in sizes]
            stds = [np.std(by_size[n]) for n in sizes]
            ax.errorbar(sizes, means, yerr=stds, marker="o", ms=3, label=model)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training samples")
        ax.set_ylabel("held-out normalised MSE")
        ax.set_title(dataset)
    axes[0].legend(fontsize=8)
    ax = axes[-1]
    for model, by_n in scaling.items():
        ax.plot(list(by_n), list(by_n.values()), marker="o", label=model)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("samples transformed")
    ax.set_ylabel("transform seconds")
    ax.set_title("transform time (digits)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def extra_tables(datasets, args):
    """The linear-decoder, real-data, other-data and solver tables of
    :mod:`gfe_checks`."""
    overrides = {"max_iter": args.max_iter} if args.max_iter else {}
    n_train = max(args.train_sizes)
    lines = gfe_checks.linear_decoder_table(
        datasets, n_train, args.n_components, args.seeds, **overrides
    )
    lines += gfe_checks.real_data_table(
        (2,) if args.quick else (2, 4), 2 if args.quick else 5, **overrides
    )
    lines += gfe_checks.other_data_table(
        (50,) if args.quick else (50, 200),
        args.seeds,
        100 if args.quick else 500,
        **overrides,
    )
    X_pool, X_test = datasets["digits"]
    lines += gfe_checks.solver_table(
        X_pool, X_test, args.timing_size, args.n_components, **overrides
    )
    return lines


def timing_only(args, out):
    """Fit and transform times of GFE and the Autoencoder, median over seeds."""
    warnings.simplefilter("ignore", ConvergenceWarning)
    start = time.perf_counter()
    timings = defaultdict(dict)
    for dataset, (X_pool, X_test) in load_datasets().items():
        run_one(GradientFlowEncoder(max_iter=2), X_pool[:50], X_test[:50])  # warm-up
        for n in args.timing_sizes:
            for seed in args.seeds:
                X_train = X_pool[
                    np.random.RandomState(seed).permutation(len(X_pool))[:n]
                ]
                models = make_models(args.n_components, seed, args.max_iter)
                for name in ("GFE", "Autoencoder"):
                    _, fit_s, tr_s = run_one(models[name], X_train, X_test)
                    timings[dataset, n].setdefault(name, []).append((fit_s, tr_s))
    lines = [
        "# Fit and transform time of GFE against the Autoencoder",
        "",
        "Generated by `python benchmarks/bench_data_efficiency.py --timing-only` in "
        f"{(time.perf_counter() - start) / 60:.1f} min on an otherwise idle machine.",
        "",
        f"- Machine: {machine_description()}",
        f"- Same data, seeds {args.seeds} and defaults as the data-efficiency "
        "benchmark; median over seeds.",
        "",
        "| data set | n | GFE fit s | AE fit s | fit / AE | GFE transform s per "
        "1000 | AE transform s per 1000 | transform / AE |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (dataset, n), by_model in timings.items():
        gfe_fit, gfe_tr = np.median(by_model["GFE"], axis=0)
        ae_fit, ae_tr = np.median(by_model["Autoencoder"], axis=0)
        lines.append(
            f"| {dataset} | {n} | {gfe_fit:.2f} | {ae_fit:.2f} | "
            f"{gfe_fit / ae_fit:.2f} | {gfe_tr:.4f} | {ae_tr:.4f} | "
            f"{gfe_tr / ae_tr:.1f} |"
        )
    report = "\n".join(lines) + "\n"
    suffix = "_quick" if args.quick else ""
    (out / f"data_efficiency_timing{suffix}.md").write_text(report)
    print(report)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--n-components", type=int, default=8)
    parser.add_argument("--memory-probe", help=argparse.SUPPRESS)
    parser.add_argument(
        "--timing-only",
        action="store_true",
        help="only the fit and transform times of GFE and the Autoencoder at the "
        "timing sizes (data_efficiency_timing.md), for a rerun on an idle machine",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.train_sizes, args.seeds, args.max_iter = [25, 100], [0], 5
        args.scaling_sizes, args.timing_sizes = [1000, 10000], [100]
        args.timing_size = 100
    else:
        args.train_sizes = [25, 50, 100, 200, 500, 1000]
        args.seeds, args.max_iter = [0, 1, 2], None
        args.scaling_sizes, args.timing_sizes = [1000, 10000, 100000], [200, 1000]
        args.timing_size = 200
    if args.memory_probe:
        warnings.simplefilter("ignore", ConvergenceWarning)
        memory_probe(
            args.memory_probe, args.timing_size, args.max_iter, args.n_components
        )
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.timing_only:
        return timing_only(args, out)
    warnings.simplefilter("ignore", ConvergenceWarning)

    start = time.perf_counter()
    datasets = load_datasets()
    results = defaultdict(lambda: defaultdict(dict))
    timings = defaultdict(dict)
    for dataset, (X_pool, X_test) in datasets.items():
        run_one(GradientFlowEncoder(max_iter=2), X_pool[:50], X_test[:50])  # warm-up
        for n in args.train_sizes:
            for seed in args.seeds:
                X_train = X_pool[
                    np.random.RandomState(seed).permutation(len(X_pool))[:n]
                ]
                for name, model in make_models(
                    args.n_components, seed, args.max_iter
                ).items():
                    nmse, fit_s, tr_s = run_one(model, X_train, X_test)
                    results[dataset][name].setdefault(n, []).append(nmse)
                    if n in args.timing_sizes:
                        timings[dataset, n].setdefault(name, []).append((fit_s, tr_s))
                print(
                    f"{dataset:>18} n={n:<5} seed={seed} "
                    + " ".join(
                        f"{m}={results[dataset][m][n][-1]:.4f}"
                        for m in results[dataset]
                    ),
                    flush=True,
                )
    scaling = transform_scaling(
        datasets["digits"][0], args.scaling_sizes, args.n_components, args.max_iter
    )
    extra = extra_tables(datasets, args)
    memory = peak_memory(list(make_models(args.n_components, 0, 1)), args)
    seconds = time.perf_counter() - start
    suffix = "_quick" if args.quick else ""
    report = format_report(results, timings, scaling, memory, args, seconds)
    report += "\n".join(extra)
    (out / f"data_efficiency{suffix}.md").write_text(report)
    plot(results, scaling, args, out / f"data_efficiency{suffix}.png")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
