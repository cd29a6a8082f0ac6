"""PNG plots of run summaries (matplotlib, Agg backend: no display needed).

- passk.png: pass@k against k (log2 axis), one line per run.
- accuracy_vs_tokens.png: accuracy against tokens generated per sample, one colour per method. Runs
  with graded checkpoints draw their running-answer curve (block by block); every run also draws its
  final accuracy with the Wilson 95% interval. Dynamic runs are left out (their accuracy is per
  problem, not per sample).
- dynamic_vs_fixed.png: a dynamic run against a fixed-k run of the same settings (report.py's
  `versus`): accuracy vs tokens per problem, fixed k = 1..K and the dynamic point.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from .report import Summary


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # before pyplot is imported: headless servers have no display
    import matplotlib.pyplot as plt

    return plt


def plot_passk(summaries: Sequence[Summary], path: str | Path) -> Path | None:
    """pass@k curves; None (no file) when no run has graded samples."""
    shown = [s for s in summaries if s.pass_at_k]
    if not shown:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for s in shown:
        ks = sorted(s.pass_at_k)
        ax.plot(ks, [s.pass_at_k[k] for k in ks], marker="o", markersize=3, label=s.label)
    ax.set_xscale("log", base=2)
    k_max = max(max(s.pass_at_k) for s in shown)
    ax.set_xticks([k for k in (2 ** i for i in range(k_max.bit_length())) if k <= k_max] + [k_max])
    ax.get_xaxis().set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
    return _finish(plt, fig, ax, shown, path, "k (samples per problem)", "pass@k", "pass@k")


def plot_accuracy_tokens(summaries: Sequence[Summary], path: str | Path) -> Path | None:
    """Accuracy vs generated tokens per sample, coloured by method; None when nothing is graded."""
    shown = [s for s in summaries if s.accuracy is not None and not math.isnan(s.tokens_per_sample)
             and s.dynamic is None]
    if not shown:
        return None
    plt = _pyplot()
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    methods = sorted({s.method for s in shown})
    markers, styles = "osD^v<>", ["-", "--", ":", "-."]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for i, s in enumerate(shown):
        colour = colours[methods.index(s.method) % len(colours)]  # one colour per method, a marker per run
        if s.checkpoint_curve:
            xs, ys = zip(*s.checkpoint_curve, strict=True)
            ax.plot(xs, ys, color=colour, alpha=0.6, linewidth=1, linestyle=styles[i % len(styles)])
        lo, hi = s.ci95
        ax.errorbar([s.tokens_per_sample], [s.accuracy], yerr=[[s.accuracy - lo], [hi - s.accuracy]],
                    fmt=markers[i % len(markers)], color=colour, capsize=3, label=s.label)
    xs = [s.tokens_per_sample for s in shown] + [x for s in shown for x, _ in s.checkpoint_curve]
    if min(xs) > 0 and max(xs) / min(xs) > 20:  # power sampling can cost 10-100x the tokens of a baseline
        ax.set_xscale("log")
    return _finish(plt, fig, ax, shown, path, "tokens generated per sample (rejected proposals included)",
                   "accuracy", "accuracy vs compute")


def plot_dynamic_vs_fixed(summaries: Sequence[Summary], path: str | Path) -> Path | None:
    """Each dynamic run's point beside the fixed run's vote at k = 1..K, tokens per problem on x."""
    shown = [s for s in summaries if s.dynamic is not None and s.dynamic.versus]
    if not shown:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for s in shown:
        *fixed, (name, acc, tokens, _, _) = s.dynamic.versus
        ax.plot([p[2] for p in fixed], [p[1] for p in fixed], "o-", markersize=4,
                label=f"{s.dynamic.versus_run}: fixed k = 1..{len(fixed)}")
        ax.plot([tokens], [acc], "*", markersize=12, label=name)
    return _finish(plt, fig, ax, shown, path, "generated tokens per problem (mean)", "majority-vote accuracy",
                   "dynamic vs fixed k")


def _finish(plt, fig, ax, shown, path, xlabel: str, ylabel: str, title: str) -> Path:
    """Label, title (with the tasks shown), grid and legend; save to `path` and close the figure."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title} — {', '.join(sorted({s.task for s in shown}))}")
    ax.grid(True, alpha=0.3)
    # outside the axes, to the right: inside, a legend of long run labels hides curves and points
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")  # the saved image grows to hold the legend
    plt.close(fig)
    return Path(path)


def write_plots(summaries: Sequence[Summary], out_dir: str | Path) -> list[Path]:
    """The plots into `out_dir`; the paths of those written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [plot_passk(summaries, out_dir / "passk.png"),
               plot_accuracy_tokens(summaries, out_dir / "accuracy_vs_tokens.png"),
               plot_dynamic_vs_fixed(summaries, out_dir / "dynamic_vs_fixed.png")]
    return [p for p in written if p is not None]
