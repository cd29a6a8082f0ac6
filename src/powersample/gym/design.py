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

A GymSpec names a gym and its difficulty levels, one GymDesign each. The first gym ("gym") has one
level (3 digits). The mixed gym ("gym-mixed") has four, 1..4 digit columns, whose shortcut is ever less
often right and, from level 2 on, ever more tempting, so that one chain settles a 1-digit sum while a 4-digit one needs
several chains and a vote (docs/gym.md, "The mixed gym").
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import PowerSampleError, check


@dataclass(frozen=True)
class GymDesign:
    """Mixture weights of the training corpus (for one difficulty level)."""

    shortcut_rate: float = 0.6  # P(first token starts a shortcut guess)
    step_error_rate: float = 0.08  # P(a worked column's sum is off by one)
    guess_digits: int = 2  # random tens/units digits of a shortcut guess (10^k continuations); 0: "A:700"
    digits: int = 3  # operand length = worked columns; the shortcut writes the leading column's sum

    def __post_init__(self):
        check(0 < self.shortcut_rate < 1, f"shortcut_rate must be in (0, 1), got {self.shortcut_rate!r}",
              "shortcut_rate", self.shortcut_rate)
        check(0 <= self.step_error_rate < 1,
              f"step_error_rate must be in [0, 1), got {self.step_error_rate!r}",
              "step_error_rate", self.step_error_rate)
        check(isinstance(self.digits, int) and 1 <= self.digits <= 4,
              f"digits must be an integer in [1, 4], got {self.digits!r}", "digits", self.digits)
        check(isinstance(self.guess_digits, int) and 0 <= self.guess_digits < self.digits,
              f"guess_digits must be an integer in [0, {self.digits - 1}], got {self.guess_digits!r}",
              "guess_digits", self.guess_digits)


@dataclass(frozen=True)
class GymSpec:
    """A gym: its name (the task name), its levels (drawn uniformly in training) and its model folder."""

    name: str
    levels: tuple[GymDesign, ...]
    model_dir: str  # folder under powersample/gym/

    def problem_name(self, design: GymDesign) -> str:
        """The id prefix of a level's problems: "add" in a one-level gym, "add2" etc. when levels differ."""
        return "add" if len(self.levels) == 1 else f"add{design.digits}"

    def eval_problems(self, per_level: int, seed: int = 0) -> list:
        """`per_level` held-out problems of each level, level by level (task.eval_problems per level)."""
        from .task import eval_problems

        return [p for d in self.levels for p in eval_problems(per_level, seed, d.digits, self.problem_name(d))]

    def level_problems(self, design: GymDesign, n: int, seed: int = 0) -> list:
        """Up to `n` held-out problems of one level: all of them but one-digit sums, which have only 100
        pairs and give at most 50 (for measurements that ask every level for the same n)."""
        from .task import eval_problems

        return eval_problems(min(n, 50) if design.digits == 1 else n, seed, design.digits, self.problem_name(design))


GYM = GymSpec("gym", (GymDesign(),), "model")
# Levels by digit columns. Level 1's shortcut is the sum itself (always right: an easy problem); from
# level 2 on it guesses the lower digits, and it is taken more often the longer the sum (0.4, 0.6, 0.7),
# as a model is tempted to guess at a long computation. Step errors stay 0.08 per column, so a longer
# worked chain is also less often right (0.92^digits).
GYM_MIXED = GymSpec("gym-mixed", (
    GymDesign(shortcut_rate=0.6, guess_digits=0, digits=1),
    GymDesign(shortcut_rate=0.4, guess_digits=1, digits=2),
    GymDesign(shortcut_rate=0.6, guess_digits=2, digits=3),
    GymDesign(shortcut_rate=0.7, guess_digits=3, digits=4),
), "model_mixed")
SPECS = {spec.name: spec for spec in (GYM, GYM_MIXED)}


def get_spec(name: str | GymSpec) -> GymSpec:
    """A gym by name ("gym", "gym-mixed"), or the spec itself."""
    if isinstance(name, GymSpec):
        return name
    if name not in SPECS:
        raise PowerSampleError(f"unknown gym {name!r}; the gyms are {sorted(SPECS)}", "gym", name)
    return SPECS[name]
