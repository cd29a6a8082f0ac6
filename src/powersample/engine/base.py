"""The engine contract: the one door between samplers and models, and everything a backend must meet.

A sampler holds a `Sequences` batch (one row per chain, particle or rollout) and asks the engine to:

- `start`   : a batch of prompts (token ids), row r drawing from its own random stream `seeds[r]`; a resumed
              row may start with its completion so far and its stream's draw count (`completions`, `draws`).
- `extend`  : sample up to `max_new[r]` tokens for each row from the proposal q, stopping at EOS or the
              model's context, and return each new token's id, log p (base model, temperature 1),
              log q (the proposal) and diagnostics, all from the forward pass that drew it (`Extension`).
              With `keep`, each row is first cut back to its first `keep[r]` tokens (an MH proposal);
              the old suffix stays restorable until `settle`.
- `settle`  : after an `extend` with `keep`, per row keep the new suffix (accept) or restore the old one.
              Between the two, `select`, `topk` and `extend` without `keep` raise: the batch is in two states.
- `select`  : a new batch made of rows `index` of this one (reorder, duplicate, drop), caches included:
              SMC resampling and rollouts fan out this way without recomputing any prefix.
- `topk`    : the k most likely next tokens of each row under the base model, without advancing.

Continuous batching (samplers/scheduler.py) needs rows in different phases at once, so the above hold
per row: `extend(keep=...)` cuts only rows with keep[r] >= 0 (-1: the row continues as it is, even
with its proposal in flight, so a proposal can be drawn over several calls); `settle(..., rows=mask)`
resolves only those rows' proposals; and two more calls change the batch mid-run:
- `join`    : replace some (settled) rows by fresh prompts with their own streams, in place.
- `shrink`  : a batch of some distinct rows, proposals in flight included (a batch whose queue ran dry).

What a sampler may read of a `Sequences`: `tokens`, `lengths`, `prompt_lengths`, `seeds`, `completion(r)`
and `len()`. Everything else (`draws`, `pending`, a backend's caches) belongs to the engine. Of the
engine: `eos_token_ids`, `max_length`, `device`, `tokenizer`, `encode`, `decode`, `is_eos`.

Hidden states (optional: `supports_hidden`; the transformers backend has them, the toy engine and a
future vLLM backend may not). A backend that has them hands back, with no extra forward pass:
- `extend(..., hidden=True)`: `Extension.hidden[r, i]` is the final-layer hidden state at the input
  position whose output distribution drew new token i (so the state that drew a completion's last token
  is its hidden state H at a checkpoint). Only the call's own tokens: nothing per token is kept between
  calls, and a sampler keeps what it needs (samplers/track.py keeps one state per row).
- `prompt_hidden(seqs)`: per row, the mean final-layer hidden state over its prompt tokens (Q), complete
  once the row has drawn its first token (the prompt's last token is fed by that forward pass).
A backend without them says `supports_hidden = False`: `Extension.hidden` and `prompt_hidden` are None.

Randomness: the r-th row's i-th token is drawn by inverse CDF from `rng.uniform(seeds[r], TOKEN_STREAM, i)`,
so a row's tokens depend on its seed only, never on which other rows share its batch.

The proposal q (temperature, top-k, top-p, renormalised) is defined once, by `Proposal.log_probs`, and
drawn from by `Proposal.draw`: every backend reports the log q of exactly this distribution, which is
what keeps MH ratios and importance weights exact.

Writing a backend. This class does the bookkeeping every backend shares (argument checks, the
keep/settle protocol, token storage, context limits, per-row seeds of selected rows) and calls hooks:

- `_extend(seqs, max_new, proposal, first) -> Extension`  (required): draw the tokens. A backend that
  runs one forward pass per token implements `next_logits(seqs, active)` and returns
  `self._decode(...)`, the shared loop (the transformers and toy engines do this). A backend that
  generates whole continuations itself (vLLM, SGLang) must still return, per token, log p under the
  raw model and log q under `proposal.log_probs`, drawn with the row's own uniforms. vLLM returns
  either raw or processed log-probs (`logprobs_mode`), not both: such a backend would request processed
  ones (log q, provided vLLM's top-k/top-p match `Proposal.log_probs`) and get log p from a second
  scoring request of the drawn tokens (prompt_logprobs), or install a logits processor that records
  the raw log-softmax of the token it draws with the row's uniform.
- `_topk(seqs, k)` (required), and `_cut`, `_settle`, `_select` for a backend that keeps per-row state
  (a KV cache): they default to nothing, which is right for a stateless backend.

Rows finish and restart independently, which is what a continuous-batching backend needs later.
A backend passes tests/test_conformance.py by adding one parameter there.
"""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .. import rng
from ..errors import PowerSampleError, check

