"""Scalable power sampling (Ji et al. 2026, arXiv:2601.21590): pi_alpha token by token, with rollouts.

The power distribution's next-token law factorises exactly (their Theorem 3.1):

    pi(x_t | prefix) ∝ p(x_t | prefix)^alpha * zeta(x_t),
    zeta(x_t) = sum_future p(future | prefix, x_t)^alpha = E_{future ~ p}[ p(future | prefix, x_t)^(alpha-1) ]

Per step and row: take the base model's top K next tokens as candidates; estimate each candidate's
zeta from M rollouts of at most H tokens drawn from the base model at temperature 1,

    zeta_hat(x) = (1/M) sum_m p(future_m | prefix, x)^(alpha-1)                          (their Eq. 3)
    p_hat(x)    = p(x)^alpha zeta_hat(x) / sum_{x' in top K} p(x')^alpha zeta_hat(x')      (Eq. 4)

and, because p_hat is a ratio of estimates (biased at O(1/M)), correct it by the jackknife (Eqs. 5-6):

    p_jk(x) = M p_hat(x) - (M-1)/M sum_s p_hat_{-s}(x),   p_hat_{-s}: rollout s left out of every zeta_hat

(bias O(1/M^2)); p_jk is clipped at 0 and renormalised before x_t is drawn from it. A rollout that
ends at EOS has the future it drew; a candidate that is EOS, or the last token allowed, has zeta = 1.
The rollouts of all candidates of all rows run batched: `engine.select` fans each row out K*M times with
its KV cache, and one `extend` forces the candidate and draws the H tokens after it, in groups of at most
`rollout_batch` rollout rows so that the cache copies stay bounded (memory in docs/samplers.md).

`exact_zeta=True` replaces the rollouts by enumerating every future up to H (tiny vocabularies only):
with K = vocabulary size and H >= max_new_tokens, the sampler then draws exactly from pi_alpha.
Fewer candidates (K < vocabulary) or a shorter horizon (H < T - t) are approximations whose bias more
rollouts do not remove (measured in docs/samplers.md).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch

from .. import rng
from ..engine.base import Engine, Proposal, Sequences
from ..errors import check
from .chains import fan_out
from .params import ScalableParams
from .resampling import inverse_cdf
from .result import Result, make_result

_EVERY_TOKEN = 1 << 62  # topk(k) with k past the vocabulary: every token (exact_zeta)
_MAX_ENUMERATED = 4_000_000  # exact_zeta refuses frontiers larger than this many rows
_BASE = Proposal(temperature=1.0)


def scalable_sample(engine: Engine, prompts: list[list[int]], seeds: list[int], params: ScalableParams,
                    num_samples: int = 1, progress: Callable[[int], None] | None = None) -> list[Result]:
    """`num_samples` independent samples per prompt (one row each); one Result per sample, prompt-major."""
    t0 = time.perf_counter()
    seqs = fan_out(engine, prompts, seeds, num_samples)
    dev, rows, k, alpha = engine.device, len(seqs), params.top_k_candidates, params.alpha
    logp = torch.zeros(rows, dtype=torch.float64, device=dev)  # log p(completion so far | prompt)
    eos = torch.zeros(rows, dtype=torch.bool, device=dev)  # ended with EOS
    done = torch.zeros(rows, dtype=torch.bool, device=dev)  # ended with EOS or reached the model's context
    rollout_tokens = torch.zeros(rows, dtype=torch.long, device=dev)

    for t in range(1, params.max_new_tokens + 1):
        live = torch.where(~done)[0]  # (L,) host sync: rows still drawing
        if len(live) == 0:
            break
        # 1. candidates: the base model's top K next tokens of every live row
        ids, lp = engine.topk(seqs, k)
        ids, lp = ids[live], lp[live].double()  # (L, K)
        # 2. log zeta of every candidate, from rollouts (or by enumeration); no future after the last token
        h = min(params.horizon, params.max_new_tokens - t)
        if h == 0:
            log_zeta, jk_zeta, spent = torch.zeros_like(lp), None, torch.zeros_like(live)
        elif params.exact_zeta:
            log_zeta, spent = _exact_log_zeta(engine, seqs, live, ids, h, alpha)
            jk_zeta = None
        else:
            log_zeta, jk_zeta, spent = _rollout_log_zeta(engine, seqs, live, ids, h, params, t)
        rollout_tokens[live] += spent
        # 3. the candidates' probabilities p^alpha * zeta_hat, jackknifed
        probs = candidate_probs(alpha * lp, log_zeta, jk_zeta)  # (L, K)
        # 4. draw x_t on the row's own stream and append it (one forward pass, which also gives its log p)
        u = rng.uniform(seqs.seeds[live], rng.Stream.CHOICE, t)
        choice = ids.gather(1, inverse_cdf(probs, u[:, None])).squeeze(1)
        first = torch.full((rows,), -1, dtype=torch.long, device=dev)
        first[live] = choice
        ext = engine.extend(seqs, (~done).long(), _BASE, first=first)
        drew = ext.lengths > 0  # a live row that drew nothing is at the model's context: it returns what fits
        if ext.tokens.shape[1] > 0:  # no column at all when every live row is at the context
            logp += torch.where(drew, ext.logp[:, 0].double(), 0.0)
        eos |= ext.eos
        done |= ext.eos | ~drew
        if progress is not None:
            progress(1)

    seconds = (time.perf_counter() - t0) / len(prompts)
    spent_h, logp_h, eos_h = rollout_tokens.tolist(), logp.tolist(), eos.tolist()
    out = []
    for r in range(rows):
        ids_r = seqs.completion(r)
        out.append(make_result(engine, r, num_samples, ids_r, logp=logp_h[r], finished=bool(eos_h[r]),
                               tokens_generated=len(ids_r) + spent_h[r], seconds=seconds, method="scalable",
                               stats={"candidates": k, "rollouts": 0 if params.exact_zeta else params.rollouts,
                                      "horizon": params.horizon, "rollout_tokens": spent_h[r],
                                      "exact_zeta": params.exact_zeta}))
    return out


def candidate_probs(alpha_lp: torch.Tensor, log_zeta: torch.Tensor,
                    loo_log_zeta: torch.Tensor | None) -> torch.Tensor:
    """Probabilities over candidates from alpha * log p (L, K) and log zeta_hat (L, K).

    With leave-one-out estimates loo_log_zeta (L, M, K) this is the jackknife p_jk = M p_hat - (M-1) mean_s
    p_hat_{-s}, clipped at 0 and renormalised. A row whose candidates all have weight 0 gets uniform ones.
    """
    p_hat = _softmax(alpha_lp + log_zeta)  # (L, K)
    if loo_log_zeta is None:
        return p_hat
    m = loo_log_zeta.shape[1]
    p_loo = _softmax(alpha_lp[:, None, :] + loo_log_zeta)  # (L, M, K)
    p_jk = (m * p_hat - (m - 1) * p_loo.mean(1)).clamp(min=0)
    total = p_jk.sum(1, keepdim=True)
    return torch.where(total > 0, p_jk / total.clamp(min=1e-300), p_hat)


def _rollout_log_zeta(engine: Engine, seqs: Sequences, live: torch.Tensor, ids: torch.Tensor, h: int,
                      params: ScalableParams, t: int):
    """log zeta_hat (L, K); leave-one-out versions (L, M, K) or None (no jackknife); tokens spent per row."""
    n_live, k = ids.shape
    m, alpha = params.rollouts, params.alpha
    # fan every live row out to K*M rollout rows, caches included; each rollout gets its own fresh stream.
    # The fan-out runs in groups of at most `rollout_batch` rows, so at most that many cache copies exist at
    # once (a rollout's tokens depend on its seed only, so the grouping changes no draw)
    parent = live.repeat_interleave(k * m)  # (L*K*M,)
    slot = torch.arange(k * m, device=live.device).repeat(n_live)
    seeds = rng.hash64(seqs.seeds[parent], rng.Stream.ROLLOUT, t, slot)
    first = ids.repeat_interleave(m, dim=1).reshape(-1)  # force the candidate, then up to h base-model tokens
    logp = torch.zeros(len(parent), h, dtype=torch.float64, device=live.device)  # each future token's log p
    lengths = torch.zeros(len(parent), dtype=torch.long, device=live.device)
    for a in range(0, len(parent), params.rollout_batch):
        group = slice(a, a + params.rollout_batch)
        roll = engine.select(seqs, parent[group], seeds=seeds[group])
        ext = engine.extend(roll, torch.tensor(h + 1, device=live.device), _BASE, first=first[group])
        future_logp = ext.logp[:, 1:].double()  # (group, <= h): no column when every rollout is at the context
        logp[group, : future_logp.shape[1]] = future_logp
        lengths[group] = ext.lengths
        del roll, ext  # free this group's caches before the next group's are made
    future = logp.sum(1).view(n_live, k, m)  # log p(future | prefix, x); 0 if none
    log_w = (alpha - 1.0) * future  # (L, K, M): each rollout's p(future)^(alpha-1)
    log_zeta = torch.logsumexp(log_w, 2) - math.log(m)
    loo = None
    if params.jackknife and m > 1:
        # leave rollout s out of every candidate's mean, as a masked logsumexp (no cancellation)
        eye = torch.eye(m, dtype=torch.bool, device=live.device)
        masked = log_w[:, :, None, :].expand(-1, -1, m, -1).masked_fill(eye, -math.inf)  # (L, K, M_s, M)
        loo = (torch.logsumexp(masked, 3) - math.log(m - 1)).transpose(1, 2)  # (L, M_s, K)
    spent = lengths.view(n_live, k * m).sum(1)
    return log_zeta, loo, spent


def _exact_log_zeta(engine: Engine, seqs: Sequences, live: torch.Tensor, ids: torch.Tensor, h: int,
                    alpha: float):
    """log zeta (L, K) = log sum over every future of at most h tokens of p(future)^alpha, by enumeration.

    Rows with the same prefix share one enumeration. Returns (log zeta, tokens spent per row).
    """
    n_live, k = ids.shape
    width = int(seqs.lengths[live].max())
    uniq, inverse = torch.unique(seqs.tokens[live, :width], dim=0, return_inverse=True)
    first_row = torch.full((len(uniq),), -1, dtype=torch.long, device=live.device)
    first_row.scatter_(0, inverse.flip(0), live.flip(0))  # one live row per distinct prefix
    cand = ids[torch.searchsorted(live, first_row)]  # (U, K): the candidates are the same for equal prefixes
    # the candidate itself, then level by level every continuation; leaves are EOS or depth h
    front = engine.select(seqs, first_row.repeat_interleave(k))
    ext = engine.extend(front, torch.tensor(1, device=live.device), _BASE, first=cand.reshape(-1))
    origin = torch.arange(len(uniq) * k, device=live.device)
    acc = torch.zeros(len(origin), dtype=torch.float64, device=live.device)  # log p(future so far)
    ended = ext.eos | (h == 0)  # an EOS candidate, or no room after it: the empty future, p = 1
    leaf_origin, leaf_value = [origin[ended]], [acc[ended]]
    keep = torch.where(~ended)[0]
    front, origin, acc = engine.select(front, keep), origin[keep], acc[keep]
    spent = len(uniq) * k
    for depth in range(1, h + 1):
        if len(origin) == 0:
            break
        vids, vlp = engine.topk(front, _EVERY_TOKEN)  # (F, V): every next token
        child_acc = acc[:, None] + vlp.double()
        child_origin = origin[:, None].expand_as(vids)
        leaf = engine.is_eos(vids) | (depth == h)
        leaf_origin.append(child_origin[leaf])
        leaf_value.append(alpha * child_acc[leaf])
        grow = ~leaf
        if not bool(grow.any()):
            break
        n_next = int(grow.sum())
        check(n_next <= _MAX_ENUMERATED, f"exact_zeta would enumerate {n_next} futures at depth {depth}: "
              "it is for tiny test models (vocabulary^horizon rows); use rollouts", "exact_zeta", True)
        parent = torch.arange(len(vids), device=live.device)[:, None].expand_as(vids)[grow]
        front = engine.select(front, parent)
        engine.extend(front, torch.tensor(1, device=live.device), _BASE, first=vids[grow])
        origin, acc = child_origin[grow], child_acc[grow]
        spent += n_next
    leaf_origin, leaf_value = torch.cat(leaf_origin), torch.cat(leaf_value)
    log_zeta = torch.full((len(uniq) * k,), -math.inf, dtype=torch.float64, device=live.device)
    top = log_zeta.scatter_reduce(0, leaf_origin, leaf_value, reduce="amax")
    total = torch.zeros_like(log_zeta).index_add_(0, leaf_origin, torch.exp(leaf_value - top[leaf_origin]))
    log_zeta = (top + torch.log(total)).view(len(uniq), k)
    # spread over the rows that share each prefix (the work is counted once, on the row that did it)
    per_row = torch.zeros(n_live, dtype=torch.long, device=live.device)
    per_row[torch.searchsorted(live, first_row)] = spent // max(len(uniq), 1)
    return log_zeta[inverse], per_row


def _softmax(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim; where every entry is -inf, uniform (no NaNs)."""
    dead = ~torch.isfinite(logits.max(-1, keepdim=True).values)
    return torch.softmax(torch.where(dead, 0.0, logits), dim=-1)
