"""The gym's problems: 3-digit additions "Q:357+468\\n" whose answer a completion states as "A:825".

A fixed 10% of all (a, b) pairs, chosen by a hash of the pair, is held out for evaluation and never
trained on, so "disjoint from training" holds by construction rather than by luck of the seeds.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

from ..errors import PowerSampleError, check

LOW, HIGH = 100, 999  # operands are 3-digit numbers
HELDOUT_PERCENT = 10  # share of (a, b) pairs reserved for evaluation
_PROMPT = re.compile(r"Q:(\d{3})\+(\d{3})\n")


@dataclass(frozen=True)
class Problem:
    """One addition a + b with 3-digit operands."""

    a: int
    b: int

    def __post_init__(self):
        for name in ("a", "b"):
            value = getattr(self, name)
            check(isinstance(value, int) and LOW <= value <= HIGH,
                  f"operand {name} must be an integer in [{LOW}, {HIGH}], got {value!r}", name, value)

    @property
    def id(self) -> str:
        """Stable id, the same whichever seed drew the problem."""
        return f"add-{self.a}+{self.b}"

    @property
    def prompt(self) -> str:
        """What the model is given (the tokenizer adds BOS in front)."""
        return f"Q:{self.a}+{self.b}\n"

    @property
    def answer(self) -> int:
        return self.a + self.b

    @property
    def heldout(self) -> bool:
        return is_heldout(self.a, self.b)


def is_heldout(a: int, b: int) -> bool:
    """True for the fixed ~10% of pairs reserved for evaluation (a hash, so spread over all sizes)."""
    h = hashlib.blake2b(f"{a}+{b}".encode(), digest_size=4).digest()
    return int.from_bytes(h, "little") % 100 < HELDOUT_PERCENT


def train_problem(rng: random.Random) -> Problem:
    """A uniformly random pair from the training side of the split."""
    while True:  # rejection: ~1.1 draws on average
        a, b = rng.randint(LOW, HIGH), rng.randint(LOW, HIGH)
        if not is_heldout(a, b):
            return Problem(a, b)


def eval_problems(n: int, seed: int = 0) -> list[Problem]:
    """`n` distinct held-out problems, the same list for the same (n, seed)."""
    check(isinstance(n, int) and n > 0, f"n must be a positive integer, got {n!r}", "n", n)
    check(isinstance(seed, int), f"seed must be an integer, got {seed!r}", "seed", seed)
    rng = random.Random(f"powersample.gym.eval/{seed}")
    seen: set[tuple[int, int]] = set()
    out: list[Problem] = []
    while len(out) < n:
        a, b = rng.randint(LOW, HIGH), rng.randint(LOW, HIGH)
        if (a, b) not in seen and is_heldout(a, b):
            seen.add((a, b))
            out.append(Problem(a, b))
    return out


def parse_prompt(prompt: str) -> Problem:
    """The Problem a prompt string poses; raises PowerSampleError for anything else."""
    m = _PROMPT.fullmatch(prompt) if isinstance(prompt, str) else None
    if m is None:
        raise PowerSampleError(f"not a gym prompt (expected 'Q:<3 digits>+<3 digits>\\n'): {prompt!r}",
                               "prompt", prompt)
    return Problem(int(m.group(1)), int(m.group(2)))
