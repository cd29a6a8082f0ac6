"""The transformers backend: any AutoModelForCausalLM, batched, reusing each row's KV cache.

Cache layout (the README's "How it works" has the picture). All rows share one DynamicCache whose physical slots are
columns; per row and slot we track the token's logical position (`pos`) and whether the slot is
`live` (part of the row's current sequence). The model sees `live` as its 2D attention mask and
each row's logical positions as `position_ids`, so a row attends exactly to its own current prefix
wherever in the cache that prefix lies. An MH proposal cuts a row back by marking its old suffix
`stale` (masked, restorable) and appends the new suffix as new columns; `settle` makes one of the two
live. Holes are squeezed out by `_compact`. The cache always holds every token of a row but the
last, which is fed on the next forward: its logits give the next token's distribution, so no
full-vocabulary logits are ever kept between calls.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .. import rng
from ..errors import PowerSampleError, check
from .base import Engine, Extension, Proposal, Sequences

_TOKEN_STREAM = 1  # rng stream for token draws; samplers use other stream numbers
_SYNC_EVERY_GPU = 8  # decode steps between checks for "all rows done" on a GPU (each is a host sync)


@dataclass(eq=False)
class HFSequences(Sequences):
    tokens: torch.Tensor  # (rows, capacity) int64
    lengths: torch.Tensor  # (rows,)
    prompt_lengths: torch.Tensor  # (rows,)
    seeds: torch.Tensor  # (rows,)
    draws: torch.Tensor  # (rows,)
    cache: object = None  # transformers DynamicCache, or None before the first forward
    pos: torch.Tensor | None = None  # (rows, slots) logical position held by each cache slot
    live: torch.Tensor | None = None  # (rows, slots) bool: slot is part of the row's sequence
    stale: torch.Tensor | None = None  # (rows, slots) bool: old suffix awaiting `settle`
    backup: tuple | None = None  # (tokens, lengths, first_new_slot) saved by extend(keep=...)

    def __len__(self) -> int:
        return self.lengths.shape[0]


class HFEngine(Engine):
    """Engine over a transformers causal LM. `reuse_cache=False` re-runs every prefix (for tests)."""

    def __init__(self, model, tokenizer=None, eos_token_ids: Sequence[int] | None = None,
                 reuse_cache: bool = True):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.reuse_cache = reuse_cache
        self.eos_token_ids = tuple(eos_token_ids) if eos_token_ids else _eos_ids(model, tokenizer)
        check(len(self.eos_token_ids) > 0,
              "no EOS token: the model's generation config, config and tokenizer name none; pass eos_token_id",
              "eos_token_id")
        self.max_length = _context_length(model)
        # transformers 5 renamed the KV-cache argument and output past_key_values -> cache (the old name warns,
        # and goes in 5.40); 4.x models and remote code still take past_key_values
        self._cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self._eos = torch.tensor(self.eos_token_ids, device=self.device)

    # -- Engine interface --------------------------------------------------------------------

    def start(self, prompts: Sequence[Sequence[int]], seeds: Sequence[int]) -> HFSequences:
        check(len(prompts) > 0, "no prompts given", "prompts")
        check(len(seeds) == len(prompts), f"need one seed per prompt: {len(prompts)} prompts, {len(seeds)} seeds",
              "seeds")
        lens = [len(p) for p in prompts]
        for i, n in enumerate(lens):
            check(n > 0, f"prompt {i} is empty: a prompt needs at least one token (e.g. BOS)", "prompts", i)
            if self.max_length is not None and n >= self.max_length:
                raise PowerSampleError(
                    f"prompt {i} has {n} tokens, which leaves no room in the model's context of "
                    f"{self.max_length} tokens", "prompts", i)
        tokens = torch.full((len(prompts), max(lens)), -1, dtype=torch.long)
        for i, p in enumerate(prompts):
            tokens[i, : len(p)] = torch.tensor(list(p), dtype=torch.long)
        lengths = torch.tensor(lens, dtype=torch.long)
        return HFSequences(tokens=tokens.to(self.device), lengths=lengths.to(self.device),
                           prompt_lengths=lengths.clone().to(self.device),
                           seeds=torch.tensor([int(s) for s in seeds], dtype=torch.long, device=self.device),
                           draws=torch.zeros(len(prompts), dtype=torch.long, device=self.device))

    @torch.no_grad()
    def extend(self, seqs: HFSequences, max_new: torch.Tensor, proposal: Proposal,
               keep: torch.Tensor | None = None, first: torch.Tensor | None = None) -> Extension:
        rows = len(seqs)
        max_new = torch.as_tensor(max_new, device=self.device).long().expand(rows).clone()
        if keep is not None:
            keep = torch.as_tensor(keep, device=self.device).long().expand(rows)
            self._cut(seqs, keep)
        if not self.reuse_cache or seqs.cache is None:
            self._prefill(seqs)
        if self.max_length is not None:  # never run past the model's context
            max_new = torch.minimum(max_new, (self.max_length - seqs.lengths).clamp(min=0))
        self._reserve(seqs, int(max_new.max()))

        steps = int(max_new.max())
        ext = _empty_extension(rows, steps, self.device)
        active = max_new > 0
        sync_every = 1 if self.device.type == "cpu" else _SYNC_EVERY_GPU  # on CPU a check costs nothing
        for t in range(steps):
            logits = self._step(seqs, active)  # (rows, vocab) float32, next-token logits
            logp_all = torch.log_softmax(logits, dim=-1)
            forced = first if (t == 0 and first is not None) else None
            tok, logq = _draw(logits, logp_all, proposal, seqs.seeds, seqs.draws, forced)
            ent = -(logp_all.exp() * logp_all).sum(-1)
            # masked column writes, not indexing by nonzero(): that would sync host and device per token
            ext.tokens[:, t] = torch.where(active, tok, -1)
            ext.logp[:, t] = torch.where(active, logp_all.gather(1, tok[:, None]).squeeze(1), 0.0)
            ext.logq[:, t] = torch.where(active, logq, 0.0)
            ext.entropy[:, t] = torch.where(active, ent, 0.0)
            ext.top1[:, t] = torch.where(active, logp_all.max(-1).values.exp(), 0.0)
            ext.lengths += active
            at = seqs.lengths[:, None].clamp(max=seqs.tokens.shape[1] - 1)
            seqs.tokens.scatter_(1, at, torch.where(active[:, None], tok[:, None], seqs.tokens.gather(1, at)))
            seqs.lengths += active
            seqs.draws += active
            hit_eos = active & torch.isin(tok, self._eos)
            ext.eos |= hit_eos
            active = active & ~hit_eos & (ext.lengths < max_new)
            if (t + 1) % sync_every == 0 and not bool(active.any()):
                break
        ext.tokens = ext.tokens[:, : int(ext.lengths.max()) if rows else 0]
        for name in ("logp", "logq", "entropy", "top1"):
            setattr(ext, name, getattr(ext, name)[:, : ext.tokens.shape[1]])
        return ext

    def settle(self, seqs: HFSequences, accept: torch.Tensor) -> None:
        check(seqs.backup is not None, "settle() needs a preceding extend(keep=...)", "accept")
        accept = torch.as_tensor(accept, device=self.device).bool()
        old_tokens, old_lengths, first_new = seqs.backup
        reject = ~accept
        seqs.tokens[reject] = old_tokens[reject]
        seqs.lengths = torch.where(accept, seqs.lengths, old_lengths)
        if not self.reuse_cache:  # the next extend rebuilds the cache from the tokens anyway
            seqs.cache = seqs.pos = seqs.live = seqs.stale = None
        elif seqs.cache is not None:
            new_cols = torch.zeros_like(seqs.live)
            new_cols[:, first_new:] = True
            # rejected rows: the new suffix dies, the old one comes back; accepted: the old one dies
            seqs.live = torch.where(reject[:, None], (seqs.live & ~new_cols) | seqs.stale, seqs.live)
            seqs.stale = torch.zeros_like(seqs.stale)
            self._compact(seqs)
        seqs.backup = None

    def select(self, seqs: HFSequences, index: torch.Tensor, seeds: torch.Tensor | None = None) -> HFSequences:
        index = torch.as_tensor(index, device=self.device).long()
        check(seqs.backup is None, "select() between extend(keep=...) and settle() is not allowed", "index")
        if seqs.cache is None and self.reuse_cache:
            self._prefill(seqs)  # so that duplicates share one computed prefix
        if seeds is None:  # each copy of a row gets its own stream: k-th copy of parent -> hash(parent, k)
            parent = seqs.seeds[index]
            copy_no = _occurrence(index)
            seeds = torch.where(copy_no == 0, parent, rng.hash64(parent, seqs.draws[index], copy_no))
            draws = torch.where(copy_no == 0, seqs.draws[index], torch.zeros_like(index))
        else:
            seeds = torch.as_tensor(seeds, device=self.device).long()
            draws = torch.zeros_like(index)
        out = HFSequences(tokens=seqs.tokens[index].clone(), lengths=seqs.lengths[index].clone(),
                          prompt_lengths=seqs.prompt_lengths[index].clone(), seeds=seeds, draws=draws)
        if seqs.cache is not None:
            out.cache = _select_cache(seqs.cache, index)
            out.pos, out.live, out.stale = seqs.pos[index], seqs.live[index], seqs.stale[index]
        return out

    @torch.no_grad()
    def topk(self, seqs: HFSequences, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.reuse_cache or seqs.cache is None:
            self._prefill(seqs)
        slots = seqs.live.shape[1]
        logits = self._step(seqs, torch.zeros(len(seqs), dtype=torch.bool, device=self.device))
        # _step appended one (dead) column: drop it again so the cache is as it was
        for layer in seqs.cache.layers:  # (not cache.crop: its signature differs across versions)
            layer.keys, layer.values = layer.keys[:, :, :slots], layer.values[:, :, :slots]
        seqs.pos, seqs.live, seqs.stale = seqs.pos[:, :slots], seqs.live[:, :slots], seqs.stale[:, :slots]
        logp = torch.log_softmax(logits, dim=-1)
        vals, ids = logp.topk(min(k, logp.shape[-1]), dim=-1)
        return ids, vals

    # -- internals ---------------------------------------------------------------------------

    def _step(self, seqs: HFSequences, active: torch.Tensor) -> torch.Tensor:
        """Feed each row's last token; append its slot (live only where `active`). Returns logits."""
        last = (seqs.lengths - 1).clamp(min=0)
        ids = seqs.tokens.gather(1, last[:, None])  # (rows, 1)
        # the new column is always visible to its own query, so no row is ever fully masked
        mask = torch.cat([seqs.live, torch.ones_like(seqs.live[:, :1])], dim=1).long()
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=last[:, None], use_cache=True,
                         **{self._cache_arg: seqs.cache})
        seqs.cache = out[self._cache_arg]
        seqs.pos = torch.cat([seqs.pos, last[:, None]], dim=1)
        seqs.live = torch.cat([seqs.live, active[:, None]], dim=1)
        seqs.stale = torch.cat([seqs.stale, torch.zeros_like(active[:, None])], dim=1)
        return out.logits[:, -1].float()

    def _prefill(self, seqs: HFSequences) -> None:
        """(Re)build the cache from scratch: every token of each row but its last."""
        from transformers import DynamicCache

        rows = len(seqs)
        fed = (seqs.lengths - 1).clamp(min=0)
        width = int(fed.max()) if rows else 0
        cache = DynamicCache(config=self.model.config)
        ar = torch.arange(width, device=self.device)
        pos = ar.expand(rows, width).clone()
        live = ar[None, :] < fed[:, None]
        if width > 0:
            ids = seqs.tokens[:, :width].clamp(min=0)
            # rows are left-aligned, so an all-ones mask is causal-correct for real tokens; padded
            # tails compute harmless finite values and are marked dead below
            kwargs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "position_ids": pos,
                      self._cache_arg: cache, "use_cache": True}
            try:
                out = self.model(**kwargs, logits_to_keep=1)  # skip the (rows, width, vocab) logits
            except TypeError:
                out = self.model(**kwargs)
            cache = out[self._cache_arg]
        _check_cache(cache)
        seqs.cache, seqs.pos, seqs.live = cache, pos, live
        seqs.stale = torch.zeros_like(live)
        if seqs.backup is not None:  # a proposal in flight without cache reuse: nothing to restore
            seqs.backup = (seqs.backup[0], seqs.backup[1], width)

    def _cut(self, seqs: HFSequences, keep: torch.Tensor) -> None:
        """Cut each row back to `keep` tokens, keeping what is needed to restore it in `settle`."""
        check(bool((keep >= seqs.prompt_lengths).all() & (keep <= seqs.lengths).all()),
              "keep must lie between each row's prompt length and its length", "keep")
        seqs.backup = (seqs.tokens.clone(), seqs.lengths.clone(), seqs.live.shape[1] if seqs.live is not None else 0)
        if seqs.cache is not None and self.reuse_cache:
            # the cache holds tokens [0, len-1); tokens from keep-1 on are re-fed or replaced
            seqs.stale = seqs.live & (seqs.pos >= (keep - 1)[:, None])
            seqs.live = seqs.live & ~seqs.stale
        seqs.lengths = keep.clone()

    def _reserve(self, seqs: HFSequences, n: int) -> None:
        need = int(seqs.lengths.max()) + n
        if need > seqs.tokens.shape[1]:
            grow = max(need - seqs.tokens.shape[1], seqs.tokens.shape[1] // 2, 16)
            pad = torch.full((len(seqs), grow), -1, dtype=torch.long, device=self.device)
            seqs.tokens = torch.cat([seqs.tokens, pad], dim=1)
            if seqs.backup is not None:
                old = seqs.backup[0]
                seqs.backup = (torch.cat([old, pad], dim=1), *seqs.backup[1:])

    def _compact(self, seqs: HFSequences) -> None:
        """Move each row's live slots to the front (in logical order) and drop the empty tail."""
        keep_slots = seqs.live | seqs.stale
        n_keep = keep_slots.sum(1)
        width = int(n_keep.max()) if len(seqs) else 0
        if width == seqs.live.shape[1]:
            return
        # sort key: kept slots by logical position first, then the rest
        big = torch.iinfo(torch.long).max
        key = torch.where(keep_slots, seqs.pos * 2 + seqs.stale.long(), big)
        order = key.argsort(dim=1, stable=True)[:, :width]  # (rows, width)
        seqs.pos = seqs.pos.gather(1, order)
        seqs.live = seqs.live.gather(1, order)
        seqs.stale = seqs.stale.gather(1, order)
        for layer in seqs.cache.layers:
            idx = order[:, None, :, None].expand(-1, layer.keys.shape[1], -1, layer.keys.shape[3])
            layer.keys = layer.keys.gather(2, idx)
            layer.values = layer.values.gather(2, idx)


# -- sampling --------------------------------------------------------------------------------------

def _draw(logits: torch.Tensor, logp_all: torch.Tensor, proposal: Proposal, seeds: torch.Tensor,
          draws: torch.Tensor, forced: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row from the proposal, by inverse CDF on the row's own uniform. Returns (ids, log q)."""
    if proposal.temperature == 0:  # greedy: a point mass, log q = 0
        tok = logits.argmax(-1)
        logq = torch.zeros_like(logits[:, 0])
        if forced is not None:
            tok = torch.where(forced >= 0, forced, tok)
            logq = torch.where(forced >= 0, torch.where(forced == logits.argmax(-1), 0.0, -math.inf), logq)
        return tok, logq
    logq_all = _truncate(logits / proposal.temperature, proposal)
    logq_all = torch.log_softmax(logq_all, dim=-1)
    u = rng.uniform(seeds, _TOKEN_STREAM, draws)  # (rows,) float64
    cdf = logq_all.double().exp().cumsum(-1)
    tok = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None]).squeeze(1).clamp(max=logits.shape[-1] - 1)
    if forced is not None:
        tok = torch.where(forced >= 0, forced, tok)
    return tok, logq_all.gather(1, tok[:, None]).squeeze(1)


