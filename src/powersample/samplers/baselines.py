"""Baselines through the same engine: temperature sampling (greedy at 0) and best-of-N by likelihood."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from ..engine.base import Engine
from .chains import fan_out
from .params import BestOfNParams, TemperatureParams
from .result import Result, make_result


def temperature_sample(engine: Engine, prompts: list[list[int]], seeds: list[int], params: TemperatureParams,
                       num_samples: int = 1, progress: Callable[[int], None] | None = None,
                       method: str = "temperature") -> list[Result]:
    """`num_samples` ancestral samples per prompt at params.temperature (0 = greedy), prompt-major."""
    t0 = time.perf_counter()
    seqs = fan_out(engine, prompts, seeds, num_samples)
    ext = engine.extend(seqs, torch.tensor(params.max_new_tokens, device=engine.device), params.proposal)
    if progress is not None:
        progress(1)
    seconds = (time.perf_counter() - t0) / len(prompts)
    logp = ext.logp.double().sum(1).tolist()
    out = []
    for r in range(len(seqs)):
        ids = ext.row(r)
        out.append(make_result(engine, r, num_samples, ids, logp=logp[r], finished=bool(ext.eos[r]),
                               tokens_generated=len(ids), seconds=seconds, method=method))
    return out


def best_of_n(engine: Engine, prompts: list[list[int]], seeds: list[int], params: BestOfNParams,
              num_samples: int = 1, progress: Callable[[int], None] | None = None) -> list[Result]:
    """Per sample, draw n candidates and keep the one with the highest log p(completion | prompt).

    Summed log-likelihood favours short completions; that is the baseline as the literature runs it.
    """
    t0 = time.perf_counter()
    n = params.n
    seqs = fan_out(engine, prompts, seeds, num_samples * n)
    ext = engine.extend(seqs, torch.tensor(params.max_new_tokens, device=engine.device), params.proposal)
    if progress is not None:
        progress(1)
    seconds = (time.perf_counter() - t0) / len(prompts)
    logp = ext.logp.double().sum(1).view(-1, n)  # (prompts * samples, n)
    best = logp.argmax(1).tolist()
    total = ext.lengths.view(-1, n).sum(1).tolist()
    out = []
    for k, b in enumerate(best):
        r = k * n + b
        ids = ext.row(r)
        out.append(make_result(engine, k, num_samples, ids, logp=float(logp[k, b]), finished=bool(ext.eos[r]),
                               tokens_generated=int(total[k]), seconds=seconds, method="best-of-n",
                               stats={"n": n, "candidate_logp": logp[k].tolist()}))
    return out

