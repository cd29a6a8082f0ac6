"""Dynamic Power Sampling controllers: train one on logged runs, replay controllers on a log.

examples:
  powersample eval --task gym-mixed --model gym-mixed --method power --samples-per-problem 8 \\
      --block-size 16 --max-new-tokens 64 --out runs/k8          # a fixed k_max = 8 logging run
  powersample controller train runs/k8 --split 0/2 -o ctrl.skops
  powersample controller replay runs/k8 --split 1/2 --controller gbdt:ctrl.skops --out replay/
  powersample controller replay runs/k8 --k-min 1 --k-step 1 --cross-fit gbdt   # every problem, held out
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

KINDS = ("gbdt", "mlp", "mlp-h", "mlp-hq")  # learned controllers (dynamic/train.py)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = __doc__.split("\n\n", 1)[1]
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    t = sub.add_parser("train", help="learn a gbdt or mlp controller from fixed-k_max runs")
    t.add_argument("runs", nargs="+", metavar="RUN_DIR")
    t.add_argument("-o", "--out", required=True, help="the controller file to write (.skops)")
    t.add_argument("--model", default="gbdt", choices=KINDS,
                   help="mlp-h / mlp-hq add the chains' hidden states H (and the prompt's Q): a log with them")
    t.add_argument("--target", type=float, default=0.01,
                   help="largest accuracy loss vs fixed k_max allowed when choosing the threshold (0.01 = 1 point)")
    t.add_argument("--folds", type=int, default=5, help="GroupKFold folds (grouped by problem)")
    r = sub.add_parser("replay", help="each controller's decisions, accuracy and tokens on a log")
    r.add_argument("runs", nargs="+", metavar="RUN_DIR")
    r.add_argument("--controller", action="append", default=[], metavar="NAME[:ARG]",
                   help="fixed[:K], agreement, beta[:C], gbdt:FILE, mlp:FILE, oracle (repeatable); fixed k, "
                        "the beta sweep, agreement and the oracle are always shown")
    r.add_argument("--cross-fit", action="append", default=[], metavar="KIND", choices=KINDS,
                   help="gbdt, mlp, mlp-h or mlp-hq (repeatable): score every problem of the log with a controller "
                        "of that kind trained on the other parts (train's settings: --target, --folds)")
    r.add_argument("--parts", type=int, default=5, help="cross-fitting parts (problem i in part i mod PARTS)")
    r.add_argument("--out", default=None, help="write table.md, replay.json, decisions.jsonl and a PNG here")
    r.add_argument("--target", type=float, default=0.01, help="as for train (with --cross-fit)")
    r.add_argument("--folds", type=int, default=5, help="as for train (with --cross-fit)")
    for q in (t, r):
        q.add_argument("--split", default="0/1", metavar="I/N",
                       help="use the problems at positions I mod N in id order (train on 0/2, replay on 1/2)")
        q.add_argument("--k-min", type=int, default=2)
        q.add_argument("--k-step", type=int, default=2)
        q.add_argument("--k-max", type=int, default=8)
        q.add_argument("--decide", default="end", choices=("end", "block"),
                       help="ask the controller only once its chains have ended, or at every checkpoint")


def _problems(args):
    from ..dynamic.log import load_log
    from ..dynamic.replay import Budget
    from ..dynamic.vote import equivalence
    from ..errors import check
    from ..evaluation.config import parse_shard

    i, n = parse_shard(args.split)
    task, problems = load_log(args.runs)
    problems = sorted(problems, key=lambda p: p.id)[i::n]
    check(len(problems) > 0, f"--split {args.split} selects none of the problems", "split", args.split)
    return problems, equivalence(task), Budget(args.k_min, args.k_step, args.k_max, args.decide)


def _seconds(args, problems):
    """Each problem's chains' own seconds (checkpoints' chain_seconds), or None unless every chain has them."""
    from ..evaluation.report import chain_seconds
    from ..evaluation.store import read_rows

    wanted = {p.id for p in problems}
    seconds: dict[str, dict[int, float | None]] = {}
    for d in args.runs:
        for r in read_rows(d):
            if str(r["id"]) in wanted:
                seconds.setdefault(str(r["id"]), {})[r["sample_index"]] = chain_seconds(r)
    out = {pid: [by_j[j] for j in sorted(by_j)] for pid, by_j in seconds.items()}
    return None if any(None in v for v in out.values()) else out


def run(args) -> int:
    return _train(args) if args.action == "train" else _replay(args)


def _train(args) -> int:
    from ..dynamic.train import save_controller, train

    problems, same, budget = _problems(args)
    c = train(problems, same, args.model, budget, args.target, args.folds)
    path = save_controller(c, args.out)
    cv = c.cv
    print(f"{args.model} on {cv['problems']} problems, {cv['rows']} rows ({cv['positive_share']:.0%} labelled "
          f"'majority is final'), {cv['folds']}-fold CV grouped by problem: AUC {cv['auc_mean']:.3f} "
          f"(folds {', '.join(f'{a:.3f}' for a in cv['auc_per_fold'])})")
    print(f"held-out replay: fixed k={budget.k_max} accuracy {cv['fixed_k_max_accuracy']:.3f} at "
          f"{cv['fixed_k_max_tokens']:.0f} tokens/problem; threshold {c.threshold:g}: accuracy {cv['accuracy']:.3f} "
          f"at {cv['tokens']:.0f} tokens ({cv['token_share']:.0%})"
          + ("" if cv["target_met"] else f" (no threshold met the target of -{args.target:g}: the most accurate kept)"))
    print(f"wrote {path}")
    return 0


BETA_SWEEP = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)


