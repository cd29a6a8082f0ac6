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

What it samples: pi_alpha in the limit of MH steps with an untruncated proposal and either one block or
stop_at_eos=False. The paper's stop_at_eos=True freezes chains that end with EOS after a block (biased
towards short answers), and a top_k/top_p proposal confines the chain to what q can reach (pi restricted
to that set). Measured in docs/samplers.md.
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


def suffix_log_ratio(alpha: float, track: Track, t: torch.Tensor, ext) -> torch.Tensor:
    """log r of each row's proposal: the old suffix from position t is in `track`, the new one in `ext`."""
    lp_old, lq_old = track.suffix_sums(t)
    n_new = t + ext.lengths
    return log_acceptance(alpha, ext.logp.double().sum(1), lp_old, ext.logq.double().sum(1), lq_old,
                          track.length, n_new.clamp(min=1))


def power_sample(engine: Engine, prompts: list[list[int]], seeds: list[int], params: PowerParams,
                 num_samples: int = 1, progress: Callable[[int], None] | None = None,
                 log_ratio: Callable[..., torch.Tensor] = suffix_log_ratio,
                 rows: int | None = None, on_result: Callable[[Result], None] | None = None,
                 max_batch_tokens: int | None = None, on_block: Callable | None = None,
                 resume: dict | None = None) -> list[Result]:
    """`num_samples` independent MH chains per prompt; one Result per chain, prompt-major.

    The chains run on `rows` engine rows (default: one per chain; fewer if rows x (prompt + T) exceeds
    `max_batch_tokens`), continuously batched: a row whose chain finishes takes the next chain, and its
    Result goes to `on_result` at once (scheduler.py). `on_block` and `resume` save and restore running
    chains at block boundaries (scheduler.py). `log_ratio` has suffix_log_ratio's signature;
    the tests pass in the mistakes of public code.
    """
    return run_chains(engine, prompts, seeds, params, log_ratio, num_samples=num_samples, rows=rows,
                      progress=progress, on_result=on_result, max_batch_tokens=max_batch_tokens,
                      on_block=on_block, resume=resume)

