"""Samplers: pure logic over the engine interface (power = MH, smc, scalable, baselines).

`METHODS`, `get_method` and `register` live in registry.py and load on first use, so that importing
powersample (or a grader worker process) does not import torch.
"""

from __future__ import annotations

_REGISTRY = ("METHODS", "Method", "get_method", "register")


def __getattr__(name: str):
    if name in _REGISTRY:
        from . import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'powersample.samplers' has no attribute {name!r}")
