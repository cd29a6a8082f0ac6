"""Counter-based random numbers: each row draws from its own stream, keyed by (seed, stream, counter).

Why not torch.Generator: a sample must depend only on its own seed, not on which other rows share its
batch, and one generator per row would mean a Python loop per token per row. A hash of
(seed, stream, counter) gives every row an independent, reproducible stream in one vectorised op.
"""

from __future__ import annotations

import torch

_M32 = 0xFFFFFFFF


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
    g = _mix32(h ^ 0x27D4EB2F)
    bits = ((h & 0x1FFFFF) << 32) | g  # 53 random bits
    return (bits.to(torch.float64) + 0.5) / float(1 << 53)


def derive_seeds(seed: int, *keys: int | str) -> int:
    """A child seed from a parent seed and keys (ints or strings), stable across runs and machines."""
    import hashlib

    text = "|".join([str(seed), *map(str, keys)]).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 2
