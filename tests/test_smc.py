"""Power-SMC against exact enumeration on tiny models: its output law is the algorithm's, and approaches pi_alpha.

With a finite particle count N the SMC output is biased (O(1/N) in every event's probability). That bias
is computed here, not taken from the sampler: `exact.smc_law` runs the algorithm written out in numpy on
the enumerated model over many systems, giving law_N. With S = 4,000 sampler systems the tests assert

    TV(empirical, law_N) <= noise(law_N, S) + mc        the sampler draws from the algorithm's law
    TV(empirical, pi)    <= TV(law_N, pi) + noise + mc   hence it is within law_N's bias of pi_alpha

noise: the 99.9% quantile of TV for S iid draws (simulated); mc: the same for law_N's own simulation.
Broken samplers (a weight increment without the bridging prefix term; no weight reset after
resampling) must fail the same checks.

Models: "paper" (EOS rare, so the paper's proposal, temperature 1/alpha, covers pi); "lengths-1" (pi puts
~39% of its mass on completions that end early with EOS, nearly all at length 1) and "bigram"
(exact.bigram_llama: 34%, 35% and 32% at lengths 1, 2 and 3), both with a temperature-1 proposal, the
setting where SMC's O(1/N) bias is small enough to test at N = 16.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_llama
from exact import Enumeration, bigram_llama, noise_tolerance, smc_law, toy_engine, tv

import powersample
from powersample.engine.hf import HFEngine
from powersample.errors import PowerSampleError
from powersample.samplers import smc
from powersample.samplers.params import SMCParams
from powersample.samplers.resampling import RESAMPLERS
from powersample.samplers.smc import log_increment, smc_sample

ALPHA, T, SYSTEMS, SIMULATED = 4.0, 3, 4000, 50_000
PROMPT = [0, 2]
MODEL = dict(vocab=5, seed=1, scale=6.0, eos_bias=-3.0)
LENGTHS = dict(vocab=4, seed=0, scale=1.0, eos_bias=-1.5)
PARTICLES = (1, 4, 16, 64)


def _model(kwargs):
    model = tiny_llama(hidden=16, layers=1, heads=2, kv_heads=1, eos=1, **kwargs)
    return model, Enumeration(model, PROMPT, eos=1, vocab=kwargs["vocab"], T=T, alpha=ALPHA)


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(2)
    model, enum = _model(MODEL)
    return model, enum, toy_engine(model, T)


def _run(engine, n: int, increment=log_increment, **kw):
    params = SMCParams(alpha=ALPHA, particles=n, max_new_tokens=T, **kw)
    return smc_sample(engine, [PROMPT], [0], params, num_samples=SYSTEMS, increment=increment)


def _per_token_bridge(alpha_t, alpha_prev, logp_tok, logq_tok, drew, logp_prefix):
    # the public form p(y_t)^alpha_t / q(y_t): without the prefix term it targets prod_t p(y_t)^alpha_t
    return log_increment(alpha_t, alpha_prev, logp_tok, logq_tok, drew, torch.zeros_like(logp_prefix))


def _no_reset(logw, ancestors, low, n):
    # keeps each copy's old weight after resampling: the weight then counts twice
    return logw[ancestors]


def _check(enum, emp, law) -> tuple[bool, str]:
    """Both noise-derived checks above; (passed, message)."""
    noise = noise_tolerance(law, SYSTEMS) + noise_tolerance(law, SIMULATED)
    d_law, d_pi, bias = tv(emp, law), tv(emp, enum.pi), tv(law, enum.pi)
    msg = f"TV(emp, law_N) {d_law:.4f} vs noise {noise:.4f}; TV(emp, pi) {d_pi:.4f} vs bias {bias:.4f} + noise"
    return d_law < noise and d_pi < bias + noise, msg


@pytest.fixture(scope="module")
def sweep(setup):
    _, enum, engine = setup
    runs = {n: _run(engine, n) for n in PARTICLES}
    emp = {n: enum.empirical([r.token_ids for r in res]) for n, res in runs.items()}
    dist = {n: tv(e, enum.pi) for n, e in emp.items()}
    print("TV(SMC output, pi_alpha) by particles:", {n: round(d, 4) for n, d in dist.items()})
    return runs, emp, dist


def test_one_particle_is_plain_proposal_sampling(setup, sweep):
    _, enum, _ = setup
    runs, emp, _ = sweep
    proposal = enum.proposal_dist(1 / ALPHA)
    assert tv(emp[1], proposal) < noise_tolerance(proposal, SYSTEMS)
    # and the proposal is far from the target, so the other tests mean something
    assert tv(proposal, enum.pi) > 4 * noise_tolerance(enum.pi, SYSTEMS)
    assert all(r.stats["resamples"] == 0 and r.tokens_generated == len(r.token_ids) for r in runs[1])


def test_distance_to_pi_alpha_falls_with_particles(setup, sweep):
    _, enum, _ = setup
    runs, emp, dist = sweep
    assert dist[1] > dist[4] > dist[16] > dist[64], dist
    law = smc_law(enum, 16, SIMULATED)
    ok, msg = _check(enum, emp[16], law)
    print(f"paper, N = 16: {msg}")
    assert ok, msg
    assert dist[1] > 2 * (tv(law, enum.pi) + noise_tolerance(law, SYSTEMS))  # N = 1 fails it: it can fail
    assert sum(r.stats["resamples"] for r in runs[16]) > 0  # resampling was exercised


@pytest.mark.parametrize("n", PARTICLES)
def test_evidence_estimate_is_unbiased_for_any_particle_count(setup, sweep, n):
    """E[mean final weight] = sum_y p(y)^alpha for every N: a check of the weights themselves, free of the
    finite-N selection bias (it catches a wrong increment or a wrong reset at resampling)."""
    _, enum, _ = setup
    runs, _, _ = sweep
    log_z_true = torch.logsumexp(torch.tensor(ALPHA * enum.logp), 0)
    z = torch.tensor([r.stats["log_z"] for r in runs[n]], dtype=torch.float64).sub(log_z_true).exp()  # Z_hat / Z
    se = z.std() / math.sqrt(len(z))
    assert abs(float(z.mean()) - 1) < 4 * float(se) + 1e-3, (float(z.mean()), float(se))


def test_results_carry_true_log_p_and_every_particles_tokens(setup, sweep):
    _, enum, _ = setup
    runs, _, _ = sweep
    for r in runs[16][:200]:
        assert abs(r.logp - enum.logp[enum.index[tuple(r.token_ids)]]) < 1e-4
        assert r.method == "smc" and r.stats["particles"] == 16
        # every particle drew the first token; the chosen one drew len(token_ids) tokens
        assert 16 + len(r.token_ids) - 1 <= r.tokens_generated <= 16 * T
        assert 0 < r.stats["ess_min"] <= r.stats["ess_mean"] <= 1


@pytest.fixture(scope="module")
def eos_models():
    """name -> (enumeration, engine): `lengths-1` (39% of pi on EOS, nearly all at length 1) and `bigram`
    (34%, 35% and 32% at lengths 1, 2 and 3)."""
    lengths_model, lengths_enum = _model(LENGTHS)
    bigram = bigram_llama()
    bigram_enum = Enumeration(bigram, PROMPT, eos=1, vocab=4, T=T, alpha=ALPHA)
    return {"lengths-1": (lengths_enum, toy_engine(lengths_model, T)),
            "bigram": (bigram_enum, toy_engine(bigram, T))}


@pytest.mark.parametrize("name", ["lengths-1", "bigram"])
@pytest.mark.parametrize("bridge", [0, 2 * T])  # 2T > T: every system ends inside the bridge (end correction)
def test_smc_matches_its_law_where_pi_favours_early_eos(eos_models, name, bridge):
    enum, engine = eos_models[name]
    assert sum(p for x, p in zip(enum.outcomes, enum.pi, strict=True) if x[-1] == 1) > 0.3
    emp = enum.empirical([r.token_ids for r in _run(engine, 16, temperature=1.0, bridge_tokens=bridge)])
    ok, msg = _check(enum, emp, smc_law(enum, 16, SIMULATED, temperature=1.0, bridge_tokens=bridge))
    print(f"{name}, N = 16, bridge {bridge}: {msg}")
    assert ok, msg
    assert tv(enum.proposal_dist(1.0), enum.pi) > 2 * tv(emp, enum.pi)  # the weights did real work


@pytest.mark.parametrize("broken", ["per-token-bridge", "no-reset"])
def test_broken_smc_fails_the_same_checks(eos_models, monkeypatch, broken):
    enum, engine = eos_models["lengths-1"]
    bridge = 2 * T if broken == "per-token-bridge" else 0
    law = smc_law(enum, 16, SIMULATED, temperature=1.0, bridge_tokens=bridge)
    if broken == "no-reset":
        monkeypatch.setattr(smc, "_reset", _no_reset)
    increment = _per_token_bridge if broken == "per-token-bridge" else log_increment
    emp = enum.empirical([r.token_ids for r in _run(engine, 16, increment, temperature=1.0, bridge_tokens=bridge)])
    ok, msg = _check(enum, emp, law)
    print(f"{broken}: {msg}")
    assert not ok, f"{broken} passed: {msg}"


def test_bridge_longer_than_the_run_still_ends_at_alpha():
    p = SMCParams(alpha=4.0, bridge_tokens=8, max_new_tokens=3)
    assert [p.exponent(t) for t in (0, 4, 8, 9)] == [1.0, 2.5, 4.0, 4.0]
    assert p.proposal(4).temperature == 1 / 2.5 and SMCParams(temperature=1.0).proposal(1).temperature == 1.0


class _NoMassEngine(HFEngine):
    """Reports log p = -inf for every drawn token: every particle's weight is zero."""

    def extend(self, seqs, max_new, proposal, keep=None, first=None):
        ext = super().extend(seqs, max_new, proposal, keep=keep, first=first)
        ext.logp = torch.where(ext.tokens >= 0, -math.inf, ext.logp)
        return ext


