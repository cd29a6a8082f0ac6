"""Replay: what a controller would have done on a logged fixed-k_max run, offline.

Chain j of a problem always has the same seed, and a chain's blocks depend only on its seed, so the
log holds every chain any controller could ask for. The budget (`Budget`): a problem starts with
k_min chains; at each checkpoint (step s = 1, 2, ...) the controller sees every started chain as it
stands (a chain started at step s0 is after block s - s0 + 1, or at its end) and says

- "more": k_step chains more (up to k_max), which run their block 1 at step s + 1;
- "enough": no more chains; the problem ends at the first checkpoint where every chain has ended
  and the controller says "enough" (at k_max it ends when every chain has ended).

`decide` says at which checkpoints the controller is asked: "end" (default) only where every started
chain has ended, "block" at every checkpoint (the DPS code's mid-run checkpoints). Running chains are
never cut, so asking mid-run cannot save tokens; it can only start chains earlier (less waiting) at
the risk of starting some that the finished answers would not have needed.

No chain is ever cut short, so the problem's answer is the vote over its chains' final answers
(vote.py), and its tokens are the sum over the chains used of each chain's `tokens_generated` at its
end (every token drawn, rejected MH proposals included). A live run with the same seeds and
decisions draws exactly these chains, so it must report the same answers and tokens. Its seconds are
the used chains' own compute seconds summed (checkpoints' `chain_seconds`: each forward pass's time
split over the rows it served), where the log has them; wall time is not replayed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import check
from .controllers import Controller
from .features import FEATURES, ProblemState, features
from .log import LoggedProblem
from .vote import Same, majority


@dataclass(frozen=True)
class Budget:
    k_min: int = 2
    k_step: int = 2
    k_max: int = 8
    decide: str = "end"  # "end": ask only when every started chain has ended; "block": at every checkpoint

    def __post_init__(self):
        check(self.decide in ("end", "block"), f"decide must be 'end' or 'block', got {self.decide!r}", "budget",
              self.decide)
        check(1 <= self.k_min <= self.k_max, f"need 1 <= k_min <= k_max, got k_min={self.k_min}, "
              f"k_max={self.k_max}", "budget")
        check(self.k_step >= 1, f"k_step must be >= 1, got {self.k_step}", "budget", self.k_step)

    def ks(self) -> list[int]:
        """The chain counts a problem can have: k_min, k_min + k_step, ..., k_max."""
        ks = list(range(self.k_min, self.k_max, self.k_step))
        return ks + [self.k_max]


@dataclass
class Outcome:
    id: str
    chosen: int  # the chain whose answer the vote picks
    correct: bool
    k: int  # chains used
    tokens: int  # sum of the used chains' tokens_generated
    steps: int  # checkpoints until the problem ended
    decisions: list[dict] = field(default_factory=list)  # per checkpoint: step, k, features, enough


def final_vote(problem: LoggedProblem, k: int, same: Same) -> int:
    finals = [c.final for c in problem.chains[:k]]
    return majority([c.answer for c in finals], [c.logp for c in finals], same)


def decide(controller: Controller, state: ProblemState, budget: Budget, same: Same,
           log_features: bool = True) -> tuple[int, bool, dict | None]:
    """One checkpoint of one problem, live or replayed: (chains to add, whether the problem ends, the
    decision record, or None where the controller was not asked)."""
    if budget.decide == "end" and not state.all_done:
        return 0, False, None  # the controller is asked once the chains it has are finished
    enough = bool(controller.enough(state, same))
    d = {"step": state.step, "k": state.k, "enough": enough}
    if log_features:
        d["features"] = dict(zip(FEATURES, features(state, same), strict=True))
    if not enough and state.k < budget.k_max:
        return min(budget.k_step, budget.k_max - state.k), False, d
    return 0, state.all_done, d


def replay_problem(problem: LoggedProblem, controller: Controller, budget: Budget, same: Same,
                   log_features: bool = True) -> Outcome:
    k_max = len(problem.chains)
    check(budget.k_max <= k_max, f"problem {problem.id!r} has {k_max} chains, fewer than k_max={budget.k_max}",
          "budget", budget.k_max)
    finals = tuple(c.final for c in problem.chains[:budget.k_max])
    final_chain = final_vote(problem, budget.k_max, same)
    starts = [1] * budget.k_min  # the step at which each chain ran its first block
    decisions, step = [], 0
    while True:
        step += 1
        states = tuple(problem.chains[j].at(step - s + 1) for j, s in enumerate(starts))
        add, end, d = decide(controller, ProblemState(states, step, budget.k_max, final_chain, finals), budget,
                             same, log_features)
        if d is not None:
            decisions.append(d)
        starts += [step + 1] * add
        if end:
            break
    k = len(starts)
    chosen = final_vote(problem, k, same)
    return Outcome(problem.id, chosen, bool(problem.chains[chosen].final.correct), k,
                   sum(c.final.tokens_generated for c in problem.chains[:k]), step, decisions)


def replay(problems: Sequence[LoggedProblem], controller: Controller, budget: Budget, same: Same,
           log_features: bool = False) -> list[Outcome]:
    return [replay_problem(p, controller, budget, same, log_features) for p in problems]


@dataclass(frozen=True)
class Line:
    """One controller's figures on a log, against fixed k_max on the same problems."""

    controller: str
    accuracy: float
    tokens: float  # mean per problem
    token_share: float  # of fixed k_max's tokens
    chains: float  # mean chains per problem
    diff: float  # accuracy - fixed k_max accuracy
    diff_ci95: tuple[float, float]  # paired bootstrap over problems
    seconds: float | None = None  # mean per problem: its used chains' own seconds summed (None: not logged)


