"""Accuracy (Wilson 95% interval), pass@k, cost and plots for one or more eval runs.

Examples:
  powersample report runs/math500-power runs/math500-temperature       # side by side
  powersample report runs/math500-power runs/math500-power-rerun       # a rerun is a run of its own
  powersample report runs/math500-dps runs/math500-k8                  # dynamic per problem, beside fixed k
  powersample report runs/x-shard0of4 runs/x-shard1of4 ...             # shards of one run are merged
  powersample report --merge runs/x-merged runs/x-shard*               # and written as one run
"""

from __future__ import annotations

import argparse
from pathlib import Path


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the help, and the examples epilog kept as written."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = __doc__.split("\n", 2)[2]
    p.formatter_class = _Formatter
    p.add_argument("runs", nargs="+", metavar="DIR", help="run directories written by `powersample eval`")
    p.add_argument("--plots", default=None, metavar="DIR",
                   help="where report.md, report.json and the PNG plots go (default: the first run "
                        "directory)")
    p.add_argument("--no-plots", action="store_true", help="print the table only; write no files")
    p.add_argument("--merge", default=None, metavar="OUT",
                   help="write the given shard directories as one merged run directory OUT, then report it")


def run(args: argparse.Namespace) -> int:
    from ..evaluation.plots import write_plots
    from ..evaluation.report import format_table, merge_runs, report, write_report

    dirs = args.runs
    if args.merge:
        merged = merge_runs(dirs, args.merge)
        print(f"merged {len(dirs)} shard directories into {merged}")
        dirs = [merged]
    summaries = report(dirs)
    print(format_table(summaries))
    if not args.no_plots:
        out = Path(args.plots) if args.plots else Path(dirs[0])
        for path in write_report(summaries, out) + write_plots(summaries, out):
            print(f"wrote {path}")
    return 0
