"""The method registry: a method name -> (its params class, its runner, how shared arguments adjust it).

Every runner has the signature run(engine, prompts, seeds, params, num_samples, progress) -> list[Result].
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ..errors import PowerSampleError
from . import baselines, power, scalable, smc
from .params import BestOfNParams, PowerParams, ScalableParams, SMCParams, TemperatureParams


@dataclass(frozen=True)
class Method:
    params: type
    run: Callable[..., Any]
    # params derived from the shared arguments, e.g. low-temperature's 1/alpha
    adjust: Callable[[Any, dict], Any] = lambda p, values: p


def _low_temperature(p: TemperatureParams, values: dict) -> TemperatureParams:
    return replace(p, temperature=1.0 / float(values.get("alpha") or 4.0))


def _greedy(p: TemperatureParams, values: dict) -> TemperatureParams:
    return replace(p, temperature=0.0)


def _run_as(name: str):
    return lambda *a, **k: baselines.temperature_sample(*a, **k, method=name)


METHODS: dict[str, Method] = {
    "power": Method(PowerParams, power.power_sample),
    "temperature": Method(TemperatureParams, _run_as("temperature")),
    "greedy": Method(TemperatureParams, _run_as("greedy"), _greedy),
    "low-temperature": Method(TemperatureParams, _run_as("low-temperature"), _low_temperature),
    "best-of-n": Method(BestOfNParams, baselines.best_of_n),
    "smc": Method(SMCParams, smc.smc_sample),
    "scalable": Method(ScalableParams, scalable.scalable_sample),
}


def get_method(name: str) -> Method:
    """The method called `name`, or an error listing the known ones."""
    if name not in METHODS:
        close = difflib.get_close_matches(name, METHODS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise PowerSampleError(f"unknown method {name!r}.{hint} Known methods: {', '.join(METHODS)}", "method", name)
    return METHODS[name]


def register(name: str, method: Method) -> None:
    """Add a sampling method (later samplers, or a user's own)."""
    if name in METHODS:
        raise PowerSampleError(f"method {name!r} is already registered", "method", name)
    METHODS[name] = method
