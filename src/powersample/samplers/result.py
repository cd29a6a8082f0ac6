"""What every sampler returns: one `Result` per (prompt, sample)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Checkpoint:
    """The state of one chain or sample after a block: what a controller may look at mid-run."""

    block: int  # 1-based block number
    token_ids: list[int]  # the completion as it stood after this block's MH steps
    logp: float  # log p(completion | prompt) at temperature 1
    tokens_generated: int  # tokens drawn so far, rejected proposals included
    acceptance_rate: float | None  # accepted / proposed so far (None before any proposal)
    mean_entropy: float  # mean base-model entropy (nats) over the completion's tokens when drawn
    mean_top1: float  # mean base-model top-1 probability over the completion's tokens when drawn
    seconds: float  # wall time since the batch started
    ended: bool = False  # the chain has ended with this block (EOS or max_new_tokens): it is its last checkpoint
    chain_seconds: float = 0.0  # compute attributed to this chain so far: each forward pass's wall time split
    # evenly over the rows it served (MH scheduler), so the chains of a run sum to its forward-pass time
    # H: the final-layer hidden state that drew the completion's last token, projected (track.Projection) and
    # rounded to 4 significant digits; None where the engine has no hidden states or hidden_dims = 0
    hidden: list[float] | None = None


@dataclass
class Result:
    """One sample for one prompt. `token_ids` is the completion only, ending with EOS if one was sampled."""

    prompt_index: int
    sample_index: int
    token_ids: list[int]
    text: str | None
    logp: float  # log p(completion | prompt), base model at temperature 1
    finished: bool  # the completion ended with EOS (False: stopped at max_new_tokens)
    tokens_generated: int  # every token the sampler drew: rejected proposals, rollouts, dropped particles
    seconds: float  # wall time of the batch this sample ran in, divided by the batch's prompts
    method: str
    acceptance_rate: float | None = None  # MH only: accepted / proposed
    stats: dict[str, Any] = field(default_factory=dict)  # method-specific (ESS, resamples, candidates...)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    # Q: the mean final-layer hidden state over the prompt, projected as the checkpoints' `hidden`, and the
    # projection ({"size": d, "dims": m, "seed"}); None without hidden states (MH power sampling logs them)
    prompt_hidden: list[float] | None = None
    hidden_projection: dict | None = None

    def to_dict(self, checkpoints: bool = True) -> dict[str, Any]:
        d = asdict(self)
        if not checkpoints:
            d.pop("checkpoints")
        return d


def make_result(engine, k: int, num_samples: int, token_ids: list[int], **fields: Any) -> Result:
    """The Result of sample `k` in prompt-major order (prompt k // num_samples, sample k % num_samples), its
    completion `token_ids` decoded by `engine`; `fields` are the rest (logp, finished, tokens_generated,
    seconds, method, ...). Every sampler builds its Results here, so the indexing and decoding live in one place."""
    return Result(prompt_index=k // num_samples, sample_index=k % num_samples, token_ids=token_ids,
                  text=engine.decode(token_ids), **fields)
