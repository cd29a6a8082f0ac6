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
At the end one particle per system is drawn with probability proportional to its weight. The output
law reaches pi_alpha as N grows (bias O(1/N); measured in docs/samplers.md), and exp(log_z), the mean
final weight, is an unbiased estimate of sum_y p(y)^alpha.

Each requested sample is its own particle system (independent samples, not N draws from one system).
With N = 1 the weight never matters and the output is a plain draw from the proposal.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch

from .. import rng
from ..engine.base import Engine, Sequences
from .params import SMCParams
from .resampling import inverse_cdf, resample
from .result import Result


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
    # The loop works on the running systems only: `run` lists them, seqs holds their rows (system-major) and
    # the state above is theirs. A finished system leaves the batch (its rows stop riding through forward
    # passes); its state goes to `final`, its tokens to `parked`, and both are put back together at the end.
    run = torch.arange(systems, device=dev)
    final = _State.empty(rows, systems, n, dev)
    parked: list[tuple[torch.Tensor, Sequences]] = []  # (the finished systems' row numbers, their rows)

    for t in range(1, params.max_new_tokens + 1):
        live = len(run)
        # 1. every particle that can draw draws one token from the proposal (temperature 1/alpha_t)
        ext = engine.extend(seqs, alive.long(), params.proposal(t))
        if ext.tokens.shape[1] == 0:  # no particle could draw (resampling can leave only finished ones)
            break
        drew = ext.lengths > 0  # a particle that could not draw is at the context's end: it never will
        alive = drew & ~ext.eos
        if engine.max_length is not None:  # one that has just reached the context's end can draw no more
            alive &= seqs.lengths < engine.max_length
        done = done | ext.eos
        # a system with no particle drawing is finished: it takes no further weight, resampling or stats
        active = drew.view(live, n).any(1)  # (live,)
        lp = torch.where(drew, ext.logp[:, 0], 0.0)
        lq = torch.where(drew, ext.logq[:, 0], 0.0)
        # 2. reweight: the one place a log weight changes
        a_t, a_prev = params.exponent(t), params.exponent(t - 1)
        step = increment(a_t, a_prev, lp, lq, drew, logp)
        logw = torch.where(active.repeat_interleave(n), logw + step, logw)
        logp = logp + torch.where(drew, lp.double(), 0.0)
        generated += drew.view(live, n).sum(1)
        steps += active
        # 3. effective sample size per system; resample the active systems below the threshold
        ess = _ess(logw.view(live, n))  # (live,), 0 where every weight is zero
        ess_min = torch.where(active, torch.minimum(ess_min, ess), ess_min)
        ess_sum += torch.where(active, ess, 0.0)
        low = active & (ess < params.ess_threshold * n) & (ess > 0)  # all-zero systems: nothing to resample
        # a system none of whose particles can draw is over (resampling among its finished particles keeps it so)
        over = ~alive.view(live, n).any(1)  # (live,)
        need, ending = (x.item() for x in torch.stack([low.any(), over.any()]).cpu())  # one host sync
        if need:
            ancestors = _ancestors(logw.view(live, n), low, sys_seeds[run], t, params.resampling)  # (rows,)
            seqs = engine.select(seqs, ancestors)
            logp, done, alive = logp[ancestors], done[ancestors], alive[ancestors]
            logw = _reset(logw, ancestors, low, n)
            resamples += low
        if not ending:
            continue
        # 4. free the over systems' rows: park their state and tokens, shrink the batch onto the others
        final.put(_State(logw, logp, done, generated, resamples, steps, ess_min, ess_sum), run, over, n)
        parked.append((_rows(run[over], n), _tokens(seqs, _rows(torch.where(over)[0], n))))
        stay = torch.where(~over)[0]
        run = run[stay]
        if len(run) == 0:
            break
        keep = _rows(stay, n)
        seqs = engine.shrink(seqs, keep)
        logw, logp, done, alive = logw[keep], logp[keep], done[keep], alive[keep]
        generated, resamples, steps, ess_min, ess_sum = (x[stay] for x in (generated, resamples, steps, ess_min,
                                                                          ess_sum))
    if len(run):  # the systems still running at the end (max_new_tokens reached, or at the context)
        everyone = torch.ones(len(run), dtype=torch.bool, device=dev)
        final.put(_State(logw, logp, done, generated, resamples, steps, ess_min, ess_sum), run, everyone, n)
        parked.append((_rows(run, n), _tokens(seqs, torch.arange(len(seqs), device=dev))))
    seqs = _unpark(parked, rows, dev)
    logw, logp, done, generated, resamples, steps, ess_min, ess_sum = final.astuple()

    # a system that stopped before the bridge's end still ends at p^alpha: raise its exponent the rest of
    # the way (the exponent's rise times log p of the whole completion)
    rise = torch.tensor([params.alpha - params.exponent(s) for s in steps.tolist()], dtype=torch.float64,
                        device=dev).repeat_interleave(n)
    logw = logw + torch.where(rise > 0, rise * logp, 0.0)

    # 4. one particle per system, drawn by weight (uniformly if every weight is zero)
    w, degenerate = _normalised(logw.view(systems, n))
    u = rng.uniform(sys_seeds, rng.Stream.SELECT, 0)
    pick = inverse_cdf(w, u[:, None]).squeeze(1)  # (systems,)
    chosen = torch.arange(systems, device=dev) * n + pick
    if progress is not None:
        progress(1)
    seconds = (time.perf_counter() - t0) / len(prompts)
    return _results(engine, seqs, params, chosen.tolist(), w, degenerate, logp, done, logw, generated,
                    resamples, ess_min, ess_sum / steps.clamp(min=1), num_samples, seconds)


