"""The data-generating process: sample a completion for a problem, or enumerate all of them exactly.

Both use the same per-column error law (`column_errors`), so the corpus the model trains on and the
exact numbers in `exact.py` describe one and the same distribution.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from ..errors import check
from .design import GymDesign, GymSpec, get_spec
from .task import GymProblem, train_problem

ANSWER = "A:"  # a completion ends with ANSWER + the number, then EOS
Style = Literal["worked", "flawed", "shortcut"]


@dataclass(frozen=True)
class Example:
    """One training document: a problem, a completion (without EOS) and the style that wrote it."""

    problem: GymProblem
    completion: str
    style: Style

    @property
    def text(self) -> str:
        return self.problem.prompt + self.completion


def _digits(n: int, count: int) -> list[int]:
    """The `count` lowest digits of n, units first."""
    return [n // 10 ** i % 10 for i in range(count)]


def column_errors(column_sum: int, design: GymDesign) -> list[tuple[int, float]]:
    """(offset, probability) for one column: right, or off by one either way, staying in [0, 19]."""
    eps = design.step_error_rate
    ok = [d for d in (+1, -1) if 0 <= column_sum + d <= 19]
    return [(0, 1.0 - eps)] + [(d, eps / len(ok)) for d in ok if eps > 0]


def worked_solution(problem: GymProblem, offsets: tuple[int, ...] | None = None) -> str:
    """Column-by-column addition; offsets[i] is added to column i's sum (None or 0s = correct)."""
    n = problem.digits
    offsets = (0,) * n if offsets is None else tuple(offsets)
    check(len(offsets) == n, f"need one offset per column, got {offsets!r}", "offsets", offsets)
    steps, value, carry = [], 0, 0
    for col, (x, y, off) in enumerate(zip(_digits(problem.a, n), _digits(problem.b, n), offsets, strict=True)):
        s = x + y + carry + off
        check(0 <= s <= 19, f"column sum {s} out of range: offsets {offsets!r}", "offsets", offsets)
        steps.append(f"{x}+{y}+{carry}={s:02d}")
        carry, d = divmod(s, 10)
        value += d * 10 ** col
    value += carry * 10 ** n
    return ";".join(steps) + f";{ANSWER}{value}"


def shortcut_guesses(problem: GymProblem, design: GymDesign) -> list[str]:
    """Every shortcut completion (equally likely): the leading digits summed, then `guess_digits`
    random digits, then zeros down to the units (3 digits, 2 guessed: "A:7" + "31")."""
    n, k = problem.digits, design.guess_digits
    check(n == design.digits, f"a {n}-digit problem needs a {n}-digit design, got {design}", "design", design)
    head = problem.a // 10 ** (n - 1) + problem.b // 10 ** (n - 1)
    zeros = "0" * (n - 1 - k)
    if k == 0:
        return [f"{ANSWER}{head}{zeros}"]
    return [f"{ANSWER}{head}{tail:0{k}d}{zeros}" for tail in range(10 ** k)]


def _worked_variants(problem: GymProblem, design: GymDesign) -> list[tuple[tuple[int, ...], float]]:
    """All offset patterns with their probabilities; each column's law depends on the carry so far."""
    variants: list[tuple[tuple[int, ...], float]] = [((), 1.0)]
    da, db = _digits(problem.a, problem.digits), _digits(problem.b, problem.digits)
    for col in range(problem.digits):
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


def completion_distribution(problem: GymProblem, design: GymDesign | None = None) -> dict[str, float]:
    """Exact law of a completion (text without EOS) given the problem; the values sum to 1."""
    design = design or GymDesign(digits=problem.digits)
    dist: dict[str, float] = {}
    for offs, p in _worked_variants(problem, design):
        dist[worked_solution(problem, offs)] = (1 - design.shortcut_rate) * p
    guesses = shortcut_guesses(problem, design)
    for g in guesses:  # a guess never starts with a digit, so it never collides with a worked text
        dist[g] = dist.get(g, 0.0) + design.shortcut_rate / len(guesses)
    return dist


def sample_completion(problem: GymProblem, design: GymDesign, rng: random.Random) -> Example:
    """One draw from `completion_distribution(problem, design)`."""
    if rng.random() < design.shortcut_rate:
        return Example(problem, rng.choice(shortcut_guesses(problem, design)), "shortcut")
    da, db = _digits(problem.a, problem.digits), _digits(problem.b, problem.digits)
    offs: tuple[int, ...] = ()
    for col in range(problem.digits):
        law = column_errors(da[col] + db[col] + _carry_into(da, db, offs), design)
        offs += (rng.choices([d for d, _ in law], weights=[q for _, q in law])[0],)
    return Example(problem, worked_solution(problem, offs), "flawed" if any(offs) else "worked")


def sample_example(spec: GymSpec, rng: random.Random, design: GymDesign | None = None) -> Example:
    """One training document of gym `spec`: a uniformly random level (none drawn when there is one),
    a training-side problem of that level, and a completion from the level's design (or `design`)."""
    level = spec.levels[0] if len(spec.levels) == 1 else rng.choice(spec.levels)
    design = design or level
    return sample_completion(train_problem(rng, level.digits, spec.problem_name(level)), design, rng)


def corpus(n: int, seed: int = 0, design: GymDesign | None = None, spec: GymSpec | str = "gym") -> list[Example]:
    """`n` training documents from training-side problems, reproducible from `seed`."""
    spec = get_spec(spec)
    check(isinstance(n, int) and n >= 0, f"n must be an integer >= 0, got {n!r}", "n", n)
    rng = random.Random(f"powersample.gym.corpus/{seed}" + ("" if spec.name == "gym" else f"/{spec.name}"))
    return [sample_example(spec, rng, design) for _ in range(n)]
