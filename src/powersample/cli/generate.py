"""Sample completions for prompts with any method; one JSONL row per (prompt, sample), written as batches finish.

examples:
  powersample generate --model gym --prompt "Q:357+468" --max-new-tokens 48 --output out.jsonl
  powersample generate --model Qwen/Qwen2.5-Math-1.5B --input prompts.jsonl --output out.jsonl \\
      --method power --alpha 4 --mcmc-steps 10 --max-new-tokens 3072 --batch-size 16 --resume
Input JSONL: one object per line with "prompt" (text) or "prompt_ids" (token ids), and optionally "id".
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

from ..errors import PowerSampleError
from .options import HelpFormatter, add_model_arguments, add_sampler_arguments, sampler_settings


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = __doc__.split("\n", 1)[1]
    p.formatter_class = HelpFormatter
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="one prompt (text)")
    src.add_argument("--input", type=Path, help="JSONL file of prompts")
    p.add_argument("--output", type=Path, required=True, help="JSONL file to write")
    p.add_argument("--num-samples", type=int, default=1, help="samples per prompt")
    existing = p.add_mutually_exclusive_group()
    existing.add_argument("--resume", action="store_true", help="keep OUTPUT's finished rows and do only the rest "
                          "(refused if they were made with other settings or prompts)")
    existing.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT (once the first "
                          "batch is written)")
    add_model_arguments(p)
    add_sampler_arguments(p)


def read_prompts(path: Path) -> list[dict]:
    """Prompts from JSONL: each {"prompt": str} or {"prompt_ids": [int]}, optional "id"; errors name the line."""
    from ..jsonl import iter_rows

    if not path.exists():
        raise PowerSampleError(f"input file {path} does not exist", "--input", str(path))
    out = []
    for i, (line, row) in enumerate(iter_rows(path)):
        if "prompt" in row and isinstance(row["prompt"], str):
            prompt = row["prompt"]
        elif "prompt_ids" in row and isinstance(row["prompt_ids"], list) and all(
                isinstance(t, int) for t in row["prompt_ids"]):
            prompt = row["prompt_ids"]
        else:
            raise PowerSampleError(f"{path}, line {line}: needs a \"prompt\" string or \"prompt_ids\" list of ints",
                                   "--input", str(path))
        if not prompt:
            raise PowerSampleError(f"{path}, line {line}: the prompt is empty", "--input", str(path))
        out.append({"id": str(row.get("id", i)), "prompt": prompt, "where": f"{path}, line {line}"})
    if not out:
        raise PowerSampleError(f"{path} holds no prompts", "--input", str(path))
    ids = [p["id"] for p in out]
    if len(set(ids)) != len(ids):
        raise PowerSampleError(f"{path}: prompt ids repeat; give each line a unique \"id\"", "--input", str(path))
    return out


def check_device(device: str | None) -> None:
    """Refuse a device this torch cannot use, before minutes of model loading."""
    if device is None:
        return
    import torch

    try:
        kind = torch.device(device).type
    except RuntimeError as e:
        raise PowerSampleError(f"--device {device!r} is not a device torch knows (cpu, cuda, cuda:1, mps)",
                               "--device", device) from e
    if kind == "cuda" and not torch.cuda.is_available():
        raise PowerSampleError(f"--device {device}: torch {torch.__version__} sees no CUDA GPU (a CPU-only build, "
                               "or no GPU visible); use --device cpu", "--device", device)
    if kind == "cuda" and (torch.device(device).index or 0) >= torch.cuda.device_count():
        raise PowerSampleError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) visible",
                               "--device", device)
    if kind == "mps" and not torch.backends.mps.is_available():
        raise PowerSampleError(f"--device {device}: MPS is not available here", "--device", device)


def check_counts(args) -> None:
    """Counts argparse accepts but a run cannot use (a zero would silently do nothing, or loop forever)."""
    for flag in ("batch_size", "num_samples"):
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            name = "--" + flag.replace("_", "-")
            raise PowerSampleError(f"{name} must be >= 1, got {value}", name, value)


def prompt_hash(prompt) -> str:
    """The sha256 of a prompt (text or token ids, as JSON): a resumed row must belong to the same prompt."""
    return hashlib.sha256(json.dumps(prompt).encode()).hexdigest()


def check_resumable(output: Path, rows: list[dict], settings: dict, prompts: list[dict]) -> None:
    """Refuse to continue OUTPUT with other settings, or where a prompt changed under the same id."""
    from ..jsonl import FORMAT

    where = {p["id"]: p.get("where", "--prompt") for p in prompts}
    hashes = {p["id"]: prompt_hash(p["prompt"]) for p in prompts}
    for r in rows:
        if r["format"] < FORMAT:
            raise PowerSampleError(f"{output} was written by an older powersample (row format {r['format']}, now "
                                   f"{FORMAT}), so it cannot be resumed; use --overwrite or another --output",
                                   "--resume")
        old = r.get("settings")
        if old != settings:
            diff = "; ".join(f"{k}: {old.get(k)!r} there, {settings.get(k)!r} now"
                             for k in sorted(set(old) | set(settings)) if old.get(k) != settings.get(k))
            raise PowerSampleError(f"{output} was generated with other settings ({diff}); rerun with its settings, "
                                   "or use --overwrite or another --output", "--resume")
        rid = str(r.get("id"))
        if rid in hashes and r.get("prompt_sha256") != hashes[rid]:
            raise PowerSampleError(f"prompt {rid!r} ({where[rid]}) is not the prompt its rows in {output} were "
                                   "generated for; give it a new id, or use --overwrite or another --output",
                                   "--resume", rid)


def check_writable(path: Path) -> None:
    """Fail with one line if `path` (not there yet) cannot be created: before the model loads, not after.
    (By trying: os.access says yes to root even where nobody can write.)"""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=False)
        path.unlink()
    except OSError as e:
        raise PowerSampleError(f"cannot write {path}: {e.strerror or e}", "--output", str(path)) from e


def check_prompts_fit(engine, prompts: list[dict], chat: bool) -> None:
    """Every prompt must leave room in the model's context: found now, not when its batch comes up."""
    from ..api import _encode  # exactly as sample() will encode it (chat template included)

    for i, p in enumerate(prompts):
        n = len(_encode(engine, p["prompt"], chat, i))
        if engine.max_length is not None and n >= engine.max_length:
            raise PowerSampleError(f"{p.get('where', '--prompt')}: prompt {p['id']!r} has {n} tokens, which leaves no "
                                   f"room in the model's context of {engine.max_length} tokens", "prompt", p["id"])


