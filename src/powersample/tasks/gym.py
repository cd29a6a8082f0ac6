"""The reasoning gym (powersample.gym): held-out 3-digit additions for the shipped tiny model.

For offline tests and demos: `powersample eval --task gym --model gym`. Problems come from the gym's
`eval_problems(count, problem_seed)` (the same list for the same count and seed, disjoint from the
gym model's training pairs); grading is the gym's own grader (one final "A:<number>", equal to a + b,
and a completion cut off before EOS is wrong).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import PowerSampleError, check
from .base import Grade, Problem, Task


@dataclass(frozen=True)
class GymTask(Task):
    count: int = 200  # how many held-out problems to draw (then --limit / --shard select from them)
    problem_seed: int = 0  # which problems; independent of the sampling seed

    name = "gym"
    version = "1"

    def __post_init__(self):
        check(isinstance(self.count, int) and self.count > 0, f"count must be a positive integer, got "
              f"{self.count!r}", "count", self.count)

    def load(self, data: str | None) -> list[Problem]:
        if data is not None:
            raise PowerSampleError("the gym task generates its problems; it takes no --data", "data", data)
        from ..gym import eval_problems

        return [Problem(id=str(p.id), prompt=str(p.prompt), answer=str(p.answer))
                for p in eval_problems(self.count, self.problem_seed)]

    def extract(self, text: str) -> str | None:
        from ..gym import extract_answer

        value, _ = extract_answer(text)
        return None if value is None else str(value)

    def check(self, problem: Problem, answer: str) -> Grade:
        ok = answer == problem.answer
        return Grade(ok, answer, "correct" if ok else "wrong answer")

    def grade(self, problem: Problem, completion: str, finished: bool | None = None) -> Grade:
        from ..gym import grade

        g = grade(problem.prompt, completion, finished=finished)
        return Grade(bool(g.correct), None if g.answer is None else str(g.answer), g.reason)


@dataclass(frozen=True)
class GymMixedTask(GymTask):
    """The mixed gym: `count` held-out problems of each level (1..4-digit sums), ids like "add2-35+46".
    For `--model gym-mixed`; problems differ in how many chains they need (docs/gym.md)."""

    count: int = 50  # per level; level 1 has only 100 pairs, so at most 50

    name = "gym-mixed"
    version = "1"

    def load(self, data: str | None) -> list[Problem]:
        if data is not None:
            raise PowerSampleError("the gym task generates its problems; it takes no --data", "data", data)
        from ..gym import GYM_MIXED

        return [Problem(id=str(p.id), prompt=str(p.prompt), answer=str(p.answer))
                for p in GYM_MIXED.eval_problems(self.count, self.problem_seed)]
