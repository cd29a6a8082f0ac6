"""Benchmark evaluation: run a task with a sampler, store graded rows, report and plot.

    from powersample.evaluation import EvalConfig, run_eval, report
    run_eval(EvalConfig(task="gym", model="gym", out="runs/gym-power", samples_per_problem=4))
    print(format_table(report(["runs/gym-power"])))

Modules: config (EvalConfig), store (run.json + rows.jsonl), grading (grader process pool), runner
(run_eval), passk (pass@k, Wilson), report (summaries, shard merging), plots (PNG figures).
"""

from __future__ import annotations

from .config import EvalConfig
from .passk import pass_at_k, wilson
from .report import format_table, load_runs, merge_runs, report, summarize
from .runner import RunSummary, run_eval

__all__ = ["EvalConfig", "run_eval", "RunSummary", "report", "format_table", "load_runs", "merge_runs",
           "summarize", "pass_at_k", "wilson"]
