"""Counter-based random numbers: each row draws from its own stream, keyed by (seed, stream, counter).

Why not torch.Generator: a sample must depend only on its own seed, not on which other rows share its
batch, and one generator per row would mean a Python loop per token per row. A hash of
(seed, stream, counter) gives every row an independent, reproducible stream in one vectorised op.
"""

from __future__ import annotations

from enum import IntEnum

import torch

_M32 = 0xFFFFFFFF


class Stream(IntEnum):
    """Every stream number in one place, so no two draws share one by accident. The values are what the
    samplers have always used: changing one changes every sample for the same seed."""

    TOKEN = 1  # the engine's token draws
    POSITION = 2  # power MH: which position to cut at
    ACCEPT = 3  # power MH: the accept/reject uniform
    PARTICLE = 3  # SMC: each particle's seed (an alias of ACCEPT: it keys SMC's system seeds, never MH's rows)
    RESAMPLE = 4  # SMC: one uniform per system and resampling step
    SELECT = 5  # SMC: the final pick of a particle
    CHOICE = 6  # scalable: the draw among the candidates
    ROLLOUT = 7  # scalable: each rollout's seed


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 (C. Wellons): a well-mixed 32-bit permutation, computed in int64 with masking."""
    x = x & _M32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def hash64(seed: torch.Tensor, *words: torch.Tensor | int) -> torch.Tensor:
    """A 64-bit-ish hash (non-negative int64, 62 bits) of a seed and further words, elementwise."""
    h1 = _mix32(seed & _M32)
    h2 = _mix32((seed >> 32) ^ 0x5BD1E995)
    for w in words:
        w = torch.as_tensor(w, dtype=torch.int64, device=seed.device)
        h1 = _mix32(h1 ^ _mix32(w & _M32) ^ 0x9E3779B9)
        h2 = _mix32(h2 ^ _mix32((w >> 32) ^ h1))
    return ((h1 & 0x3FFFFFFF) << 32) | h2


def uniform(seed: torch.Tensor, stream: int, counter: torch.Tensor | int) -> torch.Tensor:
    """Uniform float64 in (0, 1), one per element of `seed` (int64), from stream `stream` at `counter`."""
    seed = seed.to(torch.int64)
    h = hash64(seed, stream, counter)
    # 53 random bits: the top 21 from the hash's low half, the low 32 mixed from both halves (_mix32 reads
    # only 32 bits, so mixing the low half alone would leave 2^32 distinct values)
    g = _mix32(h ^ 0x27D4EB2F ^ (h >> 32))
    bits = ((h & 0x1FFFFF) << 32) | g
    return (bits.to(torch.float64) + 0.5) / float(1 << 53)


def derive_seeds(seed: int, *keys: int | str) -> int:
    """A child seed from a parent seed and keys (ints or strings), stable across runs and machines."""
    import hashlib

    text = "|".join([str(seed), *map(str, keys)]).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 2
