"""Tests of the viscous Burgers generator, its solver and the row layout."""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy.integrate import solve_ivp
from sklearn.model_selection import GroupKFold

from skgfe.datasets import make_burgers, solve_burgers, trajectories_to_rows


def _heat_solution(u0, times, nu):
    """Exact solution of u_t = nu u_xx on [0, 1), periodic, mode by mode."""
    n = u0.shape[1]
    k = 2 * np.pi * np.fft.rfftfreq(n, d=1.0 / n)
    v = np.fft.rfft(u0, axis=1)
    decay = np.exp(-nu * k[None, :] ** 2 * times[:, None])
    return np.fft.irfft(v[:, None, :] * decay[None], n=n, axis=2)


def _burgers_rhs(n, nu):
    """Semi-discrete right-hand side in physical space, written independently:
    nu u_xx - 1/2 (u^2)_x with spectral derivatives and the 2/3 rule."""
    m = np.fft.rfftfreq(n, d=1.0 / n)
    k = 2 * np.pi * m
    keep = np.abs(m) < n / 3

    def rhs(_, u):
        u_xx = np.fft.irfft(-(k**2) * np.fft.rfft(u), n=n)
        flux_x = np.fft.irfft(1j * k * keep * np.fft.rfft(u * u), n=n)
        return nu * u_xx - 0.5 * flux_x

    return rhs


# ---------------------------------------------------------------------------
# make_burgers: outputs and parameters


def test_shapes_dtypes_and_times():
    u0, Y, times, p = make_burgers(
        n_samples=5,
        n_features=32,
        n_times=6,
        t_final=0.5,
        return_params=True,
        random_state=0,
    )
    assert u0.shape == (5, 32) and Y.shape == (5, 6, 32) and times.shape == (6,)
    assert u0.dtype == Y.dtype == times.dtype == np.float64
    assert_allclose(times, np.linspace(0, 0.5, 6), rtol=0, atol=0)
    # The first output time is 0: the initial condition, bit for bit.
    assert_array_equal(Y[:, 0], u0)
    assert np.all(np.isfinite(Y))
    assert_array_equal(p.u0, u0)
    assert_array_equal(p.times, times)
    assert_allclose(p.x, np.arange(32) / 32, rtol=0, atol=0)
    assert p.alpha.shape == (5, 3)
    assert p.viscosity == 0.01 and p.time_step == 1e-3


def test_initial_condition_formula_and_alpha_range():
    u0, _, _, p = make_burgers(
        n_samples=50,
        n_features=16,
        n_times=1,
        alpha_range=(0.5, 2.0),
        return_params=True,
        random_state=3,
    )
    assert p.alpha.min() >= 0.5 and p.alpha.max() <= 2.0
    # The draw covers the range (50 * 3 uniform draws).
    assert p.alpha.min() < 0.6 and p.alpha.max() > 1.9
    c = np.cos(2 * np.pi * np.arange(16) / 16)
    for a, u in zip(p.alpha, u0):
        assert_allclose(u, a[0] * c + a[1] * c**3 + a[2] * c**5, rtol=0, atol=1e-14)


def test_default_sizes():
    u0, Y, times = make_burgers(n_samples=3, random_state=0, t_final=0.05)
    assert u0.shape == (3, 128) and Y.shape == (3, 21, 128) and times.shape == (21,)


def test_single_time_returns_initial_condition():
    u0, Y, times = make_burgers(n_samples=4, n_features=16, n_times=1, random_state=0)
    assert_array_equal(times, [0.0])
    assert_array_equal(Y[:, 0], u0)


def test_determinism():
    kwargs = dict(n_samples=4, n_features=16, n_times=3, t_final=0.2)
    a = make_burgers(random_state=7, **kwargs)
    b = make_burgers(random_state=np.random.RandomState(7), **kwargs)
    c = make_burgers(random_state=8, **kwargs)
    for x, y in zip(a, b):
        assert_array_equal(x, y)
    assert not np.allclose(a[0], c[0])
    assert not np.allclose(a[1], c[1])


