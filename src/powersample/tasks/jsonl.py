"""Your own problems: `--data file.jsonl` (or .json array / .csv) with fields `prompt` and `answer`
(optional `id`; default the row position). The prompt is given to the model as written.

Graders (`--grader`):
  math  : the last \\boxed{} of the completion vs `answer` with math-verify (default)
  exact : the last \\boxed{} (or, without one, the last non-empty line) equals `answer` after trimming
          spaces and $, collapsing whitespace, ignoring case and a final period
  number: the last number in the completion equals `answer` as a number ("12 + 7 = 19." -> 19; commas
          between digits ignored): for small chat models that answer in prose, not in \\boxed{}
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import PowerSampleError, check
from . import files
from .answers import final_line, last_boxed, normalize_exact
from .base import Grade, Problem, Task
from .mathcheck import math_equal

GRADERS = ("math", "exact", "number")
_NUMBER = re.compile(r"-?\d(?:[\d,]*\d)?(?:\.\d+)?")


@dataclass(frozen=True)
class JsonlTask(Task):
    grader: str = "math"
    timeout: int = 5  # seconds per math-verify parse / comparison

    name = "jsonl"
    version = "2"  # 2: trailing punctuation, \boxed12, choice letters and units (issue 9)

    def __post_init__(self):
        check(self.grader in GRADERS, f"grader must be one of {', '.join(GRADERS)}, got {self.grader!r}",
              "grader", self.grader)

    def load(self, data: str | None) -> list[Problem]:
        if data is None:
            raise PowerSampleError("task jsonl grades your own problems: pass --data FILE.jsonl with fields "
                                   "prompt and answer (one JSON object per line)", "data")
        out = []
        for r in files.read_records(data):
            pid = r.field("id", required=False) or f"row{r.index}"
            out.append(Problem(id=pid, prompt=r.field("prompt"), answer=r.field("answer")))
        return out

    def extract(self, text: str) -> str | None:
        if self.grader == "number":
            found = _NUMBER.findall(text)
            return found[-1].replace(",", "") if found else None
        return last_boxed(text) if self.grader == "math" else final_line(text)

    def check(self, problem: Problem, answer: str) -> Grade:
        if self.grader == "math":
            return math_equal(problem.answer, answer, self.timeout)
        if self.grader == "number":
            try:
                ok = float(answer) == float(str(problem.answer).replace(",", ""))
            except ValueError:
                raise PowerSampleError(f"problem {problem.id}: grader number needs a numeric answer, got "
                                       f"{problem.answer!r}", "answer", problem.answer) from None
            return Grade(ok, answer, "same number" if ok else "different number")
        ok = normalize_exact(answer) == normalize_exact(problem.answer)
        return Grade(ok, answer, "exact match" if ok else "no exact match")