TOKEN_STREAM = rng.Stream.TOKEN  # all stream numbers live in rng.Stream


@dataclass(frozen=True)
class Proposal:
    """How the engine draws tokens: the base model at `temperature`, optionally truncated.

    log q is always the log-probability under exactly this distribution (after truncation and
    renormalisation), so an MH ratio or an importance weight that uses it stays exact.
    """

    temperature: float = 1.0  # 0 means greedy (log q = 0)
    top_k: int = 0  # keep the k most likely tokens; 0 = off
    top_p: float = 1.0  # keep the smallest set with mass >= top_p; 1 = off

    def __post_init__(self):
        check(self.temperature >= 0, f"temperature must be >= 0, got {self.temperature}", "temperature",
              self.temperature)
        check(self.top_k >= 0, f"top_k must be >= 0 (0 = off), got {self.top_k}", "top_k", self.top_k)
        check(0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}", "top_p", self.top_p)

    def log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """log q of every next token, (rows, vocab), from the base model's logits (rows, vocab).

        Temperature 0 is a point mass on the argmax (log q = 0 there, -inf elsewhere). Otherwise the
        logits are divided by the temperature, cut to the top_k tokens, then to the smallest set whose
        mass reaches top_p (the token that crosses top_p is kept), and renormalised.
        """
        if self.temperature == 0:
            argmax = logits.argmax(-1, keepdim=True)
            return torch.full_like(logits, -math.inf).scatter(-1, argmax, 0.0)
        scaled = logits / self.temperature
        if self.top_k and self.top_k < scaled.shape[-1]:
            kth = scaled.topk(self.top_k, dim=-1).values[:, -1:]
            scaled = scaled.masked_fill(scaled < kth, -math.inf)
        if self.top_p < 1.0:
            sorted_logits, order = scaled.sort(dim=-1, descending=True)
            cum = sorted_logits.softmax(-1).cumsum(-1)
            drop = cum - sorted_logits.softmax(-1) >= self.top_p  # keep the token that crosses top_p
            scaled = scaled.masked_fill(torch.zeros_like(drop).scatter(1, order, drop), -math.inf)
        return torch.log_softmax(scaled, dim=-1)

    def draw(self, logits: torch.Tensor, seeds: torch.Tensor, draws: torch.Tensor,
             forced: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One token per row from q, by inverse CDF on the row's own uniform (seed, TOKEN_STREAM, draws).

        `forced[r] >= 0` replaces row r's draw (its log q is still reported). Returns (ids, log q).
        """
        logq_all = self.log_probs(logits)
        if self.temperature == 0:  # greedy: no randomness
            tok = logits.argmax(-1)
        else:
            u = rng.uniform(seeds, TOKEN_STREAM, draws)  # (rows,) float64
            cdf = logq_all.double().exp().cumsum(-1)
            tok = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None]).squeeze(1).clamp(max=logits.shape[-1] - 1)
        if forced is not None:
            tok = torch.where(forced >= 0, forced, tok)
        return tok, logq_all.gather(1, tok[:, None]).squeeze(1)


@dataclass
class Extension:
    """What one `extend` call drew, padded over rows: columns past `lengths[r]` hold -1 / 0."""

    tokens: torch.Tensor  # (rows, n) int64, -1 past each row's length
    logp: torch.Tensor  # (rows, n) float32, log p(token | prefix), base model at temperature 1
    logq: torch.Tensor  # (rows, n) float32, log q(token | prefix), the proposal that drew it
    entropy: torch.Tensor  # (rows, n) float32, entropy (nats) of the base distribution at that step
    top1: torch.Tensor  # (rows, n) float32, probability of the base model's most likely token there
    lengths: torch.Tensor  # (rows,) int64, tokens drawn per row
    eos: torch.Tensor  # (rows,) bool, the row's new tokens end with EOS
    # (rows, n, d) float32, final-layer hidden state of the input position that drew each token; only with
    # extend(hidden=True) on a backend that supports_hidden, else None
    hidden: torch.Tensor | None = None

    def row(self, r: int) -> list[int]:
        """Row r's new token ids as a list (a host sync: for results, not inner loops)."""
        return self.tokens[r, : int(self.lengths[r])].tolist()


@dataclass(eq=False)
class Sequences:
    """A batch of token sequences held by an engine, with per-row random streams.

    `tokens[r, :lengths[r]]` is row r (prompt then completion); `prompt_lengths[r]` its prompt part.
    Backends subclass this to add their own per-row state (caches).
    """

    tokens: torch.Tensor  # (rows, capacity) int64, -1 past each row's length
    lengths: torch.Tensor  # (rows,) int64
    prompt_lengths: torch.Tensor  # (rows,) int64
    seeds: torch.Tensor  # (rows,) int64, each row's random stream
    draws: torch.Tensor  # (rows,) int64, how many tokens each row's stream has drawn (engine-owned)
    pending: tuple | None = None  # (tokens, lengths, rows) before the cuts of rows in flight, until settle

    def __len__(self) -> int:
        return self.lengths.shape[0]

    def completion(self, r: int) -> list[int]:
        """Row r's completion (tokens after its prompt) as a list."""
        return self.tokens[r, int(self.prompt_lengths[r]): int(self.lengths[r])].tolist()


class Engine(ABC):
    """Produces tokens with their log-probabilities. Backends implement the hooks (see the module doc)."""

    eos_token_ids: tuple[int, ...]
    max_length: int | None  # the model's context, if known
    device: torch.device
    tokenizer = None  # a transformers tokenizer, or None when the model came with token ids only
    supports_hidden: bool = False  # hands back hidden states (module doc); then `hidden_size` is their d
    hidden_size: int | None = None
    sequences_class: type[Sequences] = Sequences  # a backend's Sequences subclass, if it keeps state per row
    # occupancy: row-slots fed to forward passes, and those that drew a token (a device tensor, no sync)
    slots_fed: int = 0
    slots_drawn: torch.Tensor | int = 0
    _want_hidden: bool = False  # the extend in progress asked for hidden states

    # -- the contract: what samplers call ---------------------------------------------------------

    def start(self, prompts: Sequence[Sequence[int]], seeds: Sequence[int],
              completions: Sequence[Sequence[int]] | None = None, draws: Sequence[int] | None = None) -> Sequences:
        """A new batch holding `prompts` (token ids), row r drawing from random stream `seeds[r]`.

        A resumed row (samplers/scheduler.py) starts where it stopped: `completions[r]` follows its prompt as
        completion tokens, and its stream has already drawn `draws[r]` tokens (so it draws the next ones)."""
        if completions is not None:
            check(len(completions) == len(prompts), "need one completion per prompt", "completions")
            prompts_only = [len(p) for p in prompts]
            prompts = [[*p, *c] for p, c in zip(prompts, completions, strict=True)]
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
        return self.sequences_class(
            tokens=tokens.to(self.device), lengths=lengths.to(self.device),
            prompt_lengths=torch.tensor(prompts_only if completions is not None else lens, device=self.device),
            seeds=torch.tensor([int(s) for s in seeds], dtype=torch.long, device=self.device),
            draws=torch.tensor([int(d) for d in draws] if draws is not None else [0] * len(prompts),
                               dtype=torch.long, device=self.device))

    @torch.no_grad()
    def extend(self, seqs: Sequences, max_new: torch.Tensor | int, proposal: Proposal,
               keep: torch.Tensor | None = None, first: torch.Tensor | None = None,
               hidden: bool = False) -> Extension:
        """Append up to `max_new[r]` tokens to each row, stopping at EOS or the context; return what was drawn.

        keep:   cut row r back to its first `keep[r]` tokens first; `settle` must follow. keep[r] = -1: row r
                is not cut (it may have a proposal in flight from an earlier call, which goes on).
        first:  force row r's first new token to `first[r]` (-1: draw it); its log p/q are reported.
        hidden: also return each token's hidden state (`Extension.hidden`), if the backend supports_hidden.
        """
        rows = len(seqs)
        max_new = torch.as_tensor(max_new, device=self.device).long().expand(rows).clone()
        if keep is None:
            _check_settled(seqs, "extend")
        else:  # keep[r] = -1: row r is not cut (it continues, even with a proposal in flight)
            keep = torch.as_tensor(keep, device=self.device).long().expand(rows)
            cut = keep >= 0
            check(bool((~cut | (keep >= seqs.prompt_lengths) & (keep <= seqs.lengths)).all()),
                  "keep must lie between each row's prompt length and its length (or be -1: no cut)", "keep")
            if seqs.pending is None:
                if bool(cut.any()):  # (a host sync; keep=-1 everywhere cuts nothing)
                    seqs.pending = (seqs.tokens.clone(), seqs.lengths.clone(), cut.clone())
            else:  # rows cut earlier stay restorable; a row is cut again only after its settle
                old_tokens, old_lengths, pending = seqs.pending
                check(not bool((cut & pending).any()), "a row with a proposal in flight was cut again: settle "
                      "it first", "keep")
                old_tokens[cut], old_lengths[cut] = seqs.tokens[cut], seqs.lengths[cut]
                seqs.pending = (old_tokens, old_lengths, pending | cut)
            self._cut(seqs, keep, cut)
            seqs.lengths = torch.where(cut, keep, seqs.lengths)
        if self.max_length is not None:  # never run past the model's context
            max_new = torch.minimum(max_new, (self.max_length - seqs.lengths).clamp(min=0))
        self._reserve(seqs, int(max_new.max()))
        if first is not None:
            first = torch.as_tensor(first, device=self.device).long().expand(rows)
        self._want_hidden = hidden and self.supports_hidden
        return self._extend(seqs, max_new, proposal, first)

    def prompt_hidden(self, seqs: Sequences) -> torch.Tensor | None:
        """(rows, d) float32: each row's mean final-layer hidden state over its prompt (Q), or None where the
        backend has no hidden states. Complete once the row has drawn a token (module doc)."""
        return None

    def settle(self, seqs: Sequences, accept: torch.Tensor, rows: torch.Tensor | None = None) -> None:
        """Resolve the proposals in flight (of `rows` only, a bool mask, if given): accept[r] keeps the new
        suffix, else the old one returns. Other rows stay in flight."""
        check(seqs.pending is not None, "settle() needs a preceding extend(keep=...)", "accept")
        old_tokens, old_lengths, pending = seqs.pending
        rows = pending if rows is None else torch.as_tensor(rows, device=self.device).bool().expand(len(seqs))
        check(not bool((rows & ~pending).any()), "settle() of a row with no proposal in flight", "rows")
        accept = torch.as_tensor(accept, device=self.device).bool().expand(len(seqs)) & rows
        reject = rows & ~accept
        seqs.tokens[reject] = old_tokens[reject]
        seqs.lengths = torch.where(reject, old_lengths, seqs.lengths)
        self._settle(seqs, accept, rows)
        left = pending & ~rows
        seqs.pending = (old_tokens, old_lengths, left) if bool(left.any()) else None

    def join(self, seqs: Sequences, rows: torch.Tensor, prompts: Sequence[Sequence[int]],
             seeds: Sequence[int], completions: Sequence[Sequence[int]] | None = None,
             draws: Sequence[int] | None = None) -> None:
        """Replace rows `rows` (indices, none with a proposal in flight) by fresh `prompts` with their own
        random streams, in place: the other rows run on undisturbed (continuous batching). `completions`
        and `draws`: as in `start` (resumed rows)."""
        rows = torch.as_tensor(rows, device=self.device).long()
        check(len(rows) == len(prompts) == len(seeds), "join needs one prompt and one seed per row", "prompts")
        if seqs.pending is not None:
            check(not bool(seqs.pending[2][rows].any()), "join() of a row with a proposal in flight: settle it "
                  "first", "rows")
        new = self.start(prompts, seeds, completions, draws)  # checks the prompts; its rows hold no backend state
        self._reserve(seqs, max(0, new.tokens.shape[1] - int(seqs.lengths.max())))
        seqs.tokens[rows] = -1
        seqs.tokens[rows, : new.tokens.shape[1]] = new.tokens
        for name in ("lengths", "prompt_lengths", "seeds", "draws"):
            getattr(seqs, name)[rows] = getattr(new, name)
        self._join(seqs, rows, new)

    def select(self, seqs: Sequences, index: torch.Tensor, seeds: torch.Tensor | None = None) -> Sequences:
        """A batch of rows `seqs[index]`; duplicates get fresh streams (`seeds`, or derived ones)."""
        index = torch.as_tensor(index, device=self.device).long()
        _check_settled(seqs, "select")
        if seeds is None:  # each copy of a row gets its own stream: k-th copy of parent -> hash(parent, k)
            parent = seqs.seeds[index]
            copy_no = _occurrence(index)
            seeds = torch.where(copy_no == 0, parent, rng.hash64(parent, seqs.draws[index], copy_no))
            draws = torch.where(copy_no == 0, seqs.draws[index], torch.zeros_like(index))
        else:
            seeds = torch.as_tensor(seeds, device=self.device).long()
            check(seeds.shape == index.shape, f"need one seed per selected row: {len(index)} rows, "
                  f"{seeds.numel()} seeds", "seeds")
            draws = torch.zeros_like(index)
        out = self.sequences_class(tokens=seqs.tokens[index].clone(), lengths=seqs.lengths[index].clone(),
                                   prompt_lengths=seqs.prompt_lengths[index].clone(), seeds=seeds, draws=draws)
        self._select(seqs, index, out)
        return out

    def shrink(self, seqs: Sequences, index: torch.Tensor) -> Sequences:
        """A batch of the distinct rows `index` of this one, proposals in flight included: how a
        continuous batch drops rows it no longer needs. Each row keeps its stream and draw count."""
        index = torch.as_tensor(index, device=self.device).long()
        check(len(index) > 0 and bool((_occurrence(index) == 0).all()), "shrink() needs distinct rows, at least one",
              "index")
        out = self.sequences_class(tokens=seqs.tokens[index].clone(), lengths=seqs.lengths[index].clone(),
                                   prompt_lengths=seqs.prompt_lengths[index].clone(), seeds=seqs.seeds[index].clone(),
                                   draws=seqs.draws[index].clone())
        if seqs.pending is not None and bool(seqs.pending[2][index].any()):
            out.pending = tuple(x[index].clone() for x in seqs.pending)
        self._select(seqs, index, out)
        return out

    @torch.no_grad()
    def topk(self, seqs: Sequences, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The k most likely next tokens per row under the base model: (ids, log p), each (rows, k)."""
        _check_settled(seqs, "topk")
        check(k >= 1, f"topk needs k >= 1, got {k}", "k", k)
        return self._topk(seqs, k)

    # -- hooks a backend implements ---------------------------------------------------------------

    @abstractmethod
    def _extend(self, seqs: Sequences, max_new: torch.Tensor, proposal: Proposal,
                first: torch.Tensor | None) -> Extension:
        """Draw up to max_new[r] (already within the context) tokens per row; write them into seqs.tokens
        (room is reserved), advance seqs.lengths and seqs.draws. Usually `return self._decode(...)`."""

    @abstractmethod
    def _topk(self, seqs: Sequences, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """See `topk`."""

    def _cut(self, seqs: Sequences, keep: torch.Tensor, cut: torch.Tensor) -> None:  # noqa: B027 (no-op for a stateless backend)
        """Rows `cut` (a mask) are about to be cut back to `keep` (seqs.lengths is still the old one): mark caches."""

    def _settle(self, seqs: Sequences, accept: torch.Tensor, rows: torch.Tensor) -> None:  # noqa: B027 (no-op for a stateless backend)
        """Rows `rows` are resolved (tokens and lengths already are); resolve the backend's own state the same way."""

    def _join(self, seqs: Sequences, rows: torch.Tensor, new: Sequences) -> None:  # noqa: B027 (no-op for a stateless backend)
        """Rows `rows` of `seqs` now hold `new`'s rows (tokens already written): reset their backend state."""

    def _select(self, seqs: Sequences, index: torch.Tensor, out: Sequences) -> None:  # noqa: B027 (no-op for a stateless backend)
        """Give `out` (rows `index` of `seqs`) the backend state of those rows."""

    # -- shared helpers --------------------------------------------------------------------------

    def _decode(self, seqs: Sequences, max_new: torch.Tensor, proposal: Proposal, first: torch.Tensor | None,
                next_logits: Callable[[Sequences, torch.Tensor], torch.Tensor], sync_every: int = 1) -> Extension:
        """The token loop of a backend that runs one forward pass per token.

        `next_logits(seqs, active)` returns each row's next-token logits (rows, vocab) given its current
        tokens and the final-layer hidden state (rows, d) at the position fed (None without hidden states),
        and takes note that the rows in `active` will be advanced by one token.
        Checks for "all rows done" every `sync_every` steps (each check is a host sync on a GPU).
        """
        rows = len(seqs)
        steps = int(max_new.max())
        ext = _empty_extension(rows, steps, self.device)
        want_hidden = self._want_hidden
        hidden = []  # one (rows, d) state per step
        active = max_new > 0
        for t in range(steps):
            logits, h = next_logits(seqs, active)  # (rows, vocab), (rows, d) or None
            if want_hidden:
                hidden.append(torch.where(active[:, None], h.float(), 0.0))
            self.slots_fed += rows
            self.slots_drawn = self.slots_drawn + active.sum()
            logp_all = torch.log_softmax(logits, dim=-1)
            tok, logq = proposal.draw(logits, seqs.seeds, seqs.draws, first if t == 0 else None)
            # tokens the model gives probability 0 (a table's -inf) add nothing to the entropy
            ent = -(logp_all.exp() * logp_all.clamp(min=torch.finfo(logp_all.dtype).min)).sum(-1)
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
        if want_hidden:
            stacked = torch.stack(hidden, 1) if hidden else torch.zeros(rows, 0, self.hidden_size, device=self.device)
            ext.hidden = stacked[:, : ext.tokens.shape[1]]
        return ext

    def occupancy(self) -> float:
        """Share of row-slots fed to forward passes that drew a token, since the engine was made."""
        return float(self.slots_drawn) / max(self.slots_fed, 1)

    def _reserve(self, seqs: Sequences, n: int) -> None:
        """Room for n more tokens in every row (and in the pending copy that settle may restore)."""
        need = int(seqs.lengths.max()) + n
        if need > seqs.tokens.shape[1]:
            grow = max(need - seqs.tokens.shape[1], seqs.tokens.shape[1] // 2, 16)
            pad = torch.full((len(seqs), grow), -1, dtype=torch.long, device=self.device)
            seqs.tokens = torch.cat([seqs.tokens, pad], dim=1)
            if seqs.pending is not None:
                seqs.pending = (torch.cat([seqs.pending[0], pad], dim=1), *seqs.pending[1:])

    @functools.cached_property
    def _eos(self) -> torch.Tensor:  # made once: on a GPU each new tensor is a host-to-device copy
        return torch.tensor(self.eos_token_ids, device=self.device)

    def is_eos(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.isin(tokens, self._eos.to(tokens.device))

    def encode(self, prompt: str | Sequence[int]) -> list[int]:
        """Token ids of a prompt: strings need a tokenizer; id lists pass through."""
        if isinstance(prompt, str):
            check(self.tokenizer is not None,
                  "string prompts need a tokenizer; this model was given without one, so pass token ids",
                  "prompts")
            return list(self.tokenizer(prompt, add_special_tokens=True)["input_ids"])
        return [int(t) for t in prompt]

    def decode(self, ids: Sequence[int]) -> str | None:
        if self.tokenizer is None:
            return None
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)


def _check_settled(seqs: Sequences, what: str) -> None:
    if seqs.pending is not None:
        raise PowerSampleError(f"{what}() between extend(keep=...) and settle() is not allowed: settle first",
                               "accept")


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
