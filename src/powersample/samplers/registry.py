"""What a sampling method is: its params class, its runner, how shared arguments adjust it.
The methods are registered by name in `powersample.samplers.METHODS`.

Every runner has the signature run(engine, prompts, seeds, params, num_samples, progress) -> list[Result].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

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


POWER = Method(PowerParams, power.power_sample)
TEMPERATURE = Method(TemperatureParams, _run_as("temperature"))
GREEDY = Method(TemperatureParams, _run_as("greedy"), _greedy)
LOW_TEMPERATURE = Method(TemperatureParams, _run_as("low-temperature"), _low_temperature)
BEST_OF_N = Method(BestOfNParams, baselines.best_of_n)
SMC = Method(SMCParams, smc.smc_sample)
SCALABLE = Method(ScalableParams, scalable.scalable_sample)
