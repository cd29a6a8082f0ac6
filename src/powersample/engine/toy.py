"""A toy engine: next-token log-probs from a function or a table of prefixes, no neural network.

It meets the same contract as the transformers backend (tests/test_conformance.py runs both), so a
sampler's exactness can be checked on a model whose every probability is known, in a fraction of
the time:

    ToyEngine(lambda prefix: logp_vector, eos_token_ids=[1])            # any function of the prefix
    ToyEngine.random(vocab=4, seed=0, scale=2.0)                        # a fixed random law per prefix
    ToyEngine.from_table({(0,): [...], (0, 2): [...]}, eos_token_ids=[1])  # an enumerated tree
    ToyEngine.from_model(llama, prompts=[[0, 5]], depth=3)              # a torch model's exact table

A prefix is the whole row so far (prompt and completion) as a tuple of ids; the function returns
log-probabilities (or logits: they are renormalised) over the vocabulary, -inf for impossible tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from .. import rng
from ..errors import PowerSampleError, check
from .base import Engine, Extension, Proposal, Sequences

Prefix = tuple[int, ...]


class ToyEngine(Engine):
    """Engine over `next_logp(prefix) -> log-probs (vocab,)`; results are memoised per prefix."""

    def __init__(self, next_logp: Callable[[Prefix], Sequence[float] | torch.Tensor],
                 eos_token_ids: Sequence[int] = (1,), max_length: int | None = None, tokenizer=None):
        check(len(eos_token_ids) > 0, "a toy engine needs at least one EOS token id", "eos_token_id")
        self.next_logp = next_logp
        self.eos_token_ids = tuple(int(t) for t in eos_token_ids)
        self.max_length = max_length
        self.tokenizer = tokenizer
        self.device = torch.device("cpu")
        self._memo: dict[Prefix, torch.Tensor] = {}

    @classmethod
    def from_table(cls, table: Mapping[Prefix, Sequence[float] | torch.Tensor], **kwargs) -> ToyEngine:
        """An engine over an enumerated tree: `table[prefix]` is the next-token law after `prefix`.
        Reaching a prefix the table lacks raises, naming it."""
        table = {tuple(int(t) for t in k): v for k, v in table.items()}

        def lookup(prefix: Prefix):
            if prefix not in table:
                raise PowerSampleError(f"the toy table has no entry for prefix {list(prefix)}", "prefix")
            return table[prefix]

        return cls(lookup, **kwargs)

    @classmethod
    def random(cls, vocab: int, seed: int = 0, scale: float = 1.0, **kwargs) -> ToyEngine:
        """A reproducible random model: the logits after each prefix are `scale` * standard normals
        drawn from a generator seeded by (seed, prefix). Larger `scale`, peakier laws."""
        def law(prefix: Prefix) -> torch.Tensor:
            g = torch.Generator().manual_seed(rng.derive_seeds(seed, *prefix))
            return scale * torch.randn(vocab, generator=g, dtype=torch.float64)

        return cls(law, **kwargs)

    @classmethod
    def from_model(cls, model, prompts: Sequence[Sequence[int]], depth: int, **kwargs) -> ToyEngine:
        """The exact next-token table of a transformers causal LM over every continuation of `prompts`
        up to `depth` tokens (EOS ends a branch): vocab**depth prefixes, so keep both small.
        EOS and the context length default to the model's."""
        config = model.config
        eos = kwargs.pop("eos_token_ids", None) or config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos)
        kwargs.setdefault("max_length", getattr(config, "max_position_embeddings", None))
        table: dict[Prefix, torch.Tensor] = {}
        level = [tuple(p) for p in prompts]
        for _ in range(depth):
            with torch.no_grad():  # prefixes of one level share a length per prompt: one forward each
                for n in sorted({len(p) for p in level}):
                    batch = [p for p in level if len(p) == n]
                    logits = model(input_ids=torch.tensor(batch, device=model.device)).logits[:, -1].float().cpu()
                    table.update(zip(batch, torch.log_softmax(logits, -1), strict=True))
            level = [p + (t,) for p in level for t in range(len(table[p])) if t not in eos]
        return cls.from_table(table, eos_token_ids=eos, **kwargs)

    def logp(self, prefix: Sequence[int]) -> torch.Tensor:
        """log p(next token | prefix) over the vocabulary, float32, renormalised."""
        key = tuple(prefix)
        out = self._memo.get(key)
        if out is None:
            out = torch.log_softmax(torch.as_tensor(self.next_logp(key), dtype=torch.float32), -1)
            self._memo[key] = out
        return out

    # -- Engine hooks: no cache, so cut, settle and select need nothing beyond the base class; no hidden
    # states (Engine.supports_hidden is False), so samplers log none ---------------------------------

    def _extend(self, seqs: Sequences, max_new: torch.Tensor, proposal: Proposal,
                first: torch.Tensor | None) -> Extension:
        # no network, so no hidden states (supports_hidden is False)
        return self._decode(seqs, max_new, proposal, first, lambda s, active: (self._next_logits(s, active), None))

    def _topk(self, seqs: Sequences, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        # a row whose completion ended with EOS has no next token: it gets zeros, not a lookup past its EOS
        last = seqs.tokens.gather(1, (seqs.lengths - 1)[:, None]).squeeze(1)
        logp = self._next_logits(seqs, ~(self.is_eos(last) & (seqs.lengths > seqs.prompt_lengths)))
        vals, ids = logp.topk(min(k, logp.shape[-1]), dim=-1)
        return ids, vals

    def _next_logits(self, seqs: Sequences, active: torch.Tensor | None = None) -> torch.Tensor:
        """Each row's next-token log-probs. Rows with the same prefix share one lookup, so a step costs
        as many lookups as there are distinct prefixes, not rows. Rows not `active` get zeros (they draw
        nothing), so a finished row never asks the table for a prefix beyond its EOS."""
        width = int(seqs.lengths.max())
        prefixes = torch.where(torch.arange(width) < seqs.lengths[:, None], seqs.tokens[:, :width], -1)
        if active is not None:
            prefixes[~active] = -2
        # group equal rows by a polynomial hash (torch.unique over rows is slow), then check the grouping
        key = torch.zeros(len(seqs), dtype=torch.long)
        for j in range(width):
            key = key * 1_000_003 + prefixes[:, j] + 3  # int64 arithmetic wraps around: fine for a hash
        _, inverse = torch.unique(key, return_inverse=True)
        first = torch.full((int(inverse.max()) + 1,), len(seqs)).scatter_reduce(0, inverse, torch.arange(len(seqs)),
                                                                                "amin")
        distinct = prefixes[first]
        if not bool((distinct[inverse] == prefixes).all()):
            raise PowerSampleError("two different prefixes hashed alike in the toy engine", "prefix")
        laws = [None if row[0] == -2 else self.logp([t for t in row if t >= 0]) for row in distinct.tolist()]
        idle = torch.zeros(next((len(x) for x in laws if x is not None), 1))
        return torch.stack([idle if x is None else x for x in laws])[inverse]


def load(model, *, eos_token_id: int | Sequence[int] | None = None, tokenizer=None, device: str | None = None,
         **options) -> Engine:
    """The `engine="toy"` loader: `model` is a ToyEngine (or any Engine), a table {prefix: log-probs}
    or a function prefix -> log-probs."""
    if isinstance(model, Engine):
        return model
    check(not options, f"the toy engine takes no option(s) {sorted(options)}", next(iter(options), None))
    check(device in (None, "cpu"), f"the toy engine runs on the CPU only, not {device!r}", "device", device)
    eos = {} if eos_token_id is None else {"eos_token_ids": [eos_token_id] if isinstance(eos_token_id, int)
                                                          else list(eos_token_id)}
    if isinstance(model, Mapping):
        return ToyEngine.from_table(model, tokenizer=tokenizer, **eos)
    check(callable(model), f"the toy engine needs a table {{prefix: log-probs}} or a function prefix -> "
          f"log-probs, got {type(model).__name__}", "model")
    return ToyEngine(model, tokenizer=tokenizer, **eos)
