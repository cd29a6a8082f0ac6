"""MATH500: the 500-problem MATH test subset (Lightman et al. 2023), as used by the power-sampling paper.

Prompt (Karan & Du's base-model chain-of-thought prompt, a single line):
    Can you solve the following math problem? {problem} Please reason step by step, and put your
    final answer within \\boxed{}.
Grading: the content of the completion's LAST \\boxed{} against the gold answer with math-verify.

Data: shipped (powersample/tasks/data/MATH500.json.gz, MIT), or `--data` a .json/.jsonl with fields
`problem` (or `prompt`), `answer`, and optionally `unique_id` (or `id`), e.g. HuggingFaceH4/MATH-500.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import files
from .answers import last_boxed
from .base import Grade, Problem, Task
from .mathcheck import math_equal

PROMPT = ("Can you solve the following math problem? {problem} "
          "Please reason step by step, and put your final answer within \\boxed{{}}.")


def math_prompt(problem: str) -> str:
    """The paper's base-model prompt around a problem statement."""
    return PROMPT.format(problem=problem)


@dataclass(frozen=True)
class Math500(Task):
    timeout: int = 5  # seconds per math-verify parse / comparison

    name = "math500"
    version = "2"  # 2: trailing punctuation, \boxed12, choice letters and units (issue 9)

    def load(self, data: str | None) -> list[Problem]:
        records = files.read_shipped("MATH500.json.gz") if data is None else files.read_records(data)
        out = []
        for r in records:
            pid = r.field(("unique_id", "id"), required=False) or f"math500/{r.index}"
            out.append(Problem(id=pid, prompt=math_prompt(r.field(("problem", "prompt"))),
                               answer=r.field("answer")))
        return out

    def extract(self, text: str) -> str | None:
        return last_boxed(text)

    def check(self, problem: Problem, answer: str) -> Grade:
        return math_equal(problem.answer, answer, self.timeout)

    def grade(self, problem: Problem, completion: str, finished: bool | None = None) -> Grade:
        answer = self.extract(completion)
        if answer is None:
            return Grade(False, None, "no \\boxed{} answer")
        return self.check(problem, answer)
