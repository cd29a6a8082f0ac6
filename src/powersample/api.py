"""`powersample.sample`: the whole library in one call."""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from dataclasses import asdict, fields

from . import rng
from .engine import ENGINES, open_engine
from .errors import check
from .samplers import get_method
from .samplers.params import build
from .samplers.result import Result

# options that are not sampler parameters
_LOADING = {"engine", "device", "dtype", "eos_token_id", "tokenizer", "reuse_cache", "trust_remote_code",
            "gguf_file"}
_RUNNING = {"num_samples", "seeds", "progress", "batch_size", "chat", "on_result", "max_batch_tokens",
            "extract", "same", "on_problem", "on_block", "resume", "done_chains", "answers_at_blocks"}
# extract, same, on_problem, done_chains, answers_at_blocks: method "dynamic" (dynamic/live.py); on_block, resume:
# methods "power" and "dynamic" (samplers/scheduler.py)
BATCH_SIZE = 16  # prompts per engine batch, the default of sample(), generate and eval alike
# model-loading options that change results: a run records them with the sampler's settings
LOADING_SETTINGS = ("eos_token_id", "trust_remote_code", "reuse_cache", "gguf_file", "engine")


def sample(model, prompts: Sequence[str] | Sequence[Sequence[int]], method: str = "power", *,
           seed: int | None = None, **options) -> list[Result]:
    """Sample completions of `prompts` from `model` with `method`; one Result per (prompt, sample).

    model:   a Hugging Face name, a local folder, "gym", a transformers model object, or an Engine;
             with engine="toy", a table {prefix: log-probs} or a function prefix -> log-probs.
    prompts: strings (need a tokenizer) or lists of token ids.
    options: the method's settings (alpha, mcmc_steps, max_new_tokens, block_size, temperature, top_k,
             top_p, n, ...: the fields of its class in samplers/params.py, whose defaults are the
             papers': alpha 4, N=10, T=3072, B=T/16), num_samples (per prompt, default 1), seeds (one
             per prompt; default derived from `seed`), batch_size (prompts per engine batch, default
             16), chat (apply the tokenizer's chat template), progress (a tqdm bar), on_result (called
             with each Result as soon as it is ready: power's as its chain finishes, others' per batch),
             max_batch_tokens (power: cap rows x (prompt + T); default unlimited on a CPU, what free
             memory holds on CUDA), device, dtype,
             eos_token_id, tokenizer, reuse_cache, gguf_file (a GGUF file in the model folder), engine (a
             name in powersample.engine.ENGINES; default "hf").
    Results are prompt-major: all samples of prompt 0, then prompt 1, ...
    """
    spec = get_method(method)
    params = make_params(method, **options)

    check(not isinstance(prompts, (str, bytes)), "prompts must be a list of prompts, not one string", "prompts")
    prompts = list(prompts)
    check(len(prompts) > 0, "prompts is empty: give at least one prompt", "prompts")
    num_samples = int(options.get("num_samples", 1))
    check(num_samples >= 1, f"num_samples must be >= 1, got {num_samples}", "num_samples", num_samples)
    batch_size = int(options.get("batch_size") or BATCH_SIZE)
    check(batch_size >= 1, f"batch_size must be >= 1, got {batch_size}", "batch_size", batch_size)
    seeds = options.get("seeds")
    if seeds is None:
        base = seed if seed is not None else int.from_bytes(os.urandom(8), "little") >> 2
        seeds = [rng.derive_seeds(base, "prompt", i) for i in range(len(prompts))]
    check(len(seeds) == len(prompts), f"seeds needs one seed per prompt: got {len(seeds)} for {len(prompts)} prompts",
          "seeds")

    loading = {k: options[k] for k in _LOADING if options.get(k) is not None}
    engine = open_engine(model, **loading)
    ids = [_encode(engine, p, bool(options.get("chat")), i) for i, p in enumerate(prompts)]
    extra = {}
    on_result = options.get("on_result")
    if continuously_batched(method):  # (MH) queue every chain
        extra["rows"], batch_size = batch_size * num_samples, len(ids)  # on batch_size x num_samples rows
        extra.update(on_result=on_result, max_batch_tokens=options.get("max_batch_tokens"))
        on_result = None  # the scheduler calls it
        extra.update({k: options[k] for k in ("extract", "same", "on_problem", "on_block", "resume", "done_chains",
                                              "answers_at_blocks")
                      if options.get(k) is not None})
    bar = _progress_bar(options.get("progress"), method)
    results: list[Result] = []
    try:
        for lo in range(0, len(ids), batch_size):
            batch = spec.run(engine, ids[lo: lo + batch_size], list(seeds[lo: lo + batch_size]), params,
                             num_samples=num_samples, progress=bar.update if bar else None, **extra)
            for r in batch:
                r.prompt_index += lo
                if on_result is not None:
                    on_result(r)
            results.extend(batch)
    finally:
        if bar:
            bar.close()
    return results


def continuously_batched(method: str) -> bool:
    """Whether `method` runs on the scheduler (rows never idle; each Result handed over as it is ready)."""
    return "rows" in inspect.signature(get_method(method).run).parameters


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


def resolve_settings(method: str, **settings) -> dict:
    """The settings as a run records them: those given, completed with the method's defaults and
    derived values (block_size = max_new_tokens // 16, low-temperature's 1/alpha); validated by
    make_params. Resolving the result again gives it back unchanged."""
    return dict(sorted({**settings, **asdict(make_params(method, **settings))}.items()))


def _encode(engine, prompt, chat: bool, i: int) -> list[int]:
    if chat:
        check(isinstance(prompt, str) and engine.tokenizer is not None and engine.tokenizer.chat_template,
              "chat=True needs string prompts and a tokenizer with a chat template", "chat")
        # return_dict=False: transformers 5 returns a BatchEncoding by default, 4.x a list of ids
        return list(engine.tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                                         add_generation_prompt=True, tokenize=True,
                                                         return_dict=False))
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
