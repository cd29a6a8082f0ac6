"""Live Dynamic Power Sampling: `sample(..., method="dynamic", controller="beta:0.9")`.

Each problem starts with k_min MH power-sampling chains on the continuously batched scheduler. The
problem's checkpoints are the replay's (replay.py): at step s a chain started at step s0 stands after
block s - s0 + 1, or at its end. A step is taken the moment every started chain's state at it is known
(`_Problem.advance`), and the controller is asked there as in a replay (replay.decide, on the same
features): "more" adds k_step chains (up to k_max), which run their block 1 at step s + 1 and join the
running batch at once (scheduler.run_chains' `more` and `on_block`): problems at different stages share
one batch, and no problem waits for another. The problem ends at the first step where every chain has
ended and the answer is enough: its answer is the majority vote over its chains (vote.py), and
`on_problem` gets its record (what eval writes to dynamic.jsonl).

When the controller is asked (`decide`): "end" (default) only at steps where every chain has ended, so
a chain's state is known when it finishes; "block" at every step, so a running chain's state is taken
at each block boundary, its answer being the task's `extract` of the completion so far (the running
answer eval records in each checkpoint). Chain j of problem i has the seed it has in a fixed run
(derive_seeds(seed_i, "chain", j)), so a live run makes exactly the decisions, answers and token counts
that replaying the same controller on a fixed k_max run with the same seeds gives
(tests/test_dynamic_live.py).

Resuming (eval): the decisions depend only on the chains' states, and those are on disk: finished
chains' rows and running chains' saved states (evaluation/runner.py ChainFiles). Given them
(`done_chains`, `resume`), each problem first replays its steps from them, then runs only the chains it
still needs, running chains from their saved block (tests/test_dynamic_live.py: interrupted and resumed
= uninterrupted).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from ..errors import check
from ..samplers.params import PowerParams
from ..samplers.power import suffix_log_ratio
from ..samplers.registry import Method
from ..samplers.result import Checkpoint, Result
from ..samplers.scheduler import run_chains
from .controllers import Learned, Oracle, check_budget, make_controller
from .features import ProblemState
from .log import ChainState, chain_from_row, hidden_fields
from .replay import Budget, decide
from .vote import majority


@dataclass(frozen=True)
class DynamicParams(PowerParams):
    """MH power sampling with a per-problem number of chains chosen by a controller (docs/dynamic.md)."""

    controller: str = "beta:0.95"  # NAME[:ARG], dynamic/controllers.py (not `oracle`: it needs the log)
    k_min: int = 2  # chains a problem starts with
    k_step: int = 2  # chains "more" adds
    k_max: int = 8
    decide: str = "end"  # ask the controller when every chain has ended ("end") or at every checkpoint ("block")

    def __post_init__(self):
        super().__post_init__()
        Budget(self.k_min, self.k_step, self.k_max, self.decide)  # validates the budget
        # a bad spec fails here, before a model is loaded
        controller = make_controller(self.controller)
        check(not isinstance(controller, Oracle), "the oracle knows the final answer only "
              "when replaying a log (controller replay); it cannot run live", "controller", self.controller)
        # a running chain's state at a block carries no prompt state Q yet (only finished chains' Results do)
        check(self.decide == "end" or not (isinstance(controller, Learned) and controller.model.hidden),
              f"{self.controller} reads hidden states, which a live run gives the controller only at decide=end; "
              "use decide=end, or compare decide=block offline with `controller replay --decide block`",
              "decide", self.decide)

    @property
    def budget(self) -> Budget:
        return Budget(self.k_min, self.k_step, self.k_max, decide=self.decide)


def block_state(cp: Checkpoint, answer: str | None) -> ChainState:
    """A chain after a block that did not end it, as log.chain_from_row reads the checkpoint back."""
    return ChainState(answer, None, cp.logp, len(cp.token_ids), cp.tokens_generated, cp.acceptance_rate,
                      cp.mean_entropy, cp.mean_top1, False)


def chain_state(r: Result, answer: str | None) -> ChainState:
    """A finished chain as a controller sees it: as log.chain_from_row reads its row back."""
    last = r.checkpoints[-1] if r.checkpoints else None
    return ChainState(answer, None, r.logp, len(r.token_ids), r.tokens_generated, r.acceptance_rate,
                      last.mean_entropy if last else None, last.mean_top1 if last else None, True,
                      **hidden_fields(last.hidden if last else None, r.prompt_hidden, r.hidden_projection))


def row_states(row: dict, extract: Callable[[str], str | None]) -> list[ChainState]:
    """A finished chain's states after each block, read back from its eval row as a replay reads it (the
    checkpoints' running answers, hidden states where logged), its final answer `extract` of its text (as live)."""
    states = list(chain_from_row(row).states)
    states[-1] = replace(states[-1], answer=extract(row["text"]))
    return states


