"""Turn what the user gave (a hub name, a local path, "gym", a model object, an engine) into an Engine."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import PowerSampleError
from .base import Engine

log = logging.getLogger(__name__)

_DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
           "bfloat16": "bfloat16", "bf16": "bfloat16", "float64": "float64", "auto": "auto"}


def load_engine(model, *, tokenizer=None, device: str | None = None, dtype: str | None = None,
                eos_token_id: int | list[int] | None = None, reuse_cache: bool = True,
                trust_remote_code: bool = False) -> Engine:
    """An Engine for `model`: an Engine (returned as is), a transformers model object, a local
    folder, a Hugging Face hub name, or "gym" (the model shipped with powersample)."""
    if isinstance(model, Engine):
        return model
    import torch

    from .hf import HFEngine

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    eos = [eos_token_id] if isinstance(eos_token_id, int) else eos_token_id
    if isinstance(model, (str, os.PathLike)):
        model, tokenizer = _from_pretrained(str(model), tokenizer, device, dtype, trust_remote_code)
    elif not hasattr(model, "config") or not callable(model):
        raise PowerSampleError(f"model must be a name, a path, a transformers model or an Engine; got "
                               f"{type(model).__name__}", "model", model)
    else:
        model = model.to(device)
        if dtype not in (None, "auto"):
            model = model.to(_torch_dtype(dtype))
    return HFEngine(model, tokenizer, eos_token_ids=eos, reuse_cache=reuse_cache)


def _from_pretrained(name: str, tokenizer, device: str, dtype: str | None, trust_remote_code: bool):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name == "gym":
        from ..gym import model_path

        name = str(model_path())
    local = Path(name).expanduser()
    if local.exists() and not (local / "config.json").exists():
        raise PowerSampleError(f"model folder {local} has no config.json: not a transformers model folder",
                               "model", name)
    kwargs = dict(trust_remote_code=trust_remote_code)
    if dtype is not None:
        kwargs["dtype"] = _torch_dtype(dtype)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(local) if local.exists() else name, **kwargs)
        if tokenizer is None:
            tokenizer = AutoTokenizer.from_pretrained(str(local) if local.exists() else name,
                                                      trust_remote_code=trust_remote_code)
    except OSError as e:
        where = "a local folder" if local.exists() else "a local path, and the Hugging Face hub could not provide it"
        raise PowerSampleError(
            f"could not load model {name!r}: it is not {where} (offline, misspelled, or gated?). "
            f"Pass a local folder, log in with `hf auth login`, or use --model gym. Cause: {e}",
            "model", name) from e
    return model.to(device), tokenizer


def _torch_dtype(name: str):
    import torch

    key = _DTYPES.get(str(name).lower())
    if key is None:
        raise PowerSampleError(f"unknown dtype {name!r}; choose one of {sorted(set(_DTYPES))}", "dtype", name)
    return "auto" if key == "auto" else getattr(torch, key)
