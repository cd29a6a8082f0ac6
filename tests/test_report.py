"""pass@k and Wilson against hand-computed values; reports, shard merging, labels, plots, the report CLI."""

from __future__ import annotations

import json
import math
import shutil

import pytest
from evalstub import config, run, sorted_rows

from powersample.cli.main import main
from powersample.errors import PowerSampleError
from powersample.evaluation import EvalConfig
from powersample.evaluation.passk import mean_pass_at_k, pass_at_k, wilson
from powersample.evaluation.plots import write_plots
from powersample.evaluation.report import Run, format_table, labels, load_runs, merge_runs, report, summarize
from powersample.evaluation.store import read_rows


@pytest.mark.parametrize("n,c,k,expected", [
    (5, 2, 1, 0.4), (5, 2, 2, 1 - 3 / 10), (5, 2, 3, 1 - 1 / 10), (5, 2, 4, 1.0), (5, 0, 3, 0.0),
    (5, 5, 1, 1.0), (10, 3, 2, 1 - 21 / 45), (200, 1, 100, 0.5),
])
def test_pass_at_k_by_hand(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_binomials_where_they_are_exact():
    for n, c, k in [(100, 7, 10), (1000, 3, 50), (64, 20, 32)]:
        exact = 1 - math.comb(n - c, k) / math.comb(n, k)
        assert pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-9)


def test_pass_at_k_rejects_impossible_arguments():
    for args in [(5, 6, 1), (5, 2, 0), (5, 2, 6)]:
        with pytest.raises(ValueError):
            pass_at_k(*args)


def test_mean_pass_at_k():
    assert mean_pass_at_k([(4, 0), (4, 4), (4, 2)], 2) == pytest.approx((0 + 1 + (1 - 1 / 6)) / 3)


def test_wilson_by_hand():
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(3.8415 / 13.8415, abs=1e-4)
    lo, hi = wilson(5, 10)
    assert (lo, hi) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    lo, hi = wilson(81, 100)  # a textbook value: [0.7222, 0.8749]
    assert (lo, hi) == (pytest.approx(0.7222, abs=1e-4), pytest.approx(0.8749, abs=1e-4))
    assert all(math.isnan(x) for x in wilson(0, 0))


@pytest.fixture
def fixture_runs(problems_file, tmp_path):
    """Two runs that differ in alpha (one of them in two shards) and the unsharded twin of the sharded one."""
    _, gold = problems_file
    run(config(problems_file, tmp_path / "a4", limit=10, samples_per_problem=4), gold)
    for i in range(2):
        run(config(problems_file, tmp_path / f"a2-shard{i}", limit=10, samples_per_problem=4, alpha=2.0,
                   shard=f"{i}/2"), gold)
    run(config(problems_file, tmp_path / "a2", limit=10, samples_per_problem=4, alpha=2.0), gold)
    return tmp_path


def test_summary_numbers(fixture_runs):
    (run_,) = load_runs([fixture_runs / "a4"])
    s = summarize(run_)
    rows = read_rows(fixture_runs / "a4")
    correct = sum(r["correct"] for r in rows)
    assert (s.problems, s.samples_per_problem, s.rows, s.graded) == (10, 4, 40, 40)
    assert s.accuracy == correct / 40 and s.ci95 == wilson(correct, 40)
    per_problem = {}
    for r in rows:
        per_problem.setdefault(r["id"], []).append(r["correct"])
    for k in (1, 2, 3, 4):
        expected = sum(1 - math.comb(4 - sum(v), k) / math.comb(4, k) for v in per_problem.values()) / 10
        assert s.pass_at_k[k] == pytest.approx(expected)
    assert s.pass_at_k[1] == pytest.approx(s.accuracy)
    assert s.tokens_per_problem == 4 * 21 and s.tokens_per_sample == 21 and s.seconds_per_problem == 0.05
    assert [x for x, _ in s.checkpoint_curve] == [7, 14, 21]
    assert s.checkpoint_curve[-1][1] == pytest.approx(s.accuracy)  # the last block's answer is final


def test_shards_merge_into_the_unsharded_run(fixture_runs):
    merged = report([fixture_runs / "a2-shard0", fixture_runs / "a2-shard1"])
    assert len(merged) == 1
    (whole,) = report([fixture_runs / "a2"])
    for field in ("problems", "rows", "correct", "pass_at_k", "tokens_per_problem"):
        assert getattr(merged[0], field) == getattr(whole, field)
    (half,) = report([fixture_runs / "a2-shard1"])
    assert half.problems == 5 and half.shards_missing == [0]
    assert "shards [0] of the split are missing" in format_table([half])
    out = merge_runs([fixture_runs / "a2-shard0", fixture_runs / "a2-shard1"], fixture_runs / "merged")
    assert sorted_rows(out) == sorted_rows(fixture_runs / "a2")
    with pytest.raises(PowerSampleError, match="given twice"):
        load_runs([fixture_runs / "a2-shard0", fixture_runs / "a2-shard0"])


