"""The configuration of one evaluation run: a frozen, validated dataclass.

Fields split in two. CORE fields decide what a row contains (task, data, model, sampler settings,
seed, which problems): a rerun into the same directory must match them exactly, or results would
mix. The others only decide how the work is done (device, batch size, grader processes, output
folder) and may change between resumptions.

The sampler's settings live in one dict, `sampler`, checked by the method's params class
(samplers/params.py, through powersample.api.resolve_settings) and completed with its defaults, so
run.json states every value the run used and a rerun that spells a default out still matches.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..errors import PowerSampleError, check

# data: its sha256 is core
NON_CORE = frozenset({"out", "device", "batch_size", "grade_workers", "data", "max_batch_tokens", "ray", "workers"})
# powersample.sample options a run sets itself or that have their own field: not sampler settings
RESERVED_OPTIONS = frozenset({"method", "model", "chat", "dtype", "device", "seed", "seeds", "num_samples",
                              "batch_size", "progress", "tokenizer", "variant", "on_result", "max_batch_tokens"})
# run.json of format 1 spelled these settings out as fields of the config, the rest in sampler_options
_V1_SAMPLER_FIELDS = ("alpha", "mcmc_steps", "block_size", "max_new_tokens", "temperature", "n")


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
    # the method's settings (e.g. {"alpha": 4.0, "mcmc_steps": 10}; see the README's table) and model-loading
    # options (eos_token_id, trust_remote_code); completed with the method's defaults on construction
    sampler: Mapping[str, Any] = field(default_factory=dict)
    chat: bool = False  # apply the tokenizer's chat template to each prompt
    dtype: str | None = None
    # which work
    samples_per_problem: int = 1
    limit: int | None = None  # the first `limit` problems (before sharding)
    shard: str = "0/1"  # "i/n": problems whose position (after limit) is i mod n
    seed: int = 0
    data: str | None = None
    task_options: Mapping[str, Any] = field(default_factory=dict)  # e.g. {"grader": "exact"}
    # how the work is done (not core)
    device: str | None = None
    batch_size: int = 16  # problems per powersample.sample call (each with samples_per_problem samples)
    grade_workers: int = 2  # grader processes; 0 grades inline in the main thread (slower, for debugging)
    # power: cap rows x (prompt + max_new_tokens); None: unlimited on a CPU, what free memory holds on CUDA
    max_batch_tokens: int | None = None
    # spread the problems over a Ray cluster (docs/scale.md): its address, "" for the local one; None: no Ray
    ray: str | None = None
    workers: int | None = None  # Ray workers (None: one per GPU, or per CPU on a cluster without GPUs)

    def __post_init__(self):
        for name in ("task", "model", "out", "method"):
            v = getattr(self, name)
            check(isinstance(v, str) and v.strip() != "", f"{name} must be a non-empty string, got {v!r}",
                  name, v)
        for name in ("samples_per_problem", "batch_size"):
            v = getattr(self, name)
            check(isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                  f"{name} must be an integer >= 1, got {v!r}", name, v)
        check(self.max_batch_tokens is None or (isinstance(self.max_batch_tokens, int) and self.max_batch_tokens >= 1),
              f"max_batch_tokens must be an integer >= 1, got {self.max_batch_tokens!r}", "max_batch_tokens",
              self.max_batch_tokens)
        check(self.limit is None or (isinstance(self.limit, int) and self.limit >= 1),
              f"limit must be an integer >= 1, got {self.limit!r}", "limit", self.limit)
        check(isinstance(self.seed, int) and not isinstance(self.seed, bool), f"seed must be an integer, got "
              f"{self.seed!r}", "seed", self.seed)
        check(isinstance(self.grade_workers, int) and self.grade_workers >= 0,
              f"grade_workers must be an integer >= 0, got {self.grade_workers!r}", "grade_workers",
              self.grade_workers)
        parse_shard(self.shard)
        check(self.workers is None or (isinstance(self.workers, int) and self.workers >= 1),
              f"workers must be an integer >= 1, got {self.workers!r}", "workers", self.workers)
        check(self.workers is None or self.ray is not None, "workers needs ray (--ray [ADDRESS])", "workers",
              self.workers)
        check(self.ray is None or self.method != "dynamic", "--method dynamic runs in one process for now: its "
              "controller adds chains to one running batch; drop --ray", "ray", self.ray)
        taken = sorted(RESERVED_OPTIONS & set(self.sampler))
        check(not taken, f"sampler {taken} are not sampler settings: they have their own fields or are set by the "
              "runner", "sampler", taken)
        from ..api import resolve_settings  # validates (one-line errors) and fills in the method's defaults

        object.__setattr__(self, "sampler", resolve_settings(self.method, **self.sampler))
        # a plain sorted dict, so that run.json compares equal however it was built
        object.__setattr__(self, "task_options", dict(sorted(dict(self.task_options).items())))

    @property
    def shard_index(self) -> tuple[int, int]:
        return parse_shard(self.shard)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EvalConfig:
        """Rebuild from run.json's "config", of any format (extra keys such as data_sha256 are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in upgrade_config(d).items() if k in names})


def upgrade_config(d: Mapping[str, Any]) -> dict[str, Any]:
    """run.json's "config" in the current layout: format 1 had alpha, mcmc_steps, block_size,
    max_new_tokens, temperature, n as fields and further options in sampler_options."""
    d = dict(d)
    if "sampler" in d:
        return d
    from ..api import resolve_settings

    sampler = {k: d.pop(k) for k in _V1_SAMPLER_FIELDS if k in d}
    sampler = {k: v for k, v in sampler.items() if v is not None}
    d["sampler"] = {**sampler, **d.pop("sampler_options", {})}
    try:  # with the defaults filled in, as a new run records them, so that old and new runs compare
        d["sampler"] = resolve_settings(d.get("method", "power"), **d["sampler"])
    except PowerSampleError:  # a method or setting this version does not know: keep them as written
        pass
    return d
