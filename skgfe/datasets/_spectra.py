"""Synthetic 1-D spectra: peaks on a smooth background with counting noise."""

# SPDX-License-Identifier: BSD-3-Clause

from numbers import Integral, Real

import numpy as np
from sklearn.utils import Bunch, check_random_state
from sklearn.utils._param_validation import Interval, StrOptions, validate_params

# Documented ranges of the generating parameters (uniform distributions).
_CENTER_RANGE = (0.1, 0.9)
_WIDTH_RANGE = (0.02, 0.08)  # full width at half maximum
_AMPLITUDE_RANGE = (0.5, 1.0)  # peak height
_ETA_RANGE = (0.0, 1.0)  # Lorentzian fraction of a pseudo-Voigt peak
_BACKGROUND_RANGE = (0.0, 0.3)  # Bernstein coefficients of the background
_N_BACKGROUND = 3  # quadratic background: 3 Bernstein coefficients


def _peak_profiles(x, centers, widths, eta=None):
    """Unit-height peak profiles, shape (n_samples, n_peaks, n_features).

    ``widths`` are full widths at half maximum. ``eta`` is the Lorentzian
    fraction of a pseudo-Voigt profile; ``None`` gives pure Gaussians.
    """
    z2 = ((x[None, None, :] - centers[:, :, None]) / widths[:, :, None]) ** 2
    profile = np.exp(-4.0 * np.log(2.0) * z2)
    if eta is not None:
        lorentz = 1.0 / (1.0 + 4.0 * z2)
        profile = eta[:, :, None] * lorentz + (1.0 - eta[:, :, None]) * profile
    return profile


def _background(x, coefs):
    """Quadratic background in the Bernstein basis, shape (n_samples, n_features).

    ``b(x) = c0 (1 - x)^2 + 2 c1 x (1 - x) + c2 x^2``, non-negative whenever the
    coefficients are.
    """
    basis = np.stack([(1.0 - x) ** 2, 2.0 * x * (1.0 - x), x**2])
    return coefs @ basis