def _truncate(scaled: torch.Tensor, proposal: Proposal) -> torch.Tensor:
    """Apply top-k / top-p to tempered logits (others to -inf), as the proposal q is defined."""
    if proposal.top_k and proposal.top_k < scaled.shape[-1]:
        kth = scaled.topk(proposal.top_k, dim=-1).values[:, -1:]
        scaled = scaled.masked_fill(scaled < kth, -math.inf)
    if proposal.top_p < 1.0:
        sorted_logits, order = scaled.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= proposal.top_p  # keep the token that crosses top_p
        scaled = scaled.masked_fill(torch.zeros_like(drop).scatter(1, order, drop), -math.inf)
    return scaled


# -- helpers ---------------------------------------------------------------------------------------

def _empty_extension(rows: int, steps: int, device) -> Extension:
    z = torch.zeros(rows, steps, dtype=torch.float32, device=device)
    return Extension(tokens=torch.full((rows, steps), -1, dtype=torch.long, device=device), logp=z.clone(),
                     logq=z.clone(), entropy=z.clone(), top1=z.clone(),
                     lengths=torch.zeros(rows, dtype=torch.long, device=device),
                     eos=torch.zeros(rows, dtype=torch.bool, device=device))


def _occurrence(index: torch.Tensor) -> torch.Tensor:
    """For each entry, how many earlier entries of `index` have the same value (0 for the first)."""
    order = index.argsort(stable=True)
    sorted_idx = index[order]
    ar = torch.arange(len(index), device=index.device)
    start = torch.ones_like(sorted_idx, dtype=torch.bool)
    start[1:] = sorted_idx[1:] != sorted_idx[:-1]
    group_start = torch.cummax(torch.where(start, ar, 0), 0).values
    occ = torch.empty_like(index)
    occ[order] = ar - group_start
    return occ


