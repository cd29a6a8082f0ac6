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

    if name in ("gym", "gym-mixed"):
        from ..gym import model_path

        name = str(model_path(name))
    local = Path(name).expanduser()
    if local.exists() and not (local / "config.json").exists():
        raise PowerSampleError(f"model folder {local} has no config.json: not a transformers model folder",
                               "model", name)
    source = str(local) if local.exists() else name
    kwargs = dict(trust_remote_code=trust_remote_code)
    if dtype is not None:
        kwargs["dtype"] = _torch_dtype(dtype)
    if not local.exists() and not _in_hub_cache(name) and not _hub_reachable():
        # fail at once instead of after the hub client's minute of retries
        raise PowerSampleError(
            f"could not load model {name!r}: it is not a local folder, not in the Hugging Face cache, and the hub "
            "is unreachable (offline?). Pass a local folder, or use --model gym (shipped with powersample).",
            "model", name)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except OSError as e:
        raise PowerSampleError(
            f"could not load model {name!r}: not found locally or on the Hugging Face hub (misspelled, or gated: "
            f"log in with `hf auth login`). Cause: {e}", "model", name) from e
    if tokenizer is None:
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as e:  # a bare model folder: token-id prompts only
            log.warning("no tokenizer for %s (%s); prompts must be token ids", name, str(e).splitlines()[0])
    return model.to(device), tokenizer


def _in_hub_cache(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # an old or absent huggingface_hub: just try the hub
        return False


def _hub_reachable(timeout: float = 3.0) -> bool:
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _torch_dtype(name: str):
    import torch

    key = _DTYPES.get(str(name).lower())
    if key is None:
        raise PowerSampleError(f"unknown dtype {name!r}; choose one of {sorted(set(_DTYPES))}", "dtype", name)
    return "auto" if key == "auto" else getattr(torch, key)
