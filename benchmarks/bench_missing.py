"""Missing values: GFE's imputations and error bars against scikit-learn's imputers.

Held-out samples with entries missing completely at random (10%, 30%, 50%) or in
one contiguous gap of 20% of the features per sample are imputed by

- ``GradientFlowImputer`` (a default ``GradientFlowEncoder`` of ``n_components``),
- ``KNNImputer(n_neighbors=5)``,
- ``IterativeImputer`` (scikit-learn's defaults),
- iterative PCA (hard-rank iterative SVD, the SoftImpute family; same
  ``n_components``; a new sample's missing entries come from the least-squares
  code of its observed entries),
- column means,

each fitted on training samples that are complete, or that miss entries with the
same pattern. Reported: the squared error on the missing entries relative to the
column-mean imputer's (so the mean is 1), fit + impute time, and for GFE the
coverage of its nominal 90% intervals (``transform(X, return_std=True)``).

Usage::

    python benchmarks/bench_missing.py           # full run (results/missing.md)
    python benchmarks/bench_missing.py --quick   # smoke run for CI
    python benchmarks/bench_missing.py --datasets spectra --training missing
"""

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import sklearn
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.experimental import enable_iterative_imputer  # noqa: F401
from sklearn.impute import IterativeImputer, KNNImputer, SimpleImputer

import skgfe
from skgfe import GradientFlowEncoder, GradientFlowImputer

sys.path.insert(0, str(Path(__file__).parent))
from bench_data_efficiency import load_datasets  # noqa: E402

PATTERNS = ("mcar-10", "mcar-30", "mcar-50", "gap-20")
TRAINING = ("complete", "missing")
Z_90 = 1.6448536269514722  # two-sided 90% interval of a Gaussian


def hide(X, pattern, rng):
    """A boolean mask of missing entries; every row keeps one observed entry."""
    n, p = X.shape
    kind, percent = pattern.split("-")
    rate = int(percent) / 100
    if kind == "mcar":
        missing = rng.uniform(size=(n, p)) < rate
        full = missing.all(axis=1)
        missing[full, rng.randint(p, size=full.sum())] = False
        return missing
    width = int(round(rate * p))
    starts = rng.randint(p - width + 1, size=n)
    columns = np.arange(p)
    return (columns >= starts[:, None]) & (columns < starts[:, None] + width)


class IterativePCAImputer:
    """Hard-rank iterative SVD on the training samples; least squares for new ones."""

    def __init__(self, n_components, max_iter=100, tol=1e-6):
        self.n_components, self.max_iter, self.tol = n_components, max_iter, tol

    def fit(self, X):
        missing = np.isnan(X)
        filled = np.where(missing, np.nanmean(X, axis=0), X)
        for _ in range(self.max_iter if missing.any() else 1):
            mean = filled.mean(axis=0)
            u, s, vt = np.linalg.svd(filled - mean, full_matrices=False)
            k = self.n_components
            reconstruction = (u[:, :k] * s[:k]) @ vt[:k] + mean
            change = np.sum((reconstruction[missing] - filled[missing]) ** 2)
            filled[missing] = reconstruction[missing]
            if change <= self.tol * np.sum(filled**2):
                break
        self.mean_ = filled.mean(axis=0)
        _, _, vt = np.linalg.svd(filled - self.mean_, full_matrices=False)
        self.components_ = vt[: self.n_components]
        return self

    def transform(self, X):
        out = X.copy()
        W = self.components_.T
        for i, row in enumerate(X):
            observed = ~np.isnan(row)
            code, *_ = np.linalg.lstsq(
                W[observed], row[observed] - self.mean_[observed], rcond=None
            )
            out[i, ~observed] = (W[~observed] @ code) + self.mean_[~observed]
        return out


def make_imputers(n_components, seed):
    return {
        "GFE": GradientFlowImputer(
            GradientFlowEncoder(n_components=n_components, random_state=seed)
        ),
        "KNN": KNNImputer(n_neighbors=5),
        "Iterative": IterativeImputer(random_state=seed),
        "IterativePCA": IterativePCAImputer(n_components),
        "Mean": SimpleImputer(strategy="mean"),
    }


