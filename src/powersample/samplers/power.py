"""Power sampling by Metropolis-Hastings over whole sequences (Karan & Du 2025, Algorithm 1).

Target: pi(x) ∝ p(x | prompt)^alpha over completions. The completion grows in blocks of B tokens;
after each block, N MH steps. A step picks a position t uniformly among the |x| completion tokens,
redraws the suffix x[t:] from the proposal q (the base model at temperature 1/alpha) up to the
block's length cap or EOS, and accepts with probability min(1, r),

    log r = alpha * (log p(x'[t:]) - log p(x[t:]))      each suffix summed to its OWN end
          + (log q(x[t:]) - log q(x'[t:]))               proposal correction, both directions
          + log |x| - log |x'|                            1/|x| to pick t in x, 1/|x'| to pick it back

Every term comes from the forward pass that drew the token; nothing is re-scored.
Chains run on a continuously batched engine (scheduler.py): each chain moves on as soon as its own
proposal ends, and a finished chain's row takes the next waiting chain.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..engine.base import Engine
from .params import PowerParams
from .result import Result
from .scheduler import run_chains
from .track import Track


def log_acceptance(alpha: float, lp_new: torch.Tensor, lp_old: torch.Tensor, lq_new: torch.Tensor,
                   lq_old: torch.Tensor, n_old: torch.Tensor, n_new: torch.Tensor) -> torch.Tensor:
    """log of pi(x')q(x|x') / (pi(x)q(x'|x)) from suffix sums of log p and log q and completion lengths."""
    return alpha * (lp_new - lp_old) + (lq_old - lq_new) + torch.log(n_old.double()) - torch.log(n_new.double())


def power_sample(engine: Engine, prompts: list[list[int]], seeds: list[int], params: PowerParams,
                 num_samples: int = 1, progress: Callable[[int], None] | None = None,
                 variant: str = "exact", rows: int | None = None) -> list[Result]:
    """`num_samples` independent MH chains per prompt; one Result per chain, prompt-major.

    The chains run on `rows` engine rows (default: one per chain), continuously batched: a row whose
    chain finishes takes the next chain (scheduler.py).

    `variant` exists to prove the tests can fail: "exact" is the algorithm; the others are the
    mistakes of public code ("no-proposal-correction", "shorter-length", "no-position-correction").
    """
    if variant not in _VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {sorted(_VARIANTS)}")
    return run_chains(engine, prompts, seeds, params, _VARIANTS[variant], num_samples=num_samples, rows=rows,
                      progress=progress)


# -- the acceptance ratio, exact and as public code gets it wrong --------------------------------

def _exact(alpha, track: Track, t, ext):
    lp_old, lq_old = track.suffix_sums(t)
    n_new = t + ext.lengths
    return log_acceptance(alpha, ext.logp.double().sum(1), lp_old, ext.logq.double().sum(1), lq_old,
                          track.length, n_new.clamp(min=1))


def _no_proposal_correction(alpha, track, t, ext):
    # accepts with pi(x')/pi(x) only: the chain then targets roughly pi * q, not pi
    lp_old, _ = track.suffix_sums(t)
    return alpha * (ext.logp.double().sum(1) - lp_old)


def _shorter_length(alpha, track, t, ext):
    # compares the two suffixes token by token up to the shorter one's length
    m = torch.minimum(track.length - t, ext.lengths)
    lp_old, lq_old = track.suffix_sums(t, m)
    cols = torch.arange(ext.logp.shape[1], device=ext.logp.device)[None, :] < m[:, None]
    lp_new = (ext.logp.double() * cols).sum(1)
    lq_new = (ext.logq.double() * cols).sum(1)
    return alpha * (lp_new - lp_old) + (lq_old - lq_new)


def _no_position_correction(alpha, track, t, ext):
    lp_old, lq_old = track.suffix_sums(t)
    return alpha * (ext.logp.double().sum(1) - lp_old) + (lq_old - ext.logq.double().sum(1))


_VARIANTS = {"exact": _exact, "no-proposal-correction": _no_proposal_correction,
             "shorter-length": _shorter_length, "no-position-correction": _no_position_correction}
