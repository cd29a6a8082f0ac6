"""`eval --ray`: the same run, its problems spread over Ray actors (see docs/scale.md).

Each actor loads the model once and samples whole problems (every chain of a problem on one worker,
so they share a prompt cache). The driver is the one writer: it hands out problems, gets each
problem's Results back, grades them and appends the rows exactly as a single-process run does, so
`report` and resume need nothing new. A problem's chains depend only on their seeds, so the rows do
not depend on which worker ran them, nor on how often.

Faults: a worker that dies (killed, OOM, node lost) is restarted by Ray and the problems it held go
back in the queue; a problem that fails `MAX_TRIES` times becomes one error row per sample (correct
None, `reason` saying why), so a run always ends. Killing the driver loses only the problems under
way; rerunning the command resumes as usual.
"""

from __future__ import annotations

import logging
import os
import platform
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import PowerSampleError, check
from ..jsonl import result_row
from ..tasks.base import Problem

log = logging.getLogger(__name__)

MAX_TRIES = 3  # attempts per problem before it becomes an error row


def _ray():
    try:
        import ray
    except ImportError as e:
        raise PowerSampleError('--ray needs Ray, which is not installed: pip install "powersample[ray]"',
                               "ray") from e
    return ray


def connect(address: str | None) -> Any:
    """Join the cluster at `address` ("" or None: the local one, started if none runs); reuse a
    connection this process already has (tests start one cluster for many runs)."""
    ray = _ray()
    if ray.is_initialized():
        return ray
    if address and address not in ("auto", "local"):  # ray.init retries a dead address for minutes
        host, _, port = address.removeprefix("ray://").rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=10).close()
        except (OSError, ValueError) as e:
            raise PowerSampleError(f"cannot reach a Ray cluster at {address!r} (expected HOST:PORT of a running "
                                   f"`ray start --head`): {getattr(e, 'strerror', None) or e}", "ray", address) from e
    try:
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise PowerSampleError(f"cannot connect to the Ray cluster at {address!r}: {str(e).splitlines()[0]}",
                               "ray", address) from e
    return ray


class _Worker:
    """One Ray actor: a loaded model and the sampling function; `run` samples a list of problems."""

    def __init__(self, model: str, open_kwargs: dict[str, Any], sample_fn: Callable[..., Any] | None):
        import powersample

        from ..engine import open_engine

        self.engine = open_engine(model, **open_kwargs)
        self.sample_fn = sample_fn or powersample.sample
        self.samples = 0
        self.busy = 0.0

    def ready(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "host": platform.node()}

    def run(self, prompts: list[Any], kwargs: dict[str, Any]) -> tuple[list[Any], dict[tuple[int, ...], str]]:
        """The Results of `prompts`, and the text of every token sequence the driver will decode
        (checkpoints), since the driver holds no model."""
        t = time.perf_counter()
        results = self.sample_fn(self.engine, prompts, **kwargs)
        self.busy += time.perf_counter() - t
        self.samples += len(results)
        texts = {}
        decode = getattr(self.engine, "decode", None)
        if decode is not None:
            for r in results:
                for ids in [r.token_ids] + [cp.token_ids for cp in r.checkpoints]:
                    texts[tuple(ids)] = decode(list(ids))
        return results, texts

    def throughput(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "host": platform.node(), "samples": self.samples,
                "busy_seconds": round(self.busy, 3),
                "samples_per_second": round(self.samples / self.busy, 4) if self.busy else None}


class _Texts:
    """The driver's stand-in for the model: decodes the token sequences the workers decoded."""

    def __init__(self):
        self.texts: dict[tuple[int, ...], str] = {}

    def decode(self, ids: Sequence[int]) -> str:
        return self.texts[tuple(ids)]


