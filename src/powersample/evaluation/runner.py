"""`run_eval`: sample every selected problem, grade each sample, write one row per (problem, sample).

The loop: power sampling (continuously batched) gets every problem in ONE sampling call, its chains
queued on batch_size x samples_per_problem rows, and hands each sample over the moment its chain
finishes; other methods (and a stand-in sample_fn) go in batches of `batch_size` problems, one call
each. Each sample's grading is handed to a process pool, so the model keeps generating while it is
graded; each row is appended (and fsynced) the moment its grade arrives.
Sample j of a problem depends only on (seed, problem id) - the sampler guarantees that a prompt's
samples do not depend on the rest of its batch - so batch size, sharding and resumption do not
change any result. A long problem's power (and dynamic) chains are saved at each block boundary
(RUN_DIR/chains/, `ChainFiles`), so a resumed run continues them mid-problem, with the same results.

The sampling function is injectable (`sample_fn`, default `powersample.sample`), and so is the
model (an Engine already loaded, or any object the sample_fn accepts), for tests and reuse.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from ..api import LOADING_SETTINGS, continuously_batched
from ..errors import PowerSampleError, check
from ..jsonl import result_row
from ..rng import derive_seeds
from ..tasks import get_task
from ..tasks.base import Grade, Problem, Task
from .config import NON_CORE, EvalConfig
from .grading import GradePool, grade_sample
from .store import RunStore, read_rows, write_json_atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSummary:
    """What a run did: rows written now and in total, and accuracy over all graded rows."""

    out: Path
    problems: int  # selected by limit and shard
    rows_new: int
    rows_total: int
    correct: int
    graded: int  # rows with correct not None
    grader_errors: int
    exported: tuple[Path, ...] = ()

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.graded if self.graded else None


def select_problems(problems: Sequence[Problem], limit: int | None, shard: tuple[int, int]) -> list[Problem]:
    """The first `limit` problems, then every n-th from position i (shard i of n)."""
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise PowerSampleError(f"problem id {dup!r} appears more than once; ids must be unique", "data", dup)
    chosen = list(problems[:limit] if limit is not None else problems)
    i, n = shard
    return [p for k, p in enumerate(chosen) if k % n == i]


def run_record(config: EvalConfig, task: Task) -> dict[str, Any]:
    """run.json's content: the full configuration (plus data hash and task version), versions, and what
    grading achieves here (raises when the task must not grade here, before anything is written)."""
    from ..tasks.files import sha256_file

    cfg = config.to_dict()
    cfg["data_sha256"] = sha256_file(config.data) if config.data else None
    cfg["task_version"] = task.version
    cfg["task_options"] = task.options()  # with the task's defaults filled in
    return {"config": cfg, "versions": versions(), "grading": task.environment()}


def core_fields(config_dict: dict[str, Any]) -> list[str]:
    return sorted(k for k in config_dict if k not in NON_CORE)


def versions() -> dict[str, str | None]:
    """Versions that can change results (read from package metadata: no heavy imports)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("powersample", "torch", "transformers", "math-verify"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def generator_name(config: EvalConfig) -> str:
    """A short label for the model + method (AlpacaEval's "generator" field)."""
    model = Path(config.model.rstrip("/")).name or config.model
    extra = f"-a{config.sampler['alpha']:g}" if config.method == "power" else ""
    return f"powersample-{model}-{config.method}{extra}"


def run_eval(config: EvalConfig, *, sample_fn: Callable[..., Any] | None = None, model: Any = None,
             progress: bool = True) -> RunSummary:
    """Run (or resume) the evaluation described by `config`; see the module docstring."""
    task = get_task(config.task, **config.task_options)
    if task.name == "humaneval" and config.chat:
        log.warning("humaneval is a code-completion task for base models: --chat wraps the prompt in a chat "
                    "turn, and the reply (often markdown) is executed as the function body")
    problems = task.load(config.data)
    check(len(problems) > 0, f"{config.data or config.task} holds no problems", "data", config.data)
    selected = select_problems(problems, config.limit, config.shard_index)
    check(len(selected) > 0, f"shard {config.shard} selects none of the {len(problems[:config.limit])} problems; "
          "use fewer shards", "shard", config.shard)
    record = run_record(config, task)
    store = RunStore.open(config.out, record, core_fields(record["config"]))
    try:
        return _run(config, task, selected, store, sample_fn, model, progress)
    finally:
        store.close()


def _run(config: EvalConfig, task: Task, selected: list[Problem], store: RunStore,
         sample_fn: Callable[..., Any] | None, model: Any, progress: bool) -> RunSummary:
    k = config.samples_per_problem
    done = store.done()
    todo = [p for p in selected if any((p.id, j) not in done for j in range(k))]
    dynamic = config.method == "dynamic"  # chains per problem chosen live: done once recorded with its rows
    if dynamic:
        from ..dynamic.live import eval_options

        dyn_options, recorded = eval_options(config, task, store.dir, store.rows_at_open)
        todo = [p for p in selected if p.id not in recorded]
    # powersample.sample hands a continuously batched method's samples over as their chains finish
    stream = sample_fn is None and continuously_batched(config.method)
    missing = sum(1 for p in todo for j in range(k) if (p.id, j) not in done)
    stats = _Tally.from_rows(store.rows_at_open)

    if todo:
        loading = {key: config.sampler[key] for key in LOADING_SETTINGS if key in config.sampler}
        if sample_fn is None and config.ray is None:
            import powersample

            sample_fn = powersample.sample
        if model is None and config.ray is None:
            from ..engine import open_engine

            model = open_engine(config.model, device=config.device, dtype=config.dtype, **loading)
        _check_prompts_fit(model, todo, config.chat)
        pool = GradePool(config.grade_workers)
        bar = _bar(progress, missing, f"{config.task} {config.method}")
        try:
            if config.ray is not None:  # the workers load the model and sample; this process writes
                _run_on_ray(config, todo, done, task, pool, store, stats, bar, sample_fn,
                            dict(device=config.device, dtype=config.dtype, **loading))
            else:
                step = len(todo) if stream else config.batch_size  # streamed: one call, rows written as chains end
                for lo in range(0, len(todo), step):
                    batch = todo[lo: lo + step]
                    kwargs = _sample_kwargs(config, batch)
                    if dynamic:
                        kwargs.update(dyn_options(batch))
                    submitted: set[tuple[int, int]] = set()
                    chains = None
                    if stream and config.method in ("power", "dynamic"):  # running chains saved at block boundaries
                        chains = ChainFiles(store.dir, batch, kwargs["seeds"])
                        kwargs.update(on_block=chains.save, resume=chains.load(config, done))

                    def submit(r, batch=batch, submitted=submitted, chains=chains):
                        submitted.add((r.prompt_index, r.sample_index))
                        _submit(r, batch, done, task, model, pool, store, stats, bar, chains and chains.forget)
                        if pool.fatal:
                            raise PowerSampleError(f"{pool.fatal}; the rows written so far are kept")

                    if stream:
                        kwargs.update(on_result=submit, batch_size=config.batch_size)
                    results = sample_fn(model, [p.prompt for p in batch], **kwargs)
                    if not dynamic:
                        _check_results(results, batch, k)
                    for r in sorted(results, key=lambda r: (r.prompt_index, r.sample_index)):
                        if (r.prompt_index, r.sample_index) not in submitted:
                            submit(r)
            pool.shutdown(wait=True)
        except BaseException as e:
            # keep what was generated: let the grading under way finish and be written (Ctrl-C again aborts)
            if isinstance(e, KeyboardInterrupt):
                log.warning("interrupted: writing the samples already generated (Ctrl-C again to abort)")
            else:
                log.error("sampling failed (%s); writing the samples already generated", type(e).__name__)
            pool.shutdown(wait=True)
            raise
        finally:
            pool.shutdown(wait=False)
            if bar is not None:
                bar.close()

    exported = task.export(store.dir, read_rows(store.dir), selected, generator_name(config))
    return RunSummary(Path(config.out), len(selected), stats.new, stats.total, stats.correct, stats.graded,
                      stats.errors, tuple(exported))


def _run_on_ray(config: EvalConfig, todo: list[Problem], done: set[tuple[str, int]], task: Task, pool: GradePool,
                store: RunStore, stats: _Tally, bar, sample_fn: Callable[..., Any] | None,
                open_kwargs: dict[str, Any]) -> None:
    """Sample `todo` on Ray workers (evaluation/distributed.py); rows are graded and written here as
    in a local run, and the cluster and per-worker throughput are added to run.json."""
    from .distributed import error_row, run_on_ray
    from .store import RUN_FILE, write_json_atomic

    def submit(r, problems, model):
        _submit(r, problems, done, task, model, pool, store, stats, bar, ChainFiles(store.dir, problems, []).forget)
        if pool.fatal:
            raise PowerSampleError(f"{pool.fatal}; the rows written so far are kept")

    def write_error(problem: Problem, why: str) -> None:
        log.error("problem %r: %s", problem.id, why)
        for j in range(config.samples_per_problem):
            if (problem.id, j) not in done:
                row = error_row(problem, j, config.method, why)
                store.append(row)
                stats.add(row)
                if bar is not None:
                    bar.update(1)

    def sample_kwargs(chunk: list[Problem]) -> dict[str, Any]:
        kwargs = _sample_kwargs(config, chunk)
        if config.method == "power":  # workers save running chains in RUN_DIR/chains/: on this node or a shared disk
            chains = ChainFiles(store.dir, chunk, kwargs["seeds"])
            kwargs.update(on_block=chains.save, resume=chains.load(config, done))
        return kwargs

    info = run_on_ray(config, todo, sample_kwargs, submit, write_error,
                      sample_fn=sample_fn, open_kwargs=open_kwargs)
    record = json.loads((store.dir / RUN_FILE).read_text(encoding="utf-8"))
    write_json_atomic(store.dir / RUN_FILE, {**record, "ray": info})


def _check_prompts_fit(model: Any, problems: Sequence[Problem], chat: bool) -> None:
    """Name a problem whose prompt fills the model's context now, not when its batch comes up."""
    from ..api import _encode  # exactly as sample() will encode it (chat template included)
    from ..engine.base import Engine

    if not isinstance(model, Engine) or model.max_length is None:
        return  # a stand-in model (tests), or a context of unknown length
    for i, p in enumerate(problems):
        n = len(_encode(model, p.prompt, chat, i))
        check(n < model.max_length, f"problem {p.id!r} has a prompt of {n} tokens, which leaves no room in the "
              f"model's context of {model.max_length} tokens", "data", p.id)


def _sample_kwargs(config: EvalConfig, batch: Sequence[Problem]) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(method=config.method, num_samples=config.samples_per_problem,
                                  batch_size=len(batch), progress=False,
                                  seeds=[derive_seeds(config.seed, p.id) for p in batch])
    if config.chat:
        kwargs["chat"] = True
    if config.max_batch_tokens is not None:
        kwargs["max_batch_tokens"] = config.max_batch_tokens
    kwargs.update({k: v for k, v in config.sampler.items() if k not in LOADING_SETTINGS})
    return kwargs


def _check_results(results: Sequence[Any], batch: Sequence[Problem], k: int) -> None:
    keys = {(r.prompt_index, r.sample_index) for r in results}
    expected = {(i, j) for i in range(len(batch)) for j in range(k)}
    check(len(results) == len(keys) and keys == expected, f"the sampler returned {len(results)} results with "
          f"keys that do not match {len(batch)} prompts x {k} samples", "sample_fn")


def _submit(r: Any, batch: Sequence[Problem], done: set[tuple[str, int]], task: Task, model: Any,
            pool: GradePool, store: RunStore, stats: _Tally, bar, forget: Callable | None = None) -> None:
    """Hand a new sample to the graders; its row is written when its grade arrives (then `forget(problem,
    sample)`, if given, drops its chain's saved state)."""
    decode = getattr(model, "decode", None)
    problem = batch[r.prompt_index]
    if (problem.id, r.sample_index) in done:
        return  # written by an earlier, interrupted run
    text = r.text if r.text is not None else (decode(r.token_ids) if decode else None)
    if text is None:
        raise PowerSampleError("the sampler returned token ids without text and the model has no "
                               "tokenizer to decode them; give a model with a tokenizer", "model")
    answers = None  # running answers at checkpoints, for tasks where a partial completion has one
    if task.answers_at_checkpoints and decode is not None and r.checkpoints:
        answers = [task.extract(_decode(cp.token_ids, decode)) for cp in r.checkpoints]
    row = _row(problem, r, text, answers)
    # generous: the watchdog is for graders stuck in C code, not for slow ones
    budget = 60.0 + 10.0 * len(set(answers or ())) + float(getattr(task, "timeout", 0))
    future = pool.submit(grade_sample, (task, problem, text, r.finished, answers), budget, _grader_failed)
    future.add_done_callback(lambda f, row=row: _write(f, row, store, stats, bar))
    if forget is not None:  # (after _write; a row that failed to be written is simply sampled again)
        future.add_done_callback(lambda f: forget(problem.id, r.sample_index))


def _grader_failed(why: str) -> tuple[Grade, None]:
    return Grade(False, None, why, error=True), None


def _decode(ids: Sequence[int], decode) -> str:
    return decode(list(ids)) or ""


def _row(problem: Problem, r: Any, text: str, answers: Sequence[str | None] | None) -> dict[str, Any]:
    """The Result's row (powersample.jsonl) with the grade fields, filled in by _write once graded."""
    row = result_row(r, problem.id, text)
    row.update(correct=None, extracted=None, reason=None, grader_error=False)
    for cp, a in zip(row["checkpoints"], answers or [None] * len(r.checkpoints), strict=True):
        cp.update(answer=a, correct=None)
    return row


def _write(future, row: dict[str, Any], store: RunStore, stats: _Tally, bar) -> None:
    if future.cancelled() or future.exception() is not None:
        return  # abandoned at an abort, or grading broke down: the sample is generated again on resume
    grade, verdicts = future.result()
    row.update(correct=grade.correct, extracted=grade.extracted, reason=grade.reason,
               grader_error=grade.error)
    for cp, v in zip(row["checkpoints"], verdicts or (), strict=False):  # verdicts None: none recorded
        cp["correct"] = v
    try:
        store.append(row)
    except Exception:  # a full disk: say so loudly; the row is regenerated on the next run
        log.exception("could not write the row for %s sample %s", row["id"], row["sample_index"])
        return
    stats.add(row)
    if bar is not None:
        bar.update(1)
        if stats.graded:
            bar.set_postfix(acc=f"{stats.correct / stats.graded:.3f}", refresh=False)


class ChainFiles:
    """Running power chains of `problems` saved in RUN_DIR/chains/ at block boundaries (docs/format.md):
    one JSON file per running chain, fsynced and atomically replaced after each block, deleted once the
    chain's row is written. A state that cannot be used is discarded with a warning: its chain restarts
    from its first block, which changes nothing but the time it takes."""

    def __init__(self, run_dir: Path, problems: Sequence[Problem], seeds: Sequence[int]):
        self.dir = Path(run_dir) / "chains"
        self.problems, self.seeds = problems, seeds

    def path(self, problem_id: str, j: int) -> Path:  # ids may hold any character ("test/algebra/1.json")
        return self.dir / f"{hashlib.sha256(problem_id.encode()).hexdigest()[:16]}-{j}.json"

    def save(self, chain: tuple[int, int], state) -> None:
        """The scheduler's on_block."""
        i, j = chain
        try:  # (not parents=True: a Ray worker on a node without the run directory must not make one)
            self.dir.mkdir(exist_ok=True)
            write_json_atomic(self.path(self.problems[i].id, j), {"id": self.problems[i].id, "sample_index": j,
                                                                   "seed": self.seeds[i], "state": state.to_dict()})
        except OSError as e:  # saving only saves time on a rerun: never let it stop the sampling
            log.warning("could not save the state of problem %s chain %d (%s)", self.problems[i].id, j, e)

    def forget(self, problem_id: str, j: int) -> None:
        self.path(problem_id, j).unlink(missing_ok=True)

    def load(self, config: EvalConfig, done: set[tuple[str, int]]) -> dict:
        """The scheduler's `resume`: {(problem index, sample): ChainState} of the saved chains not yet done."""
        from ..api import make_params
        from ..samplers.scheduler import ChainState

        params = make_params(config.method, **config.sampler)
        resume = {}
        for i, p in enumerate(self.problems):  # only these problems' files (a Ray chunk's, say)
            for path in sorted(self.dir.glob(self.path(p.id, 0).name.replace("-0.json", "-*.json"))):
                try:
                    saved = json.loads(path.read_text(encoding="utf-8"))
                    j = saved["sample_index"]
                    check(saved["id"] == p.id and path == self.path(p.id, j) and saved["seed"] == self.seeds[i],
                          "it belongs to another chain or run", "state")
                    if (p.id, j) in done:  # its row is written: nothing to resume
                        path.unlink()
                        continue
                    state = ChainState.from_dict(saved["state"])
                    state.check(params)
                except (OSError, ValueError, TypeError, KeyError, PowerSampleError) as e:
                    log.warning("discarding the chain state %s (%s): that chain starts again from its first "
                                "block", path, e)
                    path.unlink(missing_ok=True)
                    continue
                log.info("resuming problem %s chain %d at block %d", p.id, j, state.block + 1)
                resume[i, j] = state
        return resume


class _Tally:
    """Running counts over the run's rows (old and new), updated from grader callbacks."""

    def __init__(self):
        self.total = self.new = self.correct = self.graded = self.errors = 0
        self._lock = threading.Lock()

    @classmethod
    def from_rows(cls, rows: Sequence[dict[str, Any]]) -> _Tally:
        t = cls()
        for r in rows:
            t._count(r)
        return t

    def add(self, row: dict[str, Any]) -> None:
        with self._lock:
            self._count(row)
            self.new += 1

    def _count(self, row: dict[str, Any]) -> None:
        self.total += 1
        if row.get("correct") is not None:
            self.graded += 1
            self.correct += bool(row["correct"])
        self.errors += bool(row.get("grader_error"))


def _bar(progress: bool, total: int, desc: str):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="sample", dynamic_ncols=True)

