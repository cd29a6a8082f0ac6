"""What a task is: problems with formatted prompts, an answer extractor and a grader.

A task is a frozen dataclass whose fields are its options (a timeout, a grader kind, a shuffle seed);
`options()` records them in a run's configuration. Tasks and problems are plain picklable values, so
grading can run in worker processes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar


@dataclass(frozen=True)
class Problem:
    """One benchmark item. `prompt` is exactly what the model is given (template applied)."""

    id: str
    prompt: str
    answer: str | None = None  # the gold answer (a math expression, a letter); None when ungraded
    meta: Mapping[str, Any] = field(default_factory=dict)  # task-specific: tests, entry point, source...


@dataclass(frozen=True)
class Grade:
    """The verdict on one completion. A grader failure is `correct=False, error=True` with the cause."""

    correct: bool | None  # None: this task is not graded here (AlpacaEval is judged by alpaca_eval)
    extracted: str | None  # what was compared: the boxed answer, the chosen letter, the executed code
    reason: str  # why, in a few words: "equivalent", "no \\boxed{} answer", "AssertionError", ...
    error: bool = False  # the grader itself crashed or timed out (so it is never mistaken for a miss)


class Task:
    """Base class: subclasses set `name`, `version` and implement `load` and `check` (or `grade`)."""

    name: ClassVar[str]
    version: ClassVar[str]  # bump when prompts, data or grading change: it goes into every run.json
    # whether extract() of a partial completion means something: the runner records the running answer
    # at every checkpoint for such tasks (and grades it), to learn when a problem has had enough
    answers_at_checkpoints: ClassVar[bool] = True

    def load(self, data: str | None) -> list[Problem]:
        """The task's problems, from the shipped copy or the hub (data=None) or from the file `data`."""
        raise NotImplementedError

    def extract(self, text: str) -> str | None:
        """The answer a completion gives (None: it gives none). Cheap: runs in the main process."""
        raise NotImplementedError

    def check(self, problem: Problem, answer: str) -> Grade:
        """Compare an extracted answer with the gold one."""
        raise NotImplementedError

    def grade(self, problem: Problem, completion: str, finished: bool | None = None) -> Grade:
        """The verdict on a whole completion: extract, then check. `finished` says whether the sampler
        ended it with EOS (False: cut at max_new_tokens); most tasks grade what is there regardless."""
        answer = self.extract(completion)
        if answer is None:
            return Grade(False, None, "no answer found")
        return self.check(problem, answer)

    def export(self, run_dir: Path, rows: Sequence[Mapping[str, Any]], problems: Sequence[Problem],
               generator: str) -> list[Path]:
        """Write task-specific output files (e.g. AlpacaEval's model outputs) from a run's rows."""
        return []

    def environment(self) -> dict[str, Any]:
        """What grading achieves on this machine, recorded in run.json (e.g. the code sandbox's
        isolation); raises PowerSampleError where this task must not grade here. Called before a run."""
        return {}

    def options(self) -> dict[str, Any]:
        """This task's settings, as recorded in run.json."""
        return asdict(self) if hasattr(self, "__dataclass_fields__") else {}
