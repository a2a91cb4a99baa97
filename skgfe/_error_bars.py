"""Error bars of a GradientFlowEncoder: the noise and prior behind its Laplace
approximation, and the standard deviations of codes and reconstructions.

See :mod:`skgfe._flow.uncertainty` for the approximation and the user guide's
section on missing entries for the choices made here.
"""

import torch

from ._flow.objective import GaussianCodePrior
from ._flow.uncertainty import laplace_covariance

# Relative ridge on the training codes' covariance (the prior), so that its
# inverse exists with fewer codes than components.
PRIOR_RIDGE = 1e-6
# A feature that fewer held-out samples observe than this, and than half as
# many as the median feature, gets no noise variance of its own residuals:
# observed once, its residual was 0 (the scaler's mean is that value) and
# its error bars 0 with the decoder's error 0.48 (a sine profile).
MIN_NOISE_ENTRIES = 5


def fit_error_model(estimator, X_fit, X_val):
    """Set ``noise_variance_`` and the code prior from scaled samples.

    The noise variance of each feature is the mean squared residual of the
    held-out samples ``X_val`` (or, without them, of the training samples
    ``X_fit``, which underestimates it) at their codes; the prior is the mean
    and covariance of those codes. Missing entries (NaN) are left out. When
    ``estimator._keep_split`` is set, ``estimator._split`` keeps the training
    and held-out samples (data units; None for no held-out samples).
    """
    held_out = X_val is not None and len(X_val) > 0
    samples = X_val if held_out else X_fit
    with torch.no_grad():
        codes = estimator._flow(samples).z
        residual = samples - estimator._decode_scaled(codes)
    if getattr(estimator, "_keep_split", False):
        # For GradientFlowImputer's residual model, which asks for them.
        estimator._split = tuple(
            None if part is None else estimator._unscale(part).cpu().numpy()
            for part in (X_fit, X_val if held_out else None)
        )
    squared = residual.double().pow(2)
    observed = ~torch.isnan(squared)
    counts = observed.sum(dim=0)
    per_feature = squared.nan_to_num(0.0).sum(dim=0) / counts.clamp(min=1)
    overall = squared.nan_to_num(0.0).sum() / observed.sum().clamp(min=1)
    # A feature no held-out sample observes gets the mean over the others,
    # unless it is rare (see MIN_NOISE_ENTRIES): then its spread.
    per_feature = torch.where(counts > 0, per_feature, overall)
    rare = (counts < MIN_NOISE_ENTRIES) & (2 * counts < counts.median())
    if rare.any():
        fallback = _spread(torch.cat([X_fit, X_val]) if held_out else X_fit)
        per_feature = torch.where(
            rare, torch.maximum(per_feature, fallback), per_feature
        )
    floor = torch.finfo(torch.float64).eps * (1.0 + overall)
    noise = per_feature.clamp(min=floor)
    estimator.noise_variance_ = (noise * estimator.scale_**2).cpu().numpy()
    mean, covariance = code_moments(codes)
    estimator._code_covariance = covariance.cpu().numpy()
    estimator._code_mean = mean.cpu().numpy()


def _spread(samples):
    """Each feature's variance over the entries that ``samples`` observe
    (the error of a decoder that learned nothing of it), or where fewer than
    :data:`MIN_NOISE_ENTRIES` do, the mean of the others' variances;
    float64."""
    samples = samples.double()
    observed = ~torch.isnan(samples)
    counts = observed.sum(dim=0)
    mean = samples.nan_to_num(0.0).sum(dim=0) / counts.clamp(min=1)
    squares = (samples - mean).pow(2).nan_to_num(0.0).sum(dim=0)
    variance = squares / (counts - 1).clamp(min=1)
    known = counts >= MIN_NOISE_ENTRIES
    typical = variance[known].mean() if known.any() else variance.mean()
    return torch.where(known, variance, typical)