# Imputers fitted on complete training samples serve every pattern of their
# data set and seed: (data, seed) -> {name: (fitted imputer, fit seconds)}.
_COMPLETE_FITS = {}


def fitted_imputers(X_train, key, n_components, seed, names=None):
    """Each imputer (of ``names``; None: all) fitted on ``X_train`` and its fit
    time; cached by ``key``."""
    if key is not None and key in _COMPLETE_FITS:
        return _COMPLETE_FITS[key]
    fits = {}
    for name, imputer in make_imputers(n_components, seed).items():
        if names is not None and name not in names:
            continue
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fits[name] = (imputer.fit(X_train), time.perf_counter() - start)
    if key is not None:
        _COMPLETE_FITS[key] = fits
    return fits


def run_cell(
    X_train, X_test, pattern, training, n_components, seed, data="", names=None
):
    """Errors (relative to the mean imputer), times and GFE's coverage, of the
    imputers ``names`` (None: all)."""
    rng = np.random.RandomState(seed)
    test_missing = hide(X_test, pattern, rng)
    X_test_missing = np.where(test_missing, np.nan, X_test)
    if training == "missing":
        X_train = np.where(hide(X_train, pattern, rng), np.nan, X_train)
    truth = X_test[test_missing]
    column_means = np.nanmean(X_train, axis=0)
    baseline = np.sum(
        (truth - np.broadcast_to(column_means, X_test.shape)[test_missing]) ** 2
    )
    row = {"errors": {}, "times": {}}
    key = (data, seed) if training == "complete" else None
    for name, (imputer, fit_seconds) in fitted_imputers(
        X_train, key, n_components, seed, names
    ).items():
        start = time.perf_counter() - fit_seconds
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            if name == "GFE":
                filled, std = imputer.transform(X_test_missing, return_std=True)
            else:
                filled = imputer.transform(X_test_missing)
        row["times"][name] = time.perf_counter() - start
        row["errors"][name] = float(
            np.sum((filled[test_missing] - truth) ** 2) / baseline
        )
        if name == "GFE":
            inside = np.abs(filled[test_missing] - truth) <= Z_90 * std[test_missing]
            row["coverage_90"] = float(inside.mean())
    return row


def machine_description():
    return (
        f"{platform.platform()}, {os.cpu_count()} CPUs, torch threads "
        f"{torch.get_num_threads()}; Python {platform.python_version()}, torch "
        f"{torch.__version__}, scikit-learn {sklearn.__version__}, skgfe "
        f"{skgfe.__version__}"
    )


