"""The reasoning gym: exact design numbers, training the shipped model, and checking it.

    powersample gym stats [--gym gym-mixed] [--alpha 4 --n 1000]
    powersample gym train [--gym gym-mixed] [--out DIR --steps N --seed S --threads T --tiny]
    powersample gym check [--gym gym-mixed] [--n 200 --mh-steps 10 30]
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="gym_command", metavar="ACTION", required=True)
    p = sub.add_parser("stats", help="exact accuracies of samplers under the data distribution",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--gym", default="gym", choices=["gym", "gym-mixed"], help="which gym (gym-mixed: per level)")
    p.add_argument("--alpha", type=float, nargs="+", default=[4.0], help="power(s) to evaluate")
    p.add_argument("--n", type=int, default=1000, help="held-out problems to average over")
    p.add_argument("--seed", type=int, default=0, help="eval problem seed")
    p.add_argument("--shortcut-rate", type=float, default=None, help="override the design's shortcut rate")
    p.add_argument("--step-error-rate", type=float, default=None,
                   help="override the design's step error rate")
    p.add_argument("--guess-digits", type=int, default=None, help="override the design's random guess digits")

    p = sub.add_parser("train", help="train a gym model (the shipped one: defaults, seed 0)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--gym", default="gym", choices=["gym", "gym-mixed"], help="which gym's model")
    p.add_argument("--out", default=None, help="output folder (None: the package's folder for --gym)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (None: 5000, or 20 with --tiny)")
    p.add_argument("--seed", type=int, default=0, help="seeds the weights and the data stream")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (None: 2; 1 is faster when other jobs share the cores)")
    p.add_argument("--tiny", action="store_true", help="a seconds-long run of a tiny model (pipeline test)")

    p = sub.add_parser("check", help="measure temperature, low temperature, greedy and power on the model",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--gym", default="gym", choices=["gym", "gym-mixed"],
                   help="which gym; gym-mixed is measured per level (--n problems per level)")
    p.add_argument("--model", default=None, help="model folder (default: the shipped model of --gym)")
    p.add_argument("--n", type=int, default=200, help="held-out problems")
    p.add_argument("--seed", type=int, default=0, help="eval problem seed (and sampling seed)")
    p.add_argument("--alpha", type=float, default=4.0)
    p.add_argument("--draws", type=int, default=4, help="samples per problem for temperature methods")
    p.add_argument("--is-draws", type=int, default=64, help="temperature-1 draws per problem for IS")
    p.add_argument("--mh-steps", type=int, nargs="*", default=[10, 30], help="MH steps per block to try")
    p.add_argument("--mh-chains", type=int, default=2, help="MH chains per problem (gym-mixed only)")
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: safe on shared CPUs)")


def run(args: argparse.Namespace) -> int:
    if args.gym_command == "stats":
        return _stats(args)
    if args.gym_command == "train":
        from pathlib import Path

        from ..gym import get_spec
        from ..gym.train import TINY, TrainConfig, train

        out = args.out or str(Path(__file__).resolve().parents[1] / "gym" / get_spec(args.gym).model_dir)
        config = None
        if args.threads is not None:
            config = TrainConfig(**{**(TINY if args.tiny else {}), "threads": args.threads})
        train(out, steps=args.steps, seed=args.seed, tiny=args.tiny, config=config, echo=print, spec=args.gym)
        return 0
    return _check(args)


def _check(args: argparse.Namespace) -> int:
    import torch

    from ..gym.check import measure, measure_levels, paired_gap

    torch.set_num_threads(args.threads)
    if args.gym != "gym":
        measure_levels(args.gym, args.model, n=args.n, seed=args.seed, alpha=args.alpha, draws=args.draws,
                       is_draws=args.is_draws, mh_steps=args.mh_steps, mh_chains=args.mh_chains,
                       block_size=args.block_size, max_new_tokens=args.max_new_tokens, echo=print)
        return 0
    scores = measure(args.model, n=args.n, seed=args.seed, alpha=args.alpha, draws=args.draws,
                     is_draws=args.is_draws, mh_steps=args.mh_steps, block_size=args.block_size,
                     max_new_tokens=args.max_new_tokens, echo=print)
    print("\npaired gaps over the same problems (95%):")
    for s in scores[3:]:  # the power estimates, against temperature 1 and temperature 1/alpha
        for b in scores[:2]:
            gap, hw = paired_gap(s, b)
            print(f"  {s.method} - {b.method}: {100 * gap:+.1f} ± {100 * hw:.1f} points")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ..gym import GymDesign, design_numbers, eval_problems

    overrides = {k: getattr(args, k) for k in ("shortcut_rate", "step_error_rate", "guess_digits")
                 if getattr(args, k) is not None}
    if args.gym != "gym":
        return _level_stats(args, overrides)
    design = replace(GymDesign(), **overrides)
    problems = eval_problems(args.n, args.seed)
    print(f"design {design}, exact over {args.n} held-out problems (seed {args.seed})")
    for alpha in args.alpha:
        d = design_numbers(problems, design, alpha)
        print(f"\nalpha = {alpha:g}")
        print(f"  P(correct)  temperature 1         {d.temperature_one:8.4f}")
        print(f"              temperature 1/alpha   {d.low_temperature:8.4f}")
        print(f"              greedy (ties split)   {d.greedy:8.4f}")
        print(f"              pi_alpha (power)      {d.power:8.5f}")
        print(f"  first token 'A' (shortcut)  p {d.shortcut_first:.4f}   "
              f"temp 1/alpha {d.shortcut_first_low_temperature:.4f}   pi_alpha {d.shortcut_power:.3g}")
        print(f"  p(correct worked solution) {d.correct_worked_p:.4f}   p(likeliest shortcut) "
              f"{d.top_shortcut_p:.4f}   P(correct | shortcut) {d.shortcut_correct:.4f}")
    return 0


def _level_stats(args: argparse.Namespace, overrides: dict) -> int:
    """The mixed gym's exact numbers: one row per level and alpha."""
    from dataclasses import replace

    from ..gym import design_numbers, get_spec

    spec = get_spec(args.gym)
    print(f"{spec.name}: exact over {args.n} held-out problems per level (50 for 1 digit; seed {args.seed}); "
          "acc = P(correct), agree = P(two draws state the same answer)")
    print(f"{'digits':>6} {'alpha':>5} | {'temp 1 acc':>10} {'agree':>6} | {'temp 1/a acc':>12} {'agree':>6} | "
          f"{'pi_alpha acc':>12} {'agree':>6} | {'greedy':>6} {'P(A first)':>10}")
    for level in spec.levels:
        design = replace(level, **overrides)
        problems = spec.level_problems(level, args.n, args.seed)
        for alpha in args.alpha:
            d = design_numbers(problems, design, alpha)
            print(f"{level.digits:>6} {alpha:>5g} | {d.temperature_one:10.4f} {d.agree_temperature_one:6.3f} | "
                  f"{d.low_temperature:12.4f} {d.agree_low_temperature:6.3f} | {d.power:12.5f} "
                  f"{d.agree_power:6.3f} | {d.greedy:6.4f} {d.shortcut_first:10.2f}")
    return 0
