"""powersample: sample from a base language model's power distribution p(x | prompt)^alpha.

    import powersample
    results = powersample.sample("gym", ["Q:357+468\n"], method="power", alpha=4.0, max_new_tokens=48, block_size=16)
    print(results[0].text)
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .errors import PowerSampleError
from .samplers.result import Checkpoint, Result

try:
    __version__ = version("powersample")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"

__all__ = ["sample", "load_engine", "Result", "Checkpoint", "PowerSampleError", "__version__"]


def __getattr__(name: str):
    # Lazy: `import powersample` stays cheap (no torch/transformers) until sampling is asked for.
    if name == "sample":
        from .api import sample

        return sample
    if name == "load_engine":
        from .engine.loading import load_engine

        return load_engine
    raise AttributeError(f"module 'powersample' has no attribute {name!r}")
