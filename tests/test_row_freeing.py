"""Finished work leaves the batch (issue 11): SMC drops finished particles' rows (so finished systems' too)
from later forward passes, temperature sampling and best-of-n drop rows that have ended,
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
from powersample.samplers.baselines import best_of_n, decode, temperature_sample
from powersample.samplers.chains import fan_out
from powersample.samplers.params import BestOfNParams, ScalableParams, SMCParams, TemperatureParams
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


def _one_extend(engine, prompts, seeds, copies, params):
    """The old way: one extend over the whole batch (finished rows ride along until the longest ends)."""
    ext = engine.extend(fan_out(engine, prompts, seeds, copies), params.max_new_tokens, params.proposal)
    return [(ext.row(r), bool(ext.eos[r])) for r in range(len(ext.lengths))], ext.logp.double().sum(1).tolist()


@pytest.mark.parametrize("backend,chunk", [("toy", 1), ("toy", 3), ("toy", 16), ("hf", 2)])
def test_plain_decoding_drops_ended_rows_without_changing_a_draw(backend, chunk):
    from conftest import tiny_llama

    from powersample.engine.hf import HFEngine

    def make():
        return _engine() if backend == "toy" else HFEngine(tiny_llama(vocab=8, context=CONTEXT, scale=3.0,
                                                                       seed=1), eos_token_ids=[EOS])
    params = TemperatureParams(temperature=1.0, max_new_tokens=T)
    prompts, seeds = [QUICK, LONG, AT_WALL, QUICK], [3, 7, 9, 4]
    rows, logp = _one_extend(make(), prompts, seeds, 3, params)
    engine = make()
    tokens, sums, eos = decode(engine, fan_out(engine, prompts, seeds, 3), T, params.proposal, chunk=chunk)
    assert list(zip(tokens, eos, strict=True)) == rows
    assert sums == pytest.approx(logp, abs=1e-9)
    lengths = sorted(len(t) for t, _ in rows)
    assert lengths[0] < lengths[-1] // 2  # rows do end at very different times here...
    drawn = int(engine.slots_drawn)
    assert drawn == sum(lengths)
    idle, idle_before = engine.slots_fed - drawn, len(rows) * lengths[-1] - drawn
    if chunk < lengths[-1] // 2:  # ...and ended rows left the batch: far fewer idle slots than before
        assert idle < idle_before / 2
    else:
        assert idle == idle_before


def test_temperature_sampling_and_best_of_n_results_are_one_extends():
    params = BestOfNParams(n=4, temperature=1.0, max_new_tokens=T)
    prompts, seeds = [QUICK, LONG, AT_WALL], [3, 7, 9]
    rows, logp = _one_extend(_engine(), prompts, seeds, 2 * params.n, params)
    out = best_of_n(_engine(), prompts, seeds, params, num_samples=2)
    for k, r in enumerate(out):
        cands = range(k * params.n, (k + 1) * params.n)
        best = max(cands, key=lambda c: logp[c])
        assert (r.token_ids, r.finished) == rows[best]
        assert r.stats["candidate_logp"] == pytest.approx([logp[c] for c in cands], abs=1e-9)
        assert r.tokens_generated == sum(len(rows[c][0]) for c in cands)
    temp = TemperatureParams(temperature=1.0, max_new_tokens=T)
    rows, logp = _one_extend(_engine(), prompts, seeds, 2, temp)
    out = temperature_sample(_engine(), prompts, seeds, temp, num_samples=2)
    assert [(r.token_ids, r.finished) for r in out] == rows
    assert [r.logp for r in out] == pytest.approx(logp, abs=1e-9)
    assert [r.tokens_generated for r in out] == [len(t) for t, _ in rows]


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
