"""The eval runner with a stub sampler: rows written, graded and batched; Ctrl-C and crashes keep every
row; shards; AlpacaEval's outputs file; tensors in stats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from evalstub import CharModel, StubSampler, config, run, sorted_rows, stub_answer

from powersample.evaluation import EvalConfig, run_eval
from powersample.evaluation.report import merge_runs
from powersample.evaluation.store import read_rows
from powersample.rng import derive_seeds
from powersample.tasks import get_task


def test_rows_are_written_graded_and_batched(problems_file, tmp_path):
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


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_interrupt_keeps_every_generated_row(problems_file, tmp_path, exc):
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


def test_shards_partition_the_problems(problems_file, tmp_path):
    _, gold = problems_file
    run(config(problems_file, tmp_path / "all", limit=10), gold)
    for i in range(3):
        run(config(problems_file, tmp_path / f"s{i}", limit=10, shard=f"{i}/3"), gold)
    shards = [sorted_rows(tmp_path / f"s{i}") for i in range(3)]
    assert {r["id"] for r in shards[1]} == {"q1", "q4", "q7"}
    assert sorted((r for s in shards for r in s), key=lambda r: (r["id"], r["sample_index"])) == \
        sorted_rows(tmp_path / "all")


def test_alpacaeval_outputs_file(tmp_path):
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


def test_alpacaeval_shards_merge_into_one_outputs_file(tmp_path):
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


def test_tensor_stats_are_stored_as_lists(problems_file, tmp_path):
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
