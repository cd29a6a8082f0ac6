"""Dynamic Power Sampling, offline part: voting, replay budgets, controllers, training, bad inputs.

Replays run on small logs built here by hand, so every expected number is computed in the comments.
"""

from __future__ import annotations

import json

import pytest

from powersample.cli.main import main
from powersample.dynamic.controllers import Learned, make_controller
from powersample.dynamic.log import load_log
from powersample.dynamic.replay import Budget, compare, replay, replay_problem
from powersample.dynamic.train import TrainedController, load_controller, save_controller, train
from powersample.dynamic.vote import best_logp, clusters, equivalence, majority
from powersample.errors import PowerSampleError
from powersample.evaluation.report import report
from powersample.tasks import get_task


def exact(a, b):
    return a == b


def chain_row(pid, sample, answers, gold, tokens=10, logp=-1.0):
    """A power-sampling row whose running answer after block b is answers[b-1] (the last is final);
    tokens_generated grows by `tokens` per block."""
    cps = [{"block": b + 1, "answer": a, "correct": a == gold, "tokens": 5 * (b + 1),
            "tokens_generated": tokens * (b + 1), "logp": logp, "acceptance_rate": 0.5, "mean_entropy": 0.3,
            "mean_top1": 0.8, "seconds": 0.1} for b, a in enumerate(answers)]
    return {"id": pid, "sample": sample, "correct": answers[-1] == gold, "extracted": answers[-1],
            "reason": "", "grader_error": False, "finished": True, "tokens": 5 * len(answers),
            "tokens_generated": tokens * len(answers), "logp": logp, "seconds": 0.1, "acceptance_rate": 0.5,
            "stats": {}, "completion": "", "checkpoints": cps}


