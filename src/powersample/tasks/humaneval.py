"""HumanEval (Chen et al. 2021): 164 Python functions to complete, graded by running their unit tests.

Prompt: the problem's `prompt` (signature + docstring) as is; the model continues the code.
Completion: cut at the first of the usual HumanEval stop sequences ("\\ndef ", "\\nclass ",
"\\nif __name__", "\\nprint(", "\\n#"), i.e. at the first top-level statement after the function body,
as in the Codex paper; anything after is not executed.
Grading: prompt + completion + the problem's tests + `check(entry_point)` run in a separate,
resource-limited process (see sandbox.py); correct iff it exits cleanly within the time limit. Where
the sandbox cannot fully isolate that code, grading is refused unless `unsafe=True` (`--unsafe`).

Data: shipped (powersample/tasks/data/HumanEval.jsonl.gz, MIT), or `--data` a .jsonl with the
original fields task_id, prompt, test, entry_point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import files
from .base import Grade, Problem, Task
from .sandbox import Limits, require_isolation, run_python

STOP_SEQUENCES = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#")


def truncate(completion: str, stops: tuple[str, ...] = STOP_SEQUENCES) -> str:
    """The completion up to the first stop sequence."""
    cut = min((i for i in (completion.find(s) for s in stops) if i >= 0), default=len(completion))
    return completion[:cut]


def program(problem: Problem, completion: str) -> str:
    """The file that is executed: the prompt, the (truncated) completion, the tests and the check call."""
    return (f"{problem.prompt}{completion}\n\n{problem.meta['test']}\n\n"
            f"check({problem.meta['entry_point']})\n")


@dataclass(frozen=True)
class HumanEval(Task):
    timeout: float = 10.0  # wall seconds per program (the tests of one problem)
    memory_mb: int = 2048
    unsafe: bool = False  # run the code even where the sandbox cannot isolate it (see sandbox.py)

    name = "humaneval"
    version = "1"
    answers_at_checkpoints = False  # a partial program has no "running answer" worth recording

    def __post_init__(self):
        Limits(timeout=self.timeout, memory_mb=self.memory_mb)  # validates

    def load(self, data: str | None) -> list[Problem]:
        records = files.read_shipped("HumanEval.jsonl.gz") if data is None else files.read_records(data)
        out = []
        for r in records:
            meta = {"test": r.field("test"), "entry_point": r.field("entry_point")}
            solution = r.field("canonical_solution", required=False)
            if solution is not None:
                meta["canonical_solution"] = solution
            out.append(Problem(id=r.field(("task_id", "id")), prompt=r.field("prompt"), meta=meta))
        return out

    def environment(self) -> dict[str, Any]:
        return {"isolation": require_isolation(self.unsafe)}

    def extract(self, text: str) -> str | None:
        return truncate(text)

    def grade(self, problem: Problem, completion: str, finished: bool | None = None) -> Grade:
        code = truncate(completion)
        run = run_python(program(problem, code), Limits(timeout=self.timeout, memory_mb=self.memory_mb),
                         unsafe=self.unsafe)
        return Grade(run.passed, code, run.reason())
