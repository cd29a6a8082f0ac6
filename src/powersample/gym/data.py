"""The data-generating process: sample a completion for a problem, or enumerate all of them exactly.

Both use the same per-column error law (`column_errors`), so the corpus the model trains on and the
exact numbers in `exact.py` describe one and the same distribution.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from ..errors import check
from .design import GymDesign
from .task import Problem, train_problem

ANSWER = "A:"  # a completion ends with ANSWER + the number, then EOS
Style = Literal["worked", "flawed", "shortcut"]


@dataclass(frozen=True)
class Example:
    """One training document: a problem, a completion (without EOS) and the style that wrote it."""

    problem: Problem
    completion: str
    style: Style

    @property
    def text(self) -> str:
        return self.problem.prompt + self.completion


def _digits(n: int) -> list[int]:
    """Units, tens, hundreds."""
    return [n % 10, n // 10 % 10, n // 100]


def column_errors(column_sum: int, design: GymDesign) -> list[tuple[int, float]]:
    """(offset, probability) for one column: right, or off by one either way, staying in [0, 19]."""
    eps = design.step_error_rate
    ok = [d for d in (+1, -1) if 0 <= column_sum + d <= 19]
    return [(0, 1.0 - eps)] + [(d, eps / len(ok)) for d in ok if eps > 0]


def worked_solution(problem: Problem, offsets: tuple[int, ...] = (0, 0, 0)) -> str:
    """Column-by-column addition; offsets[i] is added to column i's sum (0 everywhere = correct)."""
    check(len(offsets) == 3, f"need one offset per column, got {offsets!r}", "offsets", offsets)
    steps, out, carry = [], [], 0
    for x, y, off in zip(_digits(problem.a), _digits(problem.b), offsets, strict=True):
        s = x + y + carry + off
        check(0 <= s <= 19, f"column sum {s} out of range: offsets {offsets!r}", "offsets", offsets)
        steps.append(f"{x}+{y}+{carry}={s:02d}")
        carry, d = divmod(s, 10)
        out.append(d)
    value = carry * 1000 + out[2] * 100 + out[1] * 10 + out[0]
    return ";".join(steps) + f";{ANSWER}{value}"


def shortcut_guesses(problem: Problem, design: GymDesign) -> list[str]:
    """Every shortcut completion (equally likely): hundreds digits summed, the rest guessed."""
    head = problem.a // 100 + problem.b // 100
    k = design.guess_digits
    if k == 0:
        return [f"{ANSWER}{head}00"]
    return [f"{ANSWER}{head}{tail:0{k}d}{'0' * (2 - k)}" for tail in range(10 ** k)]


def _worked_variants(problem: Problem, design: GymDesign) -> list[tuple[tuple[int, ...], float]]:
    """All offset patterns with their probabilities; each column's law depends on the carry so far."""
    variants: list[tuple[tuple[int, ...], float]] = [((), 1.0)]
    da, db = _digits(problem.a), _digits(problem.b)
    for col in range(3):
        nxt = []
        for offs, p in variants:
            carry = _carry_into(da, db, offs)
            for d, q in column_errors(da[col] + db[col] + carry, design):
                nxt.append((offs + (d,), p * q))
        variants = nxt
    return variants


def _carry_into(da: list[int], db: list[int], offsets: tuple[int, ...]) -> int:
    carry = 0
    for col, off in enumerate(offsets):
        carry = (da[col] + db[col] + carry + off) // 10
    return carry


def completion_distribution(problem: Problem, design: GymDesign | None = None) -> dict[str, float]:
    """Exact law of a completion (text without EOS) given the problem; the values sum to 1."""
    design = design or GymDesign()
    dist: dict[str, float] = {}
    for offs, p in _worked_variants(problem, design):
        dist[worked_solution(problem, offs)] = (1 - design.shortcut_rate) * p
    guesses = shortcut_guesses(problem, design)
    for g in guesses:  # a guess never starts with a digit, so it never collides with a worked text
        dist[g] = dist.get(g, 0.0) + design.shortcut_rate / len(guesses)
    return dist


def sample_completion(problem: Problem, design: GymDesign, rng: random.Random) -> Example:
    """One draw from `completion_distribution(problem, design)`."""
    if rng.random() < design.shortcut_rate:
        return Example(problem, rng.choice(shortcut_guesses(problem, design)), "shortcut")
    da, db = _digits(problem.a), _digits(problem.b)
    offs: tuple[int, ...] = ()
    for col in range(3):
        law = column_errors(da[col] + db[col] + _carry_into(da, db, offs), design)
        offs += (rng.choices([d for d, _ in law], weights=[q for _, q in law])[0],)
    return Example(problem, worked_solution(problem, offs), "flawed" if any(offs) else "worked")


def corpus(n: int, seed: int = 0, design: GymDesign | None = None) -> list[Example]:
    """`n` training documents from training-side problems, reproducible from `seed`."""
    design = design or GymDesign()
    check(isinstance(n, int) and n >= 0, f"n must be an integer >= 0, got {n!r}", "n", n)
    rng = random.Random(f"powersample.gym.corpus/{seed}")
    return [sample_completion(train_problem(rng), design, rng) for _ in range(n)]