def code_moments(codes):
    """Mean ``(k,)`` and covariance ``(k, k)`` of the codes ``(n, k)``, in float64,
    the covariance with a relative ridge of :data:`PRIOR_RIDGE`."""
    codes = codes.double()
    mean = codes.mean(dim=0)
    centred = codes - mean
    covariance = centred.T @ centred / max(1, len(codes) - 1)
    k = covariance.shape[0]
    ridge = PRIOR_RIDGE * (covariance.trace() / k + 1e-12)
    eye = torch.eye(k, dtype=torch.float64, device=covariance.device)
    return mean, covariance + ridge * eye


def _prior_weight(precision, loss, noise):
    """The prior term's weight in the loss's units (see :func:`code_prior_term`)."""
    return noise * precision if loss == "mse" else 0.5 * precision


def training_code_prior(moments, residual, loss, strength, dtype):
    """The prior on the codes of training's warm solves (``code_prior_weight``).

    A Gaussian with the mean and covariance ``moments`` (:func:`code_moments`
    of the codes training started from) and, for 'mse', the noise variance
    estimated by the mean squared ``residual`` (scaled samples minus their
    current reconstructions, NaN for a missing entry). Its weight is
    ``strength`` times the posterior's (:func:`code_prior_term`). None where
    the residual gives no noise variance.
    """
    mean, covariance = moments
    noise = None
    if loss == "mse":
        squared = residual.double().pow(2)
        missing = torch.isnan(squared)
        noise = torch.where(missing, 0.0, squared).sum() / (~missing).sum()
        if not torch.isfinite(noise):
            return None
    weight = strength * _prior_weight(torch.linalg.inv(covariance), loss, noise)
    return GaussianCodePrior(mean.to(dtype), weight.to(dtype), all_rows=True)


def code_prior_term(estimator, dtype, device):
    """The :class:`GaussianCodePrior` of rows with missing entries (scaled units).

    The loss of a sample is a mean over its observed entries of squared errors
    (or cross-entropies); with Gaussian noise of variance ``s^2`` (the mean of
    ``noise_variance_``, scaled) and the prior ``N(mean, C)``, the negative
    log-posterior is proportional to the sum of squared errors plus
    ``s^2 (z - mean)^T C^-1 (z - mean)``; for 'bce', to the sum of
    cross-entropies plus half that quadratic without ``s^2``.
    """
    precision = torch.linalg.inv(torch.as_tensor(estimator._code_covariance))
    noise = None
    if estimator._fitted_loss == "mse":
        noise = float(estimator.noise_variance_.mean()) / estimator.scale_**2
    weight = _prior_weight(precision, estimator._fitted_loss, noise)
    mean = torch.as_tensor(estimator._code_mean)
    return GaussianCodePrior(
        mean.to(dtype=dtype, device=device), weight.to(dtype=dtype, device=device)
    )


def laplace_terms(estimator, X_scaled, Z):
    """Per-sample code covariances and output variances (scaled units)."""
    decoder = estimator.decoder_
    dtype = next(decoder.parameters()).dtype
    observed = (~torch.isnan(X_scaled)).to(dtype)
    prior = torch.linalg.inv(
        torch.as_tensor(estimator._code_covariance, device=Z.device)
    ).to(dtype)
    if estimator._fitted_loss == "mse":
        noise = torch.as_tensor(
            estimator.noise_variance_ / estimator.scale_**2, device=Z.device
        ).to(dtype)
        precision = observed / noise
    else:
        with torch.no_grad():
            probability = torch.sigmoid(decoder(Z.to(dtype)))
        bernoulli = probability * (1 - probability)
        precision = observed * bernoulli
    covariance, output_variance = laplace_covariance(
        decoder, Z.to(dtype), precision, prior
    )
    if estimator._fitted_loss == "bce":
        # Variance of the decoded probability (delta method), not of the logits.
        output_variance = bernoulli.pow(2) * output_variance
    return covariance, output_variance
