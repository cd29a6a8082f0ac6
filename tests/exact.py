"""Exact enumeration on a tiny model: every completion, its p, pi_alpha, and the MH kernel's exact law.

Completions have at most T new tokens; one ends at EOS or at length T. With a vocabulary of V tokens
there are 1 + (V-1) + ... + (V-1)^(T-1) EOS-ended ones plus (V-1)^T truncated ones.
"""

from __future__ import annotations

import itertools
from functools import cache

import numpy as np
import torch

# next-token probabilities of a bigram model (vocab 4, EOS = 1), by the previous token; from prompt [0, 2],
# pi_4 puts 35%, 36% and 29% of its mass on completions ending with EOS at lengths 1, 2 and 3 (T = 3)
EOS_LENGTHS_TABLE = [
    [0.21, 0.24, 0.005, 0.545],  # after 0
    [0.25, 0.25, 0.25, 0.25],  # after EOS (never used)
    [0.48, 0.25, 0.005, 0.265],  # after 2
    [0.04, 0.94, 0.005, 0.015],  # after 3
]


def bigram_llama(table=EOS_LENGTHS_TABLE):
    """A one-layer Llama that is exactly a bigram model: attention and MLP write nothing to the residual
    stream, the embedding is one-hot, and the output head holds log table[u][v] (RMSNorm scales one-hot
    vectors by sqrt(hidden), which the head divides back out)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    logits = torch.tensor(table, dtype=torch.float32).log()  # (V, V): row = previous token
    vocab = len(table)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=vocab, intermediate_size=2 * vocab, num_hidden_layers=1,
                      num_attention_heads=1, num_key_value_heads=1, max_position_embeddings=64, bos_token_id=0,
                      eos_token_id=1, pad_token_id=None, tie_word_embeddings=False, rms_norm_eps=1e-12)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(torch.eye(vocab))
        model.model.layers[0].self_attn.o_proj.weight.zero_()
        model.model.layers[0].mlp.down_proj.weight.zero_()
        model.model.norm.weight.fill_(1.0)
        model.lm_head.weight.copy_(logits.T / vocab**0.5)
    model.generation_config.eos_token_id = 1
    return model.eval()


def toy_engine(model, T: int, prompt=(0, 2)):
    """The model's exact next-token table over every completion of `prompt` up to T tokens, served by the
    toy engine: the same law as HFEngine on the model (tests/test_conformance.py checks that the two draw
    the same samples), without a transformer forward per token, so the exactness runs take a fraction of
    the time."""
    from powersample.engine.toy import ToyEngine

    return ToyEngine.from_model(model, [list(prompt)], depth=T, eos_token_ids=[1])


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

        `variant` gives the kernel of a broken sampler (see test_power_exact.VARIANTS).
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


def _log_softmax(x: np.ndarray) -> np.ndarray:
    top = x.max(-1, keepdims=True)
    return x - top - np.log(np.exp(x - top).sum(-1, keepdims=True))


class Tree:
    """Every prefix of every completion as a node: log p of each next token, children, outcome index."""

    def __init__(self, enum: Enumeration):
        vocab = len(enum.next_logprobs((), 1.0))
        nodes = sorted({x[:t] for x in enum.outcomes for t in range(len(x) + 1)}, key=lambda y: (len(y), y))
        ids = {y: i for i, y in enumerate(nodes)}
        self.terminal = np.array([y in enum.index for y in nodes])
        self.outcome = np.array([enum.index.get(y, -1) for y in nodes])
        self.logp = np.array([enum.next_logprobs(y, 1.0) if not term else np.zeros(vocab)
                              for y, term in zip(nodes, self.terminal, strict=True)])  # (nodes, V)
        self.child = np.array([[ids.get(y + (v,), -1) for v in range(vocab)] for y in nodes])


def smc_law(enum: Enumeration, n: int, systems: int, ess_threshold: float = 0.5, bridge_tokens: int = 0,
            temperature: float | None = None, seed: int = 0, reset: bool = True) -> np.ndarray:
    """The output law of Power-SMC with n particles (systematic resampling), estimated from `systems`
    simulated systems: the algorithm written out in numpy on the enumerated model, no sampler code.
    reset=False is the broken form that keeps each particle's weight through resampling."""
    tree, alpha, g = Tree(enum), enum.alpha, np.random.default_rng(seed)
    exponent = lambda t: alpha if bridge_tokens == 0 or t >= bridge_tokens else (  # noqa: E731
        1 + (alpha - 1) * t / bridge_tokens)
    node = np.zeros((systems, n), dtype=np.int64)  # every particle starts at the empty prefix
    logw, logp = np.zeros((systems, n)), np.zeros((systems, n))
    steps = np.zeros(systems, dtype=np.int64)
    for t in range(1, enum.T + 1):
        a_t, a_prev = exponent(t), exponent(t - 1)
        drew = ~tree.terminal[node]
        active = drew.any(1)
        if not active.any():
            break
        lp_all = tree.logp[node]  # (S, N, V)
        lq_all = _log_softmax(lp_all / (1 / a_t if temperature is None else temperature))
        cdf = np.exp(lq_all).cumsum(-1)
        tok = np.minimum((cdf < g.random((systems, n, 1))).sum(-1), cdf.shape[-1] - 1)
        lp = np.take_along_axis(lp_all, tok[..., None], -1)[..., 0]
        lq = np.take_along_axis(lq_all, tok[..., None], -1)[..., 0]
        inc = np.where(drew, a_t * lp - lq, 0.0) + ((a_t - a_prev) * logp if a_t != a_prev else 0.0)
        logw = np.where(active[:, None], logw + inc, logw)
        logp = logp + np.where(drew, lp, 0.0)
        node = np.where(drew, tree.child[node, tok], node)
        steps += active
        top = logw.max(1, keepdims=True)
        w = np.exp(logw - top)
        ess = w.sum(1) ** 2 / (w**2).sum(1)
        low = active & (ess < ess_threshold * n)
        if low.any():
            cdf = (w / w.sum(1, keepdims=True)).cumsum(1)
            ptr = (g.random((systems, 1)) + np.arange(n)) / n  # systematic: one uniform per system
            anc = np.minimum((cdf[:, None, :] <= ptr[:, :, None]).sum(-1), n - 1)  # (S, N)
            anc = np.where(low[:, None], anc, np.arange(n))
            mean = np.log(w.mean(1, keepdims=True)) + top
            node, logp = np.take_along_axis(node, anc, 1), np.take_along_axis(logp, anc, 1)
            kept = np.take_along_axis(logw, anc, 1)
            logw = np.where(low[:, None], mean, kept) if reset else kept
    rise = alpha - np.array([exponent(s) for s in range(enum.T + 1)])[steps]
    logw = logw + rise[:, None] * logp
    w = np.exp(logw - logw.max(1, keepdims=True))
    cdf = (w / w.sum(1, keepdims=True)).cumsum(1)
    pick = np.minimum((cdf < g.random((systems, 1))).sum(1), n - 1)
    out = tree.outcome[np.take_along_axis(node, pick[:, None], 1)[:, 0]]
    return np.bincount(out, minlength=len(enum.outcomes)) / systems


