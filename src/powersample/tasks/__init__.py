"""Benchmark tasks: data, prompt format and grader, one module each.

    from powersample.tasks import get_task
    task = get_task("math500")            # or get_task("jsonl", grader="exact")
    problems = task.load(None)            # shipped / hub data; or task.load("my.jsonl")
    task.grade(problems[0], "... \\boxed{3}")  # -> Grade(correct, extracted, reason, error)

Tasks: math500, humaneval, gpqa, alpacaeval, gym, gym-mixed, jsonl (see `TASKS.names()`). Each task module is
imported only when asked for.
"""

from __future__ import annotations

from typing import Any

from ..registry import Registry
from .base import Grade, Problem, Task

TASKS: Registry[type[Task]] = Registry("task")
TASKS.register("math500", "powersample.tasks.math500:Math500")
TASKS.register("humaneval", "powersample.tasks.humaneval:HumanEval")
TASKS.register("gpqa", "powersample.tasks.gpqa:GPQA")
TASKS.register("alpacaeval", "powersample.tasks.alpacaeval:AlpacaEval")
TASKS.register("gym", "powersample.tasks.gym:GymTask")
TASKS.register("gym-mixed", "powersample.tasks.gym:GymMixedTask")
TASKS.register("jsonl", "powersample.tasks.jsonl:JsonlTask")


def get_task(name: str, **options: Any) -> Task:
    """An instance of task `name` with `options` (its dataclass fields); unknown options raise."""
    from dataclasses import fields

    from ..errors import PowerSampleError

    cls = TASKS.get(name)
    types = {f.name: f.type for f in fields(cls)}
    unknown = sorted(set(options) - set(types))
    if unknown:
        raise PowerSampleError(f"task {name!r} has no option(s) {unknown}; its options are: "
                               f"{', '.join(sorted(types)) or 'none'}", "task_options", unknown)
    return cls(**{k: _coerce(name, k, v, str(types[k])) for k, v in options.items()})


def _coerce(task: str, key: str, value: Any, kind: str) -> Any:
    """Strings from the command line (--task-option timeout=3) become the field's int/float/bool."""
    from ..errors import PowerSampleError

    if not isinstance(value, str) or kind not in ("int", "float", "bool"):
        return value
    try:
        if kind == "bool":
            if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("1", "true", "yes")
        return int(value) if kind == "int" else float(value)
    except ValueError as e:
        raise PowerSampleError(f"task {task!r} option {key} must be a {kind}, got {value!r}", key,
                               value) from e


__all__ = ["TASKS", "get_task", "Task", "Problem", "Grade", "Registry"]
