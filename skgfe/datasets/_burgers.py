"""Solutions of the 1-D viscous Burgers equation from random initial conditions."""

# SPDX-License-Identifier: BSD-3-Clause

import math
from numbers import Integral, Real

import numpy as np
from sklearn.utils import Bunch, check_array, check_random_state
from sklearn.utils._param_validation import Interval, validate_params

from ._pde import _etdrk4_coefficients, _etdrk4_steps

# Number of points on the contour used to evaluate the ETDRK4 coefficients
# (the value of Kassam & Trefethen, 2005).
_N_CONTOUR = 32
# Odd powers of cos(2 pi x) in the initial condition.
_POWERS = (1, 3, 5)
_MIN_FEATURES = 8


def _check_n_features(n_features):
    if n_features < _MIN_FEATURES or n_features % 2:
        raise ValueError(
            f"The number of grid points (n_features) must be even and at least "
            f"{_MIN_FEATURES}; got {n_features}."
        )


def _check_positive_finite(**values):
    for name, value in values.items():
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be positive and finite; got {value!r}.")


def _initial_conditions(alpha, x):
    """``u0(x) = sum_j alpha_j cos(2 pi x)**p_j`` with ``p = (1, 3, 5)``."""
    c = np.cos(2 * np.pi * x)
    basis = np.stack([c**p for p in _POWERS])
    return alpha @ basis


