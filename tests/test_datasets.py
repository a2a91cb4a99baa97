"""Tests for the synthetic physical-sciences data generators."""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy.integrate import solve_ivp

from skgfe.datasets import make_reaction_diffusion, make_spectra
from skgfe.datasets._pde import _solve_fisher_kpp

GENERATORS = [make_spectra, make_reaction_diffusion]


# ---------------------------------------------------------------------------
# Independent reference implementations
# ---------------------------------------------------------------------------


def _reference_spectrum(x, centers, widths, amplitudes, eta=None, background=None):
    """Noise-free spectrum of one sample, written out peak by peak."""
    y = np.zeros_like(x)
    for j in range(len(centers)):
        d = x - centers[j]
        gauss = np.exp(-np.log(2.0) * (2.0 * d / widths[j]) ** 2)
        lorentz = (widths[j] / 2.0) ** 2 / (d**2 + (widths[j] / 2.0) ** 2)
        shape = gauss if eta is None else eta[j] * lorentz + (1 - eta[j]) * gauss
        y = y + amplitudes[j] * shape
    if background is not None:
        b0, b1, b2 = background
        y = y + b0 * (1 - x) ** 2 + 2 * b1 * x * (1 - x) + b2 * x**2
    return y


def _spectrum_from_latent(x, latent, n_peaks, pseudo_voigt, background):
    cols = np.split(
        latent[: (4 if pseudo_voigt else 3) * n_peaks], 4 if pseudo_voigt else 3
    )
    centers, widths, amplitudes = cols[:3]
    eta = cols[3] if pseudo_voigt else None
    bg = latent[-3:] if background else None
    return _reference_spectrum(x, centers, widths, amplitudes, eta, bg)


def _initial_condition(x, amplitudes, phases):
    u0 = np.full(x.shape, 0.5)
    for k, (a, phi) in enumerate(zip(amplitudes, phases), start=1):
        u0 = u0 + a * np.cos(2 * np.pi * k * x + phi)
    return u0


def _fisher_kpp_rhs(diffusivity, reaction, n):
    k = 2 * np.pi * np.fft.rfftfreq(n, d=1.0 / n)

    def rhs(t, u):
        u_xx = np.fft.irfft(-(k**2) * np.fft.rfft(u), n=n)
        return diffusivity * u_xx + reaction * u * (1 - u)

    return rhs


def _numerical_jacobian(func, p, eps=1e-6):
    cols = []
    for i in range(p.size):
        dp = np.zeros_like(p)
        dp[i] = eps
        cols.append((func(p + dp) - func(p - dp)) / (2 * eps))
    return np.stack(cols, axis=1)


# ---------------------------------------------------------------------------
# Common behaviour
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "generator, kwargs",
    [
        (make_spectra, {}),
        (make_spectra, {"peak_shape": "pseudo_voigt", "noise": None}),
        (make_spectra, {"n_peaks": 1, "background": False}),
        (make_reaction_diffusion, {}),
        (make_reaction_diffusion, {"reaction": 0.0, "n_modes": 2}),
    ],
)
def test_shape_and_dtype(generator, kwargs):
    X = generator(n_samples=7, n_features=40, random_state=0, **kwargs)
    assert isinstance(X, np.ndarray)
    assert X.shape == (7, 40)
    assert X.dtype == np.float64
    assert np.all(np.isfinite(X))


@pytest.mark.parametrize("generator", GENERATORS)
def test_default_sizes(generator):
    X = generator(random_state=0)
    expected = 256 if generator is make_spectra else 128
    assert X.shape == (500, expected)


@pytest.mark.parametrize("generator", GENERATORS)
def test_determinism(generator):
    X1, p1 = generator(n_samples=20, n_features=32, return_params=True, random_state=3)
    X2, p2 = generator(
        n_samples=20,
        n_features=32,
        return_params=True,
        random_state=np.random.RandomState(3),
    )
    X3 = generator(n_samples=20, n_features=32, random_state=4)
    assert_array_equal(X1, X2)
    assert_array_equal(p1.latent, p2.latent)
    assert not np.allclose(X1, X3)
    # ``return_params`` does not change the data.
    assert_array_equal(X1, generator(n_samples=20, n_features=32, random_state=3))