def run(args) -> int:
    from tqdm.auto import tqdm

    from .. import rng
    from ..api import BATCH_SIZE, LOADING_SETTINGS, resolve_settings, sample
    from ..engine import open_engine
    from ..jsonl import append_rows, read_rows, result_row

    # Everything that can be checked is checked before OUTPUT is touched and before the model loads.
    check_counts(args)
    prompts = [{"id": "0", "prompt": args.prompt}] if args.prompt is not None else read_prompts(args.input)
    sampler = resolve_settings(args.method, **sampler_settings(args))  # validated, defaults filled in
    check_device(args.device)
    # what decides a row's content: a resumed file must have been made with exactly these
    settings = json.loads(json.dumps({"model": args.model, "method": args.method, "seed": args.seed,
                                      "dtype": args.dtype, "chat": args.chat, **sampler}))
    if args.output.exists() and not (args.resume or args.overwrite):
        raise PowerSampleError(f"{args.output} exists: pass --resume to continue it or --overwrite to replace it",
                               "--output", str(args.output))
    if args.output.is_dir():
        raise PowerSampleError(f"--output {args.output} is a directory; give a file name", "--output", str(args.output))
    old = read_rows(args.output) if args.resume else []
    check_resumable(args.output, old, settings, prompts)
    # --overwrite writes the first batch beside OUTPUT and then renames it over OUTPUT: the old file
    # survives any failure before that
    replacing = args.overwrite and args.output.exists()
    target = args.output.with_name(args.output.name + ".tmp") if replacing else args.output
    if replacing:
        target.unlink(missing_ok=True)  # left by a run killed before its first batch
    if target.exists():
        read_rows(target, repair=True)  # resuming: cut a torn last line so appends continue cleanly
    else:
        check_writable(target)

    done = {(str(r["id"]), r["sample_index"]) for r in old}
    todo = [p for p in prompts if any((p["id"], j) not in done for j in range(args.num_samples))]
    loading = {k: sampler.pop(k) for k in LOADING_SETTINGS if k in sampler}
    engine = open_engine(args.model, device=args.device, dtype=args.dtype, **loading)
    check_prompts_fit(engine, todo, args.chat)
    bar = tqdm(total=len(prompts), initial=len(prompts) - len(todo), desc=f"generate ({args.method})",
               unit="prompt")
    batch_size = args.batch_size if args.batch_size is not None else BATCH_SIZE
    for lo in range(0, len(todo), batch_size):
        batch = todo[lo: lo + batch_size]
        seeds = [rng.derive_seeds(args.seed, p["id"]) for p in batch]
        results = sample(engine, [p["prompt"] for p in batch], args.method, seeds=seeds,
                         num_samples=args.num_samples, batch_size=len(batch), chat=args.chat, **sampler)
        rows = []
        for r in results:
            p = batch[r.prompt_index]
            if (p["id"], r.sample_index) in done:
                continue
            rows.append({**result_row(r, p["id"], r.text), "prompt_sha256": prompt_hash(p["prompt"]),
                         "settings": settings})
        append_rows(target, rows)
        if replacing:
            os.replace(target, args.output)
            target, replacing = args.output, False
        bar.update(len(batch))
    bar.close()
    print(f"wrote {args.output} ({len(prompts)} prompts, {len(prompts) - len(todo)} were already done)")
    return 0
