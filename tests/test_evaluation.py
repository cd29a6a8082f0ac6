"""Evaluation: the run store, the runner (with a stub sampler, then the real one in a killed
subprocess), pass@k and Wilson against hand-computed values, reports, shard merging, plots, CLI."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from powersample.cli.main import main
from powersample.errors import PowerSampleError
from powersample.evaluation import EvalConfig, run_eval
from powersample.evaluation.grading import GradePool, grade_sample
from powersample.evaluation.passk import mean_pass_at_k, pass_at_k, wilson
from powersample.evaluation.plots import write_plots
from powersample.evaluation.report import Run, format_table, labels, load_runs, merge_runs, report, summarize
from powersample.evaluation.runner import select_problems
from powersample.evaluation.store import ROWS_FILE, read_rows
from powersample.rng import derive_seeds
from powersample.samplers.result import Checkpoint, Result
from powersample.tasks import get_task
from powersample.tasks.base import Grade, Problem, Task

# -- a stub sampler: deterministic Results that depend only on (seed, sample index) -------------------------


class CharModel:
    """A stand-in model whose tokens are characters: what the runner decodes checkpoints with."""

    def decode(self, ids):
        return "".join(map(chr, ids))


def stub_answer(gold: str, seed: int, j: int) -> tuple[str, str]:
    """(completion text, its final answer): right with probability 0.6, from (seed, j) alone."""
    rng = random.Random(f"{seed}/{j}")
    answer = gold if rng.random() < 0.6 else str(rng.randint(1000, 9999))
    return f"Working {rng.random():.6f} it out.\nSo \\boxed{{{answer}}}", answer


class StubSampler:
    """Records each call; `fail_on` makes the n-th call raise (an interrupt, a crash)."""

    def __init__(self, gold: dict[str, str], fail_on: int | None = None, exc: type = KeyboardInterrupt):
        self.gold, self.calls, self.fail_on, self.exc = gold, [], fail_on, exc

    def __call__(self, model, prompts, *, method, seeds, num_samples, **options):
        self.calls.append({"prompts": list(prompts), "seeds": list(seeds), "num_samples": num_samples,
                           "method": method, **options})
        if self.fail_on is not None and len(self.calls) == self.fail_on:
            raise self.exc()
        out = []
        for i, (prompt, seed) in enumerate(zip(prompts, seeds, strict=True)):
            for j in range(num_samples):
                text, _ = stub_answer(self.gold[prompt], seed, j)
                ids = [ord(c) for c in text]
                cps = [Checkpoint(b, ids[: len(ids) * b // 3], -1.0 * b, 7 * b, 0.5, 1.2, 0.4, 0.01 * b)
                       for b in (1, 2, 3)]
                out.append(Result(i, j, ids, text, -2.5, True, 21, 0.05, method, 0.5, {"proposals": 3}, cps))
        return out


@pytest.fixture
def problems_file(tmp_path):
    """12 problems for the jsonl task (exact grader: fast, no math-verify)."""
    path = tmp_path / "problems.jsonl"
    rows = [{"id": f"q{i}", "prompt": f"What is {i} * 7?", "answer": str(7 * i)} for i in range(12)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, {r["prompt"]: r["answer"] for r in rows}


def config(problems_file, out, alpha=None, **kw) -> EvalConfig:
    path, _ = problems_file
    base = dict(task="jsonl", model="stub", out=str(out), data=str(path), task_options={"grader": "exact"},
                samples_per_problem=3, batch_size=4, grade_workers=0, sampler={} if alpha is None else {"alpha": alpha})
    return EvalConfig(**{**base, **kw})


def run(cfg, gold, **kw):
    sampler = StubSampler(gold, **kw)
    summary = run_eval(cfg, sample_fn=sampler, model=CharModel(), progress=False)
    return sampler, summary


def sorted_rows(out):
    return sorted(read_rows(out), key=lambda r: (r["id"], r["sample_index"]))


# -- runner ----------------------------------------------------------------------------------------------


class TestRunner:
    def test_rows_are_written_graded_and_batched(self, problems_file, tmp_path):
        _, gold = problems_file
        cfg = config(problems_file, tmp_path / "run", limit=10)
        sampler, summary = run(cfg, gold)
        # one call per batch of 4 problems, never one problem at a time, all samples at once
        assert [len(c["prompts"]) for c in sampler.calls] == [4, 4, 2]
        assert all(c["num_samples"] == 3 and c["method"] == "power" and c["alpha"] == 4.0
                   for c in sampler.calls)
        ids = [f"q{i}" for i in range(10)]
        assert [s for c in sampler.calls for s in c["seeds"]] == [derive_seeds(0, i) for i in ids]
        rows = sorted_rows(cfg.out)
        assert [(r["id"], r["sample_index"]) for r in rows] == sorted((i, j) for i in ids for j in range(3))
        for r in rows:  # each verdict is what the stub's answer deserves
            gold_answer = str(7 * int(r["id"][1:]))
            _, answer = stub_answer(gold_answer, derive_seeds(0, r["id"]), r["sample_index"])
            assert r["extracted"] == answer and r["correct"] == (answer == gold_answer)
            assert (r["tokens_generated"], r["acceptance_rate"], r["stats"]) == (21, 0.5, {"proposals": 3})
            assert [c["block"] for c in r["checkpoints"]] == [1, 2, 3]
            last = r["checkpoints"][-1]
            assert last["answer"] == answer and last["correct"] == r["correct"]
        assert summary.rows_new == summary.rows_total == 30
        assert summary.correct == sum(r["correct"] for r in rows) and summary.graded == 30
        run_json = json.loads((Path(cfg.out) / "run.json").read_text())
        assert run_json["config"]["data_sha256"] and run_json["config"]["task_version"] == get_task("jsonl").version
        assert run_json["config"]["task_options"] == {"grader": "exact", "timeout": 5}
        assert {"powersample", "torch", "transformers", "python"} <= set(run_json["versions"])

    def test_resume_skips_finished_rows_and_fills_gaps(self, problems_file, tmp_path):
        _, gold = problems_file
        cfg = config(problems_file, tmp_path / "run")
        run(cfg, gold)
        full = sorted_rows(cfg.out)
        sampler, summary = run(cfg, gold)
        assert sampler.calls == [] and summary.rows_new == 0 and sorted_rows(cfg.out) == full
        # lose some rows (q3 sample 1, all of q7), as if never written: only those problems are sampled again
        rows_path = Path(cfg.out) / ROWS_FILE
        kept = [ln for ln in rows_path.read_text().splitlines()
                if not ('"id":"q3","sample_index":1' in ln or '"id":"q7"' in ln)]
        rows_path.write_text("\n".join(kept) + "\n")
        sampler, summary = run(cfg, gold)
        assert [c["prompts"] for c in sampler.calls] == [["What is 3 * 7?", "What is 7 * 7?"]]
        assert summary.rows_new == 4 and sorted_rows(cfg.out) == full

    def test_changed_core_configuration_is_refused(self, problems_file, tmp_path):
        path, gold = problems_file
        cfg = config(problems_file, tmp_path / "run", limit=4)
        run(cfg, gold)
        with pytest.raises(PowerSampleError, match=r"configuration \(sampler\.alpha: 4\.0 in the run, 2\.0 now"):
            run(config(problems_file, cfg.out, limit=4, alpha=2.0), gold)
        with pytest.raises(PowerSampleError, match="limit: 4 in the run, 5 now; seed: 0 in the run, 1 now"):
            run(config(problems_file, cfg.out, limit=5, seed=1), gold)
        path.write_text(path.read_text().replace("What is 1 * 7?", "What is 1 * 7 ?"))
        with pytest.raises(PowerSampleError, match="data_sha256"):
            run(config(problems_file, cfg.out, limit=4), gold)

    def test_how_the_work_is_done_may_change(self, problems_file, tmp_path):
        _, gold = problems_file
        run(config(problems_file, tmp_path / "a", batch_size=5, limit=8), gold)
        run(config(problems_file, tmp_path / "b", batch_size=3, limit=8), gold)
        assert sorted_rows(tmp_path / "a") == sorted_rows(tmp_path / "b")  # batch size changes nothing
        sampler, _ = run(config(problems_file, tmp_path / "a", batch_size=2, limit=8, device="cpu"), gold)
        assert sampler.calls == []  # resumed, not refused

    def test_torn_last_line_is_cut_and_regenerated(self, problems_file, tmp_path):
        _, gold = problems_file
        cfg = config(problems_file, tmp_path / "run", limit=4)
        run(cfg, gold)
        full = sorted_rows(cfg.out)
        rows_path = Path(cfg.out) / ROWS_FILE
        lines = rows_path.read_bytes().splitlines(keepends=True)
        rows_path.write_bytes(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # killed mid-write
        assert len(read_rows(cfg.out)) == len(full) - 1  # readers skip the torn line
        sampler, summary = run(cfg, gold)
        assert summary.rows_new == 1 and len(sampler.calls) == 1
        assert sorted_rows(cfg.out) == full
        data = rows_path.read_bytes()
        assert data.endswith(b"\n") and len(data.splitlines()) == len(full)

    def test_corrupt_middle_line_names_the_line(self, problems_file, tmp_path):
        _, gold = problems_file
        cfg = config(problems_file, tmp_path / "run", limit=2)
        run(cfg, gold)
        rows_path = Path(cfg.out) / ROWS_FILE
        lines = rows_path.read_text().splitlines()
        lines[1] = "garbage"
        rows_path.write_text("\n".join(lines) + "\n")
        with pytest.raises(PowerSampleError, match=rf"{ROWS_FILE}:2: not valid JSON"):
            run(cfg, gold)

    @pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
    def test_interrupt_keeps_every_generated_row(self, problems_file, tmp_path, exc):
        _, gold = problems_file
        ref = config(problems_file, tmp_path / "ref", limit=10)
        run(ref, gold)
        # Ctrl-C with a grader process (whose in-flight work must still be written); a crash inline
        cfg = config(problems_file, tmp_path / "run", limit=10, grade_workers=int(exc is KeyboardInterrupt))
        with pytest.raises(exc):
            run(cfg, gold, fail_on=2, exc=exc)  # Ctrl-C (or a crash) while sampling the second batch
        assert len(read_rows(cfg.out)) == 4 * 3  # the first batch was graded and written, nothing else
        sampler, _ = run(cfg, gold)
        assert [len(c["prompts"]) for c in sampler.calls] == [4, 2]
        assert sorted_rows(cfg.out) == sorted_rows(ref.out)

    def test_grader_processes_match_inline_grading(self, tmp_path):
        task = get_task("math500")
        problems = task.load(None)[:6]
        gold = {p.prompt: p.answer for p in problems}
        kw = dict(task="math500", model="stub", limit=6, samples_per_problem=2, batch_size=4)
        run(EvalConfig(out=str(tmp_path / "inline"), grade_workers=0, **kw), gold)
        run(EvalConfig(out=str(tmp_path / "pool"), grade_workers=2, **kw), gold)
        rows = sorted_rows(tmp_path / "pool")
        assert rows == sorted_rows(tmp_path / "inline")
        assert len(rows) == 12 and 0 < sum(r["correct"] for r in rows) < 12  # math-verify really graded

    def test_shards_partition_the_problems(self, problems_file, tmp_path):
        _, gold = problems_file
        run(config(problems_file, tmp_path / "all", limit=10), gold)
        for i in range(3):
            run(config(problems_file, tmp_path / f"s{i}", limit=10, shard=f"{i}/3"), gold)
        shards = [sorted_rows(tmp_path / f"s{i}") for i in range(3)]
        assert {r["id"] for r in shards[1]} == {"q1", "q4", "q7"}
        assert sorted((r for s in shards for r in s), key=lambda r: (r["id"], r["sample_index"])) == \
            sorted_rows(tmp_path / "all")

    def test_alpacaeval_outputs_file(self, tmp_path):
        data = tmp_path / "alpaca_eval.json"
        items = [{"instruction": f"Write {i} words.", "dataset": "koala" if i % 2 else "oasst"}
                 for i in range(5)]
        data.write_text(json.dumps(items))
        gold = {it["instruction"]: "n/a" for it in items}
        cfg = EvalConfig(task="alpacaeval", model="org/My-Model", method="power", out=str(tmp_path / "run"),
                         data=str(data), samples_per_problem=2, grade_workers=0)
        _, summary = run(cfg, gold)
        assert summary.graded == 0 and all(r["correct"] is None for r in read_rows(cfg.out))
        outputs = json.loads((Path(cfg.out) / "alpaca_eval_outputs.json").read_text())
        assert [o["instruction"] for o in outputs] == [it["instruction"] for it in items]
        assert [o["dataset"] for o in outputs] == [it["dataset"] for it in items]
        assert all(set(o) == {"instruction", "output", "generator", "dataset"} for o in outputs)
        assert {o["generator"] for o in outputs} == {"powersample-My-Model-power-a4"}
        assert outputs[0]["output"].startswith("Working")
        assert [p.name for p in summary.exported] == ["alpaca_eval_outputs.json",
                                                      "alpaca_eval_outputs.sample1.json"]
        assert all(p.exists() for p in summary.exported)

    def test_alpacaeval_shards_merge_into_one_outputs_file(self, tmp_path):
        data = tmp_path / "alpaca_eval.jsonl"
        items = [{"instruction": f"Say {i}."} for i in range(5)]
        data.write_text("".join(json.dumps(it) + "\n" for it in items))
        gold = {it["instruction"]: "n/a" for it in items}
        for i in range(2):
            run(EvalConfig(task="alpacaeval", model="m", out=str(tmp_path / f"s{i}"), data=str(data),
                           shard=f"{i}/2", grade_workers=0), gold)
        assert len(json.loads((tmp_path / "s1" / "alpaca_eval_outputs.json").read_text())) == 2
        merged = merge_runs([tmp_path / "s0", tmp_path / "s1"], tmp_path / "merged")
        outputs = json.loads((merged / "alpaca_eval_outputs.json").read_text())
        assert [o["instruction"] for o in outputs] == [it["instruction"] for it in items]

    def test_tensor_stats_are_stored_as_lists(self, problems_file, tmp_path):
        import torch

        _, gold = problems_file

        class TensorStats(StubSampler):
            def __call__(self, *args, **kwargs):
                out = super().__call__(*args, **kwargs)
                for r in out:
                    r.stats = {"ess": torch.tensor([1.5, 2.0])}
                return out

        cfg = config(problems_file, tmp_path / "run", limit=2)
        run_eval(cfg, sample_fn=TensorStats(gold), model=CharModel(), progress=False)
        assert [r["stats"] for r in read_rows(cfg.out)] == [{"ess": [1.5, 2.0]}] * 6

    def test_sampler_settings_are_checked_before_the_model_loads(self, tmp_path):
        pytest.importorskip("powersample.api", reason="powersample.sample (api.py) is not built yet")
        kw = dict(task="gym", model=str(tmp_path / "no-such-model"), limit=1, grade_workers=0)
        long_blocks = dict(sampler=dict(block_size=500, max_new_tokens=100))
        with pytest.raises(PowerSampleError, match=r"block_size must be in \[1, max_new_tokens=100\]"):
            run_eval(EvalConfig(out=str(tmp_path / "a"), **long_blocks, **kw), progress=False)
        with pytest.raises(PowerSampleError, match="unknown method 'powr'. Did you mean 'power'"):
            run_eval(EvalConfig(out=str(tmp_path / "b"), method="powr", **kw), progress=False)
        # a block size only power uses does not bother temperature sampling: it gets as far as the model
        with pytest.raises(PowerSampleError, match="could not load model"):
            run_eval(EvalConfig(out=str(tmp_path / "c"), method="temperature", **long_blocks, **kw),
                     progress=False)

    def test_a_run_without_rows_may_change_its_configuration(self, problems_file, tmp_path):
        _, gold = problems_file
        cfg = config(problems_file, tmp_path / "run", limit=4)
        with pytest.raises(RuntimeError):
            run(cfg, gold, fail_on=1, exc=RuntimeError)  # failed before any row was written
        assert (Path(cfg.out) / "run.json").exists() and read_rows(cfg.out) == []
        run(config(problems_file, cfg.out, limit=4, alpha=2.0), gold)  # nothing to mix: accepted
        assert json.loads((Path(cfg.out) / "run.json").read_text())["config"]["sampler"]["alpha"] == 2.0

    def test_duplicate_problem_ids_are_refused(self):
        ps = [Problem("a", "x"), Problem("b", "y"), Problem("a", "z")]
        with pytest.raises(PowerSampleError, match="problem id 'a' appears more than once"):
            select_problems(ps, None, (0, 1))

    @pytest.mark.parametrize("kw,msg", [
        (dict(shard="3/3"), r"shard i/n needs 0 <= i < n"), (dict(shard="x"), "shard must look like i/n"),
        (dict(samples_per_problem=0), "samples_per_problem must be an integer >= 1"),
        (dict(sampler={"alpha": float("nan")}), "alpha must be > 0"),
        (dict(grade_workers=-1), "grade_workers must be an integer >= 0"),
        (dict(sampler={"seeds": [1]}), r"sampler \['seeds'\] are not sampler settings"),
        (dict(sampler={"bogus": 1}), r"unknown option\(s\) \['bogus'\] for method 'power'"),
    ])
    def test_config_validation(self, kw, msg):
        with pytest.raises(PowerSampleError, match=msg):
            EvalConfig(task="gym", model="gym", out="x", **kw)


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


# -- pass@k and Wilson -----------------------------------------------------------------------------------


class TestEstimators:
    @pytest.mark.parametrize("n,c,k,expected", [
        (5, 2, 1, 0.4), (5, 2, 2, 1 - 3 / 10), (5, 2, 3, 1 - 1 / 10), (5, 2, 4, 1.0), (5, 0, 3, 0.0),
        (5, 5, 1, 1.0), (10, 3, 2, 1 - 21 / 45), (200, 1, 100, 0.5),
    ])
    def test_pass_at_k_by_hand(self, n, c, k, expected):
        assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)

    def test_pass_at_k_matches_binomials_where_they_are_exact(self):
        for n, c, k in [(100, 7, 10), (1000, 3, 50), (64, 20, 32)]:
            exact = 1 - math.comb(n - c, k) / math.comb(n, k)
            assert pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-9)

    def test_pass_at_k_rejects_impossible_arguments(self):
        for args in [(5, 6, 1), (5, 2, 0), (5, 2, 6)]:
            with pytest.raises(ValueError):
                pass_at_k(*args)

    def test_mean_pass_at_k(self):
        assert mean_pass_at_k([(4, 0), (4, 4), (4, 2)], 2) == pytest.approx((0 + 1 + (1 - 1 / 6)) / 3)

    def test_wilson_by_hand(self):
        lo, hi = wilson(0, 10)
        assert lo == 0.0 and hi == pytest.approx(3.8415 / 13.8415, abs=1e-4)
        lo, hi = wilson(5, 10)
        assert (lo, hi) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
        lo, hi = wilson(81, 100)  # a textbook value: [0.7222, 0.8749]
        assert (lo, hi) == (pytest.approx(0.7222, abs=1e-4), pytest.approx(0.8749, abs=1e-4))
        assert all(math.isnan(x) for x in wilson(0, 0))


# -- report, merging, plots, CLI --------------------------------------------------------------------------


@pytest.fixture
def fixture_runs(problems_file, tmp_path):
    """Two runs that differ in alpha (one of them in two shards) and the unsharded twin of the sharded one."""
    _, gold = problems_file
    run(config(problems_file, tmp_path / "a4", limit=10, samples_per_problem=4), gold)
    for i in range(2):
        run(config(problems_file, tmp_path / f"a2-shard{i}", limit=10, samples_per_problem=4, alpha=2.0,
                   shard=f"{i}/2"), gold)
    run(config(problems_file, tmp_path / "a2", limit=10, samples_per_problem=4, alpha=2.0), gold)
    return tmp_path


class TestReport:
    def test_summary_numbers(self, fixture_runs):
        (run_,) = load_runs([fixture_runs / "a4"])
        s = summarize(run_)
        rows = read_rows(fixture_runs / "a4")
        correct = sum(r["correct"] for r in rows)
        assert (s.problems, s.samples_per_problem, s.rows, s.graded) == (10, 4, 40, 40)
        assert s.accuracy == correct / 40 and s.ci95 == wilson(correct, 40)
        per_problem = {}
        for r in rows:
            per_problem.setdefault(r["id"], []).append(r["correct"])
        for k in (1, 2, 3, 4):
            expected = sum(1 - math.comb(4 - sum(v), k) / math.comb(4, k) for v in per_problem.values()) / 10
            assert s.pass_at_k[k] == pytest.approx(expected)
        assert s.pass_at_k[1] == pytest.approx(s.accuracy)
        assert s.tokens_per_problem == 4 * 21 and s.tokens_per_sample == 21 and s.seconds_per_problem == 0.05
        assert [x for x, _ in s.checkpoint_curve] == [7, 14, 21]
        assert s.checkpoint_curve[-1][1] == pytest.approx(s.accuracy)  # the last block's answer is final

    def test_shards_merge_into_the_unsharded_run(self, fixture_runs):
        merged = report([fixture_runs / "a2-shard0", fixture_runs / "a2-shard1"])
        assert len(merged) == 1
        (whole,) = report([fixture_runs / "a2"])
        for field in ("problems", "rows", "correct", "pass_at_k", "tokens_per_problem"):
            assert getattr(merged[0], field) == getattr(whole, field)
        (half,) = report([fixture_runs / "a2-shard1"])
        assert half.problems == 5 and half.shards_missing == [0]
        assert "shards [0] of the split are missing" in format_table([half])
        out = merge_runs([fixture_runs / "a2-shard0", fixture_runs / "a2-shard1"], fixture_runs / "merged")
        assert sorted_rows(out) == sorted_rows(fixture_runs / "a2")
        with pytest.raises(PowerSampleError, match="given twice"):
            load_runs([fixture_runs / "a2-shard0", fixture_runs / "a2-shard0"])

    def test_reruns_with_the_same_settings_are_compared(self, fixture_runs):
        for name in ("a2", "a2-shard0", "a2-shard1"):
            shutil.copytree(fixture_runs / name, fixture_runs / f"again-{name}")
        whole = report([fixture_runs / "a2", fixture_runs / "again-a2"])
        assert [s.label for s in whole] == ["power [a2]", "power [again-a2]"]
        sharded = report([fixture_runs / n for n in ("a2-shard0", "again-a2-shard0", "a2-shard1", "again-a2-shard1")])
        assert [(s.dirs, s.problems) for s in sharded] == [
            ([str(fixture_runs / "a2-shard0"), str(fixture_runs / "a2-shard1")], 10),
            ([str(fixture_runs / "again-a2-shard0"), str(fixture_runs / "again-a2-shard1")], 10)]
        with pytest.raises(PowerSampleError, match="a shard comes twice"):
            merge_runs([fixture_runs / "a2-shard0", fixture_runs / "again-a2-shard0"], fixture_runs / "m")

    def test_labels_name_only_settings_the_method_uses(self, tmp_path):
        def run_of(name, method="power", **sampler):
            cfg = EvalConfig(task="gym", model="gym", out=str(tmp_path / name), method=method,
                             sampler=sampler).to_dict()
            return Run([tmp_path / name], cfg, [], ["0/1"])

        runs = [run_of("p4", alpha=4.0), run_of("p2", alpha=2.0, temperature=0.5), run_of("t", "temperature"),
                run_of("g", "greedy", alpha=2.0), run_of("lt", "low-temperature", alpha=2.0),
                run_of("b", "best-of-n", n=4, temperature=0.5), run_of("b8", "best-of-n", temperature=0.5)]
        # the settings are completed with the methods' defaults (temperature 1, n 8); greedy ignores alpha
        assert labels(runs) == ["power alpha=4.0 temperature=None", "power alpha=2.0 temperature=0.5",
                                "temperature temperature=1.0", "greedy", "low-temperature alpha=2.0",
                                "best-of-n n=4 temperature=0.5", "best-of-n n=8 temperature=0.5"]

    def test_plot_legends_leave_the_data_uncovered(self, fixture_runs, tmp_path, monkeypatch):
        import matplotlib.pyplot as plt

        figures = []
        monkeypatch.setattr(plt, "close", figures.append)
        write_plots(report([fixture_runs / "a4", fixture_runs / "a2"]), tmp_path)
        assert len(figures) == 2
        for fig in figures:
            fig.canvas.draw()
            (ax,) = fig.axes
            legend = ax.get_legend() or fig.legends[0]
            assert not legend.get_window_extent().overlaps(ax.get_window_extent())
            fig.clf()

    def test_side_by_side_table_and_plots(self, fixture_runs, tmp_path):
        summaries = report([fixture_runs / "a4", fixture_runs / "a2"])
        assert [s.label for s in summaries] == ["power alpha=4.0", "power alpha=2.0"]
        table = format_table(summaries)
        assert "pass@4" in table and "power alpha=2.0" in table and f"{summaries[0].accuracy:.3f}" in table
        paths = write_plots(summaries, tmp_path / "plots")
        assert [p.name for p in paths] == ["passk.png", "accuracy_vs_tokens.png"]
        for p in paths:
            data = p.read_bytes()
            assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000

    def test_report_cli(self, fixture_runs, tmp_path, capsys):
        out = tmp_path / "out"
        assert main(["report", str(fixture_runs / "a4"), str(fixture_runs / "a2-shard0"),
                     str(fixture_runs / "a2-shard1"), "--plots", str(out)]) == 0
        printed = capsys.readouterr().out
        assert "power alpha=4.0" in printed and "power alpha=2.0" in printed
        assert {p.name for p in out.iterdir()} == {"report.md", "report.json", "passk.png",
                                                    "accuracy_vs_tokens.png"}
        numbers = json.loads((out / "report.json").read_text())
        assert numbers[0]["problems"] == 10 and numbers[1]["problems"] == 10
        assert main(["report", "--no-plots", "--merge", str(tmp_path / "m"), str(fixture_runs / "a2-shard0"),
                     str(fixture_runs / "a2-shard1")]) == 0
        assert len(read_rows(tmp_path / "m")) == 40

    def test_report_on_a_non_run_directory(self, tmp_path, capsys):
        assert main(["report", str(tmp_path)]) == 2
        assert "has no run.json" in capsys.readouterr().err


class TestEvalCli:
    def test_unknown_task_suggests(self, tmp_path, capsys):
        assert main(["eval", "--task", "math5000", "--model", "gym", "--out", str(tmp_path / "r")]) == 2
        assert "Did you mean 'math500'?" in capsys.readouterr().err

    def test_jsonl_needs_data(self, tmp_path, capsys):
        assert main(["eval", "--task", "jsonl", "--model", "gym", "--out", str(tmp_path / "r")]) == 2
        assert "pass --data" in capsys.readouterr().err

    def test_bad_option_syntax(self, tmp_path, capsys):
        args = ["eval", "--task", "gym", "--model", "gym", "--option", "top_p", "--out", str(tmp_path)]
        assert main(args) == 2
        assert "--option takes KEY=VALUE" in capsys.readouterr().err


    # Tests run as root, which writes where permission bits forbid: a path under a regular file, and
    # sysfs (where root cannot create files), are unwritable for root too.
    @pytest.mark.parametrize("case", ["out under a file", "out is a file", "read-only out", "batch size 0",
                                      "no CUDA", "empty task file", "empty shard"])
    def test_bad_settings_fail_in_one_line(self, case, problems_file, tmp_path, capsys, monkeypatch):
        import torch

        import powersample

        data, _ = problems_file
        (tmp_path / "a-file").write_text("x")
        (tmp_path / "empty.jsonl").write_text("")
        extra, expected = {
            "out under a file": (["--out", str(tmp_path / "a-file" / "run")], "cannot write the run directory"),
            "out is a file": (["--out", str(tmp_path / "a-file")], "is a file, not a run directory"),
            "read-only out": (["--out", "/sys/powersample-test-run"], "cannot write the run directory"),
            "batch size 0": (["--batch-size", "0"], "batch_size must be an integer >= 1"),
            "no CUDA": (["--device", "cuda"], "sees no CUDA GPU"),
            "empty task file": (["--data", str(tmp_path / "empty.jsonl")], "holds no problems"),
            "empty shard": (["--limit", "2", "--shard", "3/4"], "shard 3/4 selects none of the 2 problems"),
        }[case]
        if case == "no CUDA" and torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
        if case == "read-only out" and not os.path.isdir("/sys/kernel"):
            pytest.skip("no sysfs here")
        monkeypatch.setattr(powersample.engine, "open_engine", lambda *a, **k: pytest.fail("the model was loaded"))
        args = ["eval", "--task", "jsonl", "--grader", "exact", "--model", "gym", "--data", str(data),
                "--grade-workers", "0", "--no-progress", "--out", str(tmp_path / "run"), *extra]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and expected in err, err


def test_a_prompt_too_long_for_the_context_is_named_before_sampling(tmp_path, capsys):
    rows = [{"id": f"q{i}", "prompt": "Q:1+1\n" * (40 if i == 5 else 1), "answer": "2"} for i in range(8)]
    data = tmp_path / "long.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["eval", "--task", "jsonl", "--grader", "exact", "--model", "gym", "--data", str(data), "--batch-size",
            "2", "--max-new-tokens", "8", "--block-size", "4", "--device", "cpu", "--grade-workers", "0",
            "--no-progress", "--out", str(tmp_path / "run")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "problem 'q5' has a prompt of" in err and "context of 128 tokens" in err, err
    assert read_rows(tmp_path / "run") == []  # nothing was sampled


# -- the real sampler, killed mid-run ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_model_dir(tmp_path_factory):
    """The shipped gym model if it is there, else a tiny random Llama with the gym's tokenizer."""
    pytest.importorskip("powersample.api", reason="powersample.sample (api.py) is not built yet")
    gym = pytest.importorskip("powersample.gym", reason="powersample.gym is not built yet")
    try:
        return str(gym.model_path())
    except Exception:
        pass
    tok = pytest.importorskip("powersample.gym.tokenizer", reason="the gym tokenizer is not built yet")
    from conftest import tiny_llama

    out = tmp_path_factory.mktemp("tiny-gym-model")
    model = tiny_llama(vocab=len(tok.VOCAB), eos=tok.EOS_ID, seed=0, scale=2.0, eos_bias=1.0)
    model.config.bos_token_id = tok.BOS_ID
    model.save_pretrained(out)
    tok.build_tokenizer().save_pretrained(out)
    return str(out)


