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
    block_size: int | None = None  # B; None = max_new_tokens // 16 (the paper's B = T/16: 192 at T = 3072)
    temperature: float | None = None  # proposal temperature; None = 1/alpha as in the paper
    top_k: int = 0  # proposal truncation (0 = off); MH then targets pi restricted to what q can reach
    top_p: float = 1.0
    # the paper stops a chain once its sample ends with EOS after a block. That makes short answers
    # absorbing (biased even at alpha=1); False keeps every chain moving until the last block.
    stop_at_eos: bool = True
    # log each checkpoint's hidden state H and the prompt's Q (engines that have them) projected to this many
    # dimensions (samplers/track.py: Projection), for the MLP-H/HQ controllers; 0 = off. Logging only:
    # the tokens do not depend on it
    hidden_dims: int = 32

    def __post_init__(self):
        check(isinstance(self.hidden_dims, int) and self.hidden_dims >= 0,
              f"hidden_dims must be an integer >= 0 (0 = off), got {self.hidden_dims!r}", "hidden_dims",
              self.hidden_dims)
        check(self.alpha > 0, f"alpha must be > 0, got {self.alpha}", "alpha", self.alpha)
        check(isinstance(self.mcmc_steps, int) and self.mcmc_steps >= 0,
              f"mcmc_steps must be an integer >= 0, got {self.mcmc_steps!r}", "mcmc_steps", self.mcmc_steps)
        _positive_int("max_new_tokens", self.max_new_tokens)
        if self.block_size is None:  # resolved here, so that every path (sample, generate, eval) agrees
            object.__setattr__(self, "block_size", max(1, self.max_new_tokens // 16))
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


def _in_unit_interval(name: str, value) -> None:
    check(isinstance(value, (int, float)) and 0 < value <= 1, f"{name} must be in (0, 1], got {value!r}",
          name, value)


@dataclass(frozen=True)
class SMCParams:
    """Power-SMC (Azizi et al. 2026): N particles advance together, weighted by p^alpha / q, resampled."""

    alpha: float = 4.0  # target p^alpha; > 0
    particles: int = 64  # N particles per requested sample (the paper's default: 64); >= 1
    ess_threshold: float = 0.5  # resample a system when ESS < ess_threshold * N; in (0, 1]
    bridge_tokens: int = 0  # raise the exponent linearly from 1 to alpha over this many tokens; 0 = off
    max_new_tokens: int = 3072  # T
    temperature: float | None = None  # proposal temperature; None = 1/alpha_t (the variance-optimal choice)
    resampling: str = "systematic"  # a key of powersample.samplers.resampling.RESAMPLERS
    keep_particles: bool = False  # also return every final particle with its normalised weight in stats

    def __post_init__(self):
        from .resampling import RESAMPLERS

        check(self.alpha > 0, f"alpha must be > 0, got {self.alpha}", "alpha", self.alpha)
        _positive_int("particles", self.particles)
        _in_unit_interval("ess_threshold", self.ess_threshold)
        check(isinstance(self.bridge_tokens, int) and self.bridge_tokens >= 0,
              f"bridge_tokens must be an integer >= 0 (0 = off), got {self.bridge_tokens!r}", "bridge_tokens",
              self.bridge_tokens)
        _positive_int("max_new_tokens", self.max_new_tokens)
        check(self.temperature is None or self.temperature > 0,
              f"proposal temperature must be > 0, got {self.temperature}", "temperature", self.temperature)
        check(self.resampling in RESAMPLERS,
              f"resampling must be one of {sorted(RESAMPLERS)}, got {self.resampling!r}", "resampling",
              self.resampling)

    def exponent(self, t: int) -> float:
        """The exponent alpha_t of the intermediate target p(y_1..t)^alpha_t after t completion tokens."""
        if self.bridge_tokens == 0 or t >= self.bridge_tokens:
            return float(self.alpha)
        return 1.0 + (self.alpha - 1.0) * t / self.bridge_tokens

    def proposal(self, t: int) -> Proposal:
        """The proposal that draws token t (1-based): temperature 1/alpha_t unless one is set."""
        return Proposal(temperature=1.0 / self.exponent(t) if self.temperature is None else self.temperature)


@dataclass(frozen=True)
class ScalableParams:
    """Scalable power sampling (Ji et al. 2026): p(x)^alpha * zeta_hat(x) over top-K candidates, per token."""

    alpha: float = 4.0  # target p^alpha; > 0
    top_k_candidates: int = 8  # K: candidate next tokens per step (the base model's top K); >= 1
    rollouts: int = 8  # M: rollouts per candidate that estimate its future factor zeta; >= 1
    horizon: int = 192  # H: tokens per rollout after the candidate (truncated lookahead); >= 1
    max_new_tokens: int = 3072  # T
    # at most this many rollout rows (each a copy of its row's KV cache) exist at once: the K*M rollouts of
    # all rows run in groups of this size (memory per row in docs/samplers.md); the draws do not depend on it
    rollout_batch: int = 64
    jackknife: bool = True  # the paper's jackknife bias correction (needs rollouts >= 2)
    exact_zeta: bool = False  # testing only: zeta by enumerating every future up to H (tiny vocabularies)

    def __post_init__(self):
        check(self.alpha > 0, f"alpha must be > 0, got {self.alpha}", "alpha", self.alpha)
        _positive_int("top_k_candidates", self.top_k_candidates)
        _positive_int("rollouts", self.rollouts)
        _positive_int("horizon", self.horizon)
        _positive_int("rollout_batch", self.rollout_batch)
        _positive_int("max_new_tokens", self.max_new_tokens)
