"""Sampler settings: small frozen dataclasses, validated on construction, defaults from the papers."""

from __future__ import annotations

from dataclasses import dataclass, fields

from ..engine.base import Proposal
from ..errors import PowerSampleError, check


def _positive_int(name: str, value) -> None:
    check(isinstance(value, int) and value > 0, f"{name} must be a positive integer, got {value!r}", name, value)


@dataclass(frozen=True)
class PowerParams:
    """Metropolis-Hastings power sampling (Karan & Du 2025, Algorithm 1)."""

    alpha: float = 4.0  # target p^alpha; > 0
    mcmc_steps: int = 10  # MH steps after each block (N)
    max_new_tokens: int = 3072  # T
    block_size: int = 192  # B; T/B blocks, the paper uses B = T/16
    temperature: float | None = None  # proposal temperature; None = 1/alpha as in the paper
    top_k: int = 0  # proposal truncation (0 = off); log q stays that of the truncated proposal
    top_p: float = 1.0

    def __post_init__(self):
        check(self.alpha > 0, f"alpha must be > 0, got {self.alpha}", "alpha", self.alpha)
        check(isinstance(self.mcmc_steps, int) and self.mcmc_steps >= 0,
              f"mcmc_steps must be an integer >= 0, got {self.mcmc_steps!r}", "mcmc_steps", self.mcmc_steps)
        _positive_int("max_new_tokens", self.max_new_tokens)
        check(isinstance(self.block_size, int) and 0 < self.block_size <= self.max_new_tokens,
              f"block_size must be in [1, max_new_tokens={self.max_new_tokens}], got {self.block_size!r} "
              f"(the paper uses max_new_tokens/16 = {max(1, self.max_new_tokens // 16)})",
              "block_size", self.block_size)
        check(self.temperature is None or self.temperature > 0,
              f"proposal temperature must be > 0, got {self.temperature}", "temperature", self.temperature)

    @property
    def proposal(self) -> Proposal:
        t = 1.0 / self.alpha if self.temperature is None else self.temperature
        return Proposal(temperature=t, top_k=self.top_k, top_p=self.top_p)


@dataclass(frozen=True)
class TemperatureParams:
    """Plain ancestral sampling at a temperature (1.0 = the base model; 0 = greedy)."""

    temperature: float = 1.0
    max_new_tokens: int = 3072
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self):
        _positive_int("max_new_tokens", self.max_new_tokens)
        Proposal(self.temperature, self.top_k, self.top_p)  # validates the sampling fields

    @property
    def proposal(self) -> Proposal:
        return Proposal(self.temperature, self.top_k, self.top_p)


@dataclass(frozen=True)
class BestOfNParams:
    """Draw n samples at `temperature`, keep the one with the highest base log-likelihood."""

    n: int = 8
    temperature: float = 1.0
    max_new_tokens: int = 3072
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self):
        _positive_int("n", self.n)
        _positive_int("max_new_tokens", self.max_new_tokens)
        Proposal(self.temperature, self.top_k, self.top_p)

    @property
    def proposal(self) -> Proposal:
        return Proposal(self.temperature, self.top_k, self.top_p)


def build(cls, values: dict, method: str):
    """Construct params `cls` from the subset of `values` it has fields for (None = default)."""
    names = {f.name for f in fields(cls)}
    kwargs = {k: v for k, v in values.items() if k in names and v is not None}
    try:
        return cls(**kwargs)
    except TypeError as e:  # a wrong type that slipped past validation
        raise PowerSampleError(f"bad settings for method {method!r}: {e}") from e
