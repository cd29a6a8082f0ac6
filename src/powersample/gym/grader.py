"""Grade a completion: exactly one "A:<number>", at the very end, equal to a + b.

Graded on the final answer alone (how math benchmarks grade): a worked chain with a slip that still
lands on the right number counts, and the chain is not parsed. Everything else is rejected with a
reason: no answer, two answers, junk after the answer, a number with leading zeros or a sign, or a
completion the sampler cut off before EOS (when the caller says so with finished=False).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import check
from .data import ANSWER
from .task import GymProblem, parse_prompt

_FINAL = re.compile(re.escape(ANSWER) + r"(0|[1-9][0-9]{0,5})")


@dataclass(frozen=True)
class GymGrade:
    """The verdict on one completion."""

    correct: bool
    answer: int | None  # the number the completion states, None when it states none (or is malformed)
    reason: str  # "correct", "wrong answer", or what is malformed

    def __bool__(self) -> bool:
        return self.correct


def extract_answer(completion: str) -> tuple[int | None, str]:
    """(number, "ok") when the completion ends with one well-formed answer, else (None, why)."""
    check(isinstance(completion, str), f"completion must be a str, got {type(completion).__name__}",
          "completion", completion)
    text = completion.rstrip()  # a trailing newline or space is harmless; anything else is junk
    count = text.count(ANSWER)
    if count == 0:
        return None, "no answer"
    if count > 1:
        return None, "more than one answer"
    tail = text[text.index(ANSWER):]
    m = _FINAL.fullmatch(tail)
    if m is None:
        return None, f"malformed answer {tail[:20]!r}"
    return int(m.group(1)), "ok"


def grade(problem: GymProblem | str, completion: str, finished: bool | None = None) -> GymGrade:
    """Is `completion` a right answer to `problem` (a GymProblem or its prompt)? finished=False rejects."""
    if isinstance(problem, str):
        problem = parse_prompt(problem)
    check(isinstance(problem, GymProblem), f"problem must be a GymProblem or a prompt, got {problem!r}",
          "problem", problem)
    answer, why = extract_answer(completion)
    if finished is False:  # cut off at max_new_tokens: "A:82" may be the start of "A:825"
        return GymGrade(False, answer, "truncated (no EOS)")
    if answer is None:
        return GymGrade(False, None, why)
    if answer != problem.answer:
        return GymGrade(False, answer, "wrong answer")
    return GymGrade(True, answer, "correct")
