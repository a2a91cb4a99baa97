"""Synthetic solutions of a 1-D reaction-diffusion (Fisher-KPP) equation."""

# SPDX-License-Identifier: BSD-3-Clause

import math
from numbers import Integral, Real

import numpy as np
from sklearn.utils import Bunch, check_random_state
from sklearn.utils._param_validation import Interval, validate_params

# Amplitude of mode k is drawn uniformly in _AMPLITUDE_RANGE / n_modes, so that
# the initial condition 0.5 + sum_k a_k cos(2 pi k x + phi_k) lies in [0, 1].
_AMPLITUDE_RANGE = (0.1, 0.5)
_BASELINE = 0.5
# Largest time step of the integrator, divided by max(reaction, 1).
_MAX_DT = 0.01
# Number of points on the contour used to evaluate the ETDRK4 coefficients.
_N_CONTOUR = 64


def _etdrk4_coefficients(lin, dt, n_contour=_N_CONTOUR):
    """ETDRK4 coefficients of Kassam & Trefethen (2005) for the diagonal ``lin``.

    The phi-functions are evaluated by a contour integral over ``n_contour``
    points of the unit circle centred on each ``dt * lin`` in the complex
    plane, which avoids the cancellation errors of the explicit formulas for
    small ``dt * lin``. ``lin`` must be real (the returned coefficients are).
    Returns ``(e, e2, q, f1, f2, f3)``, the arguments of :func:`_etdrk4_steps`.
    """
    hl = dt * lin
    roots = np.exp(1j * np.pi * (np.arange(1, n_contour + 1) - 0.5) / n_contour)
    lr = hl[:, None] + roots[None, :]
    exp_lr = np.exp(lr)
    q = dt * np.mean((np.exp(lr / 2) - 1) / lr, axis=1).real
    f1 = dt * np.mean((-4 - lr + exp_lr * (4 - 3 * lr + lr**2)) / lr**3, axis=1).real
    f2 = dt * np.mean((2 + lr + exp_lr * (lr - 2)) / lr**3, axis=1).real
    f3 = dt * np.mean((-4 - 3 * lr - lr**2 + exp_lr * (4 - lr)) / lr**3, axis=1).real
    return np.exp(hl), np.exp(hl / 2), q, f1, f2, f3


def _etdrk4_steps(v, nonlinear, coefficients, n_steps):
    """Take ``n_steps`` ETDRK4 steps of ``dv/dt = lin * v + nonlinear(v)``.

    ``v`` holds the Fourier coefficients (one row per sample), ``nonlinear``
    maps such an array to the Fourier coefficients of the nonlinear term, and
    ``coefficients`` is the output of :func:`_etdrk4_coefficients` for the
    diagonal linear part ``lin`` and the step ``dt``. Returns the new ``v``.
    """
    e, e2, q, f1, f2, f3 = coefficients
    for _ in range(n_steps):
        nv = nonlinear(v)
        a = e2 * v + q * nv
        na = nonlinear(a)
        b = e2 * v + q * na
        nb = nonlinear(b)
        c = e2 * a + q * (2 * nb - nv)
        nc = nonlinear(c)
        v = e * v + f1 * nv + 2 * f2 * (na + nb) + f3 * nc
    return v


def _solve_fisher_kpp(u0, t_final, diffusivity, reaction):
    """Solve u_t = D u_xx + r u (1 - u) on the periodic domain [0, 1).

    Fourier pseudo-spectral discretisation in space, ETDRK4 exponential
    integrator in time, vectorised over the rows of ``u0``.
    """
    n_features = u0.shape[1]
    if t_final == 0:
        return u0.copy()
    n_steps = max(1, math.ceil(t_final * max(reaction, 1.0) / _MAX_DT))
    dt = t_final / n_steps
    k = 2 * np.pi * np.fft.rfftfreq(n_features, d=1.0 / n_features)
    lin = -diffusivity * k**2
    coefficients = _etdrk4_coefficients(lin, dt)

    v = np.fft.rfft(u0, axis=1)
    if reaction == 0:
        # Pure heat equation: the linear propagator is exact.
        return np.fft.irfft(np.exp(t_final * lin) * v, n=n_features, axis=1)

    def nonlinear(v_hat):
        u = np.fft.irfft(v_hat, n=n_features, axis=1)
        return np.fft.rfft(reaction * u * (1.0 - u), axis=1)

    v = _etdrk4_steps(v, nonlinear, coefficients, n_steps)
    return np.fft.irfft(v, n=n_features, axis=1)


