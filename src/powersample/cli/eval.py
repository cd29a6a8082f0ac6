"""Run a benchmark task with a sampler and grade every sample (resumable; see docs/eval.md).

Examples:
  powersample eval --task gym --model gym --method power --samples-per-problem 4 --limit 50
  powersample eval --task math500 --model Qwen/Qwen2.5-Math-7B --method power --alpha 4 \\
      --mcmc-steps 10 --max-new-tokens 3072 --block-size 192 --dtype bfloat16 --out runs/math500-power
  powersample eval --task jsonl --data mine.jsonl --grader exact --model gpt2 --method greedy
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..tasks import TASKS
from .options import HelpFormatter, add_model_arguments, add_sampler_arguments, parse_pairs, sampler_settings


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = __doc__.split("\n", 2)[2]
    p.formatter_class = HelpFormatter
    what = p.add_argument_group("what to run")
    what.add_argument("--task", required=True, help=f"{', '.join(TASKS)} (jsonl: your own problems)")
    what.add_argument("--data", default=None, help="local data file instead of the shipped/hub data "
                      "(required for jsonl; GPQA: the gated gpqa_diamond.csv)")
    what.add_argument("--grader", choices=("math", "exact", "number"), default=None,
                      help="jsonl task: math-verify equivalence, exact match, or last number (default math)")
    what.add_argument("--task-option", action="append", default=[], metavar="KEY=VALUE",
                      help="a task setting, e.g. timeout=20 (humaneval), shuffle_seed=1 (gpqa); repeatable")

    add_model_arguments(p)
    add_sampler_arguments(p)

    r = p.add_argument_group("run")
    r.add_argument("--samples-per-problem", type=int, default=1, help="K samples per problem (pass@1..K)")
    r.add_argument("--limit", type=int, default=None, help="only the first N problems")
    r.add_argument("--shard", default="0/1", help="i/n: this process does shard i (0-based) of n")
    r.add_argument("--grade-workers", type=int, default=2, help="grader processes (0: grade inline)")
    r.add_argument("--max-batch-tokens", type=int, default=None, help="power: cap rows x (prompt + max-new-tokens) "
                   "(default: unlimited on a CPU; on CUDA what free memory holds as KV cache)")
    r.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS", help="spread the problems over "
                   "a Ray cluster (pip install \"powersample[ray]\"; docs/scale.md) at ADDRESS, or the local one")
    r.add_argument("--workers", type=int, default=None, help="--ray: workers, each loading the model once "
                   "(default: one per GPU; on a cluster without GPUs one per CPU)")
    r.add_argument("--out", default=None,
                   help="run directory (default runs/<task>-<model>-<method>-s<seed>); rerunning the same "
                        "command resumes it")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--unsafe", action="store_true", help="humaneval: run model-written code even where the "
                   "sandbox cannot fully isolate it (see docs/eval.md)")


def default_out(args: argparse.Namespace, sampler: dict) -> str:
    model = Path(args.model.rstrip("/")).name or "model"
    name = f"{args.task}-{model}-{args.method}" + (f"-a{sampler['alpha']:g}" if args.method == "power" else "")
    name += f"-s{args.seed}" + ("" if args.shard == "0/1" else "-shard" + args.shard.replace("/", "of"))
    return str(Path("runs") / name)


def run(args: argparse.Namespace) -> int:
    from ..api import BATCH_SIZE, resolve_settings
    from ..evaluation import EvalConfig, run_eval
    from .generate import check_device

    check_device(args.device)
    task_options = parse_pairs(args.task_option, "--task-option")
    if args.grader is not None:
        task_options["grader"] = args.grader
    if args.unsafe:
        task_options["unsafe"] = True
    sampler = resolve_settings(args.method, **sampler_settings(args))
    config = EvalConfig(
        task=args.task, model=args.model, out=args.out or default_out(args, sampler), method=args.method,
        sampler=sampler, chat=args.chat, dtype=args.dtype, samples_per_problem=args.samples_per_problem,
        limit=args.limit, shard=args.shard, seed=args.seed,
        data=args.data, task_options=task_options, device=args.device,
        batch_size=args.batch_size if args.batch_size is not None else BATCH_SIZE,
        grade_workers=args.grade_workers, max_batch_tokens=args.max_batch_tokens,
        ray=args.ray, workers=args.workers)
    print(f"powersample eval: writing {config.out}")
    summary = run_eval(config, progress=not args.no_progress)
    acc = "n/a (not graded here)" if summary.accuracy is None else \
        f"{summary.accuracy:.4f} ({summary.correct}/{summary.graded} samples)"
    print(f"{summary.rows_new} new rows, {summary.rows_total} in total for {summary.problems} problems; "
          f"accuracy {acc}; grader errors {summary.grader_errors}")
    for path in summary.exported:
        print(f"wrote {path}")
    print(f"report: powersample report {config.out}")
    return 0
