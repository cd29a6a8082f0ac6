"""The engine interface: the one door between samplers and models.

A sampler holds a `Sequences` batch (one row per chain, particle or rollout) and asks the engine to:

- `extend`  : sample up to `max_new[r]` tokens for each row from the proposal, stopping at EOS, and
              return each new token's id, log p (base model, temperature 1) and log q (the proposal),
              all from the forward pass that drew it. With `keep`, each row is first cut back to its
              first `keep[r]` tokens (an MH proposal); the old suffix stays restorable until `settle`.
- `settle`  : after an `extend` with `keep`, per row keep the new suffix (accept) or restore the old one.
- `select`  : a new batch made of rows `index` of this one (reorder, duplicate, drop), caches included:
              SMC resampling and rollouts fan out this way without recomputing any prefix.
- `topk`    : the k most likely next tokens of each row under the base model, without advancing.

Rows finish and restart independently, which is what a continuous-batching backend needs later.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import check


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

    def row(self, r: int) -> list[int]:
        """Row r's new token ids as a list (a host sync: for results, not inner loops)."""
        return self.tokens[r, : int(self.lengths[r])].tolist()


class Sequences(ABC):
    """A batch of token sequences held by an engine, with per-row random streams.

    `tokens[r, :lengths[r]]` is row r (prompt then completion); `prompt_lengths[r]` its prompt part.
    """

    tokens: torch.Tensor  # (rows, capacity) int64
    lengths: torch.Tensor  # (rows,) int64
    prompt_lengths: torch.Tensor  # (rows,) int64
    seeds: torch.Tensor  # (rows,) int64, each row's random stream
    draws: torch.Tensor  # (rows,) int64, how many tokens each row's stream has drawn

    def __len__(self) -> int:
        return self.lengths.shape[0]

    def completion(self, r: int) -> list[int]:
        """Row r's completion (tokens after its prompt) as a list."""
        return self.tokens[r, int(self.prompt_lengths[r]): int(self.lengths[r])].tolist()


class Engine(ABC):
    """Produces tokens with their log-probabilities. Backends implement the five methods below."""

    eos_token_ids: tuple[int, ...]
    max_length: int | None  # the model's context, if known
    device: torch.device
    tokenizer = None  # a transformers tokenizer, or None when the model came with token ids only

    @abstractmethod
    def start(self, prompts: Sequence[Sequence[int]], seeds: Sequence[int]) -> Sequences:
        """A new batch holding `prompts` (token ids), row r drawing from random stream `seeds[r]`."""

    @abstractmethod
    def extend(self, seqs: Sequences, max_new: torch.Tensor, proposal: Proposal,
               keep: torch.Tensor | None = None, first: torch.Tensor | None = None) -> Extension:
        """Append up to `max_new[r]` tokens to each row, stopping at EOS; return what was drawn.

        keep:  cut row r back to its first `keep[r]` tokens first; `settle` must follow.
        first: force row r's first new token to `first[r]` (-1: draw it); its log p/q are reported.
        """

    @abstractmethod
    def settle(self, seqs: Sequences, accept: torch.Tensor) -> None:
        """Resolve the last `extend(keep=...)`: accept[r] keeps the new suffix, else the old returns."""

    @abstractmethod
    def select(self, seqs: Sequences, index: torch.Tensor, seeds: torch.Tensor | None = None) -> Sequences:
        """A batch of rows `seqs[index]`; duplicates get fresh streams (`seeds`, or derived ones)."""

    @abstractmethod
    def topk(self, seqs: Sequences, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The k most likely next tokens per row under the base model: (ids, log p), each (rows, k)."""

    # -- shared helpers --------------------------------------------------------------------------

    def is_eos(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.isin(tokens, torch.tensor(self.eos_token_ids, device=tokens.device))

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
