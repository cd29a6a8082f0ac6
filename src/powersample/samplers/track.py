"""Per-token bookkeeping of each row's current completion: log p, log q, entropy, top-1 probability.

Kept on the device as (rows, T) tensors so that an MH ratio's suffix sums cost one masked sum,
never a re-scoring forward pass. With a `Projection` (an engine that supports_hidden), also the
projected hidden state of the completion's last token (H), one vector per row: never one per token.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..engine.base import Extension
from .result import Checkpoint

_FIELDS = ("logp", "logq", "entropy", "top1")


def round_sig(x: float, digits: int = 4) -> float:
    """x to `digits` significant digits: logged hidden states need no more, and stay small."""
    return float(f"{x:.{digits}g}")


@dataclass(frozen=True)
class Projection:
    """How hidden states are logged: d -> m by a fixed Gaussian random projection, so a 7B model's states
    (d = 3584) take m = 32 numbers per checkpoint. The matrix is numpy's default_rng(seed) standard normals
    (d, m) scaled by 1/sqrt(m) (Johnson-Lindenstrauss: distances kept in expectation), the same in every run;
    where d <= m the state is logged as it is (identity, `dims` = d). A controller trained on one projection
    refuses logs of another (dynamic/train.py)."""

    size: int  # d, the model's hidden size
    dims: int  # m, the requested dimension
    seed: int = 0

    @property
    def out_dims(self) -> int:
        return min(self.size, self.dims)

    def matrix(self, device) -> torch.Tensor | None:
        if self.size <= self.dims:
            return None
        m = np.random.default_rng(self.seed).standard_normal((self.size, self.dims)) / math.sqrt(self.dims)
        return torch.tensor(m, dtype=torch.float32, device=device)

    def to_dict(self) -> dict:
        return {**asdict(self), "dims": self.out_dims}


class Track:
    def __init__(self, rows: int, cap: int, device, projection: Projection | None = None):
        # one spare column at index `cap` takes the writes of padding, so real columns never collide
        for name in _FIELDS:
            setattr(self, name, torch.zeros(rows, cap + 1, dtype=torch.float64, device=device))
        self.cap = cap
        self.length = torch.zeros(rows, dtype=torch.long, device=device)  # completion tokens
        self.ends_with_eos = torch.zeros(rows, dtype=torch.bool, device=device)
        self.generated = torch.zeros(rows, dtype=torch.long, device=device)  # every token drawn
        # the projected hidden state of each row's last token (None: not logged)
        self.projection = projection
        self._matrix = projection.matrix(device) if projection is not None else None
        self.hidden = (torch.zeros(rows, projection.out_dims, device=device) if projection is not None else None)

    def project(self, h: torch.Tensor) -> torch.Tensor:
        """(rows, d) hidden states -> (rows, m) as logged."""
        return h.float() if self._matrix is None else h.float() @ self._matrix

    def take_hidden(self, other: Track, rows: torch.Tensor) -> None:
        """Where `rows` (an accepted proposal), the last token's hidden state is `other`'s (the proposal's)."""
        if self.hidden is not None:
            self.hidden = torch.where((rows & (other.length > 0))[:, None], other.hidden, self.hidden)

    def append(self, ext: Extension) -> None:
        """Record an extension of every row at its end."""
        self._write(ext, self.length, ext.lengths > 0)
        if self.hidden is not None and ext.hidden is not None and ext.hidden.shape[1] > 0:
            last = (ext.lengths - 1).clamp(min=0)[:, None, None].expand(-1, 1, ext.hidden.shape[2])
            h = self.project(ext.hidden.gather(1, last).squeeze(1))
            self.hidden = torch.where((ext.lengths > 0)[:, None], h, self.hidden)
        self.length = self.length + ext.lengths
        self.ends_with_eos = torch.where(ext.lengths > 0, ext.eos, self.ends_with_eos)
        self.generated += ext.lengths

    def replace(self, ext: Extension, t: torch.Tensor, accept: torch.Tensor) -> None:
        """Where `accept`, the completion's suffix from position t is now the extension."""
        self._write(ext, t, accept)
        self.length = torch.where(accept, t + ext.lengths, self.length)
        self.ends_with_eos = torch.where(accept, ext.eos, self.ends_with_eos)

    def suffix_sums(self, t: torch.Tensor, count: torch.Tensor | None = None):
        """(sum log p, sum log q) over positions [t, length), or [t, t + count) if count is given."""
        end = self.length if count is None else t + count
        cols = torch.arange(self.cap + 1, device=t.device)[None, :]
        mask = (cols >= t[:, None]) & (cols < end[:, None])
        return (self.logp * mask).sum(1), (self.logq * mask).sum(1)

    def prefix_means(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean entropy and mean top-1 probability over each row's completion."""
        cols = torch.arange(self.cap + 1, device=self.length.device)[None, :]
        mask = cols < self.length[:, None]
        n = self.length.clamp(min=1)
        return (self.entropy * mask).sum(1) / n, (self.top1 * mask).sum(1) / n

    def reset(self, rows: torch.Tensor) -> None:
        """Rows `rows` (a mask) start afresh: an empty completion (a new chain, or a new proposal)."""
        for name in _FIELDS:
            getattr(self, name).masked_fill_(rows[:, None], 0.0)
        for name in ("length", "generated"):
            getattr(self, name).masked_fill_(rows, 0)
        self.ends_with_eos.masked_fill_(rows, False)
        if self.hidden is not None:
            self.hidden.masked_fill_(rows[:, None], 0.0)

    def select(self, index: torch.Tensor) -> None:
        """Keep rows `index` only, in that order."""
        for name in (*_FIELDS, "length", "ends_with_eos", "generated"):
            setattr(self, name, getattr(self, name)[index])
        if self.hidden is not None:
            self.hidden = self.hidden[index]

    def checkpoints(self, seqs, block: int | list[int], proposed, accepted, seconds: float,
                    rows: list[int] | None = None) -> list[Checkpoint]:
        """One Checkpoint per row (of `rows`, default all) describing its current state (one host
        transfer); `block` is the block just finished, one for all rows or one per row."""
        rows = range(len(self.length)) if rows is None else rows
        blocks = block if isinstance(block, list) else [block] * len(self.length)
        ent, top1 = self.prefix_means()
        cols = torch.arange(self.cap + 1, device=self.length.device)[None, :]
        logp = (self.logp * (cols < self.length[:, None])).sum(1)
        lists = [x.tolist() for x in (logp, ent, top1, self.generated, proposed, accepted)]
        hidden = self.hidden.tolist() if self.hidden is not None else None
        out = []
        for r in rows:
            lp, e, t1, gen, prop, acc = (x[r] for x in lists)
            out.append(Checkpoint(block=blocks[r], token_ids=seqs.completion(r), logp=lp, tokens_generated=gen,
                                  acceptance_rate=(acc / prop) if prop else None, mean_entropy=e, mean_top1=t1,
                                  seconds=seconds,
                                  hidden=[round_sig(x) for x in hidden[r]] if hidden is not None else None))
        return out

    def _write(self, ext: Extension, start: torch.Tensor, rows: torch.Tensor) -> None:
        n = ext.tokens.shape[1]
        if n == 0:
            return
        cols = torch.arange(n, device=start.device)[None, :]
        valid = rows[:, None] & (cols < ext.lengths[:, None])
        idx = torch.where(valid, start[:, None] + cols, self.cap).clamp(max=self.cap)
        for name in _FIELDS:
            getattr(self, name).scatter_(1, idx, getattr(ext, name).double())