def test_reruns_with_the_same_settings_are_compared(fixture_runs):
    for name in ("a2", "a2-shard0", "a2-shard1"):
        shutil.copytree(fixture_runs / name, fixture_runs / f"again-{name}")
    whole = report([fixture_runs / "a2", fixture_runs / "again-a2"])
    assert [s.label for s in whole] == ["power [a2]", "power [again-a2]"]
    sharded = report([fixture_runs / n for n in ("a2-shard0", "again-a2-shard0", "a2-shard1", "again-a2-shard1")])
    assert [(s.dirs, s.problems) for s in sharded] == [
        ([str(fixture_runs / "a2-shard0"), str(fixture_runs / "a2-shard1")], 10),
        ([str(fixture_runs / "again-a2-shard0"), str(fixture_runs / "again-a2-shard1")], 10)]
    with pytest.raises(PowerSampleError, match="a shard comes twice"):
        merge_runs([fixture_runs / "a2-shard0", fixture_runs / "again-a2-shard0"], fixture_runs / "m")


def test_labels_name_only_settings_the_method_uses(tmp_path):
    def run_of(name, method="power", **sampler):
        cfg = EvalConfig(task="gym", model="gym", out=str(tmp_path / name), method=method,
                         sampler=sampler).to_dict()
        return Run([tmp_path / name], cfg, [], ["0/1"])

    runs = [run_of("p4", alpha=4.0), run_of("p2", alpha=2.0, temperature=0.5), run_of("t", "temperature"),
            run_of("g", "greedy", alpha=2.0), run_of("lt", "low-temperature", alpha=2.0),
            run_of("b", "best-of-n", n=4, temperature=0.5), run_of("b8", "best-of-n", temperature=0.5)]
    # the settings are completed with the methods' defaults (temperature 1, n 8); greedy ignores alpha
    assert labels(runs) == ["power alpha=4.0 temperature=None", "power alpha=2.0 temperature=0.5",
                            "temperature temperature=1.0", "greedy", "low-temperature alpha=2.0",
                            "best-of-n n=4 temperature=0.5", "best-of-n n=8 temperature=0.5"]


