"""Long problems: a run stopped at a block boundary and resumed from the saved chain states ends exactly
as the uninterrupted run (samplers/scheduler.py: on_block, resume; eval: evaluation/runner.py)."""

from __future__ import annotations

import json

import pytest

from powersample.engine.toy import ToyEngine
from powersample.errors import PowerSampleError
from powersample.samplers.params import PowerParams
from powersample.samplers.power import suffix_log_ratio
from powersample.samplers.scheduler import ChainState, run_chains

PROMPTS = [[0, 2], [0, 3, 4], [0], [0, 5]]
SEEDS = [11, 12, 13, 14]
POWER = dict(alpha=4.0, mcmc_steps=3, max_new_tokens=12, block_size=3, temperature=1.0)


class Stop(Exception):
    pass


def _engine():
    return ToyEngine.random(24, seed=1, scale=1.0, eos_token_ids=[1])


def _summary(r):
    return (r.prompt_index, r.sample_index, r.token_ids, r.tokens_generated, r.logp, r.finished, r.acceptance_rate,
            r.stats, [(c.block, c.token_ids, c.logp, c.tokens_generated, c.acceptance_rate, c.mean_entropy,
                       c.mean_top1) for c in r.checkpoints])


@pytest.mark.parametrize("stop_at_eos, rows, after", [(True, 3, 6), (False, 8, 10), (False, 2, 15)])
def test_a_run_stopped_after_some_blocks_and_resumed_equals_the_uninterrupted_run(stop_at_eos, rows, after):
    """on_block raises after `after` saved blocks (on 3 or 2 rows chains join late, so resumed chains both
    start the batch and join it; without stop_at_eos chains ending in EOS resume straight into MH steps)."""
    params = PowerParams(stop_at_eos=stop_at_eos, **POWER)
    full = run_chains(_engine(), PROMPTS, SEEDS, params, suffix_log_ratio, num_samples=2, rows=rows)
    saved, done, calls = {}, [], [0]

    def on_block(chain, state):
        # through JSON, as eval stores them: the round trip must keep every bit
        saved[chain] = ChainState.from_dict(json.loads(json.dumps(state.to_dict())))
        calls[0] += 1
        if calls[0] == after:
            raise Stop

    with pytest.raises(Stop):
        run_chains(_engine(), PROMPTS, SEEDS, params, suffix_log_ratio, num_samples=2, rows=rows,
                   on_block=on_block, on_result=lambda r: done.append((r.prompt_index, r.sample_index)))
    resume = {c: s for c, s in saved.items() if c not in done}
    assert resume and any(s.block > 1 for s in resume.values())
    again = run_chains(_engine(), PROMPTS, SEEDS, params, suffix_log_ratio, num_samples=2, rows=rows, resume=resume)
    assert [_summary(r) for r in again] == [_summary(r) for r in full]
    assert stop_at_eos or any(s.ends_with_eos for s in resume.values())


def test_a_state_that_does_not_fit_raises_one_line():
    params = PowerParams(**POWER)
    saved = {}
    run_chains(_engine(), PROMPTS[:1], SEEDS[:1], params, suffix_log_ratio,
               on_block=lambda c, s: saved.setdefault(c, s))
    state = next(iter(saved.values())).to_dict()
    with pytest.raises(PowerSampleError, match="not a chain state"):
        ChainState.from_dict({k: v for k, v in state.items() if k != "draws"})
    bad = ChainState.from_dict({**state, "logq": state["logq"][:-1]})
    with pytest.raises(PowerSampleError, match="does not fit"):
        run_chains(_engine(), PROMPTS[:1], SEEDS[:1], params, suffix_log_ratio, resume={(0, 0): bad})
    with pytest.raises(PowerSampleError, match="does not fit"):  # other settings: T = 3 has one block only
        ChainState.from_dict(state).check(PowerParams(**{**POWER, "max_new_tokens": 3}))
