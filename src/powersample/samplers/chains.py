"""Fan prompts out into rows: `copies` rows per prompt, each drawing from its own seed-derived stream."""

from __future__ import annotations

import torch

from .. import rng
from ..engine.base import Engine, Sequences


def fan_out(engine: Engine, prompts: list[list[int]], seeds: list[int], copies: int) -> Sequences:
    """Rows prompt-major; row (i, j) draws from derive_seeds(seeds[i], "chain", j), whatever else is batched.

    The prompt prefix is computed once per prompt and its cache shared by the copies.
    """
    seqs = engine.start(prompts, seeds)
    parent = torch.arange(len(prompts), device=engine.device).repeat_interleave(copies)
    child = [rng.derive_seeds(s, "chain", j) for s in seeds for j in range(copies)]
    return engine.select(seqs, parent, seeds=torch.tensor(child, device=engine.device))
