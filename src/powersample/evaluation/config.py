"""The configuration of one evaluation run: a frozen, validated dataclass.

Fields split in two. CORE fields decide what a row contains (task, data, model, sampler settings,
seed, which problems): a rerun into the same directory must match them exactly, or results would
mix. The others only decide how the work is done (device, batch size, grader processes, output
folder) and may change between resumptions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..errors import PowerSampleError, check

NON_CORE = frozenset({"out", "device", "batch_size", "grade_workers", "data"})  # data: its sha256 is core
# powersample.sample options the runner sets itself (or that have their own field): not for sampler_options
RESERVED_OPTIONS = frozenset({"method", "alpha", "mcmc_steps", "block_size", "max_new_tokens", "temperature",
                              "n", "chat", "dtype", "device", "seed", "seeds", "num_samples", "batch_size",
                              "progress", "tokenizer"})


def parse_shard(text: str) -> tuple[int, int]:
    """ "i/n" (0-based shard i of n) -> (i, n)."""
    try:
        i, n = (int(x) for x in str(text).split("/"))
    except ValueError as e:
        raise PowerSampleError(f"shard must look like i/n (e.g. 0/4), got {text!r}", "shard", text) from e
    check(n >= 1 and 0 <= i < n, f"shard i/n needs 0 <= i < n (shards are numbered from 0), got {text!r}",
          "shard", text)
    return i, n


@dataclass(frozen=True)
class EvalConfig:
    """Everything `powersample eval` needs; see docs/eval.md for each option."""

    task: str
    model: str
    out: str
    method: str = "power"
    # sampler settings (passed to powersample.sample; methods ignore those they do not use)
    alpha: float = 4.0
    mcmc_steps: int = 10
    block_size: int = 192
    max_new_tokens: int = 3072
    temperature: float | None = None
    n: int | None = None  # best-of-n candidates
    chat: bool = False  # apply the tokenizer's chat template to each prompt
    dtype: str | None = None
    sampler_options: Mapping[str, Any] = field(default_factory=dict)  # any further powersample.sample option
    # which work
    samples_per_problem: int = 1
    limit: int | None = None  # the first `limit` problems (before sharding)
    shard: str = "0/1"  # "i/n": problems whose position (after limit) is i mod n
    seed: int = 0
    data: str | None = None
    task_options: Mapping[str, Any] = field(default_factory=dict)  # e.g. {"grader": "exact"}
    # how the work is done (not core)
    device: str | None = None
    batch_size: int = 8  # problems per powersample.sample call (each with samples_per_problem samples)
    grade_workers: int = 2  # grader processes; 0 grades inline in the main thread (slower, for debugging)

    def __post_init__(self):
        for name in ("task", "model", "out", "method"):
            v = getattr(self, name)
            check(isinstance(v, str) and v.strip() != "", f"{name} must be a non-empty string, got {v!r}",
                  name, v)
        check(isinstance(self.alpha, (int, float)) and math.isfinite(self.alpha) and self.alpha > 0,
              f"alpha must be a finite number > 0, got {self.alpha!r}", "alpha", self.alpha)
        for name in ("mcmc_steps", "block_size", "max_new_tokens", "samples_per_problem", "batch_size"):
            v = getattr(self, name)
            low = 0 if name == "mcmc_steps" else 1
            check(isinstance(v, int) and not isinstance(v, bool) and v >= low,
                  f"{name} must be an integer >= {low}, got {v!r}", name, v)
        t = self.temperature
        check(t is None or (isinstance(t, (int, float)) and t >= 0),
              f"temperature must be >= 0, got {self.temperature!r}", "temperature", self.temperature)
        check(self.n is None or (isinstance(self.n, int) and self.n >= 1), f"n must be an integer >= 1, got "
              f"{self.n!r}", "n", self.n)
        check(self.limit is None or (isinstance(self.limit, int) and self.limit >= 1),
              f"limit must be an integer >= 1, got {self.limit!r}", "limit", self.limit)
        check(isinstance(self.seed, int) and not isinstance(self.seed, bool), f"seed must be an integer, got "
              f"{self.seed!r}", "seed", self.seed)
        check(isinstance(self.grade_workers, int) and self.grade_workers >= 0,
              f"grade_workers must be an integer >= 0, got {self.grade_workers!r}", "grade_workers",
              self.grade_workers)
        parse_shard(self.shard)
        taken = sorted(RESERVED_OPTIONS & set(self.sampler_options))
        check(not taken, f"sampler_options {taken} have their own settings (flags) or are set by the runner; "
              "use those instead", "sampler_options", taken)
        # normalise mappings to plain sorted dicts so run.json compares equal however they were built
        object.__setattr__(self, "sampler_options", dict(sorted(dict(self.sampler_options).items())))
        object.__setattr__(self, "task_options", dict(sorted(dict(self.task_options).items())))

    @property
    def shard_index(self) -> tuple[int, int]:
        return parse_shard(self.shard)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EvalConfig:
        """Rebuild from run.json's "config" (extra keys such as data_sha256 are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