# one problem per batch and a few MH steps: after the first problem's rows land, the other five take
# seconds, so the signal reliably arrives mid-run even on a loaded machine
EVAL_ARGS = ["--task", "gym", "--method", "power", "--limit", "6", "--samples-per-problem", "2",
             "--batch-size", "1", "--max-new-tokens", "16", "--block-size", "8", "--mcmc-steps", "3",
             "--device", "cpu", "--no-progress"]
ROWS = 12
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def _eval_cmd(model_dir: str, out, grade_workers: int = 0) -> list[str]:
    # grade workers are not core: the killed run grades in a process, the others inline (faster)
    return [sys.executable, "-m", "powersample", "eval", "--model", model_dir, *EVAL_ARGS, "--out", str(out),
            "--grade-workers", str(grade_workers)]


@pytest.fixture(scope="module")
def uninterrupted_rows(real_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    ref = subprocess.run(_eval_cmd(real_model_dir, out), capture_output=True, text=True, env=ENV, timeout=300)
    assert ref.returncode == 0, ref.stderr[-2000:]
    return read_rows(out)


def _comparable(rows, tolerant: bool = False):
    """Rows in key order without wall-clock fields; `tolerant` wraps floats for comparison: the
    sampler's float32 log-probabilities move in the 7th digit with batch composition, tokens do not."""
    def clean(v):
        if isinstance(v, float) and tolerant:
            return pytest.approx(v, rel=1e-5, abs=1e-6)
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items() if k != "seconds"}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    return [clean(r) for r in sorted(rows, key=lambda r: (r["id"], r["sample_index"]))]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_eval_resumes_to_the_uninterrupted_result(real_model_dir, uninterrupted_rows, tmp_path, sig):
    expected = sorted(uninterrupted_rows, key=lambda r: (r["id"], r["sample_index"]))
    assert len(expected) == ROWS

    out = tmp_path / "run"
    log = tmp_path / "killed.log"  # a file, not a pipe: nothing waits on the killed process's children
    with open(log, "wb") as f:
        # SIGINT back to its default first: a shell without job control starts background jobs with SIGINT
        # ignored, and Python then never turns Ctrl-C into KeyboardInterrupt
        proc = subprocess.Popen(_eval_cmd(real_model_dir, out, grade_workers=1), stdout=f,
                                stderr=subprocess.STDOUT, env=ENV,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    rows_path = out / ROWS_FILE
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if rows_path.exists() and rows_path.read_bytes().count(b"\n") >= 2:
            break
        time.sleep(0.05)
    if proc.poll() is not None:
        pytest.fail(f"the run ended before it could be interrupted: {log.read_text()[-2000:]}")
    proc.send_signal(sig)
    proc.wait(timeout=120)
    assert proc.returncode == (-signal.SIGKILL if sig == signal.SIGKILL else 130), log.read_text()[-2000:]
    partial = read_rows(out)
    assert 2 <= len(partial) < ROWS  # interrupted for real: some rows written, not all

    again = subprocess.run(_eval_cmd(real_model_dir, out), capture_output=True, text=True, env=ENV,
                           timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert rows_path.read_bytes().count(b"\n") == ROWS  # nothing lost, nothing duplicated
    got = sorted(read_rows(out), key=lambda r: (r["id"], r["sample_index"]))
    assert [r["text"] for r in got] == [r["text"] for r in expected]  # the same tokens
    assert _comparable(got) == _comparable(expected, tolerant=True)
