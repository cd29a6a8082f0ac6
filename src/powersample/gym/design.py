"""The knobs of the data-generating process, and why they have the values they have.

A completion is one of two styles, chosen by its FIRST token:

- worked   (prob 1 - shortcut_rate): column-by-column addition "7+8+0=15;5+6+1=12;3+4+1=08;A:825".
  Each column's sum is off by one with prob step_error_rate (the error then propagates honestly).
- shortcut (prob shortcut_rate): "A:" and a guess at once: the sum of the hundreds digits, then
  `guess_digits` uniformly random digits, then zeros up to the tens and units, e.g. "A:731". Rarely
  right, and spread over 10^guess_digits continuations, so no single one is likely.

shortcut_rate > 1/2 makes "A" the most likely first token; per-token sharpening (temperature 1/alpha)
amplifies that choice, while p^alpha over whole sequences weighs each full continuation, where the
one correct worked solution (prob ~0.31) beats every guess (prob ~0.006) by far.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import check


@dataclass(frozen=True)
class GymDesign:
    """Mixture weights of the training corpus."""

    shortcut_rate: float = 0.6  # P(first token starts a shortcut guess)
    step_error_rate: float = 0.08  # P(a worked column's sum is off by one)
    guess_digits: int = 2  # random tens/units digits of a shortcut guess (10^k continuations); 0: "A:700"

    def __post_init__(self):
        check(0 < self.shortcut_rate < 1, f"shortcut_rate must be in (0, 1), got {self.shortcut_rate!r}",
              "shortcut_rate", self.shortcut_rate)
        check(0 <= self.step_error_rate < 1,
              f"step_error_rate must be in [0, 1), got {self.step_error_rate!r}",
              "step_error_rate", self.step_error_rate)
        check(isinstance(self.guess_digits, int) and 0 <= self.guess_digits <= 2,
              f"guess_digits must be an integer in [0, 2], got {self.guess_digits!r}",
              "guess_digits", self.guess_digits)
