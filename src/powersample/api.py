"""`powersample.sample`: the whole library in one call."""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from dataclasses import fields

from . import rng
from .engine import ENGINES
from .errors import check
from .samplers import get_method
from .samplers.params import build
from .samplers.result import Result

# options that are not sampler parameters
_LOADING = {"engine", "device", "dtype", "eos_token_id", "tokenizer", "reuse_cache", "trust_remote_code"}
_RUNNING = {"num_samples", "seeds", "progress", "batch_size", "chat", "variant"}


def sample(model, prompts: Sequence[str] | Sequence[Sequence[int]], method: str = "power", *,
           alpha: float = 4.0, mcmc_steps: int = 10, block_size: int = 192, max_new_tokens: int = 3072,
           seed: int | None = None, **options) -> list[Result]:
    """Sample completions of `prompts` from `model` with `method`; one Result per (prompt, sample).

    model:   a Hugging Face name, a local folder, "gym", a transformers model object, or an Engine;
             with engine="toy", a table {prefix: log-probs} or a function prefix -> log-probs.
    prompts: strings (need a tokenizer) or lists of token ids.
    options: num_samples (per prompt, default 1), seeds (one per prompt; default derived from `seed`),
             temperature, top_k, top_p, n (best-of-n), batch_size (prompts per engine batch, default 32),
             chat (apply the tokenizer's chat template), progress (a tqdm bar), engine (a name in
             powersample.engine.ENGINES; default "hf"), device, dtype,
             eos_token_id, tokenizer, reuse_cache, and each method's own settings.
    Results are prompt-major: all samples of prompt 0, then prompt 1, ...
    """
    spec = get_method(method)
    params = make_params(method, alpha=alpha, mcmc_steps=mcmc_steps, block_size=block_size,
                         max_new_tokens=max_new_tokens, **options)

    check(not isinstance(prompts, (str, bytes)), "prompts must be a list of prompts, not one string", "prompts")
    prompts = list(prompts)
    check(len(prompts) > 0, "prompts is empty: give at least one prompt", "prompts")
    num_samples = int(options.get("num_samples", 1))
    check(num_samples >= 1, f"num_samples must be >= 1, got {num_samples}", "num_samples", num_samples)
    batch_size = int(options.get("batch_size") or 32)
    check(batch_size >= 1, f"batch_size must be >= 1, got {batch_size}", "batch_size", batch_size)
    seeds = options.get("seeds")
    if seeds is None:
        base = seed if seed is not None else int.from_bytes(os.urandom(8), "little") >> 2
        seeds = [rng.derive_seeds(base, "prompt", i) for i in range(len(prompts))]
    check(len(seeds) == len(prompts), f"seeds needs one seed per prompt: got {len(seeds)} for {len(prompts)} prompts",
          "seeds")

    loading = {k: options[k] for k in _LOADING if options.get(k) is not None}
    engine = ENGINES.get(loading.pop("engine", "hf"))(model, **loading)
    ids = [_encode(engine, p, bool(options.get("chat")), i) for i, p in enumerate(prompts)]
    extra = {"variant": options["variant"]} if "variant" in options else {}

    if "rows" in inspect.signature(spec.run).parameters:  # continuously batched (MH): queue every chain
        extra["rows"], batch_size = batch_size * num_samples, len(ids)  # on batch_size x num_samples rows
    bar = _progress_bar(options.get("progress"), method)
    results: list[Result] = []
    try:
        for lo in range(0, len(ids), batch_size):
            batch = spec.run(engine, ids[lo: lo + batch_size], list(seeds[lo: lo + batch_size]), params,
                             num_samples=num_samples, progress=bar.update if bar else None, **extra)
            for r in batch:
                r.prompt_index += lo
            results.extend(batch)
    finally:
        if bar:
            bar.close()
    return results


def make_params(method: str, **settings):
    """The validated settings object of `method` from sample()'s keyword arguments; raises
    PowerSampleError naming any bad or unknown setting. Call it to check a request before loading a model."""
    spec = get_method(method)
    allowed = _LOADING | _RUNNING | _all_param_names()
    unknown = sorted(set(settings) - allowed)
    check(not unknown, f"unknown option(s) {unknown} for method {method!r}; options are: "
          f"{', '.join(sorted(allowed))}", unknown[0] if unknown else None)
    if settings.get("engine") is not None:
        ENGINES.validate(settings["engine"])
    values = {k: v for k, v in settings.items() if k not in _LOADING | _RUNNING}
    return spec.adjust(build(spec.params, values, method), values)


def _encode(engine, prompt, chat: bool, i: int) -> list[int]:
    if chat:
        check(isinstance(prompt, str) and engine.tokenizer is not None and engine.tokenizer.chat_template,
              "chat=True needs string prompts and a tokenizer with a chat template", "chat")
        return list(engine.tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                                         add_generation_prompt=True, tokenize=True))
    ids = engine.encode(prompt)
    check(len(ids) > 0, f"prompt {i} is empty", "prompts", i)
    return ids


def _all_param_names() -> set[str]:
    from .samplers import METHODS

    return {f.name for name in METHODS for f in fields(METHODS.get(name).params)}


def _progress_bar(progress, method: str):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(desc=method, unit="block", leave=False)  # MH ticks once per block, others once per batch