class _Problem:
    """One problem's chains as the controller sees them, and its steps so far (replay.replay_problem's loop,
    taken as the chains' states become known)."""

    def __init__(self, k_min: int, known: dict[int, list[ChainState]]):
        self.starts = [1] * k_min  # the step at which each chain runs its block 1
        self.states = known  # chain -> its states after block 1, 2, ... known so far (the last: its end)
        self.step, self.decisions, self.ended = 0, [], False

    def finished(self, j: int) -> bool:
        return bool(self.states.get(j)) and self.states[j][-1].done

    def at(self, j: int, step: int) -> ChainState | None:
        """Chain j at `step` (after block step - start + 1, or at its end), None while not known."""
        b, states = step - self.starts[j] + 1, self.states.get(j, [])
        if b <= len(states):
            return states[b - 1]
        return states[-1] if states and states[-1].done else None

    def advance(self, controller, budget: Budget, same) -> list[int]:
        """Take every step whose states are all known; the chains the controller added on the way."""
        added = []
        while not self.ended:
            states = [self.at(j, self.step + 1) for j in range(len(self.starts))]
            if any(s is None for s in states):
                break
            self.step += 1
            add, self.ended, d = decide(controller, ProblemState(tuple(states), self.step, budget.k_max), budget, same)
            if d is not None:
                self.decisions.append(d)
            added += range(len(self.starts), len(self.starts) + add)
            self.starts += [self.step + 1] * add
        return added

    def record(self, i: int, spec: str, same) -> dict:
        finals = [self.states[j][-1] for j in range(len(self.starts))]
        chosen = majority([s.answer for s in finals], [s.logp for s in finals], same)
        return {"prompt_index": i, "controller": spec, "k": len(finals), "chosen": chosen,
                "answer": finals[chosen].answer, "tokens": sum(s.tokens_generated for s in finals),
                "steps": self.step, "decisions": self.decisions}


