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