def _solve_burgers(u0, times, viscosity, time_step):
    """Solve u_t = -u u_x + nu u_xx on the periodic domain [0, 1).

    Fourier pseudo-spectral discretisation in space with the 2/3-rule
    dealiasing of the nonlinear term, ETDRK4 exponential integrator in time,
    vectorised over the rows of ``u0`` (float64, shape (n, n_features)).
    ``times`` is non-decreasing and non-negative; each interval between
    successive output times is split into the smallest number of equal steps
    not longer than ``time_step``. Returns shape (n, len(times), n_features).
    """
    n_samples, n_features = u0.shape
    m = np.arange(n_features // 2 + 1)
    k = 2 * np.pi * m
    lin = -viscosity * k**2
    # -1/2 d/dx (u^2) in Fourier space, by the 2/3 rule: only the modes m < n/3
    # enter the product, and only those receive it, so the product of two
    # retained fields never aliases onto a retained mode (even for a rough u0).
    retained = 3 * m < n_features
    gradient = np.where(retained, -0.5j * k, 0.0)

    def nonlinear(v_hat):
        u = np.fft.irfft(np.where(retained, v_hat, 0.0), n=n_features, axis=1)
        return gradient * np.fft.rfft(u * u, axis=1)

    Y = np.empty((n_samples, len(times), n_features))
    v = np.fft.rfft(u0, axis=1)
    coefficients = {}
    t = 0.0
    stepped = False
    for j, t_next in enumerate(times):
        delta = t_next - t
        if delta > 0:
            # Equal steps landing exactly on t_next; the relative slack keeps
            # an interval of (nearly) an integer number of steps at that number.
            n_steps = max(1, math.ceil(delta / time_step * (1 - 1e-12)))
            dt = delta / n_steps
            if dt not in coefficients:
                coefficients[dt] = _etdrk4_coefficients(lin, dt, _N_CONTOUR)
            with np.errstate(over="ignore", invalid="ignore"):
                v = _etdrk4_steps(v, nonlinear, coefficients[dt], n_steps)
            if not np.all(np.isfinite(v)):
                raise ValueError(
                    f"The Burgers solution blew up (non-finite values) before "
                    f"t={t_next:g}. Use a smaller time_step (got {time_step:g}), "
                    f"a larger viscosity (got {viscosity:g}) or more grid points."
                )
            stepped = True
            t = t_next
        # Before the first step the solution is u0 itself, bit for bit.
        Y[:, j] = np.fft.irfft(v, n=n_features, axis=1) if stepped else u0
    return Y


@validate_params(
    {
        "u0": ["array-like"],
        "times": ["array-like"],
        "viscosity": [Interval(Real, 0, None, closed="neither")],
        "time_step": [Interval(Real, 0, None, closed="neither")],
    },
    prefer_skip_nested_validation=True,
)
def solve_burgers(u0, times, *, viscosity=0.01, time_step=1e-3):
    r"""Solve the 1-D viscous Burgers equation from given initial conditions.

    Each row of ``u0`` is an initial condition sampled on the uniform grid
    ``x = np.arange(n_features) / n_features`` of the periodic domain
    ``[0, 1)``; it is evolved by

    .. math::

        \partial_t u = -u \, \partial_x u + \nu \, \partial_{xx} u

    and returned at the requested times. Use it for initial conditions that
    :func:`make_burgers` does not draw, e.g. out-of-range amplitudes or
    corrupted inputs whose true evolution is wanted.

    Parameters
    ----------
    u0 : array-like of shape (n_samples, n_features)
        The initial conditions (time 0) on the grid. ``n_features`` must be
        even and at least 8. A 1-D array is not accepted.

    times : array-like of shape (n_times,)
        The output times, non-negative, finite and non-decreasing. They need
        not start at 0 (the solution always starts from ``u0`` at time 0).

    viscosity : float, default=0.01
        The viscosity :math:`\nu > 0`.

    time_step : float, default=1e-3
        The largest time step. Each interval between successive output times
        is split into the smallest number of equal steps not longer than
        ``time_step``, so that the integrator lands exactly on every output
        time.

    Returns
    -------
    Y : ndarray of shape (n_samples, n_times, n_features), dtype float64
        The solutions: ``Y[i, j]`` is ``u(x, times[j])`` from ``u0[i]``. Where
        ``times[j] == 0``, ``Y[:, j]`` equals ``u0`` exactly.

    Raises
    ------
    ValueError
        If the arguments are invalid, or if the solution stops being finite
        (an unstable time step for the amplitude and the grid).

    See Also
    --------
    make_burgers : Random initial conditions and their solutions.

    Notes
    -----
    See :func:`make_burgers` for the numerical method. The high Fourier modes
    of a rough ``u0`` (e.g. with pointwise noise) are kept: by the 2/3 rule they
    neither enter the nonlinear term nor receive it, so they decay at the exact
    viscous rate :math:`\exp(-\nu k^2 t)`. The resolution is the caller's business:
    with :math:`\nu = 0.01` and amplitudes of order 1, 128 points are plenty.

    Examples
    --------
    Solve from initial conditions with amplitudes outside the training range
    of :func:`make_burgers`:

    >>> import numpy as np
    >>> from skgfe.datasets import solve_burgers
    >>> rng = np.random.default_rng(0)
    >>> alpha = rng.uniform(1.0, 1.25, (4, 3)) * rng.choice([-1.0, 1.0], (4, 3))
    >>> c = np.cos(2 * np.pi * np.arange(128) / 128)
    >>> u0 = alpha @ np.stack([c, c**3, c**5])
    >>> Y = solve_burgers(u0, np.linspace(0, 1, 11))
    >>> Y.shape
    (4, 11, 128)
    >>> bool(np.array_equal(Y[:, 0], u0))
    True
    """
    u0 = check_array(u0, dtype=np.float64, input_name="u0")
    _check_n_features(u0.shape[1])
    times = check_array(times, ensure_2d=False, dtype=np.float64, input_name="times")
    if times.ndim != 1 or times.size == 0:
        raise ValueError(
            f"times must be a non-empty 1-D array; got shape {times.shape}."
        )
    if times[0] < 0 or np.any(np.diff(times) < 0):
        raise ValueError("times must be non-negative and non-decreasing.")
    _check_positive_finite(viscosity=viscosity, time_step=time_step)
    return _solve_burgers(u0, times, float(viscosity), float(time_step))


@validate_params(
    {
        "n_samples": [Interval(Integral, 1, None, closed="left")],
        "n_features": [Interval(Integral, _MIN_FEATURES, None, closed="left")],
        "n_times": [Interval(Integral, 1, None, closed="left")],
        "t_final": [Interval(Real, 0, None, closed="neither")],
        "viscosity": [Interval(Real, 0, None, closed="neither")],
        "alpha_range": ["array-like"],
        "time_step": [Interval(Real, 0, None, closed="neither")],
        "return_params": ["boolean"],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def make_burgers(
    n_samples=500,
    n_features=128,
    *,
    n_times=21,
    t_final=1.0,
    viscosity=0.01,
    alpha_range=(-1.0, 1.0),
    time_step=1e-3,
    return_params=False,
    random_state=None,
):
    r"""Generate trajectories of the 1-D viscous Burgers equation.

    Each sample is a trajectory, on the uniform grid
    ``x = np.arange(n_features) / n_features`` of the periodic domain
    ``[0, 1)`` and at the times ``np.linspace(0, t_final, n_times)``, of

    .. math::

        \partial_t u = -u \, \partial_x u + \nu \, \partial_{xx} u,

    started from the random initial condition

    .. math::

        u(x, 0) = \alpha_0 \cos(2 \pi x) + \alpha_1 \cos^3(2 \pi x)
        + \alpha_2 \cos^5(2 \pi x),

    with :math:`\alpha` drawn uniformly in ``alpha_range`` (independently for
    each of the three coefficients and each sample). This is the data set of
    the viscous Burgers experiment of VAE-DLM, on an exactly periodic grid.

    Parameters
    ----------
    n_samples : int, default=500
        The number of trajectories.

    n_features : int, default=128
        The number of grid points, even and at least 8.

    n_times : int, default=21
        The number of output times, including time 0. With ``n_times=1`` only
        the initial conditions are returned (``Y[:, 0] == u0``).

    t_final : float, default=1.0
        The last output time, positive.

    viscosity : float, default=0.01
        The viscosity :math:`\nu > 0`.

    alpha_range : tuple of two floats, default=(-1.0, 1.0)
        The bounds ``(low, high)``, ``low < high``, of the uniform law of each
        coefficient :math:`\alpha_j`.

    time_step : float, default=1e-3
        The largest time step of the integrator. Each interval between
        successive output times is split into the smallest number of equal
        steps not longer than ``time_step``.

    return_params : bool, default=False
        If True, also return the generating parameters.

    random_state : int, RandomState instance or None, default=None
        Determines random number generation for dataset creation. Pass an int
        for reproducible output across multiple function calls. Only the
        coefficients :math:`\alpha` are random; the solver is deterministic.

    Returns
    -------
    u0 : ndarray of shape (n_samples, n_features), dtype float64
        The initial conditions on the grid.

    Y : ndarray of shape (n_samples, n_times, n_features), dtype float64
        The solutions: ``Y[i, j]`` is ``u(x, times[j])`` from ``u0[i]``, and
        ``Y[:, 0]`` equals ``u0`` exactly.

    times : ndarray of shape (n_times,), dtype float64
        The output times ``np.linspace(0, t_final, n_times)``.

    params : :class:`~sklearn.utils.Bunch`
        Only returned if ``return_params=True``, with attributes:

        - ``x``: ndarray of shape (n_features,), the grid;
        - ``alpha``: ndarray of shape (n_samples, 3), the coefficients;
        - ``u0``: the initial conditions (same array as the first output);
        - ``times``: the output times;
        - ``viscosity``, ``time_step``: the solver parameters.

    Raises
    ------
    ValueError
        If the arguments are invalid, or if the solution stops being finite
        (an unstable time step for the amplitude and the grid).

    See Also
    --------
    solve_burgers : The same solver for given initial conditions.
    trajectories_to_rows : Flatten trajectories into ``([u0 | t], u(t))`` rows.
    make_reaction_diffusion : Solutions of a reaction-diffusion equation.

    Notes
    -----
    The draw order is: one call ``rng.uniform(low, high, (n_samples, 3))``.
    To solve from initial conditions that this function does not draw
    (out-of-range amplitudes, corrupted inputs), use :func:`solve_burgers`.

    The trajectories form a 3-parameter family; with time, the rows of
    :func:`trajectories_to_rows` lie on a 4-dimensional manifold. The initial
    conditions are even in ``x``, but the solutions are not (the symmetry of
    the equation is ``u(x, t) -> -u(-x, t)``).

    The equation is discretised with a Fourier pseudo-spectral method in
    space (NumPy real FFTs), the nonlinear term
    :math:`-\frac{1}{2} \partial_x (u^2)` being computed on the grid and
    dealiased with the 2/3 rule. It is integrated in time with the
    fourth-order exponential time differencing Runge-Kutta scheme ETDRK4 [1]_,
    the viscous term being treated exactly and the phi-functions evaluated by
    a contour integral over 32 points, vectorised over all samples. The mean
    of ``u`` is conserved to rounding and, the truncated nonlinear term
    conserving energy, the mean of ``u**2`` decreases in time.

    With the defaults, ``|u|`` stays below about 3. The time discretisation
    error is about ``1e-6`` relative. The spatial error, measured against a
    grid 4 times finer, is largest around ``t = 0.15`` when the fronts are
    steepest: a relative L1 error of about ``5e-4`` over all samples (``4e-3``
    for the worst trajectory); it is below ``1e-5`` from ``t = 0.5`` on.
    Smaller viscosities or larger amplitudes need more grid points.

    References
    ----------
    .. [1] A.-K. Kassam and L. N. Trefethen, "Fourth-order time-stepping for
       stiff PDEs", SIAM J. Sci. Comput. 26(4), pp. 1214-1233, 2005.

    Examples
    --------
    >>> from skgfe.datasets import make_burgers, trajectories_to_rows
    >>> u0, Y, times = make_burgers(n_samples=8, n_features=64, random_state=0)
    >>> u0.shape, Y.shape, times.shape
    ((8, 64), (8, 21, 64), (21,))
    >>> X, y, groups = trajectories_to_rows(u0, Y, times)
    >>> X.shape, y.shape, groups.shape
    ((168, 65), (168, 64), (168,))
    """
    _check_n_features(n_features)
    bounds = check_array(
        alpha_range, ensure_2d=False, dtype=np.float64, input_name="alpha_range"
    )
    if bounds.shape != (2,) or not bounds[0] < bounds[1]:
        raise ValueError(
            f"alpha_range must be a pair (low, high) with low < high; "
            f"got {alpha_range!r}."
        )
    _check_positive_finite(t_final=t_final, viscosity=viscosity, time_step=time_step)
    rng = check_random_state(random_state)
    x = np.arange(n_features) / n_features
    alpha = rng.uniform(bounds[0], bounds[1], size=(n_samples, len(_POWERS)))
    u0 = _initial_conditions(alpha, x)
    times = np.linspace(0.0, float(t_final), n_times)
    Y = _solve_burgers(u0, times, float(viscosity), float(time_step))
    if not return_params:
        return u0, Y, times
    params = Bunch(
        x=x,
        alpha=alpha,
        u0=u0,
        times=times,
        viscosity=float(viscosity),
        time_step=float(time_step),
    )
    return u0, Y, times, params


@validate_params(
    {"u0": ["array-like"], "Y": ["array-like"], "times": ["array-like"]},
    prefer_skip_nested_validation=True,
)
def trajectories_to_rows(u0, Y, times):
    """Flatten trajectories into one row per (initial condition, time) pair.

    This is the layout of a regressor that maps an initial condition and a
    time to the solution at that time: row ``i * n_times + j`` holds
    ``[u0[i] | times[j]]`` as input and ``Y[i, j]`` as target.

    Parameters
    ----------
    u0 : array-like of shape (n_samples, n_features)
        The initial conditions.

    Y : array-like of shape (n_samples, n_times, n_outputs)
        The trajectories; ``n_outputs`` may differ from ``n_features`` (e.g.
        another output grid).

    times : array-like of shape (n_times,)
        The times of the second axis of ``Y``.

    Returns
    -------
    X : ndarray of shape (n_samples * n_times, n_features + 1)
        The inputs: ``u0`` repeated on each row of its trajectory, then the
        time in the **last** column. Rows are ordered trajectory-major (all
        times of trajectory 0, then of trajectory 1, ...).

    y : ndarray of shape (n_samples * n_times, n_outputs)
        The targets, ``Y.reshape(n_samples * n_times, n_outputs)`` (a copy).

    groups : ndarray of shape (n_samples * n_times,), dtype int
        The trajectory index of each row, for group-aware splitters such as
        :class:`~sklearn.model_selection.GroupKFold`, so that no trajectory
        is split between training and test sets.

    See Also
    --------
    make_burgers : Trajectories of the viscous Burgers equation.

    Notes
    -----
    Float32 inputs stay float32 (``X`` takes the common type of ``u0`` and
    ``times``); other inputs are converted to float64.

    Examples
    --------
    >>> import numpy as np
    >>> from skgfe.datasets import trajectories_to_rows
    >>> u0 = np.array([[1.0, 2.0], [3.0, 4.0]])
    >>> Y = np.arange(12.0).reshape(2, 3, 2)
    >>> X, y, groups = trajectories_to_rows(u0, Y, [0.0, 0.5, 1.0])
    >>> X
    array([[1. , 2. , 0. ],
           [1. , 2. , 0.5],
           [1. , 2. , 1. ],
           [3. , 4. , 0. ],
           [3. , 4. , 0.5],
           [3. , 4. , 1. ]])
    >>> groups
    array([0, 0, 0, 1, 1, 1])
    """
    floats = (np.float64, np.float32)
    u0 = check_array(u0, dtype=floats, input_name="u0")
    Y = check_array(Y, dtype=floats, allow_nd=True, input_name="Y")
    times = check_array(times, ensure_2d=False, dtype=floats, input_name="times")
    if Y.ndim != 3:
        raise ValueError(
            f"Y must be 3-D, of shape (n_samples, n_times, n_outputs); "
            f"got shape {Y.shape}."
        )
    if times.ndim != 1:
        raise ValueError(f"times must be 1-D; got shape {times.shape}.")
    n_samples, n_times, n_outputs = Y.shape
    if u0.shape[0] != n_samples:
        raise ValueError(
            f"u0 and Y must have the same number of trajectories; got "
            f"u0.shape={u0.shape} and Y.shape={Y.shape}."
        )
    if times.shape[0] != n_times:
        raise ValueError(
            f"times must have one entry per time of Y (Y.shape[1]={n_times}); "
            f"got {times.shape[0]}."
        )
    X = np.empty(
        (n_samples * n_times, u0.shape[1] + 1), dtype=np.result_type(u0, times)
    )
    X[:, :-1] = np.repeat(u0, n_times, axis=0)
    X[:, -1] = np.tile(times, n_samples)
    y = Y.reshape(n_samples * n_times, n_outputs).copy()
    groups = np.repeat(np.arange(n_samples), n_times)
    return X, y, groups
