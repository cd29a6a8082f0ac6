"""Live Dynamic Power Sampling (dynamic/live.py): the controller's budget, chains joining the running
batch, and the key property: a live run = the replay of the same controller on a fixed k_max run."""

from __future__ import annotations

import json

import pytest
from conftest import CHAIN_PROMPTS, CHAIN_SEEDS, chain_engine

from powersample.cli.main import main
from powersample.dynamic.controllers import make_controller
from powersample.dynamic.live import DynamicParams, dynamic_sample
from powersample.dynamic.log import load_log
from powersample.dynamic.replay import Budget, replay
from powersample.dynamic.vote import equivalence
from powersample.errors import PowerSampleError
from powersample.evaluation.report import report
from powersample.samplers.params import PowerParams
from powersample.samplers.power import power_sample, suffix_log_ratio
from powersample.samplers.scheduler import run_chains

PROMPTS, SEEDS = CHAIN_PROMPTS, CHAIN_SEEDS
POWER = dict(alpha=4.0, mcmc_steps=3, max_new_tokens=9, block_size=3, temperature=1.0)


def _summary(r):
    return (r.prompt_index, r.sample_index, r.token_ids, r.tokens_generated, r.logp,
            [(c.block, c.token_ids, c.tokens_generated) for c in r.checkpoints])


