"""The gym's problems: additions "Q:357+468\\n" whose answer a completion states as "A:825".

A problem has `digits`-digit operands (3 in the first gym, 1..4 in the mixed gym). A fixed 10% of all
(a, b) pairs, chosen by a hash of the pair, is held out for evaluation and never trained on, so
"disjoint from training" holds by construction rather than by luck of the seeds. One-digit sums (100
pairs, a lookup table) are the exception: too few to split, they are both trained on and evaluated.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

from ..errors import PowerSampleError, check

HELDOUT_PERCENT = 10  # share of (a, b) pairs reserved for evaluation
MAX_DIGITS = 4
_PROMPT = re.compile(r"Q:(\d{1,4})\+(\d{1,4})\n")


def operand_range(digits: int) -> tuple[int, int]:
    """Smallest and largest `digits`-digit operand (one digit: 0..9; more: no leading zero)."""
    check(isinstance(digits, int) and 1 <= digits <= MAX_DIGITS,
          f"digits must be an integer in [1, {MAX_DIGITS}], got {digits!r}", "digits", digits)
    return (0 if digits == 1 else 10 ** (digits - 1)), 10 ** digits - 1


@dataclass(frozen=True)
class GymProblem:
    """One addition a + b with `digits`-digit operands; `name` starts its id ("add", or "add2" by level)."""

    a: int
    b: int
    digits: int = 3
    name: str = "add"

    def __post_init__(self):
        low, high = operand_range(self.digits)
        for field in ("a", "b"):
            value = getattr(self, field)
            check(isinstance(value, int) and low <= value <= high,
                  f"operand {field} must be an integer in [{low}, {high}], got {value!r}", field, value)

    @property
    def id(self) -> str:
        """Stable id, the same whichever seed drew the problem."""
        return f"{self.name}-{self.a}+{self.b}"

    @property
    def prompt(self) -> str:
        """What the model is given (the tokenizer adds BOS in front)."""
        return f"Q:{self.a}+{self.b}\n"

    @property
    def answer(self) -> int:
        return self.a + self.b

    @property
    def heldout(self) -> bool:
        return self.digits == 1 or is_heldout(self.a, self.b)


def is_heldout(a: int, b: int) -> bool:
    """True for the fixed ~10% of pairs reserved for evaluation (a hash, so spread over all sizes)."""
    h = hashlib.blake2b(f"{a}+{b}".encode(), digest_size=4).digest()
    return int.from_bytes(h, "little") % 100 < HELDOUT_PERCENT


def train_problem(rng: random.Random, digits: int = 3, name: str = "add") -> GymProblem:
    """A uniformly random pair from the training side of the split."""
    low, high = operand_range(digits)
    while True:  # rejection: ~1.1 draws on average
        a, b = rng.randint(low, high), rng.randint(low, high)
        if digits == 1 or not is_heldout(a, b):
            return GymProblem(a, b, digits, name)


def eval_problems(n: int, seed: int = 0, digits: int = 3, name: str = "add") -> list[GymProblem]:
    """`n` distinct held-out problems, the same list for the same (n, seed)."""
    check(isinstance(n, int) and n > 0, f"n must be a positive integer, got {n!r}", "n", n)
    check(isinstance(seed, int), f"seed must be an integer, got {seed!r}", "seed", seed)
    low, high = operand_range(digits)
    pool = (high - low + 1) ** 2 * (1 if digits == 1 else HELDOUT_PERCENT / 100)
    check(n <= pool // 2, f"only about {int(pool)} held-out {digits}-digit problems: ask for at most "
          f"{int(pool // 2)}, got {n}", "n", n)
    tag = "" if (digits, name) == (3, "add") else f"/{digits}"  # the first gym's lists stay as they were
    rng = random.Random(f"powersample.gym.eval/{seed}{tag}")
    seen: set[tuple[int, int]] = set()
    out: list[GymProblem] = []
    while len(out) < n:
        a, b = rng.randint(low, high), rng.randint(low, high)
        if (a, b) not in seen and (digits == 1 or is_heldout(a, b)):
            seen.add((a, b))
            out.append(GymProblem(a, b, digits, name))
    return out


def parse_prompt(prompt: str) -> GymProblem:
    """The GymProblem a prompt string poses (operands of equal length); raises PowerSampleError otherwise."""
    m = _PROMPT.fullmatch(prompt) if isinstance(prompt, str) else None
    ok = m is not None and len(m.group(1)) == len(m.group(2)) and all(
        len(g) == 1 or g[0] != "0" for g in m.groups())
    if not ok:
        raise PowerSampleError(f"not a gym prompt (expected 'Q:<n digits>+<n digits>\\n', n = 1..4): {prompt!r}",
                               "prompt", prompt)
    digits = len(m.group(1))
    return GymProblem(int(m.group(1)), int(m.group(2)), digits, "add" if digits == 3 else f"add{digits}")
