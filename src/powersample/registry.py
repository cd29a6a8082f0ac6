"""One way to register things by name: methods, tasks and engines, each a `Registry`.

    TASKS = Registry("task")
    TASKS.register("math500", "powersample.tasks.math500:Math500")  # imported on first get()
    TASKS.get("math500")  # -> the Math500 class
    TASKS.get("math5000")  # PowerSampleError: unknown task 'math5000'. Did you mean 'math500'? ...

Lazy "module:attr" entries keep imports cheap: `powersample --help` lists every method without
importing torch, and a task's module (with math-verify, datasets...) is imported only when asked for.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator
from typing import Generic, TypeVar

from .errors import PowerSampleError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names to objects (or to "module:attr" strings resolved on first use)."""

    def __init__(self, kind: str):
        self.kind = kind  # what the entries are, for messages ("task", "method", "engine")
        self._entries: dict[str, T | str] = {}

    def register(self, name: str, obj: T | str) -> T | str:
        """Add `obj` (or a lazy "module:attr" reference) under `name`; a taken name raises."""
        if name in self._entries:
            raise PowerSampleError(f"{self.kind} {name!r} is already registered", self.kind, name)
        self._entries[name] = obj
        return obj

    def validate(self, name: str) -> str:
        """`name` if it is registered (nothing is imported); else raise with a suggestion and the known names."""
        if name not in self._entries:
            close = difflib.get_close_matches(str(name), self._entries, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise PowerSampleError(f"unknown {self.kind} {name!r}.{hint} Available: "
                                   f"{', '.join(self.names())}", self.kind, name)
        return name

    def get(self, name: str) -> T:
        """The object registered as `name`, imported on first use; unknown names raise as `validate`."""
        obj = self._entries[self.validate(name)]
        if isinstance(obj, str) and ":" in obj:
            # resolved on every call, not cached: the module's attribute is the one truth (a test or a user
            # that replaces it is heard), and after the first import this is a dict lookup
            module, attr = obj.split(":", 1)
            obj = getattr(importlib.import_module(module), attr)
        return obj  # type: ignore[return-value]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
