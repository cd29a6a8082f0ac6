"""Power-SMC (Azizi et al. 2026, arXiv:2602.10273): sequential Monte Carlo for pi(y) ∝ p(y | prompt)^alpha.

A system of N particles (partial completions) advances one token at a time in one batched decode.
Intermediate targets are gamma_t(y_1..t) = p(y_1..t)^alpha_t; a particle that drew y_t from the
proposal q multiplies its weight by gamma_t / (gamma_t-1 * q):

    log w_t += alpha_t * log p(y_t) - log q(y_t)             the new token (unfinished particles only)
             + (alpha_t - alpha_t-1) * log p(y_1..t-1)      the exponent rose (every particle)

Without bridging alpha_t = alpha and the second line vanishes. With bridging, alpha_t rises linearly
from 1 to alpha over `bridge_tokens` tokens, and the second line is what keeps the final target
p^alpha exact (the per-token form p(y_t)^alpha_t / q alone would target prod_t p(y_t)^alpha_t).
A finished particle (EOS) draws nothing and keeps its weight, apart from that bridging term. A system
none of whose particles can draw (all ended, or at the model's context) is frozen: no more weight terms,
resampling or statistics (a system stopped inside the bridge gets the rest of the exponent's rise at the
end), so what it returns depends on its own seed only, never on what else is in the batch.
When a system's effective sample size (sum w)^2 / sum w^2 drops below ess_threshold * N it is
resampled; `engine.select` copies the chosen rows with their KV caches, so no prefix is recomputed.
A particle that can draw no more leaves the engine batch (only its tokens are kept; idle rows are dropped
once they are a quarter of the batch), so forward passes carry mostly particles that draw.
At the end one particle per system is drawn with probability proportional to its weight. The output
law reaches pi_alpha as N grows (bias O(1/N); measured in docs/samplers.md), and exp(log_z), the mean
final weight, is an unbiased estimate of sum_y p(y)^alpha.

Each requested sample is its own particle system (independent samples, not N draws from one system).
With N = 1 the weight never matters and the output is a plain draw from the proposal.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .. import rng
from ..engine.base import Engine, Sequences
from .params import SMCParams
from .resampling import inverse_cdf, resample
from .result import Result, make_result


def log_increment(alpha_t: float, alpha_prev: float, logp_tok: torch.Tensor, logq_tok: torch.Tensor,
                  drew: torch.Tensor, logp_prefix: torch.Tensor) -> torch.Tensor:
    """log gamma_t(y_1..t) - log gamma_t-1(y_1..t-1) - log q(y_t), per particle (float64).

    drew: the particle drew y_t this step (else it is finished and only the exponent's rise counts).
    logp_prefix: log p(y_1..t-1) before this step's token.
    """
    token = torch.where(drew, alpha_t * logp_tok.double() - logq_tok.double(), 0.0)
    if alpha_t == alpha_prev:  # no bridging step (and no 0 * -inf = NaN for a zero-probability prefix)
        return token
    return token + (alpha_t - alpha_prev) * logp_prefix


def smc_sample(engine: Engine, prompts: list[list[int]], seeds: list[int], params: SMCParams,
               num_samples: int = 1, progress: Callable[[int], None] | None = None,
               increment: Callable[..., torch.Tensor] = log_increment) -> list[Result]:
    """One particle system per (prompt, sample); one Result per system, prompt-major.

    `increment` is the log weight increment, with log_increment's signature; tests pass broken ones.
    A system runs until none of its particles can draw (all ended with EOS or reached the model's
    context); from then on it is frozen, so what it returns never depends on the rest of the batch.
    """
    t0 = time.perf_counter()
    n = params.particles
    systems = len(prompts) * num_samples
    dev = engine.device
    sys_seeds = torch.tensor([rng.derive_seeds(s, "smc", k) for s in seeds for k in range(num_samples)],
                             device=dev)  # (systems,): a system's draws depend only on its prompt's seed, k
    # rows (prompt, sample, particle), prompt-major; one prefill per prompt, shared by its particles' caches
    seqs = engine.start(prompts, seeds)
    particle = torch.arange(n, device=dev).repeat(systems)
    seqs = engine.select(seqs, torch.arange(len(prompts), device=dev).repeat_interleave(num_samples * n),
                         seeds=rng.hash64(sys_seeds.repeat_interleave(n), rng.Stream.PARTICLE, particle))
    rows = len(seqs)
    logw = torch.zeros(rows, dtype=torch.float64, device=dev)  # log importance weight per particle
    logp = torch.zeros(rows, dtype=torch.float64, device=dev)  # log p(completion so far | prompt)
    done = torch.zeros(rows, dtype=torch.bool, device=dev)  # ended with EOS
    alive = torch.ones(rows, dtype=torch.bool, device=dev)  # can still draw (no EOS, room in the context)
    generated = torch.zeros(systems, dtype=torch.long, device=dev)  # tokens drawn, dropped particles included
    resamples = torch.zeros(systems, dtype=torch.long, device=dev)
    steps = torch.zeros(systems, dtype=torch.long, device=dev)  # steps each system ran
    ess_min = torch.full((systems,), float(n), dtype=torch.float64, device=dev)
    ess_sum = torch.zeros(systems, dtype=torch.float64, device=dev)
    # The engine batch holds the particles that can still draw: `batch` lists its rows, in order. A particle
    # that can draw no more never needs another forward pass, so its row leaves the batch (with its KV cache)
    # and only its tokens stay, in `kept`; a finished system leaves entirely. Leaving copies the remaining
    # rows' caches (engine.shrink), so idle rows are dropped once they are a quarter of the batch (or at a
    # resampling, which copies rows anyway): every forward pass is at least 3/4 drawing rows. The state above
    # covers every row, so the sampler's arithmetic is the same as if every row rode along.
    kept = _Tokens.of(seqs, params.max_new_tokens)
    batch = torch.arange(rows, device=dev)

    for t in range(1, params.max_new_tokens + 1):
        # 1. every particle that can draw draws one token from the proposal (temperature 1/alpha_t)
        ext = engine.extend(seqs, alive[batch].long(), params.proposal(t))
        if ext.tokens.shape[1] == 0:  # no particle could draw (all at the context's end)
            break
        drew = _scatter(ext.lengths > 0, batch, rows)  # a particle that could not draw is at the context's end
        eos = _scatter(ext.eos, batch, rows)
        alive = drew & ~eos
        if engine.max_length is not None:  # one that has just reached the context's end can draw no more
            alive &= _scatter(seqs.lengths < engine.max_length, batch, rows)
        done = done | eos
        # a system with no particle drawing is finished: it takes no further weight, resampling or stats
        active = drew.view(systems, n).any(1)  # (systems,)
        lp = _scatter(torch.where(ext.lengths > 0, ext.logp[:, 0], 0.0), batch, rows)
        lq = _scatter(torch.where(ext.lengths > 0, ext.logq[:, 0], 0.0), batch, rows)
        # 2. reweight: the one place a log weight changes
        a_t, a_prev = params.exponent(t), params.exponent(t - 1)
        step = increment(a_t, a_prev, lp, lq, drew, logp)
        logw = torch.where(active.repeat_interleave(n), logw + step, logw)
        logp = logp + torch.where(drew, lp.double(), 0.0)
        generated += drew.view(systems, n).sum(1)
        steps += active
        # 3. effective sample size per system; resample the active systems below the threshold
        ess = _ess(logw.view(systems, n))  # (systems,), 0 where every weight is zero
        ess_min = torch.where(active, torch.minimum(ess_min, ess), ess_min)
        ess_sum += torch.where(active, ess, 0.0)
        low = active & (ess < params.ess_threshold * n) & (ess > 0)  # all-zero systems: nothing to resample
        leaving = ~alive[batch]  # rows in the batch that can draw no more
        need, idle = (int(x) for x in torch.stack([low.any(), leaving.sum()]).cpu())  # one host sync
        if not (need or 4 * idle >= len(batch)):
            continue
        # 4. the batch changes: keep the leaving rows' tokens, resample, and rebuild the batch from the rows
        # that can still draw (a resampled particle's row is a copy of its ancestor's, KV cache included)
        kept.save(seqs, batch, leaving)
        source = torch.arange(rows, device=dev)  # each row's row before resampling
        if need:
            source = _ancestors(logw.view(systems, n), low, sys_seeds, t, params.resampling)  # (rows,)
            kept.permute(source)
            logp, done, alive = logp[source], done[source], alive[source]
            logw = _reset(logw, source, low, n)
            resamples += low
        position = torch.full((rows,), -1, dtype=torch.long, device=dev)  # row -> its place in the batch
        position[batch] = torch.arange(len(batch), device=dev)
        batch = torch.where(alive)[0]
        if len(batch) == 0:
            break
        # select gives a duplicated row its own fresh stream, exactly as if every row were in the batch
        seqs = engine.select(seqs, position[source[batch]]) if need else engine.shrink(seqs, position[batch])
    if len(batch):
        kept.save(seqs, batch, torch.ones(len(batch), dtype=torch.bool, device=dev))
    seqs = kept.sequences()
    # a system that stopped before the bridge's end still ends at p^alpha: raise its exponent the rest of
    # the way (the exponent's rise times log p of the whole completion)
    rise = torch.tensor([params.alpha - params.exponent(s) for s in steps.tolist()], dtype=torch.float64,
                        device=dev).repeat_interleave(n)
    logw = logw + torch.where(rise > 0, rise * logp, 0.0)

    # 5. one particle per system, drawn by weight (uniformly if every weight is zero)
    w, degenerate = _normalised(logw.view(systems, n))
    u = rng.uniform(sys_seeds, rng.Stream.SELECT, 0)
    pick = inverse_cdf(w, u[:, None]).squeeze(1)  # (systems,)
    chosen = torch.arange(systems, device=dev) * n + pick
    if progress is not None:
        progress(1)
    seconds = (time.perf_counter() - t0) / len(prompts)
    return _results(engine, seqs, params, chosen.tolist(), w, degenerate, logp, done, logw, generated,
                    resamples, ess_min, ess_sum / steps.clamp(min=1), num_samples, seconds)


def _scatter(values: torch.Tensor, batch: torch.Tensor, rows: int) -> torch.Tensor:
    """Values of the rows in the batch (positions) spread over all rows, zero (False) for the others."""
    return torch.zeros(rows, dtype=values.dtype, device=values.device).index_copy_(0, batch, values)


@dataclass
class _Tokens:
    """Every row's tokens, for the rows that have left the engine batch (the others' are in the batch)."""

    tokens: torch.Tensor  # (rows, longest prompt + max_new_tokens), -1 past each row's length
    lengths: torch.Tensor
    prompt_lengths: torch.Tensor

    @staticmethod
    def of(seqs: Sequences, max_new: int) -> _Tokens:
        width = int(seqs.lengths.max()) + max_new
        tokens = torch.full((len(seqs), width), -1, dtype=torch.long, device=seqs.tokens.device)
        return _Tokens(tokens, seqs.lengths.clone(), seqs.prompt_lengths.clone())

    def save(self, seqs: Sequences, batch: torch.Tensor, which: torch.Tensor) -> None:
        """Copy the tokens of the batch's rows `which` (a mask over the batch) into their rows here."""
        pos = torch.where(which)[0]
        width = min(seqs.tokens.shape[1], self.tokens.shape[1])
        self.tokens[batch[pos], :width] = seqs.tokens[pos, :width]
        self.lengths[batch[pos]] = seqs.lengths[pos]

    def permute(self, source: torch.Tensor) -> None:
        self.tokens, self.lengths = self.tokens[source], self.lengths[source]

    def sequences(self) -> Sequences:
        """A token-only batch (no engine state) of every row: what the results read."""
        zeros = torch.zeros_like(self.lengths)
        return Sequences(tokens=self.tokens, lengths=self.lengths, prompt_lengths=self.prompt_lengths,
                         seeds=zeros, draws=zeros.clone())


