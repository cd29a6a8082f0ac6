"""The transformers backend: any AutoModelForCausalLM, batched, reusing each row's KV cache.

Cache layout. All rows share one DynamicCache whose physical slots are
columns; per row and slot we track the token's logical position (`pos`) and whether the slot is
`live` (part of the row's current sequence). The model sees `live` as its 2D attention mask and
each row's logical positions as `position_ids`, so a row attends exactly to its own current prefix
wherever in the cache that prefix lies. An MH proposal cuts a row back by marking its old suffix
`stale` (masked, restorable) and appends the new suffix as new columns, marked `fresh` while the
proposal is in flight (rows are cut and settled independently, so that is per row and slot); `settle`
makes one of the two live. A row that `join`s gets its prompt computed on its own and appended as
new columns, its old slots dead. Holes are squeezed out by `_compact` once they are worth a copy.
The cache always holds every token of a row but the last, which is fed on the next forward: its
logits give the next token's distribution, so no full-vocabulary logits are ever kept between calls.

Hidden states (engine/base.py): a forward hook on `model.get_decoder()` reads the decoder's
`last_hidden_state` (the final-layer state after the last norm, what the LM head reads) of every
forward pass that runs anyway: the fed position's state per decode step (H), and a running per-row
sum over the prompt's positions (Q), filled by the prefill and, for the prompt's last token, by the
first decode step. Prefill keeps `logits_to_keep=1`: the decoder computes every position's state
anyway; only the LM head is skipped.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import PowerSampleError, check
from .base import Engine, Extension, Proposal, Sequences

_MIN_DEAD_SLOTS = 16  # compact the cache once this many (and half as many as live) slots are dead
_SYNC_EVERY_GPU = 8  # decode steps between checks for "all rows done" on a GPU (each is a host sync)


@dataclass(eq=False)
class HFSequences(Sequences):
    cache: object = None  # transformers DynamicCache, or None before the first forward
    pos: torch.Tensor | None = None  # (rows, slots) logical position held by each cache slot
    live: torch.Tensor | None = None  # (rows, slots) bool: slot is part of the row's sequence
    stale: torch.Tensor | None = None  # (rows, slots) bool: old suffix awaiting `settle`
    fresh: torch.Tensor | None = None  # (rows, slots) bool: new suffix of a proposal in flight
    q_sum: torch.Tensor | None = None  # (rows, d) float32: sum of the final-layer states of prompt positions ...
    q_n: torch.Tensor | None = None  # (rows,) ... over its first q_n positions (Q = q_sum / q_n once q_n = prompt)


class HFEngine(Engine):
    """Engine over a transformers causal LM. `reuse_cache=False` re-runs every prefix (for tests)."""

    sequences_class = HFSequences

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
        # hidden states: the decoder module under the LM head (Llama, Qwen, SmolLM, ...), if the model has one
        decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self._decoder = decoder if decoder is not None and decoder is not model else None
        self.supports_hidden = self._decoder is not None and getattr(config, "hidden_size", None) is not None
        self.hidden_size = config.hidden_size if self.supports_hidden else None

    def prompt_hidden(self, seqs: HFSequences) -> torch.Tensor | None:
        if seqs.q_sum is None:
            return None
        return seqs.q_sum / seqs.q_n.clamp(min=1)[:, None]

    # -- Engine hooks ------------------------------------------------------------------------

    def _extend(self, seqs: HFSequences, max_new: torch.Tensor, proposal: Proposal,
                first: torch.Tensor | None) -> Extension:
        if not self.reuse_cache or seqs.cache is None:
            self._prefill(seqs)
        sync_every = 1 if self.device.type == "cpu" else _SYNC_EVERY_GPU  # on CPU a check costs nothing
        return self._decode(seqs, max_new, proposal, first, self._step, sync_every)

    def _cut(self, seqs: HFSequences, keep: torch.Tensor, cut: torch.Tensor) -> None:
        if seqs.cache is not None and self.reuse_cache:
            # the cache holds tokens [0, len-1); tokens from keep-1 on are re-fed or replaced
            stale = cut[:, None] & seqs.live & (seqs.pos >= (keep - 1)[:, None])
            seqs.stale = seqs.stale | stale
            seqs.live = seqs.live & ~stale

    def _settle(self, seqs: HFSequences, accept: torch.Tensor, rows: torch.Tensor) -> None:
        if not self.reuse_cache:  # the next extend rebuilds the cache from the tokens anyway
            seqs.cache = seqs.pos = seqs.live = seqs.stale = seqs.fresh = None
        elif seqs.cache is not None:
            # rejected rows: the new suffix dies, the old one comes back; accepted: the old one dies
            reject = (rows & ~accept)[:, None]
            seqs.live = torch.where(reject, (seqs.live & ~seqs.fresh) | seqs.stale, seqs.live)
            seqs.stale = seqs.stale & ~rows[:, None]
            seqs.fresh = seqs.fresh & ~rows[:, None]
            self._compact(seqs)

    def _join(self, seqs: HFSequences, rows: torch.Tensor, new: HFSequences) -> None:
        if seqs.cache is None or not self.reuse_cache:
            seqs.cache = None  # (re)built from the tokens by the next extend
            return
        for name in ("live", "stale", "fresh"):  # the rows' old slots die ...
            getattr(seqs, name)[rows] = False
        self._prefill(new)  # ... and their prompts, computed on their own, are appended as new slots
        if seqs.q_sum is not None and new.q_sum is not None:
            seqs.q_sum[rows], seqs.q_n[rows] = new.q_sum.to(seqs.q_sum.dtype), new.q_n
        width = new.live.shape[1]
        if width == 0:  # one-token prompts: nothing to cache until their first forward
            return
        for layer, part in zip(seqs.cache.layers, new.cache.layers, strict=True):
            for name in ("keys", "values"):
                old, add = getattr(layer, name), getattr(part, name)
                block = old.new_zeros(old.shape[0], old.shape[1], width, old.shape[3])
                block[rows] = add.to(old.dtype)
                setattr(layer, name, torch.cat([old, block], dim=2))
        zeros = torch.zeros(len(seqs), width, dtype=torch.bool, device=self.device)
        pos, live = zeros.long(), zeros.clone()
        pos[rows], live[rows] = new.pos, new.live
        seqs.pos, seqs.live = torch.cat([seqs.pos, pos], 1), torch.cat([seqs.live, live], 1)
        seqs.stale, seqs.fresh = torch.cat([seqs.stale, zeros], 1), torch.cat([seqs.fresh, zeros], 1)
        self._compact(seqs)

    def _select(self, seqs: HFSequences, index: torch.Tensor, out: HFSequences) -> None:
        if seqs.cache is None and self.reuse_cache:
            self._prefill(seqs)  # so that duplicates share one computed prefix
        if seqs.cache is not None:
            out.cache = _select_cache(seqs.cache, index)
            out.pos, out.live, out.stale, out.fresh = (seqs.pos[index], seqs.live[index], seqs.stale[index],
                                                       seqs.fresh[index])
            if seqs.q_sum is not None:
                out.q_sum, out.q_n = seqs.q_sum[index], seqs.q_n[index]

    def _topk(self, seqs: HFSequences, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.reuse_cache or seqs.cache is None:
            self._prefill(seqs)
        slots = seqs.live.shape[1]
        logits, _ = self._step(seqs, torch.zeros(len(seqs), dtype=torch.bool, device=self.device))
        # _step appended one (dead) column: drop it again so the cache is as it was
        for layer in seqs.cache.layers:  # (not cache.crop: its signature differs across versions)
            layer.keys, layer.values = layer.keys[:, :, :slots], layer.values[:, :, :slots]
        for name in ("pos", "live", "stale", "fresh"):
            setattr(seqs, name, getattr(seqs, name)[:, :slots])
        logp = torch.log_softmax(logits, dim=-1)
        vals, ids = logp.topk(min(k, logp.shape[-1]), dim=-1)
        return ids, vals

    # -- internals ---------------------------------------------------------------------------

    def _forward(self, **kwargs):
        """The model's forward pass, and its decoder's last_hidden_state (None without hidden states)."""
        if self._decoder is None:
            return self.model(**kwargs), None
        seen = []

        def hook(module, args, output):
            seen.append(output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0])

        with self._decoder.register_forward_hook(hook):  # (removed again on exit: the model stays as it was)
            out = self.model(**kwargs)
        return out, seen[-1]

    def _step(self, seqs: HFSequences, active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Feed each row's last token; append its slot (live only where `active`). Returns the logits and the
        fed position's final-layer hidden state (rows, d) (None without hidden states)."""
        last = (seqs.lengths - 1).clamp(min=0)
        ids = seqs.tokens.gather(1, last[:, None])  # (rows, 1)
        # the new column is always visible to its own query, so no row is ever fully masked
        mask = torch.cat([seqs.live, torch.ones_like(seqs.live[:, :1])], dim=1).long()
        out, hidden = self._forward(input_ids=ids, attention_mask=mask, position_ids=last[:, None], use_cache=True,
                                    **{self._cache_arg: seqs.cache})
        if hidden is not None:
            hidden = hidden[:, -1].float()
            if seqs.q_sum is not None:  # the prompt's last position is first fed here: add it to Q once
                add = (last < seqs.prompt_lengths) & (seqs.q_n == last)
                seqs.q_sum += torch.where(add[:, None], hidden, 0.0)
                seqs.q_n += add
        seqs.cache = out[self._cache_arg]
        seqs.pos = torch.cat([seqs.pos, last[:, None]], dim=1)
        seqs.live = torch.cat([seqs.live, active[:, None]], dim=1)
        seqs.stale = torch.cat([seqs.stale, torch.zeros_like(active[:, None])], dim=1)
        in_flight = seqs.pending[2] if seqs.pending is not None else torch.zeros_like(active)
        seqs.fresh = torch.cat([seqs.fresh, in_flight[:, None]], dim=1)
        return out.logits[:, -1].float(), hidden

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
        if self.supports_hidden:  # Q restarts from the prompt positions this pass computes
            seqs.q_sum = torch.zeros(rows, self.hidden_size, device=self.device)
            seqs.q_n = torch.zeros(rows, dtype=torch.long, device=self.device)
        if width > 0:
            ids = seqs.tokens[:, :width].clamp(min=0)
            # rows are left-aligned, so an all-ones mask is causal-correct for real tokens; padded
            # tails compute harmless finite values and are marked dead below
            kwargs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "position_ids": pos,
                      self._cache_arg: cache, "use_cache": True}
            try:
                out, hidden = self._forward(**kwargs, logits_to_keep=1)  # skip the (rows, width, vocab) logits
            except TypeError:
                out, hidden = self._forward(**kwargs)
            cache = out[self._cache_arg]
            if hidden is not None:  # prompt positions only (the padded tails are past every row's prompt)
                prompt = live & (ar[None, :] < seqs.prompt_lengths[:, None])
                # a (rows, 1, width) @ (rows, width, d) product: no float copy of every position's state
                seqs.q_sum = (prompt.to(hidden.dtype)[:, None, :] @ hidden).squeeze(1).float()
                seqs.q_n = prompt.sum(1)
        _check_cache(cache)
        seqs.cache, seqs.pos, seqs.live = cache, pos, live
        seqs.stale, seqs.fresh = torch.zeros_like(live), torch.zeros_like(live)

    def _compact(self, seqs: HFSequences) -> None:
        """Move each row's live slots to the front (in logical order) and drop the empty tail, once the
        dead slots are worth it: every compaction copies the whole cache, and dead slots are masked anyway."""
        keep_slots = seqs.live | seqs.stale
        n_keep = keep_slots.sum(1)
        width = int(n_keep.max()) if len(seqs) else 0
        if seqs.live.shape[1] - width < max(_MIN_DEAD_SLOTS, width // 2):
            return
        # sort key: kept slots by logical position first, then the rest
        big = torch.iinfo(torch.long).max
        key = torch.where(keep_slots, seqs.pos * 2 + seqs.stale.long(), big)
        order = key.argsort(dim=1, stable=True)[:, :width]  # (rows, width)
        seqs.pos = seqs.pos.gather(1, order)
        seqs.live = seqs.live.gather(1, order)
        seqs.stale = seqs.stale.gather(1, order)
        seqs.fresh = seqs.fresh.gather(1, order)
        for layer in seqs.cache.layers:
            idx = order[:, None, :, None].expand(-1, layer.keys.shape[1], -1, layer.keys.shape[3])
            layer.keys = layer.keys.gather(2, idx)
            layer.values = layer.values.gather(2, idx)


# -- helpers ---------------------------------------------------------------------------------------

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
