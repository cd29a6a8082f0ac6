"""The grading pool: processes grade as inline grading does, a crashing grader is recorded, a stuck one
is timed out without losing the others, and no grader outlives a killed parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from evalstub import run, sorted_rows

from powersample.evaluation import EvalConfig
from powersample.evaluation.grading import GradePool, grade_sample
from powersample.tasks import get_task
from powersample.tasks.base import Grade, Problem, Task


def test_grader_processes_match_inline_grading(tmp_path):
    task = get_task("math500")
    problems = task.load(None)[:6]
    gold = {p.prompt: p.answer for p in problems}
    kw = dict(task="math500", model="stub", limit=6, samples_per_problem=2, batch_size=4)
    run(EvalConfig(out=str(tmp_path / "inline"), grade_workers=0, **kw), gold)
    run(EvalConfig(out=str(tmp_path / "pool"), grade_workers=2, **kw), gold)
    rows = sorted_rows(tmp_path / "pool")
    assert rows == sorted_rows(tmp_path / "inline")
    assert len(rows) == 12 and 0 < sum(r["correct"] for r in rows) < 12  # math-verify really graded


class _CrashingTask(Task):
    name, version = "crash", "0"

    def grade(self, problem, completion, finished=None):
        raise ZeroDivisionError("boom")

    def check(self, problem, answer):
        return Grade(answer == "1", answer, "cmp")


def test_a_grader_crash_is_recorded_not_raised():
    grade, verdicts = grade_sample(_CrashingTask(), Problem("p", "x", "1"), "text", True,
                                   [None, "1", "2", "1"])
    assert grade.correct is False and grade.error and "ZeroDivisionError: boom" in grade.reason
    assert verdicts == [False, True, False, True]


def test_watchdog_records_a_stuck_grader_and_keeps_the_others():
    import operator

    with GradePool(1, tick=0.1) as pool:
        stuck = pool.submit(time.sleep, (60,), budget=1.0, fallback=lambda why: ("fallback", why))
        quick = pool.submit(operator.add, (2, 3), budget=30.0, fallback=lambda why: ("fallback", why))
        assert stuck.result(timeout=30) == ("fallback", "grading timed out after 1s")
        assert quick.result(timeout=30) == 5  # resubmitted to the rebuilt pool
        assert pool.submit(operator.mul, (4, 5), budget=30.0, fallback=str).result(timeout=30) == 20


_KILLED_PARENT = """
import os, signal, sys, threading
from powersample.evaluation.grading import GradePool
threading.Timer(float(sys.argv[1]), lambda: os.kill(os.getpid(), signal.SIGKILL)).start()
GradePool(1)
threading.Event().wait()
"""


def _marked_processes(mark: str) -> list[int]:
    """Pids of live processes whose environment holds `mark` (children inherit it; zombies show none)."""
    found = []
    for d in os.listdir("/proc"):
        try:
            if d.isdigit() and mark.encode() in open(f"/proc/{d}/environ", "rb").read():
                found.append(int(d))
        except OSError:
            pass
    return found


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="finds processes through /proc")
def test_no_grader_process_outlives_a_killed_parent():
    # killed while the worker is starting (it takes seconds to import), and once it runs
    mark = f"POWERSAMPLE_KILL_TEST_{os.getpid()}_{time.monotonic_ns()}"
    env = {**os.environ, "POWERSAMPLE_TEST_MARK": mark}
    parents = [subprocess.Popen([sys.executable, "-c", _KILLED_PARENT, str(delay)], env=env)
               for delay in (0.0, 0.5, 1.5, 5.0)]
    for p in parents:
        p.wait(timeout=300)
        assert p.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 60  # a worker notices its parent's death within ~1 s of starting
    while _marked_processes(mark) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = _marked_processes(mark)
    for pid in left:  # clean up before failing
        os.kill(pid, signal.SIGKILL)
    assert left == []
