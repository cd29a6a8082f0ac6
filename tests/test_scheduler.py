"""The continuous-batching scheduler (samplers/scheduler.py): rows never idle, chains never notice.

A chain's tokens must depend on its seed only, so running it alone, in a full batch, on fewer rows
than chains (joining mid-run as rows free up) or in another arrival order gives the same draws, hence
the same law; tests/test_power_exact.py checks that law against pi_alpha."""

from __future__ import annotations

from conftest import CHAIN_PROMPTS, CHAIN_SEEDS, chain_engine

from powersample.samplers.params import PowerParams
from powersample.samplers.power import power_sample, suffix_log_ratio
from powersample.samplers.scheduler import run_chains

PROMPTS, SEEDS = CHAIN_PROMPTS, CHAIN_SEEDS
PARAMS = PowerParams(alpha=4.0, mcmc_steps=4, max_new_tokens=9, block_size=3, temperature=1.0)


def _summary(r):
    return (r.token_ids, r.tokens_generated, r.stats, r.logp,
            [(c.block, c.token_ids, c.tokens_generated) for c in r.checkpoints])


def test_a_chain_draws_the_same_alone_in_a_crowd_and_joining_late():
    eng = chain_engine()
    full = power_sample(eng, PROMPTS, SEEDS, PARAMS, num_samples=3)  # one row per chain
    narrow = power_sample(eng, PROMPTS, SEEDS, PARAMS, num_samples=3, rows=2)  # chains join as rows free
    flipped = power_sample(eng, PROMPTS[::-1], SEEDS[::-1], PARAMS, num_samples=3, rows=5)
    alone = [r for i in range(4) for r in power_sample(eng, [PROMPTS[i]], [SEEDS[i]], PARAMS, num_samples=3,
                                                       rows=1)]
    for k, r in enumerate(full):
        assert (r.prompt_index, r.sample_index) == (k // 3, k % 3)
        f = flipped[(3 - r.prompt_index) * 3 + r.sample_index]
        assert _summary(r) == _summary(narrow[k]) == _summary(f) == _summary(alone[k])
    # not vacuous: chains differ, proposals were refused and accepted, and chains ended at different
    # blocks (EOS after a block ends a chain), so rows were freed and rejoined mid-run
    assert len({tuple(r.token_ids) for r in full}) > 6
    assert 0 < sum(r.stats["accepted"] for r in full) < sum(r.stats["proposals"] for r in full)
    assert len({len(r.checkpoints) for r in full}) > 1


def test_rows_never_idle_while_chains_wait():
    """40 chains on 8 rows: a row whose proposal ends starts its chain's next step at once, a finished
    chain's row takes the next chain, and a batch whose queue ran dry sheds idle rows."""
    eng = chain_engine()
    prompts = [[0, 2 + i % 4] for i in range(10)]
    res = run_chains(eng, prompts, list(range(10)), PARAMS, suffix_log_ratio, num_samples=4, rows=8, chunk=1)
    assert len(res) == 40 and all(r.checkpoints for r in res)
    assert eng.occupancy() > 0.9, f"occupancy {eng.occupancy():.1%}"


def test_chunked_decoding_keeps_the_draws():
    """Proposals drawn over several engine calls (chunk 1) or in one (a chunk longer than T) are the same."""
    a = run_chains(chain_engine(), PROMPTS, SEEDS, PARAMS, suffix_log_ratio, num_samples=2, rows=3, chunk=1)
    b = run_chains(chain_engine(), PROMPTS, SEEDS, PARAMS, suffix_log_ratio, num_samples=2, rows=3, chunk=100)
    assert [_summary(x) for x in a] == [_summary(y) for y in b]
    assert max(len(x.token_ids) for x in a) > 1


def test_sample_queues_every_chain_instead_of_running_batches_one_after_another():
    """sample(batch_size=b) runs power sampling on b x num_samples rows with every chain queued: the
    same draws as batches run one after another, in fewer forward passes (no batch waits for the
    slowest chain of the one before)."""
    import powersample
    from powersample import rng

    def counting(eng):
        eng.passes, step = 0, eng._next_logits

        def counted(*args):
            eng.passes += 1
            return step(*args)

        eng._next_logits = counted
        return eng

    prompts = [[0, 2 + i % 4] for i in range(24)]
    seeds = [rng.derive_seeds(1, "prompt", i) for i in range(24)]  # as sample() derives them from seed=1
    queued = counting(chain_engine())
    res = powersample.sample(queued, prompts, "power", engine="toy", batch_size=3, seed=1, alpha=4.0,
                             mcmc_steps=4, max_new_tokens=9, block_size=3, temperature=1.0)
    batched = counting(chain_engine())
    one_by_one = [r for lo in range(0, 24, 3)
                  for r in run_chains(batched, prompts[lo: lo + 3], seeds[lo: lo + 3], PARAMS, suffix_log_ratio,
                                      chunk=2)]
    assert [r.token_ids for r in res] == [r.token_ids for r in one_by_one]
    assert queued.passes < 0.9 * batched.passes, (queued.passes, batched.passes)