def test_all_weights_zero_is_handled(setup):
    model, _, _ = setup
    params = SMCParams(alpha=ALPHA, particles=8, max_new_tokens=T, keep_particles=True)
    res = smc_sample(_NoMassEngine(model, eos_token_ids=[1]), [PROMPT, PROMPT], [0, 1], params, num_samples=3)
    assert len(res) == 6
    for r in res:
        assert r.stats["all_weights_zero"] and r.stats["resamples"] == 0  # nothing to resample from
        assert r.stats["log_z"] == -math.inf and r.stats["ess_min"] == 0  # reported as zero, never NaN
        assert r.stats["particle_weights"] == [1 / 8] * 8  # a uniform pick, not NaN
        assert r.token_ids in r.stats["particle_ids"]


@pytest.mark.parametrize("name", sorted(RESAMPLERS))
def test_resamplers_are_unbiased_and_skip_zero_weights(name):
    g = torch.Generator().manual_seed(0)
    w = torch.tensor([[0.5, 0.0, 0.3, 0.2], [0.0, 0.0, 1.0, 0.0]], dtype=torch.float64)
    counts = torch.zeros_like(w)
    trials = 4000
    for _ in range(trials):
        idx = RESAMPLERS[name](w, torch.rand(2, generator=g, dtype=torch.float64))
        counts += torch.nn.functional.one_hot(idx, 4).sum(1)
    assert counts[:, 1].sum() == 0 and (counts[1] == torch.tensor([0, 0, 4 * trials, 0])).all()
    assert torch.allclose(counts[0] / (4 * trials), w[0], atol=0.02)