def test_solve_burgers_reproduces_make_burgers():
    u0, Y, times = make_burgers(
        n_samples=4, n_features=32, n_times=5, t_final=0.4, random_state=1
    )
    assert_array_equal(solve_burgers(u0, times), Y)
    # Output times only cut the same 1e-3 steps differently: same solution.
    Y2 = solve_burgers(u0, [0.2, 0.4])
    assert_allclose(Y2, Y[:, [2, 4]], rtol=0, atol=1e-12)
    # Lists are accepted; a repeated time gives the same state twice.
    Y3 = solve_burgers(u0.tolist(), [0.0, 0.2, 0.2])
    assert_array_equal(Y3[:, 0], u0)
    assert_array_equal(Y3[:, 1], Y3[:, 2])
    assert_allclose(Y3[:, 1], Y[:, 2], rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------
# The solver against references


def test_small_amplitude_is_heat_equation():
    # The nonlinear term is quadratic: at amplitude 1e-8 it is 1e-8 times the
    # linear one, so the solution is the heat equation's to ~1e-8 relative.
    nu = 0.05
    u0, Y, times = make_burgers(
        n_samples=4,
        n_features=32,
        n_times=5,
        t_final=1.0,
        viscosity=nu,
        alpha_range=(-1e-8, 1e-8),
        random_state=0,
    )
    exact = _heat_solution(u0, times, nu)
    scale = np.abs(u0).max()
    assert_allclose(Y, exact, rtol=0, atol=1e-7 * scale)
    # The solution did decay (mode 1 by exp(-nu (2 pi)^2) = 0.14 at t = 1).
    assert np.abs(Y[:, -1]).max() < 0.3 * scale


def test_cole_hopf_exact_solution():
    # u = -2 nu phi_x / phi with phi = 1 + b exp(-4 pi^2 nu t) cos(2 pi x) solving
    # the heat equation is an exact solution of the viscous Burgers equation.
    nu, b, n = 0.05, 0.8, 128
    x = np.arange(n) / n
    times = np.linspace(0.0, 1.0, 6)

    def exact(t):
        g = b * np.exp(-4 * np.pi**2 * nu * t)
        s, c = np.sin(2 * np.pi * x), np.cos(2 * np.pi * x)
        return 4 * np.pi * nu * g * s / (1 + g * c)

    Y = solve_burgers(exact(0.0)[None], times, viscosity=nu)
    expected = np.stack([exact(t) for t in times])
    # Strongly nonlinear: |u| / (nu * 2 pi) is about 2.7.
    assert np.abs(expected[0]).max() > 0.8
    assert_allclose(Y[0], expected, rtol=0, atol=1e-9)


def test_matches_solve_ivp():
    nu, n, t_final = 0.01, 32, 0.3
    u0, Y, times = make_burgers(
        n_samples=2,
        n_features=n,
        n_times=4,
        t_final=t_final,
        viscosity=nu,
        alpha_range=(-0.3, 0.3),
        random_state=2,
    )
    rhs = _burgers_rhs(n, nu)
    for i in range(2):
        sol = solve_ivp(
            rhs,
            (0, t_final),
            u0[i],
            method="DOP853",
            t_eval=times,
            rtol=1e-12,
            atol=1e-13,
        )
        assert sol.success
        assert_allclose(Y[i], sol.y.T, rtol=0, atol=1e-10)


def test_mass_conserved_and_energy_decreasing():
    u0, Y, times = make_burgers(n_samples=20, n_features=64, n_times=11, random_state=0)
    # The initial conditions have zero mean; shift them to test the mass.
    u0 = u0 + np.linspace(-0.5, 0.5, 20)[:, None]
    Y = solve_burgers(u0, times)
    assert np.ptp(u0.mean(axis=1)) > 0.9
    mass = np.repeat(u0.mean(axis=1)[:, None], 11, axis=1)
    assert_allclose(Y.mean(axis=2), mass, rtol=0, atol=1e-12)
    energy = (Y**2).mean(axis=2)
    assert np.all(np.diff(energy, axis=1) <= 1e-14)
    # Viscous dissipation is substantial over [0, 1].
    variance = Y.var(axis=2)
    assert np.all(variance[:, -1] < 0.9 * variance[:, 0])


def test_galilean_invariance():
    # If u(x, t) solves the equation, so does u(x - c t, t) + c.
    c, t, n = 0.25, 0.5, 64  # c t = 8 grid cells
    u0, Y, times = make_burgers(
        n_samples=3, n_features=n, n_times=2, t_final=t, random_state=4
    )
    Y_moving = solve_burgers(u0 + c, times)
    expected = np.roll(Y[:, -1], 8, axis=1) + c
    assert_allclose(Y_moving[:, -1], expected, rtol=0, atol=1e-7)
    assert np.abs(Y[:, -1] - np.roll(Y[:, -1], 8, axis=1)).max() > 0.1


def test_time_step_convergence():
    kwargs = dict(n_samples=4, n_features=64, n_times=3, t_final=0.5, random_state=0)
    _, Y_coarse, _ = make_burgers(time_step=1e-3, **kwargs)
    _, Y_fine, _ = make_burgers(time_step=2.5e-4, **kwargs)
    scale = np.abs(Y_fine).max()
    assert_allclose(Y_coarse, Y_fine, rtol=0, atol=1e-6 * scale)
    # ... but the step does matter: a 20 times larger one is visibly worse.
    _, Y_rough, _ = make_burgers(time_step=2e-2, **kwargs)
    assert np.abs(Y_rough - Y_fine).max() > 1e-5 * scale


def test_spatial_resolution_of_defaults():
    # Default grid against a twice finer one, from the same initial conditions.
    kwargs = dict(n_samples=6, n_times=3, t_final=1.0, random_state=0)
    _, Y, _ = make_burgers(n_features=128, **kwargs)
    _, Y_fine, _ = make_burgers(n_features=256, **kwargs)
    err = np.abs(Y - Y_fine[:, :, ::2]).sum(axis=(0, 2)) / np.abs(Y).sum(axis=(0, 2))
    assert err[1] < 2e-5 and err[2] < 1e-7  # t = 0.5 and t = 1


def test_blow_up_raises():
    with pytest.raises(ValueError, match="blew up"):
        make_burgers(
            n_samples=2,
            n_features=64,
            n_times=2,
            time_step=0.05,
            alpha_range=(2.0, 3.0),
            random_state=0,
        )


# ---------------------------------------------------------------------------
# Invalid arguments


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_features": 6}, "n_features"),
        ({"n_features": 33}, "even"),
        ({"n_samples": 0}, "n_samples"),
        ({"n_times": 0}, "n_times"),
        ({"t_final": 0.0}, "t_final"),
        ({"t_final": np.inf}, "t_final"),
        ({"viscosity": 0.0}, "viscosity"),
        ({"viscosity": -0.01}, "viscosity"),
        ({"time_step": 0.0}, "time_step"),
        ({"alpha_range": (1.0, -1.0)}, "low < high"),
        ({"alpha_range": (1.0, 1.0)}, "low < high"),
        ({"alpha_range": (0.0, 1.0, 2.0)}, "low < high"),
        ({"alpha_range": (0.0, np.nan)}, "NaN"),
        ({"return_params": 1.5}, "return_params"),
    ],
)
def test_make_burgers_invalid_arguments(kwargs, match):
    params = {"n_samples": 2, "n_features": 16, "n_times": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        make_burgers(**params)


@pytest.mark.parametrize(
    "u0, times, kwargs, match",
    [
        (np.zeros(16), [0.0, 1.0], {}, "2D array"),
        (np.zeros((2, 6)), [0.0, 1.0], {}, "even and at least 8"),
        (np.zeros((2, 9)), [0.0, 1.0], {}, "even and at least 8"),
        (np.zeros((2, 16)), [1.0, 0.5], {}, "non-decreasing"),
        (np.zeros((2, 16)), [-0.1, 0.5], {}, "non-negative"),
        (np.zeros((2, 16)), [[0.0, 1.0]], {}, "1-D"),
        (np.zeros((2, 16)), [], {}, "0 sample"),
        (np.full((2, 16), np.nan), [0.0], {}, "NaN"),
        (np.zeros((2, 16)), [0.0], {"viscosity": 0.0}, "viscosity"),
        (np.zeros((2, 16)), [0.0], {"time_step": -1.0}, "time_step"),
    ],
)
def test_solve_burgers_invalid_arguments(u0, times, kwargs, match):
    with pytest.raises(ValueError, match=match):
        solve_burgers(u0, times, **kwargs)


# ---------------------------------------------------------------------------
# trajectories_to_rows


def test_trajectories_to_rows_round_trip_and_groups():
    u0, Y, times = make_burgers(
        n_samples=5, n_features=16, n_times=4, t_final=0.3, random_state=0
    )
    X, y, groups = trajectories_to_rows(u0, Y, times)
    assert X.shape == (20, 17) and y.shape == (20, 16) and groups.shape == (20,)
    assert X.dtype == y.dtype == np.float64
    assert np.issubdtype(groups.dtype, np.integer)
    # Trajectory-major order: row i * n_times + j is (trajectory i, time j).
    assert_array_equal(groups, np.repeat(np.arange(5), 4))
    assert_array_equal(X[:, -1], np.tile(times, 5))
    assert_array_equal(X[:, :-1], u0[groups])
    assert_array_equal(y.reshape(Y.shape), Y)
    assert_array_equal(y[7], Y[1, 3])
    # Rows at t = 0 have target = input.
    at_zero = X[:, -1] == 0
    assert_array_equal(y[at_zero], X[at_zero, :-1])
    # The target is a copy, not a view of Y.
    assert not np.shares_memory(y, Y)
    # Grouped splits never cut a trajectory.
    for train, test in GroupKFold(n_splits=5).split(X, y, groups):
        assert not set(groups[train]) & set(groups[test])


def test_trajectories_to_rows_other_output_grid_and_float32():
    u0 = np.ones((2, 4), dtype=np.float32)
    Y = np.zeros((2, 3, 6), dtype=np.float32)
    X, y, groups = trajectories_to_rows(u0, Y, np.array([0, 1, 2], dtype=np.float32))
    assert X.shape == (6, 5) and y.shape == (6, 6)
    assert X.dtype == y.dtype == np.float32
    # Integer times become float64, and so does X.
    X, _, _ = trajectories_to_rows(u0, Y, [0, 1, 2])
    assert X.dtype == np.float64
    assert_array_equal(X[:, -1], [0, 1, 2, 0, 1, 2])


@pytest.mark.parametrize(
    "shapes, match",
    [
        (((3, 4), (3, 5, 4), (5,)), None),
        (((3, 4), (3, 5), (5,)), "3-D"),
        (((3, 4), (2, 5, 4), (5,)), "same number of trajectories"),
        (((3, 4), (3, 5, 4), (4,)), "one entry per time"),
        (((3, 4), (3, 5, 4), (5, 1)), "1-D"),
        (((4,), (3, 5, 4), (5,)), "2D array"),
    ],
)
def test_trajectories_to_rows_shapes(shapes, match):
    u0, Y, times = (np.zeros(s) for s in shapes)
    if match is None:
        trajectories_to_rows(u0, Y, times)
    else:
        with pytest.raises(ValueError, match=match):
            trajectories_to_rows(u0, Y, times)
