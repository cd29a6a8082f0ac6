"""Exact accuracies of samplers under the DATA distribution, by enumerating every completion.

For one problem the data law is a finite set of strings (27 worked variants + the shortcut guesses).
On its token trie (characters, then EOS) we compute, with no sampling at all:

- temperature 1:      sum_x p(x) [x correct]
- per-token temp tau: each step draws a child with prob ∝ p(child | node)^(1/tau); tau = 1/alpha is
                      the "low temperature" baseline, tau -> 0 is greedy (ties split evenly)
- power pi_alpha:     sum_x p(x)^alpha [x correct] / sum_x p(x)^alpha

These are what a perfectly trained model would give, so they are the design's promise.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from ..errors import check
from .data import ANSWER, completion_distribution
from .design import GymDesign, GymSpec, get_spec
from .grader import grade
from .task import GymProblem, eval_problems

EOS = "</s>"  # the end token of the trie; the tokenizer's EOS plays this part in the model
_Leaf = tuple[tuple[str, ...], float, bool]  # (tokens, probability, correct)


@dataclass(frozen=True)
class DesignNumbers:
    """Means over problems of exact per-problem quantities under the data distribution."""

    alpha: float
    problems: int
    temperature_one: float  # P(correct), sampling p at temperature 1
    low_temperature: float  # P(correct), per-token temperature 1/alpha
    greedy: float  # P(correct), per-token argmax with ties split evenly
    power: float  # pi_alpha mass on correct completions
    shortcut_first: float  # P(first token is "A", i.e. a shortcut), under p
    shortcut_first_low_temperature: float  # the same at per-token temperature 1/alpha
    shortcut_power: float  # pi_alpha mass on shortcut completions
    correct_worked_p: float  # p of the one correct worked solution
    top_shortcut_p: float  # p of the most likely single shortcut completion
    shortcut_correct: float  # P(correct | shortcut), under p
    agree_temperature_one: float  # P(two independent temperature-1 draws state the same answer)
    agree_low_temperature: float  # the same at per-token temperature 1/alpha
    agree_power: float  # the same for two exact pi_alpha draws

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def tempered_probs(leaves: Sequence[_Leaf], temperature: float, depth: int = 0) -> list[float]:
    """Probability of each leaf when each token is drawn ∝ p(token | prefix)^(1/temperature); 0 = greedy."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, leaf in enumerate(leaves):
        groups[leaf[0][depth]].append(i)
    mass = {tok: sum(leaves[i][1] for i in group) for tok, group in groups.items()}
    top = max(mass.values())
    if temperature == 0:  # greedy: every token within rounding of the max shares the step
        weights = {tok: 1.0 if m >= top * (1 - 1e-9) else 0.0 for tok, m in mass.items()}
    else:
        weights = {tok: (m / top) ** (1.0 / temperature) for tok, m in mass.items()}
    total = sum(weights.values())
    out = [0.0] * len(leaves)
    for tok, group in groups.items():
        w = weights[tok] / total
        if w == 0:
            continue
        if tok == EOS:  # exactly one string ends here
            out[group[0]] = w
        else:
            sub = tempered_probs([leaves[i] for i in group], temperature, depth + 1)
            for i, q in zip(group, sub, strict=True):
                out[i] = w * q
    return out


def tempered_value(leaves: Sequence[_Leaf], value: Callable[[_Leaf], float], temperature: float) -> float:
    """E[value(leaf)] when each token is drawn ∝ p(token | prefix)^(1/temperature); 0 = greedy."""
    return sum(q * value(leaf) for q, leaf in zip(tempered_probs(leaves, temperature), leaves, strict=True)
               if q > 0)


def agreement(leaves: Sequence[_Leaf], probs: Sequence[float]) -> float:
    """P(two independent draws state the same answer): sum over answers of P(answer)^2."""
    by_answer: dict[str, float] = defaultdict(float)
    for (toks, _, _), q in zip(leaves, probs, strict=True):
        text = "".join(toks[:-1])
        by_answer[text[text.rindex(ANSWER):]] += q
    return sum(q * q for q in by_answer.values())


def _leaves(problem: GymProblem, design: GymDesign) -> list[_Leaf]:
    dist = completion_distribution(problem, design)
    return [((*text, EOS), p, grade(problem, text).correct) for text, p in dist.items()]


def problem_numbers(problem: GymProblem, design: GymDesign, alpha: float) -> dict[str, float]:
    """The DesignNumbers fields for one problem."""
    leaves = _leaves(problem, design)
    correct = lambda leaf: float(leaf[2])  # noqa: E731
    shortcut = lambda leaf: float(leaf[0][0] == ANSWER[0])  # noqa: E731
    top_p = max(p for _, p, _ in leaves)
    powered = [(p / top_p) ** alpha for _, p, _ in leaves]  # scaled by the max: no underflow
    z = sum(powered)
    low = tempered_probs(leaves, 1.0 / alpha)
    short_p = [p for toks, p, _ in leaves if toks[0] == ANSWER[0]]
    worked_ok = [p for toks, p, ok in leaves if ok and toks[0] != ANSWER[0]]
    return dict(
        temperature_one=sum(p for _, p, ok in leaves if ok),
        low_temperature=sum(q for q, leaf in zip(low, leaves, strict=True) if leaf[2]),
        greedy=tempered_value(leaves, correct, 0.0),
        power=sum(w for w, (_, _, ok) in zip(powered, leaves, strict=True) if ok) / z,
        shortcut_first=sum(short_p),
        shortcut_first_low_temperature=tempered_value(leaves, shortcut, 1.0 / alpha),
        shortcut_power=sum(w for w, (t, _, _) in zip(powered, leaves, strict=True) if t[0] == ANSWER[0]) / z,
        correct_worked_p=sum(worked_ok),
        top_shortcut_p=max(short_p),
        shortcut_correct=sum(p for toks, p, ok in leaves if ok and toks[0] == ANSWER[0]) / sum(short_p),
        agree_temperature_one=agreement(leaves, [p for _, p, _ in leaves]),
        agree_low_temperature=agreement(leaves, low),
        agree_power=agreement(leaves, [w / z for w in powered]),
    )


def design_numbers(problems: Sequence[GymProblem] | None = None, design: GymDesign | None = None,
                   alpha: float = 4.0) -> DesignNumbers:
    """Exact sampler accuracies under the data law, averaged over `problems` (default: 1000 held out)."""
    design = design or GymDesign()
    check(isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0,
          f"alpha must be a finite number > 0, got {alpha!r}", "alpha", alpha)
    problems = eval_problems(1000, seed=0) if problems is None else list(problems)
    check(len(problems) > 0, "need at least one problem", "problems", problems)
    rows = [problem_numbers(p, design, float(alpha)) for p in problems]
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
    return DesignNumbers(alpha=float(alpha), problems=len(problems), **mean)


def level_numbers(spec: GymSpec | str = "gym-mixed", n: int = 200, alpha: float = 4.0,
                  seed: int = 0) -> dict[int, DesignNumbers]:
    """design_numbers per level of gym `spec` (keyed by digits), each over the level's held-out problems."""
    spec = get_spec(spec)
    return {level.digits: design_numbers(spec.level_problems(level, n, seed), level, alpha) for level in spec.levels}
