"""Engines: the contract every backend meets (base.py) and the backends, registered by name.

A new backend is one module with an Engine subclass and a loader `load(model, **options) -> Engine`,
plus one line here; tests/test_conformance.py then checks it by adding one parameter.
"""

from __future__ import annotations

from ..registry import Registry

ENGINES: Registry = Registry("engine")
ENGINES.register("hf", "powersample.engine.loading:load_engine")  # transformers (the default)
ENGINES.register("toy", "powersample.engine.toy:load")  # a table or function of next-token log-probs


def open_engine(model, engine: str | None = None, **options):
    """`model` loaded by the backend named `engine` (default "hf"); options go to that backend's loader."""
    return ENGINES.get(engine or "hf")(model, **options)
