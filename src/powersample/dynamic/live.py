"""Live Dynamic Power Sampling: `sample(..., method="dynamic", controller="beta:0.9")`.

Each problem starts with k_min MH power-sampling chains on the continuously batched scheduler. When
every chain a problem has started has finished, the controller is asked (replay.decide, the step a
replay takes, on the same features): "more" adds k_step chains (up to k_max), which join the running
batch at once (scheduler.run_chains' `more`): problems at different stages share one batch, and no
problem waits for another. "enough" ends the problem: its answer is the majority vote over its chains
(vote.py), and `on_problem` gets its record (what eval writes to dynamic.jsonl).

Chain j of problem i has the seed it has in a fixed run (derive_seeds(seed_i, "chain", j)), and the
problem's checkpoint index advances as in a replay: a chain added after step s runs its block 1 at
step s + 1, so chain j ends at step start_j + blocks_j - 1. A live run therefore makes exactly the
decisions, answers and token counts that replaying the same controller on a fixed k_max run with the
same seeds gives (tests/test_dynamic_live.py). The controller is asked only once the chains it has
are finished (`decide="end"`): asking mid-run needs the running answers of unfinished chains, which
are graded after the run (eval), not live.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import check
from ..samplers.params import PowerParams
from ..samplers.power import suffix_log_ratio
from ..samplers.registry import Method
from ..samplers.result import Result
from ..samplers.scheduler import run_chains
from .controllers import Oracle, make_controller
from .features import ProblemState
from .log import ChainState, hidden_fields
from .replay import Budget, decide
from .vote import majority


@dataclass(frozen=True)
class DynamicParams(PowerParams):
    """MH power sampling with a per-problem number of chains chosen by a controller (docs/dynamic.md)."""

    controller: str = "beta:0.95"  # NAME[:ARG], dynamic/controllers.py (not `oracle`: it needs the log)
    k_min: int = 2  # chains a problem starts with
    k_step: int = 2  # chains "more" adds
    k_max: int = 8

    def __post_init__(self):
        super().__post_init__()
        Budget(self.k_min, self.k_step, self.k_max)  # validates the budget
        # a bad spec fails here, before a model is loaded
        check(not isinstance(make_controller(self.controller), Oracle), "the oracle knows the final answer only "
              "when replaying a log (controller replay); it cannot run live", "controller", self.controller)

    @property
    def budget(self) -> Budget:
        return Budget(self.k_min, self.k_step, self.k_max, decide="end")


def chain_state(r: Result, answer: str | None) -> ChainState:
    """A finished chain as a controller sees it: as log.chain_from_row reads its row back."""
    last = r.checkpoints[-1] if r.checkpoints else None
    return ChainState(answer, None, r.logp, len(r.token_ids), r.tokens_generated, r.acceptance_rate,
                      last.mean_entropy if last else None, last.mean_top1 if last else None, True,
                      **hidden_fields(last.hidden if last else None, r.prompt_hidden, r.hidden_projection))


def dynamic_sample(engine, prompts: list[list[int]], seeds: list[int], params: DynamicParams, num_samples: int = 1,
                   progress: Callable[[int], None] | None = None, rows: int | None = None,
                   on_result: Callable[[Result], None] | None = None, max_batch_tokens: int | None = None,
                   extract: Callable[[str], str | None] | None = None, same: Callable[[str, str], bool] | None = None,
                   on_problem: Callable[[dict], None] | None = None) -> list[Result]:
    """Every chain the controller asked for, prompt-major (a problem has k_min..k_max of them).

    `extract(text)` is a completion's answer and `same(a, b)` the task's equivalence (eval passes the
    task's; default: the stripped completion, compared exactly). `on_problem(record)` gets each problem's
    record as it ends (prompt_index, k, chosen sample, answer, tokens, steps, the decisions with their
    features); `num_samples` is ignored (the controller chooses; `rows` sizes the batch)."""
    extract = extract or (lambda text: text.strip() or None)
    same = same or (lambda a, b: a == b)
    controller, budget = make_controller(params.controller), params.budget
    starts = [[1] * budget.k_min for _ in prompts]  # the step at which each chain runs its block 1
    done: list[dict[int, tuple[Result, ChainState]]] = [{} for _ in prompts]
    decisions: list[list[dict]] = [[] for _ in prompts]

    def more(r: Result) -> list[int]:
        i = r.prompt_index
        text = r.text if r.text is not None else " ".join(map(str, r.token_ids))  # (an engine without tokenizer)
        done[i][r.sample_index] = (r, chain_state(r, extract(text)))
        k = len(starts[i])
        if len(done[i]) < k:
            return []  # asked only once every chain started so far has ended
        states = tuple(done[i][j][1] for j in range(k))
        step = max(s + max(len(done[i][j][0].checkpoints), 1) - 1 for j, s in enumerate(starts[i]))
        add, end, d = decide(controller, ProblemState(states, step, budget.k_max), budget, same)
        decisions[i].append(d)
        starts[i] += [step + 1] * add
        if end and on_problem is not None:
            chosen = majority([s.answer for s in states], [s.logp for s in states], same)
            on_problem({"prompt_index": i, "controller": controller.spec, "k": k, "chosen": chosen,
                        "answer": states[chosen].answer, "tokens": sum(s.tokens_generated for s in states),
                        "steps": step, "decisions": decisions[i]})
        return list(range(k, k + add))

    def handed(r: Result) -> None:
        r.method = "dynamic"  # (the scheduler's Results say "power")
        if on_result is not None:
            on_result(r)

    return run_chains(engine, prompts, seeds, params, suffix_log_ratio, num_samples=budget.k_min, rows=rows,
                      progress=progress, on_result=handed, max_batch_tokens=max_batch_tokens, more=more)


DYNAMIC = Method(DynamicParams, dynamic_sample)


PROBLEMS_FILE = "dynamic.jsonl"  # in an eval run's folder: one record per problem, written as it ends


def eval_options(config, task, problems, run_dir):
    """For eval's runner: (batch -> the sample() options of a dynamic run, ids already recorded).

    Each problem's record goes to RUN_DIR/dynamic.jsonl the moment the problem ends (fsynced), keyed by
    its id; its chains' rows go to rows.jsonl as eval writes every sample. A resumed run skips the
    problems recorded; an unrecorded problem runs again from k_min (the same seeds: the same chains,
    whose rows already written are not written twice)."""
    import json
    import os
    from pathlib import Path

    from .vote import equivalence

    path = Path(run_dir) / PROBLEMS_FILE
    recorded = set()
    if path.exists():
        recorded = {json.loads(line)["id"] for line in path.read_text().splitlines() if line.strip()}
    same = equivalence(task)

    def options(batch) -> dict:
        def write(record: dict) -> None:
            record = {"id": batch[record.pop("prompt_index")].id, **record}
            with open(path, "a") as f:
                f.write(json.dumps(record) + "\n")
                f.flush()
                os.fsync(f.fileno())

        # rows for batch_size problems at k_max chains each (sample() sizes the batch by num_samples)
        return {"extract": task.extract, "same": same, "on_problem": write, "num_samples": config.sampler["k_max"]}

    return options, recorded