def dynamic_sample(engine, prompts: list[list[int]], seeds: list[int], params: DynamicParams, num_samples: int = 1,
                   progress: Callable[[int], None] | None = None, rows: int | None = None,
                   on_result: Callable[[Result], None] | None = None, max_batch_tokens: int | None = None,
                   extract: Callable[[str], str | None] | None = None, same: Callable[[str, str], bool] | None = None,
                   on_problem: Callable[[dict], None] | None = None, on_block: Callable | None = None,
                   resume: dict | None = None, done_chains: dict[tuple[int, int], list[ChainState]] | None = None,
                   answers_at_blocks: bool = True) -> list[Result]:
    """Every chain the controller asked for that was not finished before, prompt-major (a problem has
    k_min..k_max chains).

    `extract(text)` is a completion's answer and `same(a, b)` the task's equivalence (eval passes the
    task's; default: the stripped completion, compared exactly); `answers_at_blocks`: whether a partial
    completion has a running answer (decide="block"; eval passes the task's `answers_at_checkpoints`).
    `on_problem(record)` gets each problem's record as it ends (prompt_index, k, chosen sample, answer,
    tokens, steps, the decisions with their features). Resuming: `done_chains` {(prompt, sample): its
    states, `row_states`} are chains finished before, `resume` and `on_block` as in run_chains.
    `num_samples` is ignored (the controller chooses; `rows` sizes the batch)."""
    extract = extract or (lambda text: text.strip() or None)
    same = same or (lambda a, b: a == b)
    controller, budget = make_controller(params.controller), params.budget
    check_budget(controller, budget)
    blockwise = budget.decide == "block"

    def text(ids) -> str:
        t = engine.decode(list(ids))
        return t if t is not None else " ".join(map(str, ids))  # (an engine without tokenizer)

    def running(cp: Checkpoint) -> ChainState:  # (its answer matters only where the controller is asked mid-run)
        return block_state(cp, extract(text(cp.token_ids)) if blockwise and answers_at_blocks else None)

    known: list[dict[int, list[ChainState]]] = [{} for _ in prompts]
    for (i, j), states in (done_chains or {}).items():
        known[i][j] = list(states)
    for (i, j), state in (resume or {}).items():  # running chains: their blocks so far
        known[i].setdefault(j, [running(cp) for cp in state.checkpoints])
    problems = [_Problem(budget.k_min, known[i]) for i in range(len(prompts))]

    def step(i: int) -> list[int]:
        """Take problem i's steps now known; the chains to run that it added."""
        p = problems[i]
        if p.ended:
            return []
        added = p.advance(controller, budget, same)
        if p.ended and on_problem is not None:
            on_problem(p.record(i, controller.spec, same))
        return [j for j in added if not p.finished(j)]

    def more(r: Result) -> list[int]:
        problems[r.prompt_index].states[r.sample_index] = [running(cp) for cp in r.checkpoints[:-1]] + [
            chain_state(r, extract(r.text if r.text is not None else text(r.token_ids)))]
        return step(r.prompt_index)

    def block(chain: tuple[int, int], state) -> list[int]:
        if on_block is not None:
            on_block(chain, state)
        if not blockwise:
            return []
        i, j = chain
        problems[i].states.setdefault(j, [])[state.block - 1:] = [running(state.checkpoints[-1])]
        return step(i)

    def handed(r: Result) -> None:
        r.method = "dynamic"  # (the scheduler's Results say "power")
        if on_result is not None:
            on_result(r)

    # first the steps that what earlier runs left (finished chains, saved states) decides, then the chains to run
    chains = []
    for i, p in enumerate(problems):
        step(i)
        chains += [(i, j) for j in range(len(p.starts)) if not p.finished(j)]
    if not chains:
        return []
    return run_chains(engine, prompts, seeds, params, suffix_log_ratio, rows=rows, progress=progress,
                      on_result=handed, max_batch_tokens=max_batch_tokens, more=more,
                      on_block=block if (on_block is not None or blockwise) else None, resume=resume, chains=chains)


DYNAMIC = Method(DynamicParams, dynamic_sample)


PROBLEMS_FILE = "dynamic.jsonl"  # in an eval run's folder: one record per problem, written as it ends


def eval_options(config, task, run_dir, rows: list[dict]):
    """For eval's runner: (batch -> the sample() options of a dynamic run, ids of the problems done).

    Each problem's record goes to RUN_DIR/dynamic.jsonl the moment the problem ends (one fsynced append),
    keyed by its id; its chains' rows go to rows.jsonl as eval writes every sample. A problem is done when
    it is recorded and the rows of its k chains are written (`rows`: those already on disk). Any other
    problem replays its steps from its finished chains' rows and its running chains' saved states (eval
    passes those: ChainFiles), then runs the chains it still needs; a problem recorded before is not
    recorded twice (its record is the same)."""
    from pathlib import Path

    from ..jsonl import append_rows, read_rows
    from .vote import equivalence

    path = Path(run_dir) / PROBLEMS_FILE
    recorded = {r["id"]: r["k"] for r in read_rows(path, repair=True)}  # (a line torn by a kill is cut)
    written = {(r["id"], r["sample_index"]): r for r in rows}
    done = {pid for pid, k in recorded.items() if all((pid, j) in written for j in range(k))}
    same = equivalence(task)

    def options(batch) -> dict:
        def write(record: dict) -> None:
            pid = batch[record.pop("prompt_index")].id
            if pid not in recorded:
                append_rows(path, [{"id": pid, **record}])

        ids = {p.id: i for i, p in enumerate(batch)}
        done_chains = {(ids[pid], j): row_states(r, task.extract) for (pid, j), r in written.items() if pid in ids}
        # rows for batch_size problems at k_max chains each (sample() sizes the batch by num_samples)
        return {"extract": task.extract, "same": same, "on_problem": write, "num_samples": config.sampler["k_max"],
                "done_chains": done_chains, "answers_at_blocks": task.answers_at_checkpoints}

    return options, done