@validate_params(
    {
        "n_samples": [Interval(Integral, 1, None, closed="left")],
        "n_features": [Interval(Integral, 4, None, closed="left")],
        "t_final": [Interval(Real, 0, None, closed="left")],
        "diffusivity": [Interval(Real, 0, None, closed="left")],
        "reaction": [Interval(Real, 0, None, closed="left")],
        "n_modes": [Interval(Integral, 1, None, closed="left")],
        "return_params": ["boolean"],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def make_reaction_diffusion(
    n_samples=500,
    n_features=128,
    *,
    t_final=1.0,
    diffusivity=1e-3,
    reaction=1.0,
    n_modes=3,
    return_params=False,
    random_state=None,
):
    r"""Generate solutions of the 1-D Fisher-KPP reaction-diffusion equation.

    Each sample is the solution at time ``t_final``, on the uniform grid
    ``x = np.arange(n_features) / n_features`` of the periodic domain
    ``[0, 1)``, of

    .. math::

        \partial_t u = D \, \partial_{xx} u + r \, u (1 - u),

    started from a random initial condition made of ``n_modes`` Fourier
    modes with random amplitudes and phases:

    .. math::

        u(x, 0) = \frac{1}{2} + \sum_{k=1}^{K} a_k \cos(2 \pi k x + \phi_k).

    Parameters
    ----------
    n_samples : int, default=500
        The number of solutions.

    n_features : int, default=128
        The number of grid points (at least 4, and more than ``2 * n_modes``
        so that every mode of the initial condition is resolved).

    t_final : float, default=1.0
        The time at which the solution is returned (``t_final=0`` returns the
        initial conditions).

    diffusivity : float, default=1e-3
        The diffusion coefficient ``D >= 0``.

    reaction : float, default=1.0
        The logistic growth rate ``r >= 0``. With ``reaction=0`` the equation
        is the heat equation.

    n_modes : int, default=3
        The number ``K`` of Fourier modes (wavenumbers ``1, ..., K``) of the
        initial condition.

    return_params : bool, default=False
        If True, also return the parameters of the initial conditions.

    random_state : int, RandomState instance or None, default=None
        Determines random number generation for dataset creation. Pass an int
        for reproducible output across multiple function calls.

    Returns
    -------
    X : ndarray of shape (n_samples, n_features), dtype float64
        The solutions ``u(x, t_final)``. The initial conditions lie in
        ``[0, 1]``, and so do the solutions (maximum principle), so no
        further normalisation is applied.

    params : :class:`~sklearn.utils.Bunch`
        Only returned if ``return_params=True``, with attributes:

        - ``x``: ndarray of shape (n_features,), the grid;
        - ``wavenumbers``: ndarray of shape (n_modes,), the integers
          ``1, ..., n_modes``;
        - ``amplitudes``: ndarray of shape (n_samples, n_modes), the ``a_k``;
        - ``phases``: ndarray of shape (n_samples, n_modes), the ``phi_k``;
        - ``u0``: ndarray of shape (n_samples, n_features), the initial
          conditions on the grid;
        - ``latent``: ndarray of shape (n_samples, 2 * n_modes), the
          amplitudes and phases stacked column-wise;
        - ``intrinsic_dim``: int, ``2 * n_modes``;
        - ``t_final``, ``diffusivity``, ``reaction``: the (fixed) equation
          parameters.

    See Also
    --------
    make_spectra : Spectra made of random peaks with counting noise.

    Notes
    -----
    The amplitudes ``a_k`` are drawn uniformly in ``[0.1, 0.5] / n_modes`` and
    the phases ``phi_k`` uniformly in ``[0, 2 pi)``, independently. Hence
    ``u(x, 0)`` lies in ``[0, 1]``.

    The intrinsic dimension, i.e. the number of free parameters per sample,
    is ``2 * n_modes`` (one amplitude and one phase per mode); it is 6 with
    the defaults. The solution map of the equation is injective, so the
    final states form a ``2 * n_modes``-dimensional manifold; the phases
    are angles, so the manifold is not homeomorphic to a ball (a common
    shift of ``x`` acts on it as a circle).

    The equation is discretised with a Fourier pseudo-spectral method in
    space and integrated in time with the fourth-order exponential time
    differencing Runge-Kutta scheme ETDRK4 [1]_, with a time step of at most
    ``0.01 / max(reaction, 1)``, vectorised over all samples. For
    ``reaction=0`` the exact Fourier solution is used, each mode being
    damped by ``exp(-D (2 pi k)**2 t_final)``.

    References
    ----------
    .. [1] A.-K. Kassam and L. N. Trefethen, "Fourth-order time-stepping for
       stiff PDEs", SIAM J. Sci. Comput. 26(4), pp. 1214-1233, 2005.

    Examples
    --------
    >>> from skgfe.datasets import make_reaction_diffusion
    >>> X, params = make_reaction_diffusion(
    ...     n_samples=10, n_features=64, return_params=True, random_state=0
    ... )
    >>> X.shape
    (10, 64)
    >>> params.latent.shape
    (10, 6)
    >>> bool(X.min() >= 0.0 and X.max() <= 1.0)
    True
    """
    if 2 * n_modes >= n_features:
        raise ValueError(
            f"n_features must be larger than 2 * n_modes to resolve the initial "
            f"condition; got n_features={n_features} and n_modes={n_modes}."
        )
    rng = check_random_state(random_state)
    x = np.arange(n_features) / n_features
    wavenumbers = np.arange(1, n_modes + 1)
    amplitudes = rng.uniform(*_AMPLITUDE_RANGE, size=(n_samples, n_modes)) / n_modes
    phases = rng.uniform(0.0, 2 * np.pi, size=(n_samples, n_modes))

    # (n_samples, n_modes, n_features) would be large; accumulate mode by mode.
    u0 = np.full((n_samples, n_features), _BASELINE)
    for j, k in enumerate(wavenumbers):
        u0 += amplitudes[:, j, None] * np.cos(
            2 * np.pi * k * x[None, :] + phases[:, j, None]
        )

    X = _solve_fisher_kpp(u0, float(t_final), float(diffusivity), float(reaction))

    if not return_params:
        return X
    latent = np.hstack([amplitudes, phases])
    params = Bunch(
        x=x,
        wavenumbers=wavenumbers,
        amplitudes=amplitudes,
        phases=phases,
        u0=u0,
        latent=latent,
        intrinsic_dim=latent.shape[1],
        t_final=float(t_final),
        diffusivity=float(diffusivity),
        reaction=float(reaction),
    )
    return X, params
