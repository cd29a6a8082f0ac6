"""Resampling schemes for particle systems: a name -> function table, vectorised over systems.

Each function takes normalised weights `w` (systems, N) whose rows sum to 1 and uniforms `u` (systems,)
in (0, 1), one per system, and returns ancestor indices (systems, N) in [0, N). Every scheme is
unbiased: the expected number of copies of particle j is N * w[s, j]. They differ in variance
(Douc, Cappé & Moulines 2005): systematic <= stratified <= multinomial in practice.
One uniform per system keeps each system's randomness on its own counter-based stream.
"""

from __future__ import annotations

import torch

from .. import rng
from ..errors import check


def systematic(w: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """One uniform, N evenly spaced pointers (u + i) / N into the weights' CDF (Kitagawa 1996)."""
    n = w.shape[1]
    points = (u[:, None] + torch.arange(n, device=w.device, dtype=w.dtype)[None, :]) / n  # (systems, N)
    return inverse_cdf(w, points)


def stratified(w: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """One pointer per stratum [i/N, (i+1)/N), each with its own uniform (derived from u by hashing)."""
    n = w.shape[1]
    seeds = (u * 2.0**53).long()  # the system's uniform, as an integer key for its per-stratum uniforms
    v = rng.uniform(seeds[:, None].expand(-1, n), 0, torch.arange(n, device=w.device)[None, :])
    points = (torch.arange(n, device=w.device, dtype=w.dtype)[None, :] + v.to(w.dtype)) / n
    return inverse_cdf(w, points)


def multinomial(w: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """N independent draws from the weights (the highest-variance scheme, for comparison)."""
    n = w.shape[1]
    seeds = (u * 2.0**53).long()
    v = rng.uniform(seeds[:, None].expand(-1, n), 1, torch.arange(n, device=w.device)[None, :])
    return inverse_cdf(w, v.to(w.dtype))


RESAMPLERS = {"systematic": systematic, "stratified": stratified, "multinomial": multinomial}


def resample(name: str, w: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    check(name in RESAMPLERS, f"resampling must be one of {sorted(RESAMPLERS)}, got {name!r}", "resampling",
          name)
    return RESAMPLERS[name](w, u)


def inverse_cdf(w: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Indices j with CDF[j-1] <= point < CDF[j] for points (systems, k) in [0, 1): k draws per row of w.

    Zero-weight entries are never returned; the CDF is rescaled so that rounding never runs past N-1.
    """
    cdf = w.double().cumsum(1)
    cdf = cdf / cdf[:, -1:]
    idx = torch.searchsorted(cdf, points.double().contiguous(), right=True)
    return idx.clamp(max=w.shape[1] - 1)