def blocked_mh_law(model, prompt: list[int], eos: int, vocab: int, T: int, alpha: float, temperature: float,
                   steps: int, stop_at_eos: bool) -> np.ndarray:
    """Exact law of MH power sampling with blocks of one token (over Enumeration(T).outcomes): each block
    extends the unfinished chains by a token from the proposal, then runs `steps` MH steps with the length
    cap at the block's end; with stop_at_eos a chain whose sample ends with EOS after a block is frozen."""
    enums = [Enumeration(model, prompt, eos, vocab, b, alpha) for b in range(1, T + 1)]
    frozen = np.zeros(len(enums[-1].outcomes))
    active = {(): 1.0}  # sample -> probability, chains still moving
    for enum in enums:
        grown = np.zeros(len(enum.outcomes))
        for x, p in active.items():
            if x and x[-1] == eos:  # already ended (only without stop_at_eos): nothing to extend
                grown[enum.index[x]] += p
                continue
            q = np.exp(enum.next_logprobs(x, temperature))
            for v in range(vocab):
                grown[enum.index[(*x, v)]] += p * q[v]
        d = grown @ np.linalg.matrix_power(enum.mh_kernel(temperature), steps)
        active = {}
        for x, p in zip(enum.outcomes, d, strict=True):
            if stop_at_eos and x[-1] == eos:
                frozen[enums[-1].index[x]] += p
            elif p > 0:
                active[x] = p
    for x, p in active.items():
        frozen[enums[-1].index[x]] += p
    return frozen
