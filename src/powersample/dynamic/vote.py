"""Answers from k chains: majority vote over equivalent answers, and highest-log-likelihood selection.

Equivalence is the task's own: two answers are the same when the task's `check` accepts one given the
other as the gold answer (math-verify for math, exact match for the gym and for letters). Votes go to
clusters of equivalent answers; a tie between clusters goes to the one holding the chain with the
higher base log-likelihood; the chosen chain is that cluster's highest-log p chain (its completion is
the answer given). Chains with no answer yet do not vote.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..errors import PowerSampleError
from ..tasks.base import Problem, Task

Same = Callable[[str, str], bool]
LOGP_DIGITS = 4  # log p is compared to 1e-4 nats: batch composition moves float32 sums by ~1e-6


def equivalence(task: Task) -> Same:
    """`same(a, b)`: the task judges b right when a is the gold answer (memoised; a grader error: not same)."""
    if type(task).check is Task.check:  # no answers to compare (HumanEval, AlpacaEval grade whole outputs)
        raise PowerSampleError(f"task {task.name!r} has no answers to compare, so its chains cannot vote", "task",
                               task.name)
    memo: dict[tuple[str, str], bool] = {}

    def same(a: str, b: str) -> bool:
        if a == b:
            return True
        key = (a, b) if a <= b else (b, a)  # equivalence is symmetric; ask the grader once per pair
        if key not in memo:
            g = task.check(Problem(id="vote", prompt="", answer=key[0]), key[1])
            memo[key] = bool(g.correct) and not g.error
        return memo[key]

    return same


def clusters(answers: Sequence[str | None], same: Same) -> list[int | None]:
    """Cluster index of each answer (None for no answer); a new answer joins the first cluster whose
    first member it equals."""
    reps: list[str] = []
    out: list[int | None] = []
    for a in answers:
        if a is None:
            out.append(None)
            continue
        c = next((i for i, r in enumerate(reps) if same(r, a)), None)
        if c is None:
            reps.append(a)
            c = len(reps) - 1
        out.append(c)
    return out


def vote_counts(answers: Sequence[str | None], logps: Sequence[float], same: Same) -> list[tuple[int, float, int]]:
    """(votes, best log p, best chain) per cluster, leading cluster first (ties: the higher log p).

    Log p is compared rounded to LOGP_DIGITS: the same completion scored in another batch differs in
    the last float digits, and a tie between copies of one completion must go to the first chain
    whatever batch ran it (so a live dynamic run picks the chain its replay picks)."""
    best: dict[int, tuple[int, float, int]] = {}
    for j, c in enumerate(clusters(answers, same)):
        if c is None:
            continue
        n, lp, chain = best.get(c, (0, -float("inf"), -1))
        lpj = round(logps[j], LOGP_DIGITS)
        best[c] = (n + 1, lp, chain) if lpj <= lp else (n + 1, lpj, j)
    return sorted(best.values(), key=lambda t: (-t[0], -t[1], t[2]))


def majority(answers: Sequence[str | None], logps: Sequence[float], same: Same) -> int:
    """Index of the chain whose answer the vote picks; with no answer at all, the highest-log p chain."""
    counts = vote_counts(answers, logps, same)
    return counts[0][2] if counts else best_logp(logps)


def best_logp(logps: Sequence[float]) -> int:
    """Index of the chain with the highest base log-likelihood (the first on a tie)."""
    if not logps:
        raise PowerSampleError("no chains to choose from", "chains")
    return max(range(len(logps)), key=lambda j: (logps[j], -j))


def maj_at_k(rows_by_problem: Sequence[Sequence[dict]], same: Same, k: int) -> float:
    """Share of problems whose vote over samples 0..k-1 (graded rows: `extracted`, `logp`, `correct`) is right."""
    hits = []
    for rows in rows_by_problem:
        first = sorted(rows, key=lambda r: r["sample_index"])[:k]
        chosen = majority([r.get("extracted") for r in first], [r["logp"] for r in first], same)
        hits.append(bool(first[chosen].get("correct")))
    return sum(hits) / len(hits) if hits else float("nan")