def run_on_ray(config, todo: list[Problem], sample_kwargs: Callable[[list[Problem]], dict[str, Any]],
               submit: Callable[[Any, list[Problem], Any], None], write_error: Callable[[Problem, str], None],
               sample_fn: Callable[..., Any] | None = None, open_kwargs: dict[str, Any] | None = None,
               ) -> dict[str, Any]:
    """Sample every problem of `todo` on the cluster, calling `submit(result, problems, model)` for each
    Result (problems: the list its prompt_index points into) and `write_error(problem, why)` for a
    problem that failed MAX_TRIES times. Returns the cluster's description for run.json."""
    ray = connect(config.ray)
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    on_gpu = gpus > 0 and (config.device is None or str(config.device).startswith("cuda"))
    workers = config.workers if config.workers is not None else (gpus if on_gpu else int(resources.get("CPU", 1)))
    have = gpus if on_gpu else int(resources.get("CPU", 0))
    check(1 <= workers <= have, f"--workers {workers} needs {workers} {'GPU' if on_gpu else 'CPU'}s, and the Ray "
          f"cluster has {have}", "workers", workers)
    actor_cls = ray.remote(num_gpus=1 if on_gpu else 0, num_cpus=0 if on_gpu else 1,
                           max_restarts=0, max_task_retries=0)(_Worker)

    def new_actor():
        return actor_cls.remote(config.model, open_kwargs or {}, sample_fn)

    actors = [new_actor() for _ in range(workers)]
    try:
        try:
            where = ray.get([a.ready.remote() for a in actors])
        except ray.exceptions.RayActorError as e:
            raise PowerSampleError(f"a Ray worker could not load the model {config.model!r}: "
                                   f"{_last_line(e).removeprefix('powersample.errors.PowerSampleError: ')}", "model",
                                   config.model) from e
        live = _schedule(ray, actors, new_actor, config, todo, sample_kwargs, submit, write_error)
        per_worker = [_ask(ray, a.throughput.remote()) for a in live]
    finally:
        for a in actors:
            ray.kill(a)
    return {"address": config.ray or "local", "workers": workers, "device": "GPU" if on_gpu else "CPU",
            "cluster_resources": {k: v for k, v in resources.items() if not k.startswith("node:")},
            "nodes": len(ray.nodes()), "ray": ray.__version__, "started_on": where, "per_worker": per_worker}


def _last_line(e: BaseException) -> str:
    """The last line of a remote error (Ray's message carries the worker's traceback before it)."""
    text = str(e.__cause__ or e).strip()
    return text.splitlines()[-1] if text else type(e).__name__


def _ask(ray, ref):
    try:
        return ray.get(ref, timeout=30)
    except Exception as e:  # a worker that died at the very end: its numbers are lost, not the run
        return {"error": type(e).__name__}


def _schedule(ray, actors, new_actor, config, todo, sample_kwargs, submit, write_error) -> list[Any]:
    """Keep every actor busy with one chunk of problems; requeue what a failure takes down, and
    replace a dead actor with a new one (`actors` is updated in place). Returns the live actors."""
    # chunks small enough to spread over every worker, at most batch_size problems (one sample() call)
    size = max(1, min(config.batch_size, len(todo) // (2 * len(actors)) or 1))
    queue = deque((todo[i: i + size], 0) for i in range(0, len(todo), size))
    texts = _Texts()
    # ref -> (actor, problems, tries so far); problems None: a replacement actor's ready() call, so that no
    # work waits on an actor the cluster cannot place (its node lost), while live actors drain the queue
    running: dict[Any, tuple[Any, list[Problem] | None, int]] = {}
    idle = list(actors)
    while queue or any(chunk is not None for _, chunk, _ in running.values()):
        while queue and idle:
            actor = idle.pop()
            chunk, tries = queue.popleft()
            ref = actor.run.remote([p.prompt for p in chunk], sample_kwargs(chunk))
            running[ref] = (actor, chunk, tries)
        [ref], _ = ray.wait(list(running), num_returns=1)
        actor, chunk, tries = running.pop(ref)
        try:
            value = ray.get(ref)
            idle.append(actor)
        except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError, ray.exceptions.ObjectLostError) as e:
            why = _last_line(e)[:300]
            if chunk is None:
                raise PowerSampleError(f"a replacement Ray worker could not start: {why}; the rows written so "
                                       "far are kept", "ray") from e
            if isinstance(e, ray.exceptions.RayActorError):  # the process is gone: start another
                ray.kill(actor)
                i = next(i for i, a in enumerate(actors) if a is actor)  # (handles do not compare equal)
                actor = actors[i] = new_actor()
                running[actor.ready.remote()] = (actor, None, 0)
            else:
                idle.append(actor)
            log.warning("problems %s failed on try %d of %d (%s); requeued", [p.id for p in chunk], tries + 1,
                        MAX_TRIES, why)
            for p in chunk:  # alone from now on, so that one bad problem takes no other down with it
                if tries + 1 < MAX_TRIES:
                    queue.append(([p], tries + 1))
                else:
                    write_error(p, f"sampling failed on {MAX_TRIES} tries: {why}")
            continue
        if chunk is not None:
            results, texts.texts = value  # submit() decodes the chunk's checkpoints right away
            for r in sorted(results, key=lambda r: (r.prompt_index, r.sample_index)):
                submit(r, chunk, texts)
    return idle


def error_row(problem: Problem, j: int, method: str, why: str) -> dict[str, Any]:
    """The row of sample j of a problem that could not be sampled: no text, not graded, `reason` why."""
    from ..samplers.result import Result

    r = Result(prompt_index=0, sample_index=j, token_ids=[], text=None, logp=None, finished=False,
               tokens_generated=0, seconds=0.0, method=method, stats={"sampling_error": why})
    row = result_row(r, problem.id, None)
    row.update(correct=None, extracted=None, reason=why, grader_error=False)
    return row