def _replay(args) -> int:
    from ..dynamic.controllers import Learned, check_budget, make_controller
    from ..dynamic.replay import beta_at, compare, format_lines, plot, replay
    from ..dynamic.train import cross_fit

    problems, same, budget = _problems(args)
    chosen = [make_controller(s) for s in args.controller]  # bad specs fail before any work
    for c in chosen:
        check_budget(c, budget)
    reference = replay(problems, make_controller("fixed"), budget, same)
    secs = _seconds(args, problems)
    shown = [*(f"fixed:{k}" for k in budget.ks()), *(f"beta:{c:g}" for c in BETA_SWEEP), "agreement", "oracle"]
    lines, decisions = [], {}
    for spec in shown:
        lines.append(compare(replay(problems, make_controller(spec), budget, same), reference, spec, seconds=secs))
    for c in chosen:
        outs = replay(problems, c, budget, same, log_features=True)
        decisions[c.spec] = outs
        lines.append(compare(outs, reference, c.spec, seconds=secs))
        if isinstance(c, Learned):  # its threshold swept too, for the plot
            base = c.threshold
            for t in (0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99):
                c.threshold = t
                lines.append(compare(replay(problems, c, budget, same), reference, f"{c.spec}@{t:g}", seconds=secs))
            c.threshold = base
    for kind in args.cross_fit:
        outs, models = cross_fit(problems, same, kind, budget, args.target, args.parts)
        lines.append(compare(outs, reference, f"{kind} (cross-fitted, {args.parts} parts)", seconds=secs))
        print(f"{kind}: {args.parts} controllers, each trained on the other parts; thresholds "
              + ", ".join(f"{m.threshold:g}" for m in models))
    table = format_lines(lines)
    print(f"{len(problems)} problems, budget k_min={budget.k_min} +{budget.k_step} up to k_max={budget.k_max}, "
          f"controller asked at {'every checkpoint' if budget.decide == 'block' else 'the end of its chains'}")
    print(table)
    for line in lines:
        if not (any(line.controller == c.spec for c in chosen) or "(cross-fitted" in line.controller):
            continue
        b = beta_at(lines, line.tokens)
        print(f"{line.controller}: beta sweep at the same tokens ({line.tokens:.0f}): "
              + ("outside the sweep's range" if b != b else f"accuracy {b:.3f} (interpolated) vs {line.accuracy:.3f}"))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "table.md").write_text(table + "\n", encoding="utf-8")
        (out / "replay.json").write_text(json.dumps([ln.__dict__ for ln in lines], indent=1) + "\n", encoding="utf-8")
        with open(out / "decisions.jsonl", "w", encoding="utf-8") as f:
            for spec, outs in decisions.items():
                for o in outs:
                    f.write(json.dumps({"controller": spec, **o.__dict__}) + "\n")
        plot(lines, out / "accuracy_vs_tokens.png", f"{len(problems)} problems, replayed")
        print(f"wrote {out}/table.md, replay.json, decisions.jsonl, accuracy_vs_tokens.png")
    return 0