def write_run(path, rows, task="gym"):
    path.mkdir(parents=True)
    (path / "run.json").write_text(json.dumps({"format": 1, "config": {"task": task, "task_options": {},
                                                                       "method": "power", "shard": "0/1"}}))
    (path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def fixture_rows():
    """Problem A (gold 5): 8 chains answer 5, chain j draws 10 + j tokens.
    Problem B (gold 4): chain 0 answers 3 with the higher log p, chains 1..7 answer 4; 20 tokens each."""
    rows = [chain_row("A", j, ["5"], "5", tokens=10 + j) for j in range(8)]
    rows += [chain_row("B", 0, ["3"], "4", tokens=20, logp=-1.0)]
    rows += [chain_row("B", j, ["4"], "4", tokens=20, logp=-2.0) for j in range(1, 8)]
    return rows


@pytest.fixture
def fixture_log(tmp_path):
    return write_run(tmp_path / "run", fixture_rows())


# --- voting ---------------------------------------------------------------------------------------

def test_majority_vote_and_tie_break_by_log_likelihood():
    assert majority(["7", "8", "8", None], [-1.0, -3.0, -2.0, 0.0], exact) == 2  # 8 wins; its best-logp chain
    assert majority(["7", "8"], [-1.0, -2.0], exact) == 0  # a 1-1 tie goes to the higher log p
    assert majority(["7", "8"], [-2.0, -1.0], exact) == 1
    assert majority(["7", "7", "8", "8"], [-5.0, -4.0, -1.0, -9.0], exact) == 2  # 2-2: the cluster with -1.0
    assert majority([None, None], [-3.0, -1.0], exact) == 1  # nobody answered: the best log p
    assert best_logp([-3.0, -1.0, -1.0]) == 1


def test_equivalent_math_answers_cluster_with_math_verify():
    same = equivalence(get_task("math500"))
    assert clusters(["\\frac{1}{2}", "0.5", "3", None, "1/2", "3.0"], same) == [0, 0, 1, None, 0, 1]
    assert majority(["\\frac{1}{2}", "3", "0.5"], [-9.0, -1.0, -8.0], same) == 2  # 1/2 has two votes


def test_tasks_without_comparable_answers_are_refused():
    with pytest.raises(PowerSampleError, match="no answers to compare"):
        equivalence(get_task("alpacaeval"))


def test_report_shows_maj_at_k(fixture_log):
    [s] = report([fixture_log])
    assert s.maj_at_k[2] == 0.5  # B: 3 vs 4 tied, 3 has the higher log p and is wrong
    assert s.maj_at_k[8] == 1.0


# --- replay -----------------------------------------------------------------------------------------

def test_replay_numbers_by_hand(fixture_log):
    task, problems = load_log([fixture_log])
    same, budget = equivalence(task), Budget()
    by = {spec: replay(problems, make_controller(spec), budget, same) for spec in
          ("fixed:2", "fixed", "oracle", "agreement", "beta:0.8")}
    k_tok = {spec: [(o.k, o.tokens, o.correct) for o in outs] for spec, outs in by.items()}
    assert k_tok["fixed:2"] == [(2, 21, True), (2, 40, False)]  # always enough: k_min chains
    assert k_tok["fixed"] == [(8, 108, True), (8, 160, True)]  # never enough: k_max (10 + ... + 17 = 108)
    assert k_tok["oracle"] == [(2, 21, True), (4, 80, True)]  # B's k=2 vote (3) is not the final 4
    assert k_tok["agreement"] == [(2, 21, True), (8, 160, True)]
    # beta:0.8: A 2-0 gives P = 0.875; B 1-1 gives 0.5 (more), 3-1 gives 0.8125 (enough)
    assert k_tok["beta:0.8"] == [(2, 21, True), (4, 80, True)]
    line = compare(by["fixed:2"], by["fixed"], "fixed:2")
    assert (line.accuracy, line.tokens, line.chains, line.diff) == (0.5, 30.5, 2.0, -0.5)
    assert line.token_share == pytest.approx(30.5 / 134)
    assert compare(by["oracle"], by["fixed"], "oracle").diff_ci95 == (0.0, 0.0)


def test_added_chains_join_at_later_blocks(tmp_path):
    """decide=block: chains added at step 2 are at block 1 while the first ones are at block 2."""
    rows = [chain_row("C", j, [None, "7"], "7") for j in range(8)]
    task, [p] = load_log([write_run(tmp_path / "c", rows)])
    o = replay_problem(p, make_controller("fixed:4"), Budget(decide="block"), equivalence(task))
    assert [(d["step"], d["k"], d["enough"]) for d in o.decisions] == [(1, 2, False), (2, 4, True), (3, 4, True)]
    assert o.decisions[1]["features"]["done_share"] == 0.5
    assert o.decisions[1]["features"]["answered_share"] == 0.5
    assert (o.k, o.tokens, o.steps) == (4, 80, 3)
    # decide=end asks only once both first chains have ended: at step 2, then at step 4
    o = replay_problem(p, make_controller("fixed:4"), Budget(), equivalence(task))
    assert [(d["step"], d["k"]) for d in o.decisions] == [(2, 2), (4, 4)]


def test_chains_do_not_depend_on_how_many_run():
    """What replay relies on: chain j's completion and tokens are the same whether 2 or 4 chains run."""
    import powersample

    kw = dict(method="power", seed=3, block_size=16, max_new_tokens=32, mcmc_steps=2, progress=False)
    two = powersample.sample("gym", ["Q:123+456\n"], num_samples=2, **kw)
    four = powersample.sample("gym", ["Q:123+456\n"], num_samples=4, **kw)
    for a, b in zip(two, four[:2], strict=True):
        assert (a.token_ids, a.tokens_generated) == (b.token_ids, b.tokens_generated)
        assert a.logp == pytest.approx(b.logp, abs=1e-5)  # float32 sums move with the batch's shape


# --- controllers ------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, message", [
    ("bogus", "unknown controller 'bogus'"), ("beta:2", r"beta needs a threshold C in \(0, 1\)"),
    ("beta:x", "'x' is not a number"), ("fixed:0", "fixed needs K >= 1"), ("gbdt", "needs a trained file"),
    ("agreement:3", "takes no argument"), ("gbdt:/nonexistent.skops", "does not exist"),
])
def test_bad_controller_specs(spec, message):
    with pytest.raises(PowerSampleError, match=message):
        make_controller(spec)


