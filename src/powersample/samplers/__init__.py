"""Samplers: pure logic over the engine interface (power = MH, smc, scalable, baselines).

`METHODS` names every sampling method; each entry is a `Method` (registry.py) imported on first use,
so that listing the methods (CLI help) or importing powersample does not import torch.
"""

from __future__ import annotations

from ..registry import Registry

METHODS: Registry = Registry("method")
for _name, _attr in (("power", "POWER"), ("temperature", "TEMPERATURE"), ("greedy", "GREEDY"),
                     ("low-temperature", "LOW_TEMPERATURE"), ("best-of-n", "BEST_OF_N"), ("smc", "SMC"),
                     ("scalable", "SCALABLE")):
    METHODS.register(_name, f"powersample.samplers.registry:{_attr}")
METHODS.register("dynamic", "powersample.dynamic.live:DYNAMIC")  # power sampling, chains per problem chosen live
get_method = METHODS.get
register = METHODS.register  # add a sampling method: register("mine", Method(MyParams, my_run))


def __getattr__(name: str):
    if name == "Method":
        from .registry import Method

        return Method
    raise AttributeError(f"module 'powersample.samplers' has no attribute {name!r}")
