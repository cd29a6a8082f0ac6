"""Edge cases every sampler must survive: systems whose particles all finish, rows that reach the model's
context, and batches whose systems finish at different times (a sample depends only on its seed)."""

from __future__ import annotations

import pytest
import torch
from conftest import full_logp, tiny_llama

import powersample
from powersample.engine.hf import HFEngine
from powersample.samplers.params import SMCParams
from powersample.samplers.smc import smc_sample

PROMPT = [0, 2]


@pytest.fixture(scope="module")
def eos_likely():
    """Random tiny models where EOS is likely enough that whole particle systems end early."""
    torch.set_num_threads(2)
    return [tiny_llama(vocab=32, hidden=16, layers=1, heads=2, kv_heads=1, seed=s) for s in range(3)]


@pytest.mark.parametrize("bridge", [0, 8])
def test_smc_survives_resampling_onto_finished_particles(eos_likely, bridge):
    """Resampling can leave a system with only finished (EOS) particles; the next step must not index
    a token column that no particle drew."""
    params = SMCParams(particles=16, max_new_tokens=16, bridge_tokens=bridge)
    for model in eos_likely:
        res = smc_sample(HFEngine(model, eos_token_ids=[1]), [PROMPT], [0], params, num_samples=2)
        for r in res:
            assert len(r.token_ids) <= 16
            assert abs(r.logp - sum(full_logp(model, PROMPT, r.token_ids))) < 1e-3


@pytest.mark.parametrize("method, options", [
    ("power", dict(mcmc_steps=2, block_size=4)), ("temperature", {}), ("greedy", {}), ("low-temperature", {}),
    ("best-of-n", dict(n=2)),
    ("smc", dict(particles=4)), ("smc", dict(particles=4, bridge_tokens=8)),
    ("scalable", dict(top_k_candidates=2, rollouts=2, horizon=3)),
])
def test_every_method_returns_what_fits_in_the_context(method, options):
    """A model with a 6-token context, a 2-token prompt and room asked for 16: each method stops at the
    context's end and returns the 4 tokens that fit, with their true log p."""
    model = tiny_llama(vocab=8, hidden=16, layers=1, heads=2, kv_heads=1, context=6, eos_bias=-9.0)
    res = powersample.sample(model, [PROMPT], method=method, alpha=4.0, max_new_tokens=16, num_samples=2,
                             seed=0, eos_token_id=1, **options)
    for r in res:
        assert len(r.token_ids) == 4 and not r.finished
        assert abs(r.logp - sum(full_logp(model, PROMPT, r.token_ids))) < 1e-3


@pytest.mark.parametrize("bridge", [0, 12])
def test_smc_system_depends_only_on_its_seed_when_others_run_longer(eos_likely, bridge):
    """One prompt's systems end early (EOS), the other's run on: each system's sample and statistics are
    the same alone as batched (a finished system takes no more bridge terms, resampling or ESS steps)."""
    engine = HFEngine(eos_likely[0], eos_token_ids=[1])
    params = SMCParams(particles=4, max_new_tokens=16, bridge_tokens=bridge)
    prompts, seeds = [PROMPT, [0, 5, 7]], [11, 12]
    together = smc_sample(engine, prompts, seeds, params, num_samples=3)
    alone = [r for p, s in zip(prompts, seeds, strict=True)
             for r in smc_sample(engine, [p], [s], params, num_samples=3)]
    lengths = {len(r.token_ids) for r in together}
    assert len(lengths) > 1  # systems did finish at different steps
    for a, b in zip(alone, together, strict=True):
        assert a.token_ids == b.token_ids
        assert a.stats == pytest.approx(b.stats, rel=1e-5)  # batched forward passes differ in float noise
