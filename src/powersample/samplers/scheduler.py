"""Continuous batching for MH power sampling: rows never wait for each other.

A batch of `rows` engine rows runs a queue of chains (any prompts, any number each). Each row holds
one chain, which is always in one of two phases: growing its completion by a block, or drawing one MH
proposal. The engine decodes in chunks of a few tokens; after each chunk every row whose phase ended
moves on at once: a proposal is accepted or rejected (that row alone is settled) and the chain starts
its next step or block; a finished chain hands its row to the next chain in the queue, which joins the
running batch. So a row idles only until the end of the chunk in which its task ended.

Each chain's law is that of Algorithm 1 (power.py), step for step: its token draws come from its own
stream (the engine counts a row's draws), and its position and acceptance uniforms are keyed by
(chain seed, block * N + step), never by batch iteration. So a chain's tokens depend on its seed
only: alone, in a full batch or joining late, it draws the same tokens.

Each chain's Result is handed to `on_result` the moment the chain finishes (eval writes its row then).
`more(result)`, if given, is asked next: the sample indices of chains to add to that result's prompt,
which go to the end of the queue and join the running batch as rows free up (Dynamic Power Sampling:
dynamic/live.py). Chain j of prompt i has the same seed whenever it runs, so an added chain draws what
it would have drawn in a fixed run.
Memory: `max_batch_tokens` caps rows x (longest prompt + T); on CUDA it defaults to what free memory holds
(`cuda_token_budget`). A forward pass that still runs out of memory halves the rows, with a warning, and
runs the unfinished chains again from their start: a chain's tokens depend on its seed only, so its
result is the same.

Long problems: after each block that does not finish a chain, `on_block((prompt, sample), ChainState)`, if
given, gets everything the chain's future depends on (its completion with per-token log p and log q, its
counters, its stream's draw count: a token's uniform is keyed by (seed, TOKEN, draws)). A later run given
`resume={(prompt, sample): state}` starts that chain from its saved completion at the next block, and it
goes on exactly as the interrupted run would have (eval saves and loads these: evaluation/runner.py).
`on_block` may return sample indices of chains to add to the chain's prompt, as `more` does (a controller
asked at every block boundary: dynamic/live.py).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

import torch

from .. import rng
from ..engine.base import Engine, Extension
from ..errors import PowerSampleError, check
from .params import PowerParams
from .result import Checkpoint, Result
from .track import Projection, Track, round_sig

_CHUNK_GPU = 8  # decode steps per engine call on a GPU: each chunk boundary is a few host syncs
_CHUNK_CPU = 2  # on a CPU syncs are free, but each call has Python overhead (bench/occupancy.py: 1, 2, 4 tried)
_MEMORY_SHARE = 0.5  # of free GPU memory for the KV cache: proposals keep the old suffix's cache until settled,
# and logits and activations need room too; a run that still overflows halves its rows (run_chains)

log = logging.getLogger(__name__)


def run_chains(engine: Engine, prompts: list[list[int]], seeds: list[int], params: PowerParams,
               log_ratio: Callable, num_samples: int = 1, rows: int | None = None, chunk: int | None = None,
               progress: Callable[[int], None] | None = None, on_result: Callable[[Result], None] | None = None,
               max_batch_tokens: int | None = None, more: Callable[[Result], list[int]] | None = None,
               on_block: Callable[[tuple[int, int], ChainState], list[int] | None] | None = None,
               resume: dict[tuple[int, int], ChainState] | None = None,
               chains: list[tuple[int, int]] | None = None) -> list[Result]:
    """MH power sampling of `num_samples` chains per prompt on at most `rows` engine rows (default: one
    per chain), fewer if rows x (longest prompt + T) exceeds `max_batch_tokens`. `log_ratio(alpha, track, t,
    proposal_extension)` is the acceptance ratio (power.py). Each Result goes to `on_result` as its chain
    finishes, then to `more`, whose answer (sample indices) adds chains to its prompt; all are returned
    prompt-major, as power_sample returns them. `on_block` and `resume`: see the module doc. `chains`: the
    (prompt, sample) pairs to run (default: samples 0..num_samples-1 of every prompt)."""
    resume = resume or {}
    for state in resume.values():
        state.check(params)
    queue = list(chains) if chains is not None else [(i, j) for i in range(len(prompts)) for j in range(num_samples)]
    R = min(rows or len(queue), len(queue))
    if max_batch_tokens is None and engine.device.type == "cuda":
        max_batch_tokens = cuda_token_budget(engine)
    if max_batch_tokens is not None:
        per_row = max(len(p) for p in prompts) + params.max_new_tokens
        check(max_batch_tokens >= per_row, f"max_batch_tokens={max_batch_tokens} does not hold one row of "
              f"{per_row} tokens (longest prompt + max_new_tokens)", "max_batch_tokens", max_batch_tokens)
        R = min(R, max_batch_tokens // per_row)
    results: dict[int, Result] = {}
    blocks = {c: 0 for c in range(len(queue))}  # blocks each chain finished (a finished chain: all of them)
    tally = [0, 0]  # the sum of `blocks`; blocks per chain reported to `progress`

    def add(i: int, js) -> None:
        for j in js or ():  # added chains wait at the end of the queue
            queue.append((i, j))
            blocks[len(queue) - 1] = 0
            pending.append(len(queue) - 1)  # the list _schedule runs, so they join this very batch

    def finished(c: int, result: Result) -> None:
        results[c] = result
        if on_result is not None:
            on_result(result)
        if more is not None:
            add(result.prompt_index, more(result))

    def block(chain: tuple[int, int], state: ChainState) -> None:
        add(chain[0], on_block(chain, state))

    pending = list(range(len(queue)))
    while True:
        try:
            _schedule(engine, prompts, seeds, params, log_ratio, queue, pending, R, chunk, progress, finished,
                      blocks, tally, shrink=more is None, on_block=on_block and block, resume=resume)
            break
        except RuntimeError as e:  # torch.cuda.OutOfMemoryError is a RuntimeError
            if "out of memory" not in str(e).lower() or R == 1:
                raise
            # rerun the unfinished chains from their start on fewer rows: the same seeds, the same tokens
            pending = [c for c in pending if c not in results]
            tally[0] -= sum(blocks[c] for c in pending)
            blocks.update(dict.fromkeys(pending, 0))
            R = max(1, R // 2)
            log.warning("out of memory: running the %d unfinished chains again on %d rows (set max_batch_tokens "
                        "to start there)", len(pending), R)
            # (the failed batch's tensors are freed when `e` goes: the allocator reuses their memory)
    return [results[c] for c in sorted(range(len(queue)), key=lambda c: queue[c])]


def kv_bytes_per_token(config, dtype_bytes: int) -> int:
    """Bytes of KV cache one token takes in a transformers model with `config`: keys and values, in every
    layer, for every key/value head (grouped-query attention has fewer than query heads)."""
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return 2 * config.num_hidden_layers * heads * head_dim * dtype_bytes


def token_budget(free_bytes: int, bytes_per_token: int, share: float = _MEMORY_SHARE) -> int:
    """max_batch_tokens that `share` of `free_bytes` holds as KV cache."""
    return int(free_bytes * share) // bytes_per_token


def cuda_token_budget(engine: Engine) -> int | None:
    """The default max_batch_tokens on CUDA: from free memory and the model's KV bytes per token (None
    for an engine without a transformers config: unlimited)."""
    model = getattr(engine, "model", None)
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "num_hidden_layers"):
        return None
    free, _ = torch.cuda.mem_get_info(engine.device)
    # the compute dtype, which the cache is kept in (a quantized model's weights may be smaller)
    return token_budget(free, kv_bytes_per_token(config, torch.empty(0, dtype=model.dtype).element_size()))


def _schedule(engine: Engine, prompts: list[list[int]], seeds: list[int], params: PowerParams, log_ratio: Callable,
              queue: list[tuple[int, int]], order: list[int], R: int, chunk: int | None,
              progress: Callable[[int], None] | None, finished: Callable[[int, Result], None],
              blocks: dict[int, int], tally: list[int], shrink: bool = True,
              on_block: Callable | None = None, resume: dict | None = None) -> None:
    """Run chains `order` (indices into `queue`, the (prompt, sample) of each chain) on R rows; chains
    appended to `order` while it runs join too. `shrink`: drop idle rows once the queue runs dry (not
    where chains may still be added: they would find fewer rows)."""
    t0 = time.perf_counter()
    dev = engine.device
    resume = resume or {}
    def chain_seed(c: int) -> int:
        i, j = queue[c]
        return rng.derive_seeds(seeds[i], "chain", j)  # as chains.fan_out derives them

    R = min(R, len(order))
    chunk = chunk or (_CHUNK_CPU if dev.type == "cpu" else _CHUNK_GPU)
    N, T, B, alpha, proposal = params.mcmc_steps, params.max_new_tokens, params.block_size, params.alpha, \
        params.proposal
    n_blocks = math.ceil(T / B)

    # the first R chains: each prompt's prefix is computed once and shared by its chains (as fan_out does)
    first = [queue[c][0] for c in order[:R]]
    distinct = sorted(set(first))
    t_pass = time.perf_counter()
    seqs = engine.start([prompts[i] for i in distinct], [seeds[i] for i in distinct])
    parent = torch.tensor([distinct.index(i) for i in first], device=dev)
    seqs = engine.select(seqs, parent, seeds=torch.tensor([chain_seed(c) for c in order[:R]], device=dev))
    # hidden states (H per checkpoint, Q per chain) are logged where the engine has them: logging only
    want_hidden = params.hidden_dims > 0 and engine.supports_hidden
    projection = Projection(engine.hidden_size, params.hidden_dims) if want_hidden else None
    track = Track(R, T, dev, projection)  # each row's current completion
    prop = Track(R, T, dev, projection)  # each row's proposal in flight, from its cut position on
    zeros = torch.zeros(R, dtype=torch.long, device=dev)
    row = _Rows(
        chain=torch.tensor(order[:R], device=dev),  # the chain each row holds; -1: none (the row idles)
        block=zeros.clone(), step=zeros - 1,  # step -1: growing the block; 0..N-1: that MH step
        left=torch.full((R,), min(B, T), dtype=torch.long, device=dev),  # tokens its task may still draw
        cut=zeros.clone(),  # an MH step's position t (completion tokens kept)
        cut_now=torch.zeros(R, dtype=torch.bool, device=dev),  # the task starts with a cut at the next call
        proposed=zeros.clone(), accepted=zeros.clone(),
        seconds=torch.full((R,), _elapsed(t_pass, dev) / R, dtype=torch.float64, device=dev))
    checkpoints: dict[int, list] = {c: [] for c in order[:R]}  # (joining chains get theirs then)
    started = {c: t0 for c in order[:R]}  # when each chain took its row
    next_chain = R  # position in `order` of the next chain to join

    def finish_blocks(ended: torch.Tensor) -> torch.Tensor:
        """Checkpoint chains whose block ended; return the rows whose chain is now finished."""
        idx = ended.nonzero().flatten().tolist()
        elapsed = time.perf_counter() - t0
        cps = track.checkpoints(seqs, (row.block + 1).tolist(), row.proposed, row.accepted, elapsed, rows=idx)
        done = ended & ((row.block + 1 == n_blocks) | (track.ends_with_eos & params.stop_at_eos))
        done_l, secs = done.tolist(), row.seconds.tolist()
        for r, cp in zip(idx, cps, strict=True):
            cp.ended, cp.chain_seconds = done_l[r], secs[r]
            checkpoints[int(row.chain[r])].append(cp)
            blocks[int(row.chain[r])] += 1
            tally[0] += 1
        for r in done.nonzero().flatten().tolist():
            c = int(row.chain[r])
            tally[0] += n_blocks - blocks[c]
            blocks[c] = n_blocks
            ids = seqs.completion(r)
            n_prop = int(row.proposed[r])
            # seconds: the chain's share of the batch's wall time (it held 1 of R rows), per prompt
            seconds = (time.perf_counter() - started[c]) * len(queue) / len(prompts) / R
            q = engine.prompt_hidden(seqs) if want_hidden else None
            finished(c, Result(
                prompt_index=queue[c][0], sample_index=queue[c][1], seconds=seconds, method="power",
                checkpoints=checkpoints[c], token_ids=ids, text=engine.decode(ids),
                logp=float(track.logp[r, : len(ids)].sum()), finished=bool(track.ends_with_eos[r]),
                tokens_generated=int(track.generated[r]),
                acceptance_rate=(int(row.accepted[r]) / n_prop) if n_prop else None,
                stats={"proposals": n_prop, "accepted": int(row.accepted[r])},
                prompt_hidden=[round_sig(x) for x in track.project(q[r: r + 1])[0].tolist()] if want_hidden else None,
                hidden_projection=projection.to_dict() if want_hidden else None))
        if on_block is not None:
            for r in (ended & ~done).nonzero().flatten().tolist():  # (settled rows: their proposals were judged)
                c, n = int(row.chain[r]), int(track.length[r])
                on_block(queue[c], ChainState(
                    block=int(row.block[r]) + 1, token_ids=seqs.completion(r),
                    **{name: getattr(track, name)[r, :n].tolist() for name in ("logp", "logq", "entropy", "top1")},
                    ends_with_eos=bool(track.ends_with_eos[r]), generated=int(track.generated[r]),
                    proposed=int(row.proposed[r]), accepted=int(row.accepted[r]), draws=int(seqs.draws[r]),
                    checkpoints=list(checkpoints[c]),
                    hidden=track.hidden[r].tolist() if track.hidden is not None else None))
        if progress is not None and tally[0] // len(queue) > tally[1]:
            progress(tally[0] // len(queue) - tally[1])
            tally[1] = tally[0] // len(queue)
        return done

    def advance(need: torch.Tensor) -> None:
        """Move rows `need` (their task ended) on to their chain's next task that draws tokens."""
        while bool(need.any()):  # usually one pass; more when steps are skipped or blocks end at once
            row.step = torch.where(need, row.step + 1, row.step)
            ended = need & (row.step == N)
            if bool(ended.any()):
                done = finish_blocks(ended)
                row.chain.masked_fill_(done, -1)
                need = need & ~done
                nxt = ended & ~done  # next block: grow, unless the sample already ends with EOS
                row.block, row.step = torch.where(nxt, row.block + 1, row.block), torch.where(nxt, -1, row.step)
                cap = ((row.block + 1) * B).clamp(max=T)
                grow = nxt & ~track.ends_with_eos
                row.left = torch.where(grow, cap - track.length, row.left)
                need = need & ~grow
            mh = need & (row.step >= 0) & (row.step < N)
            counter = row.block * N + row.step
            n_old = track.length.clamp(min=1)
            t = (rng.uniform(seqs.seeds, rng.Stream.POSITION, counter) * n_old).long().clamp(max=n_old - 1)
            go = mh & (track.length > 0)  # an empty completion has nothing to resample: the step is skipped
            row.cut = torch.where(go, t, row.cut)
            row.left = torch.where(go, ((row.block + 1) * B).clamp(max=T) - t, row.left)
            row.cut_now.logical_or_(go)
            need = need & ~go

    def place(free: list[int], new: list[int]) -> None:
        """Rows `free` (settled) take chains `new`: from scratch, or from a saved state (`resume`)."""
        states = [resume.get(queue[c]) for c in new]
        idx = torch.tensor(free, device=dev)
        t_pass = time.perf_counter()
        engine.join(seqs, idx, [prompts[queue[c][0]] for c in new], [chain_seed(c) for c in new],
                    completions=[s.token_ids if s else [] for s in states], draws=[s.draws if s else 0 for s in states])
        joined_seconds = _elapsed(t_pass, dev) / len(free)  # the joining rows' prefill, theirs alone
        started.update(dict.fromkeys(new, time.perf_counter()))
        checkpoints.update({c: [] for c in new})
        joined = torch.zeros(len(seqs), dtype=torch.bool, device=dev)
        joined[idx] = True
        row.chain[idx] = torch.tensor(new, device=dev)
        track.reset(joined)
        row.block, row.step = torch.where(joined, 0, row.block), torch.where(joined, -1, row.step)
        row.left = torch.where(joined, min(B, T), row.left)
        row.proposed.masked_fill_(joined, 0)
        row.accepted.masked_fill_(joined, 0)
        row.seconds.masked_fill_(joined, joined_seconds)
        resumed = torch.zeros_like(joined)
        for r, c, s in zip(free, new, states, strict=True):
            if s is None:
                continue
            log.debug("resuming prompt %d chain %d at block %d", *queue[c], s.block + 1)
            n = len(s.token_ids)
            for name in ("logp", "logq", "entropy", "top1"):
                getattr(track, name)[r, :n] = torch.tensor(getattr(s, name), dtype=torch.float64)
            track.length[r], track.ends_with_eos[r], track.generated[r] = n, s.ends_with_eos, s.generated
            row.block[r], row.proposed[r], row.accepted[r] = s.block, s.proposed, s.accepted
            row.seconds[r] += s.checkpoints[-1].chain_seconds  # (a state saved before chain_seconds existed: 0)
            if track.hidden is not None and s.hidden is not None and len(s.hidden) == track.hidden.shape[1]:
                track.hidden[r] = torch.tensor(s.hidden, dtype=track.hidden.dtype)
            checkpoints[c] = list(s.checkpoints)
            tally[0] += s.block - blocks[c]
            blocks[c] = s.block
            resumed[r] = True
        # a resumed chain goes on with its next block: it grows it, or (ending with EOS) starts its MH steps
        grow = resumed & ~track.ends_with_eos
        row.left = torch.where(grow, ((row.block + 1) * B).clamp(max=T) - track.length, row.left)
        advance(resumed & ~grow)

    resumed_first = [(r, c) for r, c in enumerate(order[:R]) if queue[c] in resume]
    if resumed_first:  # they started afresh above: restart them from their saved states
        place([r for r, _ in resumed_first], [c for _, c in resumed_first])

    while True:
        busy = row.chain >= 0
        if not bool(busy.any()):
            break
        asked = torch.where(busy, row.left.clamp(max=chunk), 0)
        keep = torch.where(row.cut_now, seqs.prompt_lengths + row.cut, -1)
        mh = busy & (row.step >= 0)
        t_pass = time.perf_counter()
        ext = engine.extend(seqs, asked, proposal, keep=keep, hidden=want_hidden)
        row.seconds += busy * (_elapsed(t_pass, dev) / int(busy.sum()))  # split over the rows it served
        if bool(row.cut_now.any()):  # a cut starts a fresh proposal
            prop.reset(row.cut_now)
            row.cut_now.zero_()
        track.append(_only(ext, busy & ~mh))
        prop.append(_only(ext, mh))
        row.left = row.left - ext.lengths
        ended = busy & (ext.eos | (row.left == 0) | (ext.lengths < asked))
        judged = ended & mh
        if bool(judged.any()):
            # the proposals as one Extension, as the ratio and Track.replace take them (tokens: shape only)
            pext = Extension(tokens=prop.logp, logp=prop.logp, logq=prop.logq, entropy=prop.entropy, top1=prop.top1,
                             lengths=prop.length, eos=prop.ends_with_eos)
            log_r = log_ratio(alpha, track, row.cut, pext)
            u = rng.uniform(seqs.seeds, rng.Stream.ACCEPT, row.block * N + row.step)
            accept = judged & (torch.log(u) < log_r)
            engine.settle(seqs, accept, rows=judged)
            track.replace(pext, row.cut, accept)
            track.take_hidden(prop, accept)  # an accepted proposal's last token is the completion's last
            track.generated += torch.where(judged, prop.length, 0)
            row.proposed += judged
            row.accepted += accept
        advance(ended)
        free = (row.chain < 0).nonzero().flatten().tolist()
        if free and next_chain < len(order):  # finished chains' rows go to the next chains in the queue
            free = free[: len(order) - next_chain]
            new = order[next_chain: next_chain + len(free)]
            next_chain += len(free)
            place(free, new)
        elif shrink and free and len(free) * 16 >= len(seqs) and len(free) < len(seqs):
            # the queue ran dry: drop idle rows, so that forward passes carry (almost) only working rows
            index = (row.chain >= 0).nonzero().flatten()
            seqs = engine.shrink(seqs, index)
            for state in (track, prop, row):
                state.select(index)