def _select_cache(cache, index: torch.Tensor):
    from transformers import DynamicCache

    new = DynamicCache()
    new.layers = []
    for layer in cache.layers:
        clone = type(layer).__new__(type(layer))
        clone.__dict__.update(layer.__dict__)
        clone.keys = layer.keys.index_select(0, index)
        clone.values = layer.values.index_select(0, index)
        new.layers.append(clone)
    new.__dict__.update({k: v for k, v in cache.__dict__.items() if k != "layers"})
    return new


def _check_cache(cache) -> None:
    from transformers.cache_utils import DynamicLayer

    for layer in cache.layers:
        if type(layer) is not DynamicLayer:
            raise PowerSampleError(
                f"this model's cache uses {type(layer).__name__} layers (sliding-window or linear attention); "
                "powersample's ragged cache reuse supports full-attention DynamicLayer caches only", "model")


def _eos_ids(model, tokenizer) -> tuple[int, ...]:
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        eos = getattr(source, "eos_token_id", None) if source is not None else None
        if eos is not None:
            return tuple(eos) if isinstance(eos, (list, tuple)) else (int(eos),)
    return ()


def _context_length(model) -> int | None:
    cfg = model.config
    for name in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
        v = getattr(cfg, name, None)
        if isinstance(v, int) and v > 0:
            return v
    return None
