"""The counter-based random numbers: uniforms with 53 random bits, stream numbers in one place."""

from __future__ import annotations

import torch

from powersample import rng


def test_uniforms_have_53_random_bits():
    """2^20 uniforms are all distinct (32 random bits would repeat ~128 of them), and their low bits vary."""
    u = rng.uniform(torch.arange(1 << 20), 1, 0)
    assert len(torch.unique(u)) == len(u)
    bits = (u * 2.0**53).long()  # the 53-bit integer each uniform came from (u = (bits + 0.5) / 2^53)
    high, low = bits >> 32, bits & 0xFFFFFFFF
    # the low 32 bits are not a function of the high 21: equal high parts come with many low parts
    same = high == high[0]
    assert len(torch.unique(low[same])) == int(same.sum()) > 1
    assert 0 < float(u.min()) and float(u.max()) < 1 and abs(float(u.mean()) - 0.5) < 0.002


def test_stream_numbers_are_the_ones_samples_were_drawn_with():
    # changing one would change every sample for the same seed
    assert [int(s) for s in (rng.Stream.TOKEN, rng.Stream.POSITION, rng.Stream.ACCEPT, rng.Stream.RESAMPLE,
                             rng.Stream.SELECT, rng.Stream.CHOICE, rng.Stream.ROLLOUT)] == [1, 2, 3, 4, 5, 6, 7]
    assert rng.Stream.PARTICLE == 3
