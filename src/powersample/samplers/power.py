"""Power sampling by Metropolis-Hastings over whole sequences (Karan & Du 2025, Algorithm 1).

Target: pi(x) ∝ p(x | prompt)^alpha over completions. The completion grows in blocks of B tokens;
after each block, N MH steps. A step picks a position t uniformly among the |x| completion tokens,
redraws the suffix x[t:] from the proposal q (the base model at temperature 1/alpha) up to the
block's length cap or EOS, and accepts with probability min(1, r),

    log r = alpha * (log p(x'[t:]) - log p(x[t:]))      each suffix summed to its OWN end
          + (log q(x[t:]) - log q(x'[t:]))               proposal correction, both directions
          + log |x| - log |x'|                            1/|x| to pick t in x, 1/|x'| to pick it back

Every term comes from the forward pass that drew the token; nothing is re-scored.
All chains of all prompts advance together, one row each in a single engine batch.

What it samples: pi_alpha in the limit of MH steps with an untruncated proposal and either one block or
stop_at_eos=False. The paper's stop_at_eos=True freezes chains that end with EOS after a block (biased
towards short answers), and a top_k/top_p proposal confines the chain to what q can reach (pi restricted
to that set). Measured in docs/samplers.md.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch

from .. import rng
from ..engine.base import Engine
from .chains import fan_out
from .params import PowerParams
from .result import Checkpoint, Result
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
                 log_ratio: Callable[..., torch.Tensor] = suffix_log_ratio) -> list[Result]:
    """`num_samples` independent MH chains per prompt; one Result per chain, prompt-major.

    `log_ratio` has suffix_log_ratio's signature; the tests pass in the mistakes of public code.
    """
    t0 = time.perf_counter()
    seqs = fan_out(engine, prompts, seeds, num_samples)
    rows = len(seqs)
    track = Track(rows, params.max_new_tokens, engine.device)
    proposal, alpha = params.proposal, params.alpha
    proposed = torch.zeros(rows, dtype=torch.long, device=engine.device)
    accepted = torch.zeros_like(proposed)
    done = torch.zeros(rows, dtype=torch.bool, device=engine.device)  # ended with EOS: the chain stops
    checkpoints: list[list[Checkpoint]] = [[] for _ in range(rows)]
    n_blocks = math.ceil(params.max_new_tokens / params.block_size)

    for block in range(n_blocks):
        cap = min((block + 1) * params.block_size, params.max_new_tokens)  # completion length cap
        # 1. grow every chain whose sample has no EOS yet by up to one block from the proposal
        ext = engine.extend(seqs, torch.where(track.ends_with_eos, 0, cap - track.length), proposal)
        track.append(ext)
        # 2. N Metropolis-Hastings steps on the whole completion so far
        for step in range(params.mcmc_steps):
            counter = block * params.mcmc_steps + step
            movable = ~done & (track.length > 0)
            n_old = track.length.clamp(min=1)
            t = (rng.uniform(seqs.seeds, rng.Stream.POSITION, counter) * n_old).long().clamp(max=n_old - 1)
            t = torch.where(movable, t, track.length)  # idle rows: cut nothing, draw nothing
            ext = engine.extend(seqs, torch.where(movable, cap - t, 0), proposal, keep=seqs.prompt_lengths + t)
            log_r = log_ratio(alpha, track, t, ext)
            u = rng.uniform(seqs.seeds, rng.Stream.ACCEPT, counter)
            accept = movable & (torch.log(u) < log_r)
            engine.settle(seqs, accept)
            track.replace(ext, t, accept)
            proposed += movable
            accepted += accept
            track.generated += ext.lengths
        # 3. checkpoint the chains that ran this block; one whose sample ends in EOS is finished
        #    (as in the paper, unless stop_at_eos=False), so its checkpoints depend only on its seed
        elapsed = time.perf_counter() - t0
        ran = (~done).tolist()
        for r, cp in enumerate(track.checkpoints(seqs, block + 1, proposed, accepted, elapsed)):
            if ran[r]:
                checkpoints[r].append(cp)
        if params.stop_at_eos:
            done |= track.ends_with_eos
        if progress is not None:
            progress(1)
        if bool(done.all()):  # host sync once per block
            if progress is not None:
                progress(n_blocks - block - 1)
            break

    seconds = (time.perf_counter() - t0) / len(prompts)
    results = []
    for r in range(rows):
        ids = seqs.completion(r)
        n_prop = int(proposed[r])
        results.append(Result(
            prompt_index=r // num_samples, sample_index=r % num_samples, token_ids=ids, text=engine.decode(ids),
            logp=float(track.logp[r, : len(ids)].sum()), finished=bool(track.ends_with_eos[r]),
            tokens_generated=int(track.generated[r]), seconds=seconds, method="power",
            acceptance_rate=(int(accepted[r]) / n_prop) if n_prop else None,
            stats={"proposals": n_prop, "accepted": int(accepted[r])}, checkpoints=checkpoints[r]))
    return results

