"""Show power sampling's effect on the shipped gym model, offline, in a few minutes on a laptop CPU.

Runs every sampling method on held-out gym problems (3-digit additions), grades them, and prints
accuracy with a 95% interval, tokens generated and seconds per problem; then power sampling's
accuracy as alpha and the number of MH steps vary. The gym's design is in docs/gym.md.

examples:
  powersample demo              # ~100 problems, all methods, alpha and MH-step sweeps
  powersample demo --quick      # ~20 seconds
"""

from __future__ import annotations

import argparse
import time

from ..samplers import METHODS
from .options import add_sampler_arguments

# method -> extra sampler options for the gym (its completions are <= 48 tokens)
# methods the demo's one-sample-per-problem table cannot show
_NOT_IN_DEMO = {"dynamic": "dynamic picks how many chains each problem gets; compare it on a logged run with "
                           "`powersample controller replay` or `powersample eval --method dynamic`"}

_GYM_OPTIONS = {
    "temperature": {"temperature": 1.0},
    "low-temperature": {},
    "greedy": {},
    "best-of-n": {"n": 8},
    "power": {},
    "smc": {"particles": 16},
    # K x M rollouts of H tokens per generated token: kept small to fit the demo's CPU budget
    "scalable": {"top_k_candidates": 3, "rollouts": 2, "horizon": 6},
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = __doc__.split("\n\n", 2)[2]
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--quick", action="store_true", help="40 problems, five methods, no sweep (~20 s on 2 cores)")
    p.add_argument("--problems", type=int, default=None, help="held-out problems (default 100; quick: 40)")
    # baselines first, then the samplers (as the README shows), then any method registered since
    everything = [*_GYM_OPTIONS, *(m for m in METHODS if m not in _GYM_OPTIONS and m not in _NOT_IN_DEMO)]
    p.add_argument("--methods", default=",".join(everything),
                   help="comma-separated methods to compare (default: %(default)s)")
    p.add_argument("--model", default="gym", help="the gym model, or another folder trained with `gym train`")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-sweep", action="store_true", help="skip the alpha / MH-steps sweep")
    # the gym's completions are <= 48 tokens (T/B = 3 blocks); the paper's N=10 is too few here: a 6-token
    # shortcut ends its chain after one block (docs/gym.md), so N=30 (the sweep shows 0-60)
    add_sampler_arguments(p, method=False, mcmc_steps=30, max_new_tokens=48, block_size=16, batch_size=100)


def run(args) -> int:
    import torch
    from tqdm.auto import tqdm

    from .. import gym, rng
    from ..api import make_params, sample
    from ..engine import open_engine
    from ..errors import PowerSampleError
    from ..evaluation.passk import wilson
    from .generate import check_device

    torch.set_num_threads(1)  # a model this small runs faster on one thread than on two
    n = args.problems or (40 if args.quick else 100)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in methods:
        METHODS.validate(m)
        if m in _NOT_IN_DEMO:
            raise PowerSampleError(f"--methods: {_NOT_IN_DEMO[m]}", "--methods", m)
    if args.quick:
        methods = [m for m in methods if m in ("temperature", "low-temperature", "greedy", "power", "smc")]
    problems = gym.eval_problems(n, seed=args.seed)
    prompts = [p.prompt for p in problems]
    seeds = [rng.derive_seeds(args.seed, p.id) for p in problems]
    power = make_params("power", alpha=args.alpha, mcmc_steps=args.mcmc_steps, max_new_tokens=args.max_new_tokens,
                        block_size=args.block_size)  # checked before the model loads; its defaults filled in
    check_device(args.device)
    engine = open_engine(args.model, device=args.device)
    base = dict(alpha=power.alpha, mcmc_steps=power.mcmc_steps, max_new_tokens=power.max_new_tokens,
                block_size=power.block_size, seeds=seeds, batch_size=args.batch_size)

    if args.no_sweep or args.quick:
        sweep = []
    else:
        sweep = [(a, power.mcmc_steps) for a in (1.0, 8.0)] + [(power.alpha, s) for s in (0, 10, 60)]
    bar = tqdm(total=len(methods) + len(sweep), desc="demo", unit="run")

    def evaluate(method: str, **opts):
        t0 = time.perf_counter()
        res = sample(engine, prompts, method, **{**base, **_GYM_OPTIONS.get(method, {}), **opts})
        secs = (time.perf_counter() - t0) / n
        correct = sum(gym.grade(problems[r.prompt_index], r.text or "", r.finished).correct for r in res)
        lo, hi = wilson(correct, n)
        bar.update(1)
        bar.set_postfix_str(f"{method}: {correct}/{n}")
        return correct / n, lo, hi, sum(r.tokens_generated for r in res) / n, secs

    rows = [(m, *evaluate(m)) for m in methods]
    sweep_rows = [(a, s, *evaluate("power", alpha=a, mcmc_steps=s)) for a, s in sweep]
    bar.close()

    print(f"\nGym: {n} held-out 3-digit additions, model {args.model}, T={power.max_new_tokens}, "
          f"B={power.block_size}, alpha={power.alpha}, seed {args.seed}\n")
    print(f"{'method':<17}{'accuracy':>9}  {'95% interval':<15}{'tokens/problem':>15}{'s/problem':>11}")
    for m, acc, lo, hi, tok, secs in rows:
        print(f"{m:<17}{acc:>9.1%}  [{lo:.1%}, {hi:.1%}]{'':<1}{tok:>14.1f}{secs:>11.3f}")
    if sweep_rows:
        print("\npower sampling as alpha and MH steps vary (alpha=1 with MH targets p itself; N=0 is the "
              "proposal alone)")
        print(f"{'alpha':>6}{'MH steps':>10}{'accuracy':>10}  {'95% interval':<15}{'tokens/problem':>15}")
        for a, s, acc, lo, hi, tok, _ in sweep_rows:
            print(f"{a:>6g}{s:>10}{acc:>10.1%}  [{lo:.1%}, {hi:.1%}]{tok:>15.1f}")
    return 0