def format_report(results, args, seconds):
    lines = [
        "# Missing values: imputation error and error bars",
        "",
        f"Written by `python benchmarks/bench_missing.py {' '.join(args.argv)}` "
        f"in {seconds / 60:.1f} min.",
        *(
            [
                "",
                "- The anchors' errors and times are those of an earlier run "
                f"(`{Path(args.anchors_from).name}`); GFE alone ran in this one, "
                "so the time ratios divide times measured in two runs.",
            ]
            if getattr(args, "anchors_from", None)
            else []
        ),
        "",
        f"- Machine: {machine_description()}",
        f"- {args.n_train} training samples, {args.n_test} held-out samples per data "
        f"set, n_components = {args.n_components}, seeds {args.seeds} (each draws "
        "its own missing entries and model weights).",
        "- Error: squared error on the missing entries of the held-out samples, "
        "relative to the column-mean imputer's (mean over seeds; lower is better).",
        "- Coverage: share of the missing entries inside GFE's nominal 90% "
        "intervals (mean +- 1.645 std).",
        "- Time: fit + impute, GFE's over the best anchor's (median over seeds).",
        "",
        "| data | training | pattern | GFE | KNN | Iterative | IterativePCA | Mean "
        "| GFE / best anchor | GFE 90% coverage | time GFE / best anchor |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    wins = within = cells = 0
    coverages = {}
    for (data, training, pattern), runs in results.items():
        mean = {
            name: np.mean([r["errors"][name] for r in runs])
            for name in runs[0]["errors"]
        }
        anchors = {k: v for k, v in mean.items() if k != "GFE"}
        best = min(anchors, key=anchors.get)
        ratio = mean["GFE"] / anchors[best]
        times = np.median([r["times"]["GFE"] / r["times"][best] for r in runs])
        coverage = np.mean([r["coverage_90"] for r in runs])
        coverages.setdefault(data, []).append(coverage)
        cells += 1
        wins += ratio <= 1.0
        within += ratio <= 1.5
        values = " | ".join(f"{mean[name]:.3g}" for name in mean)
        lines.append(
            f"| {data} | {training} | {pattern} | {values} | {ratio:.3g} ({best}) "
            f"| {coverage:.3f} | {times:.1f} |"
        )
    lines += [
        "",
        "Targets:",
        "",
        f"- GFE at most the best anchor's error: {wins} of {cells} cells",
        f"- GFE within 1.5x of the best anchor: {within} of {cells} cells",
    ]
    for data, values in coverages.items():
        lines.append(
            f"- {data}: 90% intervals cover {min(values):.3f}-{max(values):.3f} "
            "of the missing entries"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-train", type=int, default=500)
    parser.add_argument("--n-test", type=int, default=200)
    parser.add_argument("--n-components", type=int, default=8)
    parser.add_argument("--datasets", nargs="+", default=None)
    parser.add_argument(
        "--training",
        nargs="+",
        choices=TRAINING,
        default=list(TRAINING),
        help="which training data to run: complete, missing or both",
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument(
        "--anchors-from",
        help="a raw file of an earlier run: run GFE only and take the anchors' "
        "errors and times of the same cells and seeds from it (the anchors do "
        "not change with skgfe)",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite missing.md from missing_raw.json in --out",
    )
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    if args.quick:
        args.seeds, args.n_train, args.n_test = [0], 100, 40
        args.datasets = args.datasets or ["digits"]
    out = Path(args.out)
    torch.set_num_threads(1)
    if args.report_only:
        raw = json.loads((out / "missing_raw.json").read_text())
        seconds = raw.pop("_seconds", float("nan"))
        results = {tuple(key.split(" / ")): runs for key, runs in raw.items()}
        (out / "missing.md").write_text(format_report(results, args, seconds))
        return
    datasets = load_datasets()
    names = args.datasets or list(datasets)
    anchors = None
    if args.anchors_from:
        anchors = json.loads(Path(args.anchors_from).read_text())
    patterns = PATTERNS[1:2] if args.quick else PATTERNS
    start = time.perf_counter()
    results = {}
    for data in names:
        pool, test = datasets[data]
        for training in args.training:
            for pattern in patterns:
                runs = []
                for i, seed in enumerate(args.seeds):
                    order = np.random.RandomState(seed).permutation(len(pool))
                    X_train = pool[order[: args.n_train]]
                    runs.append(
                        run_cell(
                            X_train,
                            test[: args.n_test],
                            pattern,
                            training,
                            args.n_components,
                            seed,
                            data,
                            names=None if anchors is None else ("GFE",),
                        )  # fmt: skip
                    )
                    if anchors is not None:
                        earlier = anchors[f"{data} / {training} / {pattern}"][i]
                        for what in ("errors", "times"):
                            runs[-1][what] = {
                                **earlier[what],
                                "GFE": runs[-1][what]["GFE"],
                            }
                results[data, training, pattern] = runs
                print(data, training, pattern, runs[-1]["errors"], flush=True)
    seconds = time.perf_counter() - start
    report = format_report(results, args, seconds)
    out.mkdir(parents=True, exist_ok=True)
    (out / "missing.md").write_text(report)
    raw = {" / ".join(key): runs for key, runs in results.items()}
    raw["_seconds"] = seconds
    (out / "missing_raw.json").write_text(json.dumps(raw, indent=1))
    print(report)


if __name__ == "__main__":
    main()
