"""Small deterministic data generators from the physical sciences.

The generators return data sets with a known, low intrinsic dimension
embedded non-linearly in a high-dimensional space, together (on request)
with the true generating parameters, to benchmark dimensionality reducers.
"""

# SPDX-License-Identifier: BSD-3-Clause

from ._burgers import make_burgers, solve_burgers, trajectories_to_rows
from ._pde import make_reaction_diffusion
from ._spectra import make_spectra

__all__ = [
    "make_burgers",
    "make_reaction_diffusion",
    "make_spectra",
    "solve_burgers",
    "trajectories_to_rows",
]
