"""A small, exact ancestral sampler for the gym model: temperature, greedy, forced first token.

Independent of powersample's engine on purpose: the gym measures baselines with it, and the engine's
own tests can then compare against numbers that did not come from the engine.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import check
from .task import GymProblem
from .tokenizer import ALPHABET, BOS_ID, EOS_ID, PAD_ID, VOCAB, encode

_CHARS = {i: tok for tok, i in VOCAB.items() if tok in ALPHABET}


@dataclass(frozen=True)
class Draw:
    """One sampled completion."""

    token_ids: tuple[int, ...]  # ends with EOS when finished
    text: str  # decoded, specials dropped
    logp: float  # log p(completion | prompt) under the model at temperature 1
    finished: bool  # ended with EOS before max_new_tokens


def decode(ids: Sequence[int]) -> str:
    """Text of token ids, dropping specials (what the saved tokenizer's decode does)."""
    return "".join(_CHARS.get(int(i), "") for i in ids)


@torch.no_grad()
def draw(model, problems: Sequence[GymProblem], temperature: float, samples: int = 1, max_new_tokens: int = 48,
         seed: int = 0, first: Sequence[int] | None = None, batch_size: int = 1024) -> list[list[Draw]]:
    """`samples` completions per problem at `temperature` (0 = greedy); `first` forces token 0."""
    check(temperature >= 0, f"temperature must be >= 0, got {temperature}", "temperature", temperature)
    check(samples > 0 and max_new_tokens > 0, "samples and max_new_tokens must be positive", "samples",
          samples)
    check(first is None or len(first) == len(problems), "first needs one token per problem", "first", first)
    prompts = [[BOS_ID, *encode(p.prompt)] for p in problems for _ in range(samples)]
    forced = None if first is None else [f for f in first for _ in range(samples)]
    gen = torch.Generator().manual_seed(seed)
    rows: list[Draw | None] = [None] * len(prompts)
    for length in sorted({len(p) for p in prompts}):  # one batch shape per prompt length: no padding
        idx = [i for i, p in enumerate(prompts) if len(p) == length]
        for lo in range(0, len(idx), batch_size):
            part = idx[lo:lo + batch_size]
            out = _draw_batch(model, [prompts[i] for i in part], None if forced is None else
                              [forced[i] for i in part], temperature, max_new_tokens, gen)
            for i, d in zip(part, out, strict=True):
                rows[i] = d
    return [rows[i * samples:(i + 1) * samples] for i in range(len(problems))]


def _draw_batch(model, prompts, forced, temperature, max_new_tokens, gen) -> list[Draw]:
    device = next(model.parameters()).device
    ids = torch.tensor(prompts, device=device)
    n = ids.shape[0]
    # transformers 5 names the KV-cache argument `cache` (past_key_values warns); 4.x only knows past_key_values
    cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    out = model(input_ids=ids, use_cache=True)
    past, logits = out[cache_arg], out.logits[:, -1].float()
    done = torch.zeros(n, dtype=torch.bool, device=device)
    logp = torch.zeros(n, dtype=torch.float64, device=device)
    steps = []
    for t in range(max_new_tokens):
        lp = torch.log_softmax(logits, -1)
        if t == 0 and forced is not None:
            nxt = torch.tensor(forced, device=device)
        elif temperature == 0:
            nxt = lp.argmax(-1)
        else:
            probs = torch.softmax(lp / temperature, -1)
            nxt = torch.multinomial(probs.cpu(), 1, generator=gen).squeeze(1).to(device)
        nxt = torch.where(done, PAD_ID, nxt)
        logp += torch.where(done, 0.0, lp.gather(1, nxt[:, None]).squeeze(1).double())
        steps.append(nxt)
        done |= nxt == EOS_ID
        if bool(done.all()):
            break
        out = model(input_ids=nxt[:, None], use_cache=True, **{cache_arg: past})
        past, logits = out[cache_arg], out.logits[:, -1].float()
    toks = torch.stack(steps, 1).tolist()
    draws = []
    for r in range(n):
        row = toks[r]
        end = row.index(EOS_ID) + 1 if EOS_ID in row else len(row)
        row = row[:end]
        draws.append(Draw(tuple(row), decode(row), float(logp[r]), bool(row and row[-1] == EOS_ID)))
    return draws