def test_samples_are_independent_of_batching(setup):
    """A system's draws depend only on its prompt's seed and its sample index, not on the batch."""
    model, _, _ = setup
    engine = HFEngine(model, eos_token_ids=[1])  # the real batched backend: batching is what is tested
    params = SMCParams(alpha=ALPHA, particles=4, max_new_tokens=T)
    together = smc_sample(engine, [PROMPT, [0, 3]], [7, 8], params, num_samples=3)
    alone = smc_sample(engine, [[0, 3]], [8], params, num_samples=3)
    assert [r.token_ids for r in together[3:]] == [r.token_ids for r in alone]
    assert len({tuple(r.token_ids) for r in together}) > 1


def test_registered_and_reachable_through_sample(setup):
    model, _, _ = setup
    res = powersample.sample(model, [PROMPT], method="smc", alpha=ALPHA, max_new_tokens=T, particles=4,
                             num_samples=2, seed=0, eos_token_id=1)
    assert [(r.prompt_index, r.sample_index, r.method) for r in res] == [(0, 0, "smc"), (0, 1, "smc")]


@pytest.mark.parametrize("field, value", [("particles", 0), ("particles", -2), ("ess_threshold", 0.0),
                                          ("ess_threshold", 1.5), ("bridge_tokens", -1), ("alpha", 0.0),
                                          ("resampling", "bogus"), ("temperature", 0.0)])
def test_bad_settings_name_the_field(field, value):
    with pytest.raises(PowerSampleError, match=field) as e:
        SMCParams(**{field: value})
    assert e.value.parameter == field
