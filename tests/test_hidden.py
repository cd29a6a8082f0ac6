"""Hidden states for the MLP-H / MLP-HQ controllers (issue 14): power sampling logs each checkpoint's
projected hidden state H and the prompt's Q without changing a token; controllers trained on them
record their projection and refuse logs without it; live = replay for an mlp-hq controller."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_dynamic import learnable_rows, write_run

import powersample
from powersample.cli.main import main
from powersample.dynamic.controllers import Learned, make_controller
from powersample.dynamic.log import load_log
from powersample.dynamic.replay import Budget, replay
from powersample.dynamic.train import load_controller, save_controller, train
from powersample.dynamic.vote import equivalence
from powersample.engine.toy import ToyEngine
from powersample.errors import PowerSampleError
from powersample.samplers.track import Projection

SETTINGS = dict(method="power", alpha=2.0, mcmc_steps=3, block_size=4, max_new_tokens=12, seed=1, num_samples=3,
                progress=False)


def _tokens(results):
    return [(r.token_ids, r.tokens_generated, r.acceptance_rate, [c.token_ids for c in r.checkpoints])
            for r in results]


def test_hidden_states_are_logged_projected_and_change_no_token(llama):
    prompts = [[0, 5, 9], [0, 7]]
    off = powersample.sample(llama, prompts, hidden_dims=0, **SETTINGS)
    small = powersample.sample(llama, prompts, hidden_dims=8, **SETTINGS)  # d = 32 -> 8: projected
    whole = powersample.sample(llama, prompts, hidden_dims=64, **SETTINGS)  # d = 32 <= 64: as it is
    assert _tokens(off) == _tokens(small) == _tokens(whole)  # logging only
    assert all(r.prompt_hidden is None and r.hidden_projection is None for r in off)
    assert all(c.hidden is None for r in off for c in r.checkpoints)
    assert small[0].hidden_projection == {"size": 32, "dims": 8, "seed": 0}
    assert whole[0].hidden_projection == {"size": 32, "dims": 32, "seed": 0}
    matrix = Projection(32, 8).matrix("cpu").double().numpy()
    for s, w in zip(small, whole, strict=True):
        assert len(s.prompt_hidden) == 8 and len(w.prompt_hidden) == 32
        np.testing.assert_allclose(s.prompt_hidden, np.array(w.prompt_hidden) @ matrix, rtol=3e-3, atol=1e-3)
        for a, b in zip(s.checkpoints, w.checkpoints, strict=True):
            np.testing.assert_allclose(a.hidden, np.array(b.hidden) @ matrix, rtol=3e-3, atol=1e-3)
            assert all(x == float(f"{x:.4g}") for x in a.hidden)  # 4 significant digits: small logs
    # prompts differ, so do their Q; chains of one prompt share it
    assert small[0].prompt_hidden == small[1].prompt_hidden != small[3].prompt_hidden


def test_an_engine_without_hidden_states_logs_none():
    engine = ToyEngine.random(8, seed=0, scale=1.0, eos_token_ids=[1])
    assert not engine.supports_hidden
    [r] = powersample.sample(engine, [[0, 2]], method="power", max_new_tokens=6, block_size=3, mcmc_steps=2, seed=0,
                             progress=False)
    assert r.prompt_hidden is None and r.hidden_projection is None and r.checkpoints[0].hidden is None


def _common(tmp_path):
    return ["eval", "--task", "gym-mixed", "--model", "gym-mixed", "--task-option", "count=1", "--alpha", "4",
            "--mcmc-steps", "2", "--block-size", "16", "--max-new-tokens", "48", "--seed", "5", "--batch-size", "4",
            "--grade-workers", "1", "--device", "cpu", "--no-progress"]


def test_mlp_hq_trains_on_a_logged_run_and_live_equals_its_replay(tmp_path):
    """A fixed k = 8 run logs H and Q (gym-mixed: d = 128 -> 32); an mlp-hq controller trained on it records
    its features and projection; the live `--method dynamic` run with it computes the same H/Q features from
    its Results as the replay from the rows, so it makes the same decisions, chains and tokens."""
    common = _common(tmp_path)
    assert main(common + ["--method", "power", "--samples-per-problem", "8", "--out", str(tmp_path / "k8")]) == 0
    task, problems = load_log([tmp_path / "k8"])
    same = equivalence(task)
    assert problems[0].chains[0].final.projection == (128, 32, 0)
    # 4 problems are too few to train on: train on a synthetic log with this projection (the decisions
    # need not be good, only the same live and replayed)
    _, synthetic = load_log([write_run(tmp_path / "synthetic", _with_hidden(learnable_rows(), 128, 32))])
    trained = train(synthetic, same, "mlp-hq", Budget(), folds=3)
    assert trained.features[-64:] == tuple(f"h{i}" for i in range(32)) + tuple(f"q{i}" for i in range(32))
    path = save_controller(trained, tmp_path / "hq.skops")
    loaded = load_controller(path)
    assert loaded.projection == (128, 32, 0) and loaded.features == trained.features
    # a threshold between the problems' first probabilities, so that some stop at k_min and some go on
    first = sorted({round(Learned(loaded).probability(_state(p), same), 6) for p in problems})
    assert len(first) > 1, "not vacuous: the hidden states should move the probability"
    spec = f"mlp-hq:{path}@{(first[0] + first[1]) / 2:.6f}"
    replayed = replay(problems, make_controller(spec), Budget(), same, log_features=True)
    assert len({o.k for o in replayed}) > 1
    out = tmp_path / "live"
    assert main(common + ["--method", "dynamic", "--controller", spec, "--out", str(out)]) == 0
    live = {r["id"]: r for r in map(json.loads, (out / "dynamic.jsonl").read_text().splitlines())}
    for o in replayed:
        rec = live[o.id]
        assert (rec["k"], rec["chosen"], rec["tokens"], rec["steps"]) == (o.k, o.chosen, o.tokens, o.steps)
        assert [(d["step"], d["k"], d["enough"]) for d in rec["decisions"]] == \
            [(d["step"], d["k"], d["enough"]) for d in o.decisions]
    # a resumed live run reads finished chains back from their rows with their hidden states, as a replay does
    from powersample.dynamic.live import row_states
    from powersample.dynamic.log import chain_from_row
    from powersample.evaluation.store import read_rows

    row = read_rows(tmp_path / "k8")[0]
    assert [s.hidden for s in row_states(row, task.extract)] == [s.hidden for s in chain_from_row(row).states]
    assert row_states(row, task.extract)[-1].prompt_hidden is not None
    # asked at every block, a live run has no Q for running chains yet: refused in one line, before any work
    assert main(common + ["--method", "dynamic", "--controller", spec, "--option", "decide=block",
                          "--out", str(tmp_path / "block")]) == 2
    assert not (tmp_path / "block").exists()


def _with_hidden(rows, size, dims, seed=0):
    """Rows with made-up hidden states of a model of hidden size `size`, projected to `dims`."""
    rng = np.random.default_rng(0)
    for r in rows:
        r["prompt_hidden"] = [float(x) for x in rng.standard_normal(dims)]
        r["hidden_projection"] = {"size": size, "dims": dims, "seed": seed}
        for cp in r["checkpoints"]:
            cp["hidden"] = [float(x) for x in rng.standard_normal(dims)]
    return rows


def _state(problem):
    from powersample.dynamic.features import ProblemState

    chains = tuple(c.final for c in problem.chains[:2])
    return ProblemState(chains, max(len(c.states) for c in problem.chains[:2]), 8)


def test_hidden_controllers_refuse_logs_without_their_hidden_states(tmp_path):
    task, problems = load_log([write_run(tmp_path / "plain", learnable_rows())])
    same = equivalence(task)
    with pytest.raises(PowerSampleError, match="this log has no hidden states"):
        train(problems, same, "mlp-h", Budget(), folds=3)
    rows = _with_hidden(learnable_rows(), 16, 4)
    _, logged = load_log([write_run(tmp_path / "hidden", rows)])
    trained = train(logged, same, "mlp-h", Budget(), folds=3)
    path = save_controller(trained, tmp_path / "h.skops")
    assert load_controller(path).features[-4:] == ("h0", "h1", "h2", "h3")
    c = make_controller(f"mlp-h:{path}")
    assert len(replay(logged, c, Budget(), same)) == 12
    with pytest.raises(PowerSampleError, match=r"trained on hidden states of projection .*no hidden states"):
        replay(problems, c, Budget(), same)
    for r in rows:
        r["hidden_projection"] = {"size": 16, "dims": 4, "seed": 1}
    _, other = load_log([write_run(tmp_path / "other", rows)])
    with pytest.raises(PowerSampleError, match=r"these chains have hidden states of projection \[\(16, 4, 1\)\]"):
        replay(other, c, Budget(), same)
    with pytest.raises(PowerSampleError, match="holds a mlp-h controller, not mlp-hq"):
        make_controller(f"mlp-hq:{path}")


class _Stop(Exception):
    pass


def test_a_resumed_chain_logs_the_hidden_state_it_saved():
    """Chains stopped at a block boundary and resumed from their saved states (samplers/scheduler.py) log
    the H of the uninterrupted run, also where the next blocks draw no new last token (a chain ending with
    EOS, stop_at_eos off, whose proposals are all rejected): the saved state carries it."""
    from conftest import tiny_llama

    from powersample.engine.hf import HFEngine
    from powersample.samplers.params import PowerParams
    from powersample.samplers.power import suffix_log_ratio
    from powersample.samplers.scheduler import ChainState, run_chains

    model = tiny_llama(seed=2, eos_bias=4.0)  # chains end with EOS early
    params = PowerParams(alpha=4.0, mcmc_steps=0, max_new_tokens=12, block_size=3, stop_at_eos=False, hidden_dims=8)
    prompts, seeds = [[0, 5, 9], [0, 7]], [3, 4]

    def run(**kw):
        return run_chains(HFEngine(model), prompts, seeds, params, suffix_log_ratio, num_samples=2, **kw)

    full = run()
    saved, done = {}, []

    def on_block(chain, state):
        saved[chain] = ChainState.from_dict(json.loads(json.dumps(state.to_dict())))
        if len(saved) == 4 and min(s.block for s in saved.values()) >= 2:
            raise _Stop

    with pytest.raises(_Stop):
        run(on_block=on_block, on_result=lambda r: done.append((r.prompt_index, r.sample_index)))
    resume = {c: s for c, s in saved.items() if c not in done}
    assert any(s.ends_with_eos for s in resume.values()) and all(s.hidden is not None for s in resume.values())
    again = run(resume=resume)
    assert [r.token_ids for r in again] == [r.token_ids for r in full]
    for a, b in zip(again, full, strict=True):
        np.testing.assert_allclose(a.prompt_hidden, b.prompt_hidden, rtol=2e-3, atol=1e-5)
        for x, y in zip(a.checkpoints, b.checkpoints, strict=True):
            np.testing.assert_allclose(x.hidden, y.hidden, rtol=2e-3, atol=1e-5)
