"""A logged eval run read back as chains: chain j of a problem is its sample j, with one state per block.

A power-sampling row carries a checkpoint per block it ran (samplers/result.py: log p, tokens
generated, acceptance, mean entropy and top-1 of p, and the running answer with its verdict). A chain
that ended with EOS at block f has f checkpoints and stays as it was after f. The chain's last state
is the row itself (its graded final answer), so a vote over finished chains is a vote over the run's
graded answers.

Rows of a run logged with hidden states (docs/format.md) also give each state the chain's projected
hidden state H at that checkpoint, the prompt's Q and the projection they share (the MLP-H/HQ features).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import PowerSampleError
from ..evaluation.store import read_rows, read_run
from ..tasks import get_task
from ..tasks.base import Task


@dataclass(frozen=True)
class ChainState:
    """One chain after a block (or at its end: `done`)."""

    answer: str | None
    correct: bool | None
    logp: float  # log p(completion so far | prompt)
    tokens: int  # completion length
    tokens_generated: int  # every token drawn so far, rejected proposals included
    acceptance_rate: float | None
    mean_entropy: float | None  # of p's next-token distributions over the completion's tokens
    mean_top1: float | None
    done: bool  # the chain has run its last block (EOS or max_new_tokens)
    hidden: tuple[float, ...] | None = None  # H: the projected hidden state of the completion's last token
    prompt_hidden: tuple[float, ...] | None = None  # Q: the projected mean hidden state over the prompt
    projection: tuple[int, int, int] | None = None  # (hidden size d, dims m, seed) of H and Q; None: not logged


@dataclass(frozen=True)
class Chain:
    states: tuple[ChainState, ...]  # after block 1, 2, ...; the last one is the graded row

    def at(self, blocks: int) -> ChainState:
        """The state after `blocks` blocks (>= 1); a chain that has ended stays at its end."""
        return self.states[min(blocks, len(self.states)) - 1]

    @property
    def final(self) -> ChainState:
        return self.states[-1]


@dataclass(frozen=True)
class LoggedProblem:
    id: str
    chains: tuple[Chain, ...]  # by sample index


def hidden_fields(hidden, prompt_hidden, projection: dict | None) -> dict:
    """The hidden-state fields of a ChainState from a row's or a Result's (None where not logged)."""
    if not projection:
        return {}
    return {"hidden": tuple(hidden) if hidden is not None else None,
            "prompt_hidden": tuple(prompt_hidden) if prompt_hidden is not None else None,
            "projection": (projection["size"], projection["dims"], projection["seed"])}


def chain_from_row(row: dict) -> Chain:
    cps = row.get("checkpoints") or []
    q, proj = row.get("prompt_hidden"), row.get("hidden_projection")
    states = [ChainState(cp.get("answer"), cp.get("correct"), cp["logp"], cp["tokens"], cp["tokens_generated"],
                         cp.get("acceptance_rate"), cp.get("mean_entropy"), cp.get("mean_top1"),
                         bool(cp.get("ended", False)),  # (rows before `ended` was logged: only the last ends)
                         **hidden_fields(cp.get("hidden"), q, proj))
              for cp in cps[:-1]]
    last = cps[-1] if cps else {}
    tokens = row["tokens"] if "tokens" in row else len(row["token_ids"])  # format 1 had `tokens`, 2 has the ids
    states.append(ChainState(row.get("extracted"), row.get("correct"), row["logp"], tokens,
                             row["tokens_generated"], row.get("acceptance_rate"), last.get("mean_entropy"),
                             last.get("mean_top1"), True, **hidden_fields(last.get("hidden"), q, proj)))
    return Chain(tuple(states))


def load_log(run_dirs: Sequence[str | Path]) -> tuple[Task, list[LoggedProblem]]:
    """The task and the problems of fixed-k runs (same task; every problem with the same k chains).

    Raises a one-line error for: no rows, ungraded rows, rows without per-block checkpoint answers
    (log with --method power), a problem with fewer chains than the others, a problem in two runs.
    """
    if not run_dirs:
        raise PowerSampleError("no run directories given", "run")
    task_key, problems, where = None, [], {}
    for d in run_dirs:
        cfg = read_run(d).get("config", {})
        key = (cfg.get("task"), repr(sorted((cfg.get("task_options") or {}).items())))
        if task_key is not None and key != task_key:
            raise PowerSampleError(f"{d} is a run of task {key[0]}, the others of {task_key[0]}: one task at a "
                                   "time", "run", str(d))
        task_key, task_options = key, cfg.get("task_options") or {}
        rows = read_rows(d)
        if not rows:
            raise PowerSampleError(f"{d} has no rows: an empty log", "run", str(d))
        if all(r.get("correct") is None for r in rows):
            raise PowerSampleError(f"{d} has no graded rows: an unlabelled log", "run", str(d))
        if not any(cp.get("answer") is not None for r in rows for cp in r.get("checkpoints") or []):
            raise PowerSampleError(f"{d} has no answers at checkpoints: log with --method power on a task "
                                   "with extractable answers, and enough --max-new-tokens for some chains to "
                                   "reach one", "run", str(d))
        by_id: dict[str, list[dict]] = defaultdict(list)
        for r in rows:
            by_id[str(r["id"])].append(r)
        for pid, rs in by_id.items():
            if pid in where:
                raise PowerSampleError(f"problem {pid!r} is in both {where[pid]} and {d}", "run", str(d))
            where[pid] = d
            rs.sort(key=lambda r: r["sample_index"])
            if [r["sample_index"] for r in rs] != list(range(len(rs))):
                raise PowerSampleError(f"{d}: problem {pid!r} lacks some samples (resume the run)", "run", pid)
            problems.append(LoggedProblem(pid, tuple(chain_from_row(r) for r in rs)))
    ks = {len(p.chains) for p in problems}
    if len(ks) > 1:
        short = min(problems, key=lambda p: len(p.chains))
        raise PowerSampleError(f"problems have {sorted(ks)} chains (e.g. {short.id!r}: {len(short.chains)}); "
                               "resume the run so every problem has all of them", "run", short.id)
    return get_task(task_key[0], **task_options), problems