@pytest.mark.parametrize("spec, k", [("fixed:2", 2), ("fixed", 8)])
def test_enough_uses_k_min_and_never_enough_reaches_k_max(spec, k):
    records = []
    res = dynamic_sample(chain_engine(), PROMPTS, SEEDS, DynamicParams(controller=spec, **POWER), rows=6,
                         on_problem=records.append)
    assert sorted((r.prompt_index, r.sample_index) for r in res) == [(i, j) for i in range(4) for j in range(k)]
    assert sorted(rec["prompt_index"] for rec in records) == [0, 1, 2, 3]
    for rec in records:
        assert rec["k"] == k and len(rec["decisions"]) == k // 2  # asked at k = 2, 4, ..., k
        assert [d["enough"] for d in rec["decisions"]] == [False] * (k // 2 - 1) + [True]
        assert rec["tokens"] == sum(r.tokens_generated for r in res if r.prompt_index == rec["prompt_index"])


def test_chains_added_mid_run_join_without_changing_the_others():
    """Chains a callback adds join the running batch (on 3 rows: they share it with other prompts'
    first chains), earlier chains draw what they draw without them, and every chain draws what it
    draws in a fixed run of all of them."""
    params = PowerParams(**POWER)
    added = []

    def more(r):  # prompt 0 and 3: when their chain 0 ends, add chains 2 and 3
        if r.prompt_index in (0, 3) and r.sample_index == 0:
            added.append(r.prompt_index)
            return [2, 3]
        return []

    grown = run_chains(chain_engine(), PROMPTS, SEEDS, params, suffix_log_ratio, num_samples=2, rows=3, more=more)
    plain = run_chains(chain_engine(), PROMPTS, SEEDS, params, suffix_log_ratio, num_samples=2, rows=3)
    full = power_sample(chain_engine(), PROMPTS, SEEDS, params, num_samples=4)
    assert added == [0, 3] or added == [3, 0]
    keys = [(r.prompt_index, r.sample_index) for r in grown]
    assert keys == sorted(keys) and len(grown) == 4 + 2 + 2 + 4  # prompt-major; prompts 0 and 3 grew
    firsts = [r for r in grown if r.sample_index < 2]
    assert [_summary(r) for r in firsts] == [_summary(r) for r in plain]
    by_key = {(r.prompt_index, r.sample_index): r for r in full}
    assert all(_summary(r) == _summary(by_key[r.prompt_index, r.sample_index]) for r in grown)


def test_live_dynamic_equals_the_replay_of_a_fixed_run(tmp_path):
    """The key property: the same controller, live or replayed on a fixed k_max = 8 run with the same
    seeds, makes the same decisions (same features) and gives the same answers, chains and tokens; asked
    when the chains have ended (decide=end) or at every checkpoint (decide=block: running answers live)."""
    common = ["eval", "--task", "gym-mixed", "--model", "gym-mixed", "--task-option", "count=1", "--alpha", "4",
              "--mcmc-steps", "2", "--block-size", "16", "--max-new-tokens", "48", "--seed", "5", "--batch-size",
              "4", "--grade-workers", "1", "--device", "cpu", "--no-progress"]
    assert main(common + ["--method", "power", "--samples-per-problem", "8", "--out", str(tmp_path / "k8")]) == 0
    task, problems = load_log([tmp_path / "k8"])  # eval's rows as written today (format 2) read back
    same = equivalence(task)
    [summary] = report([tmp_path / "k8"])  # maj@8 = replaying fixed k_max
    fixed = replay(problems, make_controller("fixed"), Budget(), same)
    assert summary.maj_at_k[8] == sum(o.correct for o in fixed) / len(fixed)
    seen_k, seen_steps = set(), {}
    for spec, when in [("beta:0.9", "end"), ("agreement", "end"), ("beta:0.9", "block"), ("agreement", "block")]:
        out = tmp_path / f"{spec.replace(':', '-')}-{when}"
        assert main(common + ["--method", "dynamic", "--controller", spec, "--option", f"decide={when}",
                              "--out", str(out)]) == 0
        live = {r["id"]: r for r in map(json.loads, (out / "dynamic.jsonl").read_text().splitlines())}
        replayed = replay(problems, make_controller(spec), Budget(decide=when), same, log_features=True)
        assert sorted(live) == sorted(o.id for o in replayed) and len(live) == 4
        for o in replayed:
            rec = live[o.id]
            assert (rec["k"], rec["chosen"], rec["tokens"], rec["steps"]) == (o.k, o.chosen, o.tokens, o.steps)
            assert rec["answer"] == next(p for p in problems if p.id == o.id).chains[o.chosen].final.answer
            # the same decisions on the same features (log p and entropies: to float32 noise, since the
            # batch a chain runs in moves the last digits of its sums; its tokens are the same)
            assert [(d["step"], d["k"], d["enough"]) for d in rec["decisions"]] == \
                [(d["step"], d["k"], d["enough"]) for d in o.decisions]
            for a, b in zip(rec["decisions"], o.decisions, strict=True):
                assert a["features"] == pytest.approx(b["features"], rel=1e-5, abs=1e-6)
            seen_k.add(o.k)
            seen_steps.setdefault(when, []).extend(d["step"] for d in o.decisions)
        rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
        assert len(rows) == sum(o.k for o in replayed)  # one row per chain used, as eval writes samples
    assert len(seen_k) > 1, f"not vacuous: problems should escalate differently, got k in {seen_k}"
    assert len(seen_steps["block"]) > len(seen_steps["end"])  # not vacuous: asked mid-run too


def test_bad_dynamic_settings():
    with pytest.raises(PowerSampleError, match="cannot run live"):
        DynamicParams(controller="oracle")
    with pytest.raises(PowerSampleError, match="unknown controller"):
        DynamicParams(controller="bogus")
    with pytest.raises(PowerSampleError, match="k_min"):
        DynamicParams(k_min=9)
    with pytest.raises(PowerSampleError, match="decide must be 'end' or 'block'"):
        DynamicParams(decide="often")


def test_checkpoints_say_when_a_chain_ended_and_its_share_of_the_forward_passes(monkeypatch):
    """`ended` is true at a chain's last checkpoint only; `chain_seconds` splits each forward pass's time
    over the rows it served, so the chains' shares add up to the time of every pass (a fake clock that
    only engine calls move: no wall-clock assertion)."""
    from powersample.samplers import scheduler

    clock = [0.0]
    monkeypatch.setattr(scheduler.time, "perf_counter", lambda: clock[0])
    engine, passes = chain_engine(), {"start": 0.5, "join": 0.25, "extend": 1.0}

    def timed(name, f):
        def call(*a, **kw):
            clock[0] += passes[name]
            spent[0] += passes[name]
            return f(*a, **kw)
        return call

    spent = [0.0]
    for name in passes:
        setattr(engine, name, timed(name, getattr(engine, name)))
    res = run_chains(engine, PROMPTS, SEEDS, PowerParams(**POWER), suffix_log_ratio, num_samples=2, rows=3)
    assert all([c.ended for c in r.checkpoints] == [False] * (len(r.checkpoints) - 1) + [True] for r in res)
    assert any(len(r.checkpoints) > 1 for r in res) and any(len(r.checkpoints) < 3 for r in res)  # EOS
    for r in res:
        secs = [c.chain_seconds for c in r.checkpoints]
        assert secs == sorted(secs) and secs[0] > 0
    assert sum(r.checkpoints[-1].chain_seconds for r in res) == pytest.approx(spent[0])