@pytest.mark.parametrize("generator", GENERATORS)
def test_samples_are_distinct(generator):
    X = generator(n_samples=30, n_features=32, random_state=0)
    dists = np.linalg.norm(X[:, None] - X[None], axis=-1)
    assert dists[np.triu_indices(30, k=1)].min() > 1e-3


@pytest.mark.parametrize(
    "generator, kwargs",
    [
        (make_spectra, {"n_samples": 0}),
        (make_spectra, {"n_samples": 2.5}),
        (make_spectra, {"n_features": 1}),
        (make_spectra, {"n_peaks": 0}),
        (make_spectra, {"peak_shape": "lorentzian"}),
        (make_spectra, {"noise": "gaussian"}),
        (make_spectra, {"counts": 0.0}),
        (make_spectra, {"counts": -10.0}),
        (make_spectra, {"background": "yes"}),
        (make_spectra, {"random_state": "seed"}),
        (make_reaction_diffusion, {"n_samples": -1}),
        (make_reaction_diffusion, {"n_features": 3}),
        (make_reaction_diffusion, {"t_final": -1.0}),
        (make_reaction_diffusion, {"diffusivity": -1e-3}),
        (make_reaction_diffusion, {"reaction": -1.0}),
        (make_reaction_diffusion, {"n_modes": 0}),
        (make_reaction_diffusion, {"n_features": 16, "n_modes": 8}),
        (make_reaction_diffusion, {"return_params": 1.5}),
    ],
)
def test_invalid_arguments(generator, kwargs):
    with pytest.raises(ValueError):
        generator(**kwargs)


# ---------------------------------------------------------------------------
# make_spectra
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("peak_shape", ["gaussian", "pseudo_voigt"])
@pytest.mark.parametrize("background", [True, False])
def test_spectra_params_regenerate_data(peak_shape, background):
    n_peaks = 3
    X, params = make_spectra(
        n_samples=25,
        n_features=100,
        n_peaks=n_peaks,
        peak_shape=peak_shape,
        noise=None,
        background=background,
        return_params=True,
        random_state=0,
    )
    assert_allclose(params.x, np.linspace(0, 1, 100), rtol=0, atol=0)
    assert (params.eta is None) == (peak_shape == "gaussian")
    assert (params.background is None) == (not background)
    for i in range(X.shape[0]):
        eta = None if params.eta is None else params.eta[i]
        bg = None if params.background is None else params.background[i]
        ref = _reference_spectrum(
            params.x,
            params.centers[i],
            params.widths[i],
            params.amplitudes[i],
            eta,
            bg,
        )
        assert_allclose(X[i], ref, rtol=0, atol=1e-12)
        # The stacked latent vector alone also determines the spectrum.
        ref_latent = _spectrum_from_latent(
            params.x,
            params.latent[i],
            n_peaks,
            peak_shape == "pseudo_voigt",
            background,
        )
        assert_allclose(X[i], ref_latent, rtol=0, atol=1e-12)


def test_spectra_parameter_ranges():
    _, p = make_spectra(
        n_samples=300,
        peak_shape="pseudo_voigt",
        return_params=True,
        random_state=0,
    )
    assert np.all(np.diff(p.centers, axis=1) >= 0)  # sorted peaks
    for values, (low, high) in [
        (p.centers, (0.1, 0.9)),
        (p.widths, (0.02, 0.08)),
        (p.amplitudes, (0.5, 1.0)),
        (p.eta, (0.0, 1.0)),
        (p.background, (0.0, 0.3)),
    ]:
        assert values.min() >= low and values.max() <= high
        # The draws cover the documented range.
        assert values.min() < low + 0.1 * (high - low)
        assert values.max() > high - 0.1 * (high - low)