def learnable_rows():
    """12 problems: 6 easy (all 8 chains right), 6 hard (the first two disagree, the vote needs 4)."""
    rows = []
    for i in range(12):
        pid = f"p{i:02d}"
        if i % 2 == 0:
            rows += [chain_row(pid, j, ["5"], "5", logp=-1.0 - j) for j in range(8)]
        else:
            answers = ["1", "2", "3", "3", "3", "3", "3", "3"]
            rows += [chain_row(pid, j, [a], "3", logp=-1.0 - j) for j, a in enumerate(answers)]
    return rows


def test_train_save_load_predict(tmp_path):
    task, problems = load_log([write_run(tmp_path / "run", learnable_rows())])
    same = equivalence(task)
    trained = train(problems, same, "gbdt", Budget(), folds=3)
    assert trained.cv["rows"] == 12 * 4  # one per (problem, k) with decide=end
    assert trained.cv["fixed_k_max_accuracy"] == 1.0
    path = save_controller(trained, tmp_path / "ctrl.skops")
    loaded = load_controller(path)
    assert loaded.features == trained.features and loaded.threshold == trained.threshold
    outs = replay(problems, Learned(loaded), Budget(), same)
    assert [o.k for o in outs] == [2, 4] * 6  # easy problems stop at 2, hard ones once the vote is right
    assert all(o.correct for o in outs)
    c = make_controller(f"gbdt:{path}")
    assert [o.k for o in replay(problems, c, Budget(), same)] == [2, 4] * 6
    with pytest.raises(PowerSampleError, match="holds a gbdt controller, not mlp"):
        make_controller(f"mlp:{path}")


def test_bad_training_inputs(tmp_path):
    task, problems = load_log([write_run(tmp_path / "run", learnable_rows())])
    with pytest.raises(PowerSampleError, match="too few"):
        train(problems[:5], equivalence(task))
    easy = [p for i, p in enumerate(problems) if i % 2 == 0] * 2
    with pytest.raises(PowerSampleError, match="every training row is labelled 1"):
        train(easy, equivalence(task))
    from sklearn.dummy import DummyClassifier

    other = TrainedController("gbdt", DummyClassifier(), 0.5, (2, 2, 8, "end"), ("k", "step"))
    with pytest.raises(PowerSampleError, match="trained on other features"):
        load_controller(save_controller(other, tmp_path / "other.skops"))
    foreign = TrainedController("gbdt", make_controller("fixed"), 0.5, (2, 2, 8, "end"))
    with pytest.raises(PowerSampleError, match="not scikit-learn's or numpy's .*Fixed.*refusing"):
        load_controller(save_controller(foreign, tmp_path / "foreign.skops"))  # skops runs no other code
    (tmp_path / "junk.skops").write_text("not a zip")
    with pytest.raises(PowerSampleError, match="not a controller file"):
        load_controller(tmp_path / "junk.skops")


def test_bad_logs(tmp_path):
    with pytest.raises(PowerSampleError, match="empty log"):
        load_log([write_run(tmp_path / "empty", [])])
    unlabelled = [dict(r, correct=None) for r in fixture_rows()]
    with pytest.raises(PowerSampleError, match="unlabelled log"):
        load_log([write_run(tmp_path / "unlabelled", unlabelled)])
    no_cps = [dict(r, checkpoints=[]) for r in fixture_rows()]
    with pytest.raises(PowerSampleError, match="no answers at checkpoints"):
        load_log([write_run(tmp_path / "nocp", no_cps)])
    short = [r for r in fixture_rows() if not (r["id"] == "B" and r["sample"] == 7)]
    with pytest.raises(PowerSampleError, match="problems have \\[7, 8\\] chains"):
        load_log([write_run(tmp_path / "short", short)])


