"""Long problems: a run stopped at a block boundary and resumed from the saved chain states ends exactly
as the uninterrupted run (samplers/scheduler.py: on_block, resume; eval: evaluation/runner.py)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from conftest import interrupt_after_saves

from powersample.engine.toy import ToyEngine
from powersample.errors import PowerSampleError
from powersample.evaluation import EvalConfig, run_eval
from powersample.evaluation.runner import ChainFiles
from powersample.evaluation.store import read_rows
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
               on_block=lambda c, s: None if c in saved else saved.update({c: s}))  # (returns: chains to add)
    state = next(iter(saved.values())).to_dict()
    with pytest.raises(PowerSampleError, match="not a chain state"):
        ChainState.from_dict({k: v for k, v in state.items() if k != "draws"})
    bad = ChainState.from_dict({**state, "logq": state["logq"][:-1]})
    with pytest.raises(PowerSampleError, match="does not fit"):
        run_chains(_engine(), PROMPTS[:1], SEEDS[:1], params, suffix_log_ratio, resume={(0, 0): bad})
    with pytest.raises(PowerSampleError, match="does not fit"):  # other settings: T = 3 has one block only
        ChainState.from_dict(state).check(PowerParams(**{**POWER, "max_new_tokens": 3}))


def _eval(tmp_path, out, **kw):
    from test_streaming import Digits

    data = tmp_path / "problems.jsonl"
    data.write_text("".join(json.dumps({"id": f"q/{i}", "prompt": f"{i} plus {i}", "answer": str(i % 10)}) + "\n"
                            for i in range(5)))
    engine = ToyEngine.random(12, seed=5, scale=1.0, eos_token_ids=[1], tokenizer=Digits())
    config = EvalConfig(task="jsonl", model="toy", data=str(data), task_options={"grader": "number"},
                        samples_per_problem=2, batch_size=2, grade_workers=0, out=str(tmp_path / out),
                        sampler=dict(alpha=4.0, mcmc_steps=3, max_new_tokens=12, block_size=3, stop_at_eos=False))
    return run_eval(config, model=engine, progress=False, **kw)


def _rows(out):
    def strip(v):  # wall times differ between runs
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if k not in ("seconds", "chain_seconds")}
        return [strip(x) for x in v] if isinstance(v, list) else v
    return strip(sorted(read_rows(out), key=lambda r: (r["id"], r["sample_index"])))


def test_eval_interrupted_mid_problem_resumes_its_chains_and_writes_the_uninterrupted_rows(tmp_path, monkeypatch,
                                                                                          caplog):
    """Ctrl-C (a KeyboardInterrupt from the 7th block save) mid-run; the rerun continues the saved chains
    from their next block (and logs it) and ends with exactly the rows of an uninterrupted run."""
    _eval(tmp_path, "full")
    save = ChainFiles.save
    interrupt_after_saves(monkeypatch, 7)
    with pytest.raises(KeyboardInterrupt):
        _eval(tmp_path, "cut")
    monkeypatch.setattr(ChainFiles, "save", save)
    files = sorted((tmp_path / "cut" / "chains").glob("*.json"))
    assert len(files) == 4  # one per running chain (2 x batch_size rows), none for finished ones
    assert len(read_rows(tmp_path / "cut")) < 10
    with caplog.at_level(logging.INFO, logger="powersample.evaluation.runner"):
        _eval(tmp_path, "cut")
    resumed = [m for m in caplog.messages if m.startswith("resuming problem")]
    assert len(resumed) == 4 and any("at block 3" in m for m in resumed)
    assert _rows(tmp_path / "cut") == _rows(tmp_path / "full")
    assert list((tmp_path / "cut" / "chains").glob("*")) == []  # each deleted once its row was written


def test_eval_discards_a_corrupt_or_foreign_chain_state_with_a_warning(tmp_path, monkeypatch, caplog):
    _eval(tmp_path, "full")
    monkeypatch.setattr(ChainFiles, "save", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        _eval(tmp_path, "cut")  # nothing saved: the first save raises
    monkeypatch.undo()
    chains = ChainFiles(tmp_path / "cut", [], [])
    chains.dir.mkdir()
    chains.path("q/0", 0).write_text("{not json")
    chains.path("q/1", 1).write_text(json.dumps({"id": "q/1", "sample_index": 1, "seed": 5, "state": {}}))
    with caplog.at_level(logging.WARNING, logger="powersample.evaluation.runner"):
        _eval(tmp_path, "cut")
    warned = [m for m in caplog.messages if m.startswith("discarding the chain state")]
    assert len(warned) == 2 and "another chain or run" in warned[1]
    assert _rows(tmp_path / "cut") == _rows(tmp_path / "full")


def test_on_the_gym_model_a_resumed_eval_draws_the_same_tokens(tmp_path, monkeypatch):
    """The transformers engine: a resumed row's cache is computed in one pass, not token by token, which
    moves float32 log p and entropies in the 7th digit (as a different batch shape does); the tokens, acceptance and
    grades are identical."""
    settings = dict(task="gym", model="gym", method="power", samples_per_problem=2, limit=4, grade_workers=0,
                    batch_size=2, sampler={"alpha": 4.0, "mcmc_steps": 2, "max_new_tokens": 16, "block_size": 4,
                                           "stop_at_eos": False})
    run_eval(EvalConfig(out=str(tmp_path / "full"), **settings), progress=False)
    interrupt_after_saves(monkeypatch, 7)
    with pytest.raises(KeyboardInterrupt):
        run_eval(EvalConfig(out=str(tmp_path / "cut"), **settings), progress=False)
    monkeypatch.undo()
    run_eval(EvalConfig(out=str(tmp_path / "cut"), **settings), progress=False)

    def rounded(v, hidden):  # log p, mean entropy, mean top-1; the hidden states H and Q go to `hidden`
        if isinstance(v, dict):
            hidden += [x for k in ("hidden", "prompt_hidden") for x in v.get(k) or []]
            return {k: rounded(x, hidden) for k, x in v.items() if k not in ("hidden", "prompt_hidden")}
        if isinstance(v, float):
            return round(v, 4)
        return [rounded(x, hidden) for x in v] if isinstance(v, list) else v
    cut, full = [], []
    assert rounded(_rows(tmp_path / "cut"), cut) == rounded(_rows(tmp_path / "full"), full)
    # H and Q (logged to 4 significant digits) agree to that rounding: the resumed chains log the same states
    assert len(cut) == len(full) > 0 and np.allclose(cut, full, rtol=2e-3, atol=1e-5)


def test_a_chain_state_that_cannot_be_saved_is_a_warning_and_the_run_goes_on(tmp_path, monkeypatch, caplog):
    from powersample.evaluation import runner

    _eval(tmp_path, "full")

    def full_disk(*a):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runner, "write_json_atomic", full_disk)
    with caplog.at_level(logging.WARNING, logger="powersample.evaluation.runner"):
        _eval(tmp_path, "cut")
    assert any(m.startswith("could not save the state") and "No space" in m for m in caplog.messages)
    assert _rows(tmp_path / "cut") == _rows(tmp_path / "full")


def _dynamic_eval(tmp_path, out, controller, decide):
    from test_streaming import Digits

    data = tmp_path / "problems.jsonl"
    data.write_text("".join(json.dumps({"id": f"q/{i}", "prompt": f"{i} plus {i}", "answer": str(i % 10)}) + "\n"
                            for i in range(6)))
    engine = ToyEngine.random(12, seed=5, scale=1.0, eos_token_ids=[1], tokenizer=Digits())
    config = EvalConfig(task="jsonl", model="toy", method="dynamic", data=str(data), task_options={"grader": "number"},
                        batch_size=2, grade_workers=0, out=str(tmp_path / out),
                        sampler=dict(alpha=4.0, mcmc_steps=2, max_new_tokens=9, block_size=3, controller=controller,
                                     k_min=2, k_step=2, k_max=6, decide=decide))
    return run_eval(config, model=engine, progress=False)


def _records(out):
    from powersample.jsonl import read_rows as read_jsonl

    return {r["id"]: r for r in read_jsonl(out / "dynamic.jsonl")}


def _tear(path, n=9):  # a kill mid-write: the last line loses its end
    path.write_bytes(path.read_bytes()[:-n])


@pytest.mark.parametrize("controller, decide, after", [("agreement", "end", 24), ("beta:0.9", "block", 24)])
def test_dynamic_eval_interrupted_resumes_with_the_uninterrupted_decisions_rows_and_records(
        tmp_path, monkeypatch, caplog, controller, decide, after):
    """Ctrl-C mid-run (the `after`-th chain save), then a kill tears the last row and record; the rerun
    replays each problem's decisions from its finished rows and saved chains, resumes those chains, and
    ends with exactly the records and rows of an uninterrupted run."""
    _dynamic_eval(tmp_path, "full", controller, decide)
    interrupt_after_saves(monkeypatch, after)
    with pytest.raises(KeyboardInterrupt):
        _dynamic_eval(tmp_path, "cut", controller, decide)
    monkeypatch.undo()
    cut = tmp_path / "cut"
    recorded = _records(cut)
    escalated = {r["id"] for r in read_rows(cut) if r["sample_index"] >= 2} - set(recorded)
    assert escalated and recorded, "not vacuous: a problem cut after it added chains, another one recorded"
    assert len(list((cut / "chains").glob("*.json"))) > 0
    _tear(cut / "rows.jsonl")
    _tear(cut / "dynamic.jsonl")
    written = {(r["id"], r["sample_index"]) for r in read_rows(cut)}
    from powersample.evaluation import runner

    sampled, submit = [], runner._submit

    def counted(r, batch, *a):
        sampled.append((batch[r.prompt_index].id, r.sample_index))
        submit(r, batch, *a)

    monkeypatch.setattr(runner, "_submit", counted)
    with caplog.at_level(logging.INFO, logger="powersample.evaluation.runner"):
        _dynamic_eval(tmp_path, "cut", controller, decide)
    assert any(m.startswith("resuming problem") for m in caplog.messages)  # saved chains go on
    assert sampled and not set(sampled) & written  # finished chains are read back, not sampled again
    assert _records(cut) == _records(tmp_path / "full")
    assert _rows(cut) == _rows(tmp_path / "full")
    assert list((cut / "chains").glob("*")) == []
