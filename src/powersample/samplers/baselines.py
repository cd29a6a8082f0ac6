"""Baselines through the same engine: temperature sampling (greedy at 0) and best-of-N by likelihood."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from ..engine.base import Engine, Proposal, Sequences
from .chains import fan_out
from .params import BestOfNParams, TemperatureParams
from .result import Result, make_result


def temperature_sample(engine: Engine, prompts: list[list[int]], seeds: list[int], params: TemperatureParams,
                       num_samples: int = 1, progress: Callable[[int], None] | None = None,
                       method: str = "temperature") -> list[Result]:
    """`num_samples` ancestral samples per prompt at params.temperature (0 = greedy), prompt-major."""
    t0 = time.perf_counter()
    tokens, logp, eos = decode(engine, fan_out(engine, prompts, seeds, num_samples), params.max_new_tokens,
                               params.proposal)
    if progress is not None:
        progress(1)
    seconds = (time.perf_counter() - t0) / len(prompts)
    return [make_result(engine, r, num_samples, ids, logp=logp[r], finished=eos[r], tokens_generated=len(ids),
                        seconds=seconds, method=method) for r, ids in enumerate(tokens)]


def best_of_n(engine: Engine, prompts: list[list[int]], seeds: list[int], params: BestOfNParams,
              num_samples: int = 1, progress: Callable[[int], None] | None = None) -> list[Result]:
    """Per sample, draw n candidates and keep the one with the highest log p(completion | prompt).

    Summed log-likelihood favours short completions; that is the baseline as the literature runs it.
    """
    t0 = time.perf_counter()
    n = params.n
    tokens, logps, eos = decode(engine, fan_out(engine, prompts, seeds, num_samples * n), params.max_new_tokens,
                                params.proposal)
    if progress is not None:
        progress(1)
    seconds = (time.perf_counter() - t0) / len(prompts)
    logp = torch.tensor(logps, dtype=torch.float64).view(-1, n)  # (prompts * samples, n)
    out = []
    for k, b in enumerate(logp.argmax(1).tolist()):
        r = k * n + b
        out.append(make_result(engine, k, num_samples, tokens[r], logp=float(logp[k, b]), finished=eos[r],
                               tokens_generated=sum(len(t) for t in tokens[k * n:(k + 1) * n]), seconds=seconds,
                               method="best-of-n", stats={"n": n, "candidate_logp": logp[k].tolist()}))
    return out


def decode(engine: Engine, seqs: Sequences, max_new_tokens: int, proposal: Proposal,
           chunk: int = 8) -> tuple[list[list[int]], list[float], list[bool]]:
    """Every row decoded to EOS, `max_new_tokens` or the context: (tokens, summed log p, ended with EOS) per row.

    Rows that have ended leave the batch (with their KV cache) once they are a quarter of it, so later
    forward passes are not spent on them. The draws are those of one long extend: each row's random
    stream counts its own tokens, whatever batch it sits in."""
    n = len(seqs)
    tokens, logp, eos = [[] for _ in range(n)], [0.0] * n, [False] * n
    where = list(range(n))  # which row of the result each batch row is
    left = torch.full((n,), max_new_tokens, dtype=torch.long, device=engine.device)
    while True:
        asked = left.clamp(max=chunk)
        ext = engine.extend(seqs, asked, proposal)
        sums = ext.logp.double().sum(1).tolist()
        for b, r in enumerate(where):
            tokens[r] += ext.row(b)
            logp[r] += sums[b]
            eos[r] = eos[r] or bool(ext.eos[b])
        # a row has ended at EOS, at max_new_tokens, or when the context stopped it short
        left = torch.where(ext.eos | (ext.lengths < asked), 0, left - ext.lengths)
        alive = (left > 0).nonzero().flatten()
        if len(alive) == 0:
            return tokens, logp, eos
        if len(alive) <= 3 * len(where) // 4:
            seqs = engine.shrink(seqs, alive)
            where = [where[b] for b in alive.tolist()]
            left = left[alive]