# --- command line -------------------------------------------------------------------------------------

def test_cli_train_and_replay(tmp_path, capsys):
    run = write_run(tmp_path / "run", learnable_rows())
    ctrl = tmp_path / "c.skops"
    assert main(["controller", "train", str(run), "-o", str(ctrl), "--folds", "3"]) == 0
    assert "3-fold CV grouped by problem: AUC" in capsys.readouterr().out
    out = tmp_path / "replay"
    assert main(["controller", "replay", str(run), "--controller", f"gbdt:{ctrl}", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| fixed:8 | 1.000 |" in printed and "| oracle | 1.000 |" in printed
    assert {p.name for p in out.iterdir()} == {"table.md", "replay.json", "decisions.jsonl",
                                               "accuracy_vs_tokens.png"}
    first = json.loads((out / "decisions.jsonl").read_text().splitlines()[0])
    assert first["controller"] == f"gbdt:{ctrl}" and "lead_share" in first["decisions"][0]["features"]
    assert main(["controller", "replay", str(run), "--controller", "beta:7"]) == 2
    assert "beta needs a threshold" in capsys.readouterr().err


def test_cross_fitting_scores_every_problem_with_a_controller_that_never_saw_it(tmp_path, monkeypatch):
    from powersample.dynamic import train as train_module

    task, problems = load_log([write_run(tmp_path / "run", learnable_rows() + [
        dict(r, id=r["id"].replace("p", "q")) for r in learnable_rows()])])
    same, seen = equivalence(task), []
    real_train = train_module.train

    def spy(ps, *a, **kw):
        seen.append({p.id for p in ps})
        return real_train(ps, *a, **kw)

    monkeypatch.setattr(train_module, "train", spy)
    outs, models = train_module.cross_fit(problems, same, "gbdt", Budget(), parts=3)
    assert [o.id for o in outs] == [p.id for p in problems] and len(models) == 3
    ids = [p.id for p in problems]
    for h, trained_on in enumerate(seen):  # part h = problems i with i % 3 == h, never in its own training set
        assert trained_on == {pid for i, pid in enumerate(ids) if i % 3 != h}
    assert [o.k for o in outs] == [2, 4] * 12 and all(o.correct for o in outs)
    with pytest.raises(PowerSampleError, match="at least 2 parts"):
        train_module.cross_fit(problems, same, parts=1)


def test_cli_replay_cross_fits(tmp_path, capsys):
    rows = learnable_rows() + [dict(r, id=r["id"].replace("p", "q")) for r in learnable_rows()]
    for r in rows:  # each chain took 0.5 s of compute
        r["sample_index"] = r["sample"]
        r["checkpoints"] = [dict(cp, chain_seconds=0.5) for cp in r["checkpoints"]]
    run = write_run(tmp_path / "run", rows)
    assert main(["controller", "replay", str(run), "--cross-fit", "gbdt", "--parts", "3", "--folds", "3"]) == 0
    printed = capsys.readouterr().out
    assert "| gbdt (cross-fitted, 3 parts) | 1.000 | 30 | 38% | 3.00 | 1.50 |" in printed  # k = 2 or 4
    assert "3 controllers" in printed


def test_a_learned_controller_under_another_budget_warns(tmp_path, caplog):
    run = write_run(tmp_path / "run", learnable_rows())
    ctrl = tmp_path / "c.skops"
    assert main(["controller", "train", str(run), "-o", str(ctrl), "--folds", "3"]) == 0
    with caplog.at_level("WARNING"):
        assert main(["controller", "replay", str(run), "--controller", f"gbdt:{ctrl}"]) == 0
    assert "was trained for" not in caplog.text
    with caplog.at_level("WARNING"):
        assert main(["controller", "replay", str(run), "--controller", f"gbdt:{ctrl}", "--k-min", "1"]) == 0
    assert "was trained for k_min=2 k_step=2 k_max=8 decide=end, not k_min=1" in caplog.text
