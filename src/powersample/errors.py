"""The one exception type powersample raises for bad input: it names the parameter and the value."""

from __future__ import annotations

from typing import Any


class PowerSampleError(ValueError):
    """Bad input or configuration. `parameter` and `value` say what was wrong, when one thing was."""

    def __init__(self, message: str, parameter: str | None = None, value: Any = None):
        super().__init__(message)
        self.parameter = parameter
        self.value = value


def check(condition: bool, message: str, parameter: str | None = None, value: Any = None) -> None:
    """Raise PowerSampleError(message) unless condition holds."""
    if not condition:
        raise PowerSampleError(message, parameter, value)