@dataclass
class _Rows:
    """Per-row scheduling state, one entry per engine row."""

    chain: torch.Tensor
    block: torch.Tensor
    step: torch.Tensor
    left: torch.Tensor
    cut: torch.Tensor
    cut_now: torch.Tensor
    proposed: torch.Tensor
    accepted: torch.Tensor
    seconds: torch.Tensor  # compute attributed to the row's chain (Checkpoint.chain_seconds)

    def select(self, index: torch.Tensor) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name)[index])


def _elapsed(since: float, dev: torch.device) -> float:
    """Wall seconds since `since`, once the device has finished the work queued (CUDA runs asynchronously)."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return time.perf_counter() - since


def _only(ext: Extension, rows: torch.Tensor) -> Extension:
    """The extension with rows outside `rows` emptied (they drew nothing for this purpose)."""
    return Extension(tokens=ext.tokens, logp=ext.logp, logq=ext.logq, entropy=ext.entropy, top1=ext.top1,
                     lengths=torch.where(rows, ext.lengths, 0), eos=ext.eos & rows, hidden=ext.hidden)


@dataclass(frozen=True)
class ChainState:
    """A running MH chain after `block` finished blocks: all that its next blocks depend on (module doc)."""

    block: int  # blocks finished
    token_ids: list[int]  # the completion so far
    logp: list[float]  # per completion token, from the pass that drew it
    logq: list[float]
    entropy: list[float]
    top1: list[float]
    ends_with_eos: bool
    generated: int  # tokens drawn so far, rejected proposals included
    proposed: int
    accepted: int
    draws: int  # tokens the chain's stream has drawn
    checkpoints: list[Checkpoint]
    hidden: list[float] | None = None  # the projected hidden state of its last token (unrounded), if logged

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ChainState:
        """A state from its `to_dict` (a PowerSampleError names what is missing or wrong)."""
        try:
            return cls(**{**d, "checkpoints": [Checkpoint(**cp) for cp in d["checkpoints"]]})
        except (TypeError, KeyError) as e:
            raise PowerSampleError(f"not a chain state: {e}", "state") from e

    def check(self, params: PowerParams) -> None:
        """Raise unless this state can be one of a chain run with `params`."""
        n = len(self.token_ids)
        check(0 < self.block < math.ceil(params.max_new_tokens / params.block_size)
              and n <= self.block * params.block_size and self.proposed >= self.accepted >= 0
              and self.draws >= self.generated >= n and len(self.checkpoints) == self.block
              and all(len(getattr(self, f)) == n for f in ("logp", "logq", "entropy", "top1")),
              f"a chain state that does not fit these settings (block {self.block}, {n} tokens)", "state")
