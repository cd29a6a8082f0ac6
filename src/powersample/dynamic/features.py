"""What a controller sees at a checkpoint: the problem's chains as they stand, and features of them.

A `ProblemState` is the list of the problem's chains' current states (chains added later are at an
earlier block), the checkpoint index and the limits. `features(state)` turns it into the fixed vector
below (FEATURES names it; a saved controller records it and refuses another). Everything comes from
the rows' checkpoints, so no extra forward pass: per chain, log p, tokens, acceptance, mean entropy
and top-1 of p; per problem, the vote. The MLP-H/HQ controllers add hidden states (`hidden="h"` or
"hq"): H = the mean over the problem's chains of each one's projected hidden state at the checkpoint
(h0..h{m-1}), and Q = the prompt's projected mean hidden state (q0..q{m-1}), from rows logged with
them (samplers/track.py: Projection). Missing from the checkpoints today: per-chain seconds.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from ..errors import PowerSampleError
from .log import ChainState
from .vote import Same, vote_counts

FEATURES = (
    "k",  # chains so far
    "step",  # checkpoints of this problem so far (its first chains' block)
    "done_share",  # share of chains that have ended
    "answered_share",  # share of chains with an answer so far
    "distinct",  # distinct answers among them
    "lead_share",  # votes of the leading answer / k
    "lead_votes",
    "second_votes",
    "beta_p",  # Adaptive-Consistency's P(leader truly leads) from those two counts
    "lead_mean_logp_per_token",  # log perplexity (negated) of the leading answer's chains under p
    "mean_logp_per_token",  # over all chains
    "mean_entropy",  # of p's next-token distributions, over all chains' tokens, averaged over chains
    "mean_top1",
    "mean_acceptance",
    "mean_tokens",  # completion length
)
HIDDEN_SETS = ("", "h", "hq")  # scalar features only; + H; + H and Q


def feature_names(hidden: str = "", dims: int = 0) -> tuple[str, ...]:
    """FEATURES, then h0..h{dims-1} with "h" in `hidden`, then q0..q{dims-1} with "q"."""
    return (FEATURES + tuple(f"h{i}" for i in range(dims if "h" in hidden else 0))
            + tuple(f"q{i}" for i in range(dims if "q" in hidden else 0)))


@dataclass(frozen=True)
class ProblemState:
    chains: tuple[ChainState, ...]  # the current state of each chain started so far, by chain index
    step: int  # 1-based checkpoint of the problem
    k_max: int
    final_answer_chain: int | None = None  # replay only: the k_max vote's chain (the oracle reads it)
    final_chains: tuple[ChainState, ...] = ()  # replay only: every chain's final state

    @property
    def k(self) -> int:
        return len(self.chains)

    @property
    def all_done(self) -> bool:
        return all(c.done for c in self.chains)


def beta_p(a: int, b: int) -> float:
    """P(p_1 > p_2) under a uniform prior and counts a, b of the top two answers: 1 - I_0.5(a+1, b+1)."""
    from scipy.special import betainc

    return float(1.0 - betainc(a + 1, b + 1, 0.5))


def features(state: ProblemState, same: Same, hidden: str = "") -> list[float]:
    """The scalar features (FEATURES), then H and Q where `hidden` says so ("h", "hq"): feature_names."""
    return _scalar(state, same) + (_hidden(state, hidden) if hidden else [])


def _hidden(state: ProblemState, which: str) -> list[float]:
    cs = state.chains
    if any(c.projection is None or c.hidden is None or c.prompt_hidden is None for c in cs):
        raise PowerSampleError("these chains have no hidden states (H, Q): a controller on hidden states needs "
                               "rows logged by MH power sampling with hidden_dims > 0 on an engine that has them "
                               "(transformers)", "hidden")
    if len({c.projection for c in cs}) > 1:
        raise PowerSampleError(f"chains of one problem logged with different projections ({cs[0].projection} and "
                               "others)", "hidden")
    h = [statistics.fmean(x) for x in zip(*(c.hidden for c in cs), strict=True)]
    return h + (list(cs[0].prompt_hidden) if "q" in which else [])


def _scalar(state: ProblemState, same: Same) -> list[float]:
    cs = state.chains
    counts = vote_counts([c.answer for c in cs], [c.logp for c in cs], same)
    a = counts[0][0] if counts else 0
    b = counts[1][0] if len(counts) > 1 else 0
    per_token = [c.logp / max(c.tokens, 1) for c in cs]
    lead = [per_token[j] for j in _members(state, counts, same)]
    return [
        state.k, state.step, _mean(c.done for c in cs), _mean(c.answer is not None for c in cs), len(counts),
        a / state.k, a, b, beta_p(a, b), _mean(lead) if lead else 0.0, _mean(per_token),
        _mean(c.mean_entropy or 0.0 for c in cs), _mean(c.mean_top1 or 0.0 for c in cs),
        _mean(c.acceptance_rate or 0.0 for c in cs), _mean(c.tokens for c in cs),
    ]


def _members(state: ProblemState, counts, same: Same) -> list[int]:
    """Chains in the leading answer's cluster."""
    if not counts:
        return []
    lead = state.chains[counts[0][2]].answer
    return [j for j, c in enumerate(state.chains) if c.answer is not None and same(lead, c.answer)]


def _mean(xs) -> float:
    xs = [float(x) for x in xs]
    return statistics.fmean(xs) if xs else math.nan
