"""Finished work leaves the batch (issue 11): SMC drops finished particles' rows (so finished systems' too)
from later forward passes,
and scalable runs its K*M rollouts in bounded groups, without changing any draw.

The toy engine's next-token law depends only on a row's own prefix, so any difference between a system run
alone and run beside others can only come from the sampler's bookkeeping.
"""

from __future__ import annotations

import pytest
import torch

from powersample import rng
from powersample.engine.toy import ToyEngine
from powersample.errors import PowerSampleError
from powersample.samplers.params import ScalableParams, SMCParams
from powersample.samplers.scalable import scalable_sample
from powersample.samplers.smc import smc_sample

EOS, T = 1, 8
LONG = [0, 2]  # a prompt that runs long: EOS is unlikely after it
QUICK = [5, 3]  # after a 5, EOS is very likely: its systems finish within a step or two
CONTEXT = 12
AT_WALL = [0] * (CONTEXT - 2)  # two tokens from the model's context: its systems stop after two steps


def _engine() -> ToyEngine:
    def law(prefix):
        g = torch.Generator().manual_seed(rng.derive_seeds(11, *prefix))
        logits = 2.0 * torch.randn(6, generator=g, dtype=torch.float64)
        logits[EOS] = 6.0 if prefix[0] == 5 else -3.0
        return logits

    return ToyEngine(law, eos_token_ids=[EOS], max_length=CONTEXT)


def _counting(engine: ToyEngine) -> list[int]:
    """Record the rows of every forward pass the engine runs, and (in engine.drawing) those that draw."""
    fed, step = [], engine._next_logits
    engine.drawing = []

    def counted(seqs, active=None):
        fed.append(len(seqs))
        engine.drawing.append(int(active.sum()))
        return step(seqs, active)

    engine._next_logits = counted
    return fed


def _same(a, b):
    assert (a.token_ids, a.logp, a.finished, a.tokens_generated) == (b.token_ids, b.logp, b.finished,
                                                                      b.tokens_generated)
    assert a.stats == b.stats


SMC = SMCParams(alpha=4.0, particles=4, max_new_tokens=T, ess_threshold=0.9, bridge_tokens=3,
                keep_particles=True)


def test_smc_system_draws_the_same_alone_batched_and_beside_systems_that_finish_early():
    alone = smc_sample(_engine(), [LONG], [7], SMC, num_samples=2)
    batched = smc_sample(_engine(), [QUICK, LONG, AT_WALL], [3, 7, 9], SMC, num_samples=2)
    reordered = smc_sample(_engine(), [LONG, QUICK], [7, 3], SMC, num_samples=2)
    for k in range(2):
        _same(alone[k], batched[2 + k])
        _same(alone[k], reordered[k])
    _same(batched[0], reordered[2])  # and the early finishers themselves
    assert all(r.finished for r in batched[:2]) and len(batched[4].token_ids) == 2  # the neighbours did end early
    assert len(alone[0].token_ids) > 2 and alone[0].stats["resamples"] > 0  # the system ran on past them


def test_smc_forward_passes_carry_only_particles_that_can_draw():
    engine = _engine()
    fed = _counting(engine)
    out = smc_sample(engine, [LONG, AT_WALL], [7, 9], SMC)
    n = SMC.particles
    assert len(out[1].token_ids) == 2  # the neighbour's system ends after two tokens (the context)
    assert fed[:2] == [2 * n, 2 * n]  # both systems draw while both run...
    assert max(fed[2:]) <= n < len(fed)  # ...then only the running one's particles are fed
    # idle rows (finished particles) leave once they are a quarter of the batch
    assert all(d * 4 > f for d, f in zip(engine.drawing, fed, strict=True))
    assert sum(engine.drawing) == int(engine.slots_drawn) == sum(r.tokens_generated for r in out)


def _rollout_sizes(engine: ToyEngine) -> list[int]:
    """Record the rows of every batch `select` makes: the samples' fan-out first, then the rollouts'."""
    sizes, select = [], engine.select

    def counted(seqs, index, seeds=None):
        sizes.append(len(index))
        return select(seqs, index, seeds)

    engine.select = counted
    return sizes


@pytest.mark.parametrize("group", [1, 7, 64])
def test_scalable_rollouts_in_bounded_groups_draw_the_same(group):
    params = dict(alpha=4.0, top_k_candidates=3, rollouts=4, horizon=3, max_new_tokens=5)
    prompts, seeds = [LONG, QUICK, AT_WALL], [7, 3, 9]
    whole = scalable_sample(_engine(), prompts, seeds, ScalableParams(**params, rollout_batch=10_000),
                            num_samples=2)
    engine = _engine()
    sizes = _rollout_sizes(engine)
    grouped = scalable_sample(engine, prompts, seeds, ScalableParams(**params, rollout_batch=group), num_samples=2)
    for a, b in zip(whole, grouped, strict=True):
        _same(a, b)
    assert max(sizes[1:]) == group  # never more than `group` cache copies at once (6 rows x 12 rollouts > 64)


def test_scalable_rollout_batch_must_be_positive():
    with pytest.raises(PowerSampleError, match="rollout_batch"):
        ScalableParams(rollout_batch=0)


def test_smc_on_the_transformers_backend_frees_rows_with_their_caches():
    """The same on a KV-cached backend: shrinking the batch keeps each running row's cache."""
    from conftest import tiny_llama

    from powersample.engine.hf import HFEngine

    engine = HFEngine(tiny_llama(vocab=8, context=CONTEXT, scale=3.0), eos_token_ids=[EOS])
    fed = _counting_hf(engine)
    together = smc_sample(engine, [LONG, AT_WALL], [7, 9], SMC, num_samples=2)
    n = SMC.particles
    assert fed[0] == 4 * n and max(fed[2:]) <= 2 * n  # the neighbour's rows leave after two tokens
    assert int(engine.slots_drawn) == sum(r.tokens_generated for r in together)
    assert int(engine.slots_drawn) * 4 > engine.slots_fed * 3  # at least 3/4 of every pass draws
    alone = smc_sample(engine, [LONG], [7], SMC, num_samples=2)
    for a, b in zip(alone, together[:2], strict=True):
        assert a.token_ids == b.token_ids and a.stats["particle_ids"] == b.stats["particle_ids"]
        assert a.logp == pytest.approx(b.logp, abs=1e-5)


def _counting_hf(engine) -> list[int]:
    fed, step = [], engine._step

    def counted(seqs, active):
        fed.append(len(seqs))
        return step(seqs, active)

    engine._step = counted
    return fed
