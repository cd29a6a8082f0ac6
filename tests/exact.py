"""Exact enumeration on a tiny model: every completion, its p, pi_alpha, and the MH kernel's exact law.

Completions have at most T new tokens; one ends at EOS or at length T. With a vocabulary of V tokens
there are 1 + (V-1) + ... + (V-1)^(T-1) EOS-ended ones plus (V-1)^T truncated ones.
"""

from __future__ import annotations

import itertools
from functools import cache

import numpy as np
import torch


class Enumeration:
    def __init__(self, model, prompt: list[int], eos: int, vocab: int, T: int, alpha: float):
        self.model, self.prompt, self.eos, self.T, self.alpha = model, list(prompt), eos, T, alpha
        non_eos = [v for v in range(vocab) if v != eos]
        outs = []
        for n in range(1, T + 1):
            for head in itertools.product(non_eos, repeat=n - 1):
                outs.append((*head, eos))
        outs += list(itertools.product(non_eos, repeat=T))
        self.outcomes = outs
        self.index = {x: i for i, x in enumerate(outs)}
        self.logp = np.array([self.seq_logp(x, 1.0) for x in outs])
        w = alpha * self.logp
        self.pi = np.exp(w - w.max())
        self.pi /= self.pi.sum()

    @cache  # noqa: B019 - the instance lives for one test module
    def next_logprobs(self, prefix: tuple, temperature: float) -> np.ndarray:
        with torch.no_grad():
            logits = self.model(input_ids=torch.tensor([self.prompt + list(prefix)])).logits[0, -1].double()
        return torch.log_softmax(logits / temperature, -1).numpy()

    def seq_logp(self, x: tuple, temperature: float, start: int = 0) -> float:
        """log-prob of tokens x[start:] given prompt + x[:start], at a temperature."""
        return float(sum(self.next_logprobs(tuple(x[:j]), temperature)[x[j]] for j in range(start, len(x))))

    def proposal_dist(self, temperature: float) -> np.ndarray:
        """Law of a fresh completion drawn at `temperature` (the sampler's initial block)."""
        return np.exp([self.seq_logp(x, temperature) for x in self.outcomes])

    def mh_kernel(self, temperature: float, variant: str = "exact") -> np.ndarray:
        """Exact transition matrix of one MH step (uniform position, suffix redrawn at `temperature`).

        `variant` gives the kernel of a broken sampler (see powersample.samplers.power._VARIANTS).
        """
        n = len(self.outcomes)
        P = np.zeros((n, n))
        for i, x in enumerate(self.outcomes):
            for t in range(len(x)):
                for j, y in enumerate(self.outcomes):
                    if y[:t] != x[:t]:
                        continue
                    q_fwd = self.seq_logp(y, temperature, t)
                    log_r = self._log_ratio(x, y, t, temperature, variant)
                    P[i, j] += np.exp(q_fwd) / len(x) * min(1.0, np.exp(log_r))
            P[i, i] += 1.0 - P[i].sum()
        return P

    def _log_ratio(self, x, y, t, temperature, variant) -> float:
        lp = lambda s, a=0, b=None: self.seq_logp(s[:b] if b else s, 1.0, a)  # noqa: E731
        lq = lambda s, a=0, b=None: self.seq_logp(s[:b] if b else s, temperature, a)  # noqa: E731
        if variant == "shorter-length":
            m = t + min(len(x), len(y)) - t
            return self.alpha * (lp(y, t, m) - lp(x, t, m)) + lq(x, t, m) - lq(y, t, m)
        r = self.alpha * (lp(y, t) - lp(x, t))
        if variant == "no-proposal-correction":
            return r
        r += lq(x, t) - lq(y, t)
        if variant == "no-position-correction":
            return r
        return r + np.log(len(x)) - np.log(len(y))

    def law_after(self, steps: int, temperature: float, variant: str = "exact") -> np.ndarray:
        """Exact law of the sampler's output: initial proposal draw, then `steps` MH steps."""
        d = self.proposal_dist(temperature)
        P = self.mh_kernel(temperature, variant)
        for _ in range(steps):
            d = d @ P
        return d

    def empirical(self, completions: list[list[int]]) -> np.ndarray:
        counts = np.zeros(len(self.outcomes))
        for c in completions:
            counts[self.index[tuple(c)]] += 1
        return counts / counts.sum()


def tv(a: np.ndarray, b: np.ndarray) -> float:
    return 0.5 * float(np.abs(a - b).sum())


def noise_tolerance(dist: np.ndarray, n: int, quantile: float = 0.999, trials: int = 2000, seed: int = 0) -> float:
    """The `quantile` of TV(empirical of n iid draws from dist, dist): what sampling noise alone gives."""
    g = np.random.default_rng(seed)
    draws = g.multinomial(n, dist, size=trials) / n
    return float(np.quantile(0.5 * np.abs(draws - dist).sum(1), quantile))