@pytest.mark.parametrize(
    "n_peaks, peak_shape, background, expected",
    [
        (3, "gaussian", True, 12),
        (1, "gaussian", False, 3),
        (2, "pseudo_voigt", True, 11),
        (4, "pseudo_voigt", False, 16),
    ],
)
def test_spectra_intrinsic_dimension(n_peaks, peak_shape, background, expected):
    X, params = make_spectra(
        n_samples=4,
        n_features=200,
        n_peaks=n_peaks,
        peak_shape=peak_shape,
        background=background,
        noise=None,
        return_params=True,
        random_state=1,
    )
    assert params.intrinsic_dim == expected
    assert params.latent.shape == (4, expected)
    # The documented parameters are not redundant: the Jacobian of the map
    # latent -> spectrum has full rank at random parameter values.
    for i in range(2):
        jac = _numerical_jacobian(
            lambda p: _spectrum_from_latent(
                params.x, p, n_peaks, peak_shape == "pseudo_voigt", background
            ),
            params.latent[i],
        )
        s = np.linalg.svd(jac, compute_uv=False)
        assert s[-1] / s[0] > 1e-4


def test_spectra_poisson_noise():
    kwargs = dict(n_samples=400, n_features=128, return_params=True, random_state=0)
    counts = 500.0
    X_clean, p_clean = make_spectra(noise=None, **kwargs)
    X_noisy, p_noisy = make_spectra(noise="poisson", counts=counts, **kwargs)
    # Same generating parameters whatever the noise.
    assert_array_equal(p_clean.latent, p_noisy.latent)
    # Integer counts, scaled back by ``counts``.
    assert_allclose(X_noisy * counts, np.round(X_noisy * counts), rtol=0, atol=1e-9)
    assert X_noisy.min() >= 0
    # Mean equal to the clean spectrum and variance X_clean / counts.
    mask = X_clean * counts > 20
    z = (X_noisy - X_clean)[mask] / np.sqrt(X_clean[mask] / counts)
    assert abs(z.mean()) < 0.02
    assert abs(z.var() - 1.0) < 0.05


def test_spectra_counts_control_noise_level():
    kwargs = dict(n_samples=50, n_features=64, random_state=0)
    X_clean = make_spectra(noise=None, **kwargs)
    err_low = np.abs(make_spectra(counts=100.0, **kwargs) - X_clean).mean()
    err_high = np.abs(make_spectra(counts=10000.0, **kwargs) - X_clean).mean()
    assert_allclose(err_low / err_high, 10.0, rtol=0.1)


# ---------------------------------------------------------------------------
# make_reaction_diffusion
# ---------------------------------------------------------------------------


def test_reaction_diffusion_initial_condition_params():
    X, p = make_reaction_diffusion(
        n_samples=15,
        n_features=48,
        n_modes=4,
        t_final=0.0,
        return_params=True,
        random_state=0,
    )
    assert_allclose(p.x, np.arange(48) / 48, rtol=0, atol=0)
    assert_array_equal(p.wavenumbers, [1, 2, 3, 4])
    assert p.intrinsic_dim == 8
    assert p.latent.shape == (15, 8)
    assert_array_equal(p.latent, np.hstack([p.amplitudes, p.phases]))
    assert p.amplitudes.min() >= 0.1 / 4 and p.amplitudes.max() <= 0.5 / 4
    assert p.phases.min() >= 0 and p.phases.max() < 2 * np.pi
    for i in range(15):
        u0 = _initial_condition(p.x, p.amplitudes[i], p.phases[i])
        assert_allclose(p.u0[i], u0, rtol=0, atol=1e-13)
        # t_final = 0 returns the initial condition.
        assert_allclose(X[i], u0, rtol=0, atol=1e-13)
    assert p.u0.min() >= 0 and p.u0.max() <= 1