@validate_params(
    {
        "n_samples": [Interval(Integral, 1, None, closed="left")],
        "n_features": [Interval(Integral, 2, None, closed="left")],
        "n_peaks": [Interval(Integral, 1, None, closed="left")],
        "peak_shape": [StrOptions({"gaussian", "pseudo_voigt"})],
        "noise": [StrOptions({"poisson"}), None],
        "counts": [Interval(Real, 0, None, closed="neither")],
        "background": ["boolean"],
        "return_params": ["boolean"],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def make_spectra(
    n_samples=500,
    n_features=256,
    n_peaks=3,
    *,
    peak_shape="gaussian",
    noise="poisson",
    counts=1000.0,
    background=True,
    return_params=False,
    random_state=None,
):
    """Generate 1-D spectra made of random peaks on a smooth background.

    Each sample is a spectrum sampled on the fixed grid
    ``x = np.linspace(0, 1, n_features)``. It is the sum of ``n_peaks`` peaks
    with random centres, widths and heights, optionally on top of a random
    smooth (quadratic) background, optionally corrupted by counting (Poisson)
    noise. Such data mimic X-ray diffraction patterns, Raman or optical
    emission spectra, and have a low intrinsic dimension embedded
    non-linearly in a high-dimensional space.

    Parameters
    ----------
    n_samples : int, default=500
        The number of spectra.

    n_features : int, default=256
        The number of points of the grid (at least 2).

    n_peaks : int, default=3
        The number of peaks per spectrum.

    peak_shape : {"gaussian", "pseudo_voigt"}, default="gaussian"
        The peak profile. With ``"gaussian"`` a peak of centre ``c``, full
        width at half maximum ``w`` and height ``a`` is
        ``a * exp(-4 ln(2) (x - c)**2 / w**2)``. With ``"pseudo_voigt"`` it is
        ``a * (eta * L + (1 - eta) * G)`` where ``G`` is the unit-height
        Gaussian above, ``L = 1 / (1 + 4 (x - c)**2 / w**2)`` the unit-height
        Lorentzian of the same full width at half maximum, and ``eta`` a
        random mixing fraction drawn per peak.

    noise : {"poisson"} or None, default="poisson"
        The noise model. ``"poisson"`` simulates photon counting: the
        noise-free spectrum ``s`` is scaled to ``counts * s`` expected counts,
        a Poisson variate is drawn at each point, and the result is divided
        by ``counts`` again. ``None`` returns the noise-free spectra.

    counts : float, default=1000.0
        The counts scale of the Poisson noise: the expected number of counts
        for a spectrum value of 1. The relative noise level at a point of
        value ``s`` is ``1 / sqrt(counts * s)``. Ignored if ``noise=None``.

    background : bool, default=True
        Whether to add a random smooth background, the quadratic Bernstein
        polynomial ``b(x) = b0 (1 - x)**2 + 2 b1 x (1 - x) + b2 x**2``.

    return_params : bool, default=False
        If True, also return the generating parameters.

    random_state : int, RandomState instance or None, default=None
        Determines random number generation for dataset creation. Pass an int
        for reproducible output across multiple function calls.

    Returns
    -------
    X : ndarray of shape (n_samples, n_features), dtype float64
        The spectra. The noise-free spectra have peak heights in
        ``[0.5, 1.0]`` and a background in ``[0, 0.3]``, so their values lie
        in ``[0, n_peaks + 0.3]`` and are of order one. With Poisson noise
        the values are non-negative multiples of ``1 / counts`` whose
        expectation is the noise-free spectrum.

    params : :class:`~sklearn.utils.Bunch`
        Only returned if ``return_params=True``. The true generating
        parameters, with one row per sample:

        - ``x``: ndarray of shape (n_features,), the grid;
        - ``centers``: ndarray of shape (n_samples, n_peaks), the peak
          centres, sorted in increasing order within each sample;
        - ``widths``: ndarray of shape (n_samples, n_peaks), the full widths
          at half maximum;
        - ``amplitudes``: ndarray of shape (n_samples, n_peaks), the peak
          heights;
        - ``eta``: ndarray of shape (n_samples, n_peaks), the Lorentzian
          fractions, or None if ``peak_shape="gaussian"``;
        - ``background``: ndarray of shape (n_samples, 3), the Bernstein
          coefficients ``(b0, b1, b2)`` of the background, or None if
          ``background=False``;
        - ``latent``: ndarray of shape (n_samples, intrinsic_dim), all the
          free parameters above stacked column-wise in the order centres,
          widths, amplitudes, eta, background;
        - ``intrinsic_dim``: int, the number of columns of ``latent``.

    See Also
    --------
    make_reaction_diffusion : Solutions of a 1-D reaction-diffusion equation.

    Notes
    -----
    The parameters are drawn independently and uniformly: centres in
    ``[0.1, 0.9]``, full widths at half maximum in ``[0.02, 0.08]``, heights
    in ``[0.5, 1.0]``, pseudo-Voigt fractions ``eta`` in ``[0, 1]`` and
    background coefficients in ``[0, 0.3]``. The peaks of each sample are
    sorted by centre, so that the parameters are identifiable (the spectrum
    does not change under a permutation of the peaks).

    The intrinsic dimension of the noise-free data, i.e. the number of free
    parameters per sample, is

    - ``3 * n_peaks`` (centre, width, height) for Gaussian peaks, or
      ``4 * n_peaks`` (plus ``eta``) for pseudo-Voigt peaks,
    - plus 3 if ``background=True``.

    With the defaults (3 Gaussian peaks and a background) it is 12.

    Examples
    --------
    >>> from skgfe.datasets import make_spectra
    >>> X = make_spectra(n_samples=10, n_features=64, random_state=0)
    >>> X.shape
    (10, 64)
    >>> X, params = make_spectra(
    ...     n_samples=10, peak_shape="pseudo_voigt", return_params=True,
    ...     random_state=0,
    ... )
    >>> params.centers.shape
    (10, 3)
    >>> params.intrinsic_dim, params.latent.shape
    (15, (10, 15))
    """
    rng = check_random_state(random_state)
    x = np.linspace(0.0, 1.0, n_features)
    size = (n_samples, n_peaks)

    centers = np.sort(rng.uniform(*_CENTER_RANGE, size=size), axis=1)
    widths = rng.uniform(*_WIDTH_RANGE, size=size)
    amplitudes = rng.uniform(*_AMPLITUDE_RANGE, size=size)
    eta = rng.uniform(*_ETA_RANGE, size=size) if peak_shape == "pseudo_voigt" else None
    coefs = (
        rng.uniform(*_BACKGROUND_RANGE, size=(n_samples, _N_BACKGROUND))
        if background
        else None
    )

    profiles = _peak_profiles(x, centers, widths, eta)
    X = np.einsum("ij,ijk->ik", amplitudes, profiles)
    if coefs is not None:
        X += _background(x, coefs)

    if noise == "poisson":
        X = rng.poisson(counts * X).astype(np.float64) / counts

    if not return_params:
        return X

    latent = [centers, widths, amplitudes]
    if eta is not None:
        latent.append(eta)
    if coefs is not None:
        latent.append(coefs)
    latent = np.hstack(latent)
    params = Bunch(
        x=x,
        centers=centers,
        widths=widths,
        amplitudes=amplitudes,
        eta=eta,
        background=coefs,
        latent=latent,
        intrinsic_dim=latent.shape[1],
    )
    return X, params