Seconds = dict[str, Sequence[float]]  # problem id -> each chain's own compute seconds, by chain index


def compare(outcomes: Sequence[Outcome], reference: Sequence[Outcome], spec: str, n_boot: int = 2000,
            seed: int = 0, seconds: Seconds | None = None) -> Line:
    """`spec`'s figures against fixed k_max (`reference`); with `seconds`, its seconds per problem too."""
    a = np.array([o.correct for o in outcomes], dtype=float)
    r = np.array([o.correct for o in reference], dtype=float)
    tokens = float(np.mean([o.tokens for o in outcomes]))
    ref_tokens = float(np.mean([o.tokens for o in reference]))
    secs = None if seconds is None else float(np.mean([sum(seconds[o.id][:o.k]) for o in outcomes]))
    return Line(spec, float(a.mean()), tokens, tokens / ref_tokens if ref_tokens else math.nan,
                float(np.mean([o.k for o in outcomes])), float(a.mean() - r.mean()),
                paired_bootstrap(a, r, n_boot, seed), secs)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of mean(a - b), resampling problems (pairs) with replacement."""
    d = a - b
    idx = np.random.default_rng(seed).integers(0, len(d), size=(n_boot, len(d)))
    means = d[idx].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def format_lines(lines: Sequence[Line]) -> str:
    """The Markdown table; a seconds column when the log has per-chain seconds, else a line saying so."""
    timed = bool(lines) and all(ln.seconds is not None for ln in lines)
    head = ("| controller | accuracy | tokens/problem | share of fixed k_max | chains | "
            + ("s/problem (chains' own) | " if timed else "") + "Δ acc vs fixed k_max [95% CI] |")
    out = [head, "|---|---|---|---|---|---|" + ("---|" if timed else "")]
    for ln in lines:
        out.append(f"| {ln.controller} | {ln.accuracy:.3f} | {ln.tokens:.0f} | {ln.token_share:.0%} | "
                   f"{ln.chains:.2f} | " + (f"{ln.seconds:.2f} | " if timed else "")
                   + f"{ln.diff:+.3f} [{ln.diff_ci95[0]:+.3f}, {ln.diff_ci95[1]:+.3f}] |")
    if not timed:
        out += ["", "(no seconds: the log's rows have no per-chain seconds (checkpoints' chain_seconds), "
                "as runs written before they were recorded)"]
    return "\n".join(out)


def beta_at(lines: Sequence[Line], tokens: float) -> float:
    """The beta sweep's accuracy at `tokens`, interpolated linearly between its points (nan outside)."""
    pts = sorted((ln.tokens, ln.accuracy) for ln in lines if ln.controller.startswith("beta:"))
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    if not pts or tokens < xs[0] or tokens > xs[-1]:
        return math.nan
    return float(np.interp(tokens, xs, ys))


def plot(lines: Sequence[Line], path, title: str = "") -> None:
    """Accuracy against mean generated tokens per problem: fixed k, beta sweep, learned sweeps, the rest;
    beside it the same against seconds per problem when the log has per-chain seconds."""
    from ..evaluation.plots import _pyplot

    plt = _pyplot()
    timed = bool(lines) and all(ln.seconds is not None for ln in lines)
    fig, axes = plt.subplots(1, 2 if timed else 1, figsize=(12.4 if timed else 6.4, 4.4), squeeze=False)
    _panel(axes[0][0], lines, "tokens", "generated tokens per problem (mean)", title)
    if timed:
        _panel(axes[0][1], lines, "seconds", "seconds per problem (mean, the chains' own)", title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _panel(ax, lines: Sequence[Line], x: str, xlabel: str, title: str) -> None:
    """One panel: accuracy against `x` (a Line field) for fixed k, the beta sweep and the rest."""
    groups = {"fixed": [], "beta": [], "other": {}}
    for ln in lines:
        name = ln.controller.split(":")[0]
        if name in ("fixed", "beta"):
            groups[name].append(ln)
        else:
            groups["other"].setdefault(name if "@" in ln.controller else ln.controller, []).append(ln)
    for name, style in (("fixed", "o-"), ("beta", "s--")):
        pts = sorted(groups[name], key=lambda ln: getattr(ln, x))
        if pts:
            ax.plot([getattr(p, x) for p in pts], [p.accuracy for p in pts], style, markersize=4,
                    label="fixed k" if name == "fixed" else "beta sweep")
    for i, (name, pts) in enumerate(groups["other"].items()):
        pts = sorted(pts, key=lambda ln: getattr(ln, x))
        marker = "^vDPX*"[i % 6]
        ax.plot([getattr(p, x) for p in pts], [p.accuracy for p in pts], marker + ("-" if len(pts) > 1 else ""),
                markersize=6, label=name + (" sweep" if len(pts) > 1 else ""))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("majority-vote accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
