"""HumanEval (Chen et al. 2021): 164 Python functions to complete, graded by running their unit tests.

Prompt: the problem's `prompt` (signature + docstring) as is; the model continues the code.
Completion: cut at the first of the usual HumanEval stop sequences ("\\ndef ", "\\nclass ",
"\\nif __name__", "\\nprint(", "\\n#"), i.e. at the first top-level statement after the function body,
as in the Codex paper; anything after is not executed.
Grading (sandbox.run_tests): prompt + completion run in one sandboxed process, as nobody; the prompt +
the problem's tests run in another, as another user, with the entry point bound to a proxy that calls
the completed function across a pipe (answers come back as plain data). Correct iff `check(entry_point)`
returns there within the time limit: the verdict is the tester's exit status, which the completion
cannot reach (sandbox.py's docstring says how, and what is left). The tests also use the prompt's own
helper functions (e.g. HumanEval/32's `poly`), never ones the completion redefined. Where the sandbox
cannot fully isolate that code, grading is refused unless `unsafe=True` (`--unsafe`).

Data: shipped (powersample/tasks/data/HumanEval.jsonl.gz, MIT), or `--data` a .jsonl with the
original fields task_id, prompt, test, entry_point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import files
from .base import Grade, Problem, Task
from .sandbox import Limits, require_isolation, run_tests

STOP_SEQUENCES = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#")


def truncate(completion: str, stops: tuple[str, ...] = STOP_SEQUENCES) -> str:
    """The completion up to the first stop sequence."""
    cut = min((i for i in (completion.find(s) for s in stops) if i >= 0), default=len(completion))
    return completion[:cut]


def tests(problem: Problem) -> str:
    """What the tester runs: the prompt (its imports and helper functions) and the problem's tests. A
    HumanEval prompt compiles as is (the entry point's body is its docstring); one that ends at a bare
    signature is cut before that last `def`."""
    prompt = problem.prompt
    try:
        compile(prompt, "prompt.py", "exec")
    except SyntaxError:
        prompt = prompt[:max(prompt.rfind("\ndef "), 0)]
    return f"{prompt}\n\n{problem.meta['test']}\n"


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
        run = run_tests(problem.prompt + code, tests(problem), problem.meta["entry_point"],
                        Limits(timeout=self.timeout, memory_mb=self.memory_mb), unsafe=self.unsafe)
        return Grade(run.passed, code, run.reason())