def _reset(logw: torch.Tensor, ancestors: torch.Tensor, low: torch.Tensor, n: int) -> torch.Tensor:
    """Log weights after resampling: the resampled systems restart from equal weights at their mean weight
    (so exp(log_z) stays an unbiased estimate of the evidence); the others keep theirs."""
    systems = len(low)
    mean = torch.logsumexp(logw.view(systems, n), 1) - math.log(n)
    return torch.where(low.repeat_interleave(n), mean.repeat_interleave(n), logw[ancestors])


def _ess(logw: torch.Tensor) -> torch.Tensor:
    """(sum w)^2 / sum w^2 per system from log weights (systems, N); 0 where every weight is zero."""
    top = logw.max(1, keepdim=True).values
    finite = torch.isfinite(top)
    z = torch.exp(logw - torch.where(finite, top, 0.0))  # (systems, N), max 1 in each live system
    ess = z.sum(1) ** 2 / (z**2).sum(1)
    return torch.where(finite.squeeze(1), ess, 0.0)


def _normalised(logw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights (systems, N) summing to 1, and which systems had every weight zero (given uniform weights)."""
    degenerate = ~torch.isfinite(logw.max(1).values)
    w = torch.softmax(torch.where(degenerate[:, None], 0.0, logw), dim=1)
    return w, degenerate


def _ancestors(logw: torch.Tensor, low: torch.Tensor, sys_seeds: torch.Tensor, t: int,
               scheme: str) -> torch.Tensor:
    """Row indices after resampling the systems in `low`; the others keep their own rows."""
    systems, n = logw.shape
    w, _ = _normalised(logw)
    u = rng.uniform(sys_seeds, rng.Stream.RESAMPLE, t)  # (systems,), one per system and step
    local = torch.where(low[:, None], resample(scheme, w, u), torch.arange(n, device=logw.device)[None, :])
    return (local + torch.arange(systems, device=logw.device)[:, None] * n).reshape(-1)


def _results(engine, seqs, params: SMCParams, chosen: list[int], w, degenerate, logp, done, logw, generated,
             resamples, ess_min, ess_mean, num_samples: int, seconds: float) -> list[Result]:
    """One Result per system from its chosen particle (host transfers happen here, once)."""
    n = params.particles
    host = [x.tolist() for x in (logp, done, generated, resamples, ess_min, ess_mean, degenerate)]
    logp_h, eos_h, gen_h, res_h, emin_h, emean_h, deg_h = host
    weights = w.tolist() if params.keep_particles else None
    log_z = (torch.logsumexp(logw.view(-1, n), 1) - math.log(n)).tolist()
    out = []
    for s, r in enumerate(chosen):
        ids = seqs.completion(r)
        stats = {"particles": n, "resamples": int(res_h[s]), "ess_min": emin_h[s] / n,
                 "ess_mean": emean_h[s] / n, "log_z": log_z[s], "all_weights_zero": bool(deg_h[s]),
                 "particle": r - s * n}
        if weights is not None:
            stats["particle_ids"] = [seqs.completion(s * n + j) for j in range(n)]
            stats["particle_weights"] = weights[s]
        out.append(make_result(engine, s, num_samples, ids, logp=float(logp_h[r]), finished=bool(eos_h[r]),
                               tokens_generated=int(gen_h[s]), seconds=seconds, method="smc", stats=stats))
    return out

