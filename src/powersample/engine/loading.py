"""Turn what the user gave (a hub name, a local path, "gym", a model object, an engine) into an Engine."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import PowerSampleError
from ..models import MODELS
from .base import Engine

log = logging.getLogger(__name__)

_DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
           "bfloat16": "bfloat16", "bf16": "bfloat16", "float64": "float64", "auto": "auto"}


def load_engine(model, *, tokenizer=None, device: str | None = None, dtype: str | None = None,
                eos_token_id: int | list[int] | None = None, reuse_cache: bool = True,
                trust_remote_code: bool = False, gguf_file: str | None = None) -> Engine:
    """An Engine for `model`: an Engine (returned as is), a transformers model object, a local
    folder, a Hugging Face hub name, a model alias of powersample.models ("gym", "gym-mixed",
    "smollm2"), or a .gguf file. `gguf_file` names a GGUF file inside the folder or hub repository `model`."""
    if isinstance(model, Engine):
        return model
    import torch

    from .hf import HFEngine

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    eos = [eos_token_id] if isinstance(eos_token_id, int) else eos_token_id
    if isinstance(model, (str, os.PathLike)):
        model, tokenizer = _from_pretrained(str(model), tokenizer, device, dtype, trust_remote_code, gguf_file)
    elif not hasattr(model, "config") or not callable(model):
        raise PowerSampleError(f"model must be a name, a path, a transformers model or an Engine; got "
                               f"{type(model).__name__}", "model", model)
    else:
        model = model.to(device)
        if dtype not in (None, "auto"):
            model = model.to(_torch_dtype(dtype))
    return HFEngine(model, tokenizer, eos_token_ids=eos, reuse_cache=reuse_cache)


def _from_pretrained(name: str, tokenizer, device: str, dtype: str | None, trust_remote_code: bool,
                     gguf_file: str | None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name in MODELS:  # an alias ("gym", "smollm2", ...): the path of a model that ships as files
        name = str(MODELS.get(name)())
    if name.lower().endswith(".gguf"):  # a GGUF file: transformers wants its folder and its name
        if gguf_file is not None:
            raise PowerSampleError(f"give either a .gguf model path or gguf_file, not both ({name!r}, {gguf_file!r})",
                                   "gguf_file", gguf_file)
        path = Path(name).expanduser()
        if not path.is_file():
            raise PowerSampleError(f"GGUF file {path} does not exist", "model", name)
        name, gguf_file = str(path.parent), path.name
    if gguf_file is not None:
        _check_gguf_packages()
    local = Path(name).expanduser()
    if gguf_file is not None and local.is_dir() and not (local / gguf_file).is_file():
        raise PowerSampleError(f"GGUF file {gguf_file!r} is not in folder {local}", "gguf_file", gguf_file)
    if local.exists() and gguf_file is None and not (local / "config.json").exists():
        raise PowerSampleError(f"model folder {local} has no config.json: not a transformers model folder",
                               "model", name)
    source = str(local) if local.exists() else name
    kwargs = dict(trust_remote_code=trust_remote_code)
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file  # weights dequantised to torch; tokenizer and chat template from the file
    if dtype is not None:
        kwargs["dtype"] = _torch_dtype(dtype)
    if not local.exists() and not _in_hub_cache(name, gguf_file or "config.json") and not _hub_reachable():
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
            tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code,
                                                      **({"gguf_file": gguf_file} if gguf_file else {}))
        except (OSError, ValueError) as e:  # a bare model folder: token-id prompts only
            log.warning("no tokenizer for %s (%s); prompts must be token ids", name, str(e).splitlines()[0])
    return model.to(device), tokenizer


def _check_gguf_packages() -> None:
    import importlib.util

    missing = [p for p in ("gguf", "accelerate") if importlib.util.find_spec(p) is None]
    if missing:
        raise PowerSampleError(f"loading a GGUF model needs the package(s) {', '.join(missing)}: "
                               f"pip install {' '.join(missing)} (or pip install 'powersample[gguf]')",
                               "model", missing[0])


def _in_hub_cache(name: str, filename: str = "config.json") -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, filename), str)
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