@dataclass(frozen=True)
class _State:
    """The per-particle (logw, logp, done) and per-system (the rest) state of some systems, in row order."""

    logw: torch.Tensor
    logp: torch.Tensor
    done: torch.Tensor
    generated: torch.Tensor
    resamples: torch.Tensor
    steps: torch.Tensor
    ess_min: torch.Tensor
    ess_sum: torch.Tensor

    @staticmethod
    def empty(rows: int, systems: int, n: int, dev) -> _State:
        z = functools.partial(torch.zeros, device=dev)
        return _State(z(rows, dtype=torch.float64), z(rows, dtype=torch.float64), z(rows, dtype=torch.bool),
                      *(z(systems, dtype=torch.long) for _ in range(3)), z(systems, dtype=torch.float64),
                      z(systems, dtype=torch.float64))

    def put(self, local: _State, run: torch.Tensor, which: torch.Tensor, n: int) -> None:
        """Write the systems `which` (a mask over `run`, the systems `local` holds) into this full state."""
        sys, pos = run[which], torch.where(which)[0]
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(local, f.name)
            if f.name in ("logw", "logp", "done"):  # per particle
                mine[_rows(sys, n)] = theirs[_rows(pos, n)]
            else:
                mine[sys] = theirs[pos]

    def astuple(self) -> tuple[torch.Tensor, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))


def _rows(systems: torch.Tensor, n: int) -> torch.Tensor:
    """The rows of `systems` (indices) when each system holds n consecutive rows."""
    return (systems[:, None] * n + torch.arange(n, device=systems.device)).reshape(-1)


def _tokens(seqs: Sequences, index: torch.Tensor) -> Sequences:
    """Rows `index` of seqs as tokens only (no engine state such as a KV cache): what the results read."""
    return Sequences(tokens=seqs.tokens[index], lengths=seqs.lengths[index],
                     prompt_lengths=seqs.prompt_lengths[index], seeds=seqs.seeds[index], draws=seqs.draws[index])


def _unpark(parked: list[tuple[torch.Tensor, Sequences]], rows: int, dev) -> Sequences:
    """One token-only batch of all `rows` rows, each back at its place, from the pieces parked as systems ended."""
    width = max(p.tokens.shape[1] for _, p in parked)
    out = Sequences(tokens=torch.full((rows, width), -1, dtype=torch.long, device=dev),
                    **{k: torch.zeros(rows, dtype=torch.long, device=dev)
                       for k in ("lengths", "prompt_lengths", "seeds", "draws")})
    for index, p in parked:
        out.tokens[index, : p.tokens.shape[1]] = p.tokens
        for k in ("lengths", "prompt_lengths", "seeds", "draws"):
            getattr(out, k)[index] = getattr(p, k)
    return out


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
        out.append(Result(prompt_index=s // num_samples, sample_index=s % num_samples, token_ids=ids,
                          text=engine.decode(ids), logp=float(logp_h[r]), finished=bool(eos_h[r]),
                          tokens_generated=int(gen_h[s]), seconds=seconds, method="smc", stats=stats))
    return out