def test_reaction_diffusion_heat_equation_exact():
    D, t = 2e-3, 1.5
    X, p = make_reaction_diffusion(
        n_samples=20,
        n_features=64,
        t_final=t,
        diffusivity=D,
        reaction=0.0,
        n_modes=5,
        return_params=True,
        random_state=0,
    )
    k = 2 * np.pi * p.wavenumbers
    damped = p.amplitudes * np.exp(-D * k**2 * t)
    for i in range(20):
        exact = _initial_condition(p.x, damped[i], p.phases[i])
        assert_allclose(X[i], exact, rtol=0, atol=1e-12)
    # Mass conservation.
    assert_allclose(X.mean(axis=1), 0.5, rtol=0, atol=1e-12)


def test_reaction_diffusion_logistic_exact():
    # Without diffusion every grid point follows the logistic ODE, whose
    # solution is known in closed form; this tests the nonlinear integrator.
    r, t = 2.0, 1.3
    X, p = make_reaction_diffusion(
        n_samples=10,
        n_features=32,
        t_final=t,
        diffusivity=0.0,
        reaction=r,
        return_params=True,
        random_state=0,
    )
    growth = np.exp(r * t)
    exact = p.u0 * growth / (1 - p.u0 + p.u0 * growth)
    assert_allclose(X, exact, rtol=0, atol=1e-9)


def test_reaction_diffusion_matches_solve_ivp():
    D, r, t = 3e-3, 1.5, 0.8
    X, p = make_reaction_diffusion(
        n_samples=3,
        n_features=64,
        t_final=t,
        diffusivity=D,
        reaction=r,
        return_params=True,
        random_state=5,
    )
    rhs = _fisher_kpp_rhs(D, r, 64)
    for i in range(2):
        sol = solve_ivp(rhs, (0, t), p.u0[i], method="DOP853", rtol=1e-12, atol=1e-13)
        assert sol.success
        assert_allclose(X[i], sol.y[:, -1], rtol=0, atol=1e-8)


def test_reaction_diffusion_bounds_and_growth():
    X, p = make_reaction_diffusion(
        n_samples=100, n_features=64, return_params=True, random_state=0
    )
    # Maximum principle: u stays in [0, 1].
    assert X.min() >= 0 and X.max() <= 1
    # The logistic reaction increases the mass from its initial value 1/2.
    assert np.all(X.mean(axis=1) > p.u0.mean(axis=1) + 0.1)
    # Diffusion smooths: the spatial variation decreases.
    assert np.all(np.ptp(X, axis=1) < np.ptp(p.u0, axis=1))


def test_reaction_diffusion_intrinsic_dimension():
    n_modes = 3
    # Heat equation: linear in the initial condition, so the data span an
    # affine subspace of dimension exactly 2 * n_modes.
    X_lin = make_reaction_diffusion(
        n_samples=200, n_features=64, reaction=0.0, n_modes=n_modes, random_state=0
    )
    s_lin = np.linalg.svd(X_lin - X_lin.mean(axis=0), compute_uv=False)
    assert s_lin[2 * n_modes - 1] / s_lin[0] > 1e-3
    assert s_lin[2 * n_modes] / s_lin[0] < 1e-10
    # With the reaction the embedding is non-linear: more linear directions.
    X_nl = make_reaction_diffusion(
        n_samples=200, n_features=64, n_modes=n_modes, random_state=0
    )
    s_nl = np.linalg.svd(X_nl - X_nl.mean(axis=0), compute_uv=False)
    assert s_nl[2 * n_modes] / s_nl[0] > 1e-4
    # ... but still locally 2 * n_modes dimensional: full-rank Jacobian of
    # (amplitudes, phases) -> u(t_final).
    _, p = make_reaction_diffusion(
        n_samples=1, n_features=64, n_modes=n_modes, return_params=True, random_state=2
    )

    def forward(latent):
        u0 = _initial_condition(p.x, latent[:n_modes], latent[n_modes:])
        return _solve_fisher_kpp(u0[None], p.t_final, p.diffusivity, p.reaction)[0]

    jac = _numerical_jacobian(forward, p.latent[0])
    s = np.linalg.svd(jac, compute_uv=False)
    assert s.size == p.intrinsic_dim == 2 * n_modes
    assert s[-1] / s[0] > 1e-3