def test_plot_legends_leave_the_data_uncovered(fixture_runs, tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    write_plots(report([fixture_runs / "a4", fixture_runs / "a2"]), tmp_path)
    assert len(figures) == 2
    for fig in figures:
        fig.canvas.draw()
        (ax,) = fig.axes
        legend = ax.get_legend() or fig.legends[0]
        assert not legend.get_window_extent().overlaps(ax.get_window_extent())
        fig.clf()


def test_side_by_side_table_and_plots(fixture_runs, tmp_path):
    summaries = report([fixture_runs / "a4", fixture_runs / "a2"])
    assert [s.label for s in summaries] == ["power alpha=4.0", "power alpha=2.0"]
    table = format_table(summaries)
    assert "pass@4" in table and "power alpha=2.0" in table and f"{summaries[0].accuracy:.3f}" in table
    paths = write_plots(summaries, tmp_path / "plots")
    assert [p.name for p in paths] == ["passk.png", "accuracy_vs_tokens.png"]
    for p in paths:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_report_cli(fixture_runs, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["report", str(fixture_runs / "a4"), str(fixture_runs / "a2-shard0"),
                 str(fixture_runs / "a2-shard1"), "--plots", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "power alpha=4.0" in printed and "power alpha=2.0" in printed
    assert {p.name for p in out.iterdir()} == {"report.md", "report.json", "passk.png",
                                                "accuracy_vs_tokens.png"}
    numbers = json.loads((out / "report.json").read_text())
    assert numbers[0]["problems"] == 10 and numbers[1]["problems"] == 10
    assert main(["report", "--no-plots", "--merge", str(tmp_path / "m"), str(fixture_runs / "a2-shard0"),
                 str(fixture_runs / "a2-shard1")]) == 0
    assert len(read_rows(tmp_path / "m")) == 40


def test_report_on_a_non_run_directory(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "has no run.json" in capsys.readouterr().err


# -- dynamic runs (dynamic.jsonl): per problem, not per chain --------------------------------------------------

# (answer, correct, tokens_generated) of chains 0..3 of each gym problem; gold answers: p0 "5", p1 "3", p2 "8"
CHAINS = {"p0": [("5", True, 10), ("5", True, 12), ("6", False, 9), ("6", False, 11)],
          "p1": [("3", True, 20), ("4", False, 22), ("4", False, 21), ("7", False, 25)],
          "p2": [("1", False, 5), ("8", True, 7), ("8", True, 6), ("8", True, 8)],
          "p3": [("2", False, 4), ("2", False, 4), ("2", False, 4), ("2", False, 4)]}
SAMPLER = {"alpha": 4.0, "block_size": 8, "max_new_tokens": 32}


def _row(pid, j, answer, correct, tokens, seconds=None):
    checkpoint = {"block": 1, "tokens": 3, "tokens_generated": tokens, "logp": -1.0 - j, "ended": True,
                  **({} if seconds is None else {"chain_seconds": seconds})}
    return {"format": 2, "id": pid, "sample_index": j, "method": "power", "text": answer, "token_ids": [1, 2, 3],
            "finished": True, "logp": -1.0 - j, "tokens_generated": tokens, "seconds": 0.5, "extracted": answer,
            "correct": correct, "checkpoints": [checkpoint]}


def _write_run(d, method, rows, records=None, torn=b"", **sampler):
    from powersample.jsonl import encode

    d.mkdir(parents=True)
    cfg = EvalConfig(task="gym", model="gym", out=str(d), method=method,
                     samples_per_problem=1 if method == "dynamic" else 4, sampler={**SAMPLER, **sampler}).to_dict()
    (d / "run.json").write_text(json.dumps({"format": 2, "config": cfg}))
    (d / "rows.jsonl").write_bytes(b"".join(encode(r) for r in rows))
    if records is not None:
        (d / "dynamic.jsonl").write_bytes(b"".join(encode(r) for r in records) + torn)
    return d


@pytest.fixture
def dynamic_runs(tmp_path):
    """A dynamic run (beta:0.9, k 2..4): p0 and p2 end at k = 2, p1 at k = 4 (its vote wrong), p3 is
    running (rows, no record; a torn record line), and a fixed k = 4 run of the same settings."""
    ks, chosen = {"p0": 2, "p1": 4, "p2": 2, "p3": 2}, {"p0": 0, "p1": 1, "p2": 1}
    rows = [_row(pid, j, *CHAINS[pid][j], seconds=0.1 * (j + 1)) for pid, k in ks.items() for j in range(k)]
    records = [{"id": pid, "controller": "beta:0.9", "k": ks[pid], "chosen": c, "answer": CHAINS[pid][c][0],
                "tokens": sum(t for *_, t in CHAINS[pid][:ks[pid]]), "steps": ks[pid] // 2, "decisions": []}
               for pid, c in chosen.items()]
    dyn = _write_run(tmp_path / "dyn", "dynamic", rows, records, torn=b'{"id": "p3", "controller": "be',
                     controller="beta:0.9", k_max=4)
    fixed = _write_run(tmp_path / "k4", "power", [_row(pid, j, *CHAINS[pid][j], seconds=0.1 * (j + 1))
                                                  for pid in ("p0", "p1", "p2") for j in range(4)])
    return dyn, fixed


def test_a_dynamic_run_is_reported_per_problem(dynamic_runs):
    dyn, _ = dynamic_runs
    (s,) = report([dyn])
    d = s.dynamic
    # three problems recorded (the torn fourth record is skipped), two of their votes right
    assert (s.problems, s.graded, s.correct) == (3, 3, 2) and s.accuracy == pytest.approx(2 / 3)
    assert s.ci95 == wilson(2, 3)
    assert s.pass_at_k == {} and s.maj_at_k == {}  # problems have different k
    assert s.tokens_per_problem == pytest.approx((22 + 88 + 12) / 3)
    assert (d.controller, d.budget) == ("beta:0.9", {"k_min": 2, "k_step": 2, "k_max": 4})
    assert (d.recorded, d.started, d.chains, d.ended_at) == (3, 4, pytest.approx(8 / 3), {2: 2, 4: 1})
    # seconds: each problem's chains' own seconds summed (0.1 (j + 1) for chain j)
    assert d.seconds_per_chain_attributed
    assert s.seconds_per_problem == pytest.approx((0.3 + 1.0 + 0.3) / 3)
    table = format_table([s])
    assert "| pass@" not in table and "| maj@" not in table  # (no such columns)
    assert "controller beta:0.9" in table and "k=2: 2, k=4: 1" in table
    assert "3 problems recorded, 1 more started" in table


def test_a_dynamic_run_without_chain_seconds_reports_the_batch_time(dynamic_runs):
    dyn, _ = dynamic_runs
    rows = read_rows(dyn)
    for r in rows:
        del r["checkpoints"][0]["chain_seconds"]
    from powersample.jsonl import encode

    (dyn / "rows.jsonl").write_bytes(b"".join(encode(r) for r in rows))
    (s,) = report([dyn])
    assert not s.dynamic.seconds_per_chain_attributed and s.seconds_per_problem == 0.5
    assert "batch's wall time per problem" in format_table([s])


def test_a_damaged_dynamic_record_is_an_error(dynamic_runs):
    dyn, _ = dynamic_runs
    (dyn / "dynamic.jsonl").write_bytes(b"not json\n" + (dyn / "dynamic.jsonl").read_bytes())
    with pytest.raises(PowerSampleError, match="dynamic.jsonl:1: not valid JSON"):
        report([dyn])


def test_a_dynamic_run_beside_a_fixed_run_of_the_same_settings(dynamic_runs, tmp_path):
    dyn, fixed = dynamic_runs
    s, f = report([dyn, fixed])
    assert f.dynamic is None and f.pass_at_k  # the fixed run as before
    d = s.dynamic
    assert d.versus_run == f.label and d.versus_problems == 3
    # the fixed run's vote over its first k chains (ties: the higher log p, i.e. the earlier chain)
    votes = {1: [1, 1, 0], 2: [1, 1, 0], 3: [1, 0, 1], 4: [1, 0, 1]}  # k=2: two ties; k=4: p0's tie
    tokens = {k: sum(sum(t for *_, t in CHAINS[p][:k]) for p in ("p0", "p1", "p2")) / 3 for k in votes}
    seconds = {k: 3 * sum(0.1 * (j + 1) for j in range(k)) / 3 for k in votes}
    for k, (name, acc, tok, sec, chains) in zip(votes, d.versus[:4], strict=True):
        assert (name, chains) == (f"fixed k={k}", k)
        assert acc == pytest.approx(sum(votes[k]) / 3) and tok == pytest.approx(tokens[k])
        assert sec == pytest.approx(seconds[k])
    assert d.versus[4][1:] == (pytest.approx(2 / 3), pytest.approx(122 / 3), pytest.approx(1.6 / 3),
                               pytest.approx(8 / 3))
    table = format_table([s, f])
    assert "on the 3 problems both hold" in table and "| fixed k=1 | 0.667 | 12 | 0.10 | 1.00 |" in table
    paths = write_plots([s, f], tmp_path / "plots")
    assert "dynamic_vs_fixed.png" in [p.name for p in paths]
    # a fixed run with other settings is not compared
    other = _write_run(tmp_path / "a2", "power", read_rows(fixed), alpha=2.0)
    s, _ = report([dyn, other])
    assert s.dynamic.versus == [] and "both hold" not in format_table([s])


# -- replay seconds: the used chains' own seconds summed -------------------------------------------------------

def test_replay_sums_the_used_chains_seconds(tmp_path, capsys, monkeypatch):
    import matplotlib.pyplot as plt
    from test_dynamic import fixture_rows, write_run

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    rows = fixture_rows()  # problems A and B, 8 chains each
    for r in rows:  # chain j of A took 1 + j seconds, every chain of B 2 s
        r["checkpoints"][-1]["chain_seconds"] = 1.0 + r["sample"] if r["id"] == "A" else 2.0
    timed = write_run(tmp_path / "timed", rows)
    assert main(["controller", "replay", str(timed), "--out", str(tmp_path / "t")]) == 0
    printed = capsys.readouterr().out
    assert "s/problem (chains' own)" in printed and "no seconds" not in printed
    lines = {ln["controller"]: ln for ln in json.loads((tmp_path / "t" / "replay.json").read_text())}
    assert lines["fixed:2"]["seconds"] == pytest.approx((1 + 2 + 2 * 2) / 2)
    assert lines["fixed:8"]["seconds"] == pytest.approx((36 + 8 * 2) / 2)
    assert lines["oracle"]["seconds"] == pytest.approx((3 + 4 * 2) / 2)  # A stops at 2 chains, B at 4
    assert "| fixed:2 | 0.500 | 30 | 23% | 2.00 | 3.50 |" in printed
    assert len(figures[-1].axes) == 2  # accuracy vs tokens, and vs seconds

    for r in rows:
        del r["checkpoints"][-1]["chain_seconds"]
    untimed = write_run(tmp_path / "untimed", rows)
    assert main(["controller", "replay", str(untimed), "--out", str(tmp_path / "u")]) == 0
    printed = capsys.readouterr().out
    assert "| s/problem" not in printed and "(no seconds: the log's rows have no per-chain seconds" in printed
    assert json.loads((tmp_path / "u" / "replay.json").read_text())[0]["seconds"] is None
    assert len(figures[-1].axes) == 1
