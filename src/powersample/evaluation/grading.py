"""Grading off the main thread: a process pool with a watchdog, and the per-sample grading function.

Why processes: math-verify's timeouts use SIGALRM, which works only in a main thread, and the
worker processes of a ProcessPoolExecutor run each job in their main thread. Why a watchdog: a
signal cannot interrupt a long computation inside C code (a huge integer power in sympy), so a job
past its time budget has its pool killed and rebuilt; the job is recorded as a grader timeout and
the other jobs in flight are resubmitted. Workers ignore SIGINT: Ctrl-C reaches the main process
only, which then lets the grading already under way finish.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from ..errors import PowerSampleError
from ..tasks.base import Grade, Problem, Task

log = logging.getLogger(__name__)


def grade_sample(task: Task, problem: Problem, completion: str, finished: bool | None,
                 answers: Sequence[str | None] | None) -> tuple[Grade, list[bool | None] | None]:
    """Grade a completion, and the running answers recorded at its checkpoints (None: no answer yet,
    which counts as wrong; answers=None: the task records none).

    Never raises for a grader failure: that is returned as a wrong Grade with error=True.
    """
    try:
        grade = task.grade(problem, completion, finished)
    except Exception as e:  # a grader bug or odd input must not stop the run; the row records it
        log.debug("grader crashed on %s", problem.id, exc_info=True)
        grade = Grade(False, None, f"grader crashed: {type(e).__name__}: {str(e)[:200]}", error=True)
    if answers is None:
        return grade, None
    verdicts: dict[str, bool | None] = {}
    for a in dict.fromkeys(a for a in answers if a is not None):  # each distinct answer once, in order
        try:
            g = task.check(problem, a)
            verdicts[a] = None if g.error else g.correct
        except Exception:
            verdicts[a] = None
    return grade, [False if a is None else verdicts.get(a) for a in answers]


def _init_worker(parent: int) -> None:
    """In each grader process: ignore Ctrl-C (the parent decides), and exit when the parent dies.

    A killed parent (SIGKILL, OOM) cannot stop its workers, and they would otherwise idle forever
    (and keep multiprocessing's resource tracker alive with them); so a thread polls the parent pid
    (reparenting changes it) and ends the worker. `parent` is the pid the parent passed in: read here
    with getppid(), a parent killed while this worker was starting would already read as init's pid.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch_parent() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch_parent, name="powersample-parent-watch", daemon=True).start()


def _ping() -> bool:
    return True


MAX_REBUILDS = 10  # pools that may die (worker crash, watchdog kill) before grading is declared broken
START_TIMEOUT = 180.0  # seconds for the first worker to start and answer


@dataclass(eq=False)
class _Job:
    fn: Callable[..., Any]
    args: tuple
    budget: float  # seconds the job may run
    fallback: Callable[[str], Any]  # the result to record when the job cannot complete (given why)
    outer: Future = field(default_factory=Future)
    inner: Future | None = None
    running_since: float | None = None
    retried: bool = False


class GradePool:
    """submit(fn, args, budget, fallback) -> Future that always resolves (to fn's result or fallback's).

    workers=0 runs each job at once in the calling thread (no watchdog): for debugging and tests.
    """

    def __init__(self, workers: int, tick: float = 0.5):
        self.workers = workers
        self.fatal: str | None = None  # set when grading cannot go on; the runner stops
        self._lock = threading.RLock()
        self._jobs: set[_Job] = set()
        self._closed = False
        self._rebuilds = 0
        self._graveyard: list[ProcessPoolExecutor] = []  # replaced executors, killed once the lock is free
        self._tick = tick
        self._executor = None
        if workers > 0:
            self._executor = self._new_executor()
            self._check_start()
            self._watchdog = threading.Thread(target=self._watch, name="powersample-grade-watchdog",
                                              daemon=True)
            self._watchdog.start()

    def _check_start(self) -> None:
        """Fail fast, with the usual cause, if worker processes cannot start at all."""
        try:
            self._executor.submit(_ping).result(timeout=START_TIMEOUT)
        except Exception as e:
            _kill_workers(self._executor)
            raise PowerSampleError(
                f"the grader worker processes could not start ({type(e).__name__}: {e}). A Python script "
                "that calls run_eval must guard its top level with `if __name__ == \"__main__\":` (worker "
                "processes re-import the main script); or grade in-process with grade_workers=0",
                "grade_workers", self.workers) from e

    def _new_executor(self) -> ProcessPoolExecutor:
        # spawn, not fork: the parent holds torch/CUDA state and threads that must not be forked
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker, initargs=(os.getpid(),))

    def submit(self, fn: Callable[..., Any], args: tuple, budget: float,
               fallback: Callable[[str], Any]) -> Future:
        job = _Job(fn, args, budget, fallback)
        if self._executor is None:
            try:
                job.outer.set_result(fn(*args))
            except Exception as e:
                job.outer.set_result(fallback(f"{type(e).__name__}: {e}"))
            return job.outer
        with self._lock:
            self._jobs.add(job)
            self._launch(job)
        self._bury()
        return job.outer

    def _launch(self, job: _Job) -> None:  # caller holds the lock
        if self.fatal is not None:
            self._jobs.discard(job)
            job.outer.set_exception(PowerSampleError(self.fatal))
            return
        job.running_since = None
        try:
            inner = self._executor.submit(job.fn, *job.args)
        except (BrokenProcessPool, RuntimeError):  # a worker died before _done() noticed: start afresh
            self._graveyard.append(self._executor)
            self._executor = self._new_executor()
            inner = self._executor.submit(job.fn, *job.args)
        job.inner = inner
        inner.add_done_callback(lambda f, job=job: self._done(job, f))

    def _done(self, job: _Job, inner: Future) -> None:
        with self._lock:
            if job.inner is not inner or job.outer.done():
                return  # superseded by a resubmission, or already timed out
            exc = inner.exception()
            # a worker died (OOM killer, segfault): rebuild once and retry; a second death is recorded
            retry = isinstance(exc, BrokenProcessPool) and not job.retried and not self._closed
            if retry:
                job.retried = True
                self._rebuild()
            else:
                self._jobs.discard(job)
        if retry:
            self._bury()
        elif exc is None:
            job.outer.set_result(inner.result())
        else:
            log.warning("grading failed: %s: %s", type(exc).__name__, exc)
            job.outer.set_result(job.fallback(f"grader process failed: {type(exc).__name__}"))

    def _rebuild(self) -> None:  # caller holds the lock, and calls _bury() after releasing it
        """Replace the executor and resubmit every unfinished job; the old one goes to the graveyard."""
        self._graveyard.append(self._executor)
        self._rebuilds += 1
        if self._rebuilds > MAX_REBUILDS:
            self._fail(f"the grader processes died {self._rebuilds} times; grading cannot go on")
            return
        self._executor = self._new_executor()
        for job in list(self._jobs):
            if not job.outer.done():
                self._launch(job)

    def _bury(self) -> None:
        # Killing an executor's workers makes its manager thread fail the old futures, which calls
        # _done(), which takes the lock: so never kill while holding the lock.
        with self._lock:
            dead, self._graveyard = self._graveyard, []
        for executor in dead:
            _kill_workers(executor)

    def _fail(self, why: str) -> None:  # caller holds the lock
        """Give up: every unfinished job fails (so no row is written for it) and the runner stops."""
        self.fatal = why
        log.error("%s", why)
        for job in list(self._jobs):
            if not job.outer.done():
                job.outer.set_exception(PowerSampleError(why))
        self._jobs.clear()

    def _watch(self) -> None:
        while True:
            time.sleep(self._tick)
            expired = []
            with self._lock:
                if self._closed and not self._jobs:
                    return
                now = time.monotonic()
                for job in self._jobs:
                    if job.inner is not None and job.inner.running() and job.running_since is None:
                        job.running_since = now
                    if job.running_since is not None and now - job.running_since > job.budget:
                        expired.append(job)
                # Only the oldest: a job queued behind a stuck one also counts as "running" (the
                # executor marks the jobs it has queued for its workers), and must not be blamed.
                expired = sorted(expired, key=lambda j: j.running_since)[:1]
                for job in expired:
                    self._jobs.discard(job)
                    log.warning("a grading job ran past its %.0fs budget: restarting the grader processes",
                                job.budget)
                    self._rebuild()  # every other job restarts, with a fresh clock
            self._bury()
            for job in expired:
                job.outer.set_result(job.fallback(f"grading timed out after {job.budget:.0f}s"))

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for every submitted job; True if all finished."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                pending = [j.outer for j in self._jobs]
            if not pending:
                return True
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            for f in pending:
                try:
                    f.result(timeout=left)
                except Exception:
                    pass
                break  # re-read the set: resubmissions may have changed it

    def shutdown(self, wait: bool = True) -> None:
        """Stop: wait for the jobs (or abandon them) and end the worker processes."""
        if wait:
            self.wait()
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
            abandoned = [j for j in self._jobs if not j.outer.done()]
            self._jobs.clear()
        for job in abandoned:
            job.outer.cancel()
        self._bury()
        if executor is not None:
            if not wait:
                _kill_workers(executor)
            executor.shutdown(wait=wait, cancel_futures=True)

    def __enter__(self) -> GradePool:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown(wait=exc[0] is None)


def _kill_workers(executor: ProcessPoolExecutor) -> None:
    # Python 3.14 has executor.kill_workers(); before that the worker processes are only reachable
    # through the private _processes map. Killing them makes the executor's futures fail with
    # BrokenProcessPool, which _done() ignores for jobs that were resubmitted.
    kill = getattr(executor, "kill_workers", None)
    if kill is not None:
        kill()
    else:
        for p in list((getattr(executor, "_processes", None) or {}).values()):
            try:
                p.kill()
            except Exception:
                pass
    executor.shutdown(wait=False, cancel_futures=True)
