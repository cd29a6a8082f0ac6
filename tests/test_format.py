"""One row format (docs/format.md) and one reader: torn last lines, bad middle lines, and the files
older versions wrote (eval run directories, generate outputs) read or refused in one line."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest

from powersample.cli.main import main
from powersample.errors import PowerSampleError
from powersample.evaluation.report import format_table, report
from powersample.jsonl import FORMAT, append_rows, read_rows, result_row
from powersample.samplers.result import Checkpoint, Result
from powersample.tasks.files import read_records

RESULT = Result(prompt_index=3, sample_index=1, token_ids=[5, 6, 1], text="A:11", logp=-1.5, finished=True,
                tokens_generated=9, seconds=0.25, method="power", acceptance_rate=0.5, stats={"proposals": 4},
                checkpoints=[Checkpoint(1, [5, 6, 1], -1.5, 9, 0.5, 1.25, 0.75, 0.2)])


def test_a_row_is_the_results_fields_with_the_run_ids():
    row = result_row(RESULT, "q7", RESULT.text)
    result = {f.name for f in fields(Result)} - {"prompt_index"}  # the batch position becomes the prompt's id
    assert set(row) == result | {"format", "id"} and row["format"] == FORMAT
    assert {k: row[k] for k in result - {"checkpoints"}} == {k: getattr(RESULT, k) for k in result - {"checkpoints"}}
    (cp,) = row["checkpoints"]
    assert cp["tokens"] == 3 and "token_ids" not in cp  # a count per checkpoint, not every prefix's ids
    assert {k: cp[k] for k in cp if k != "tokens"} == {f.name: getattr(RESULT.checkpoints[0], f.name)
                                                       for f in fields(Checkpoint) if f.name != "token_ids"}


def test_torn_last_line_is_dropped_and_repaired(tmp_path):
    path = tmp_path / "rows.jsonl"
    append_rows(path, [{"format": FORMAT, "id": str(i), "sample_index": 0} for i in range(3)])
    whole = path.read_bytes()
    path.write_bytes(whole[:-7])  # killed mid-write
    assert [r["id"] for r in read_rows(path)] == ["0", "1"]
    assert path.read_bytes() == whole[:-7]  # reading alone leaves the file as it is
    assert [r["id"] for r in read_rows(path, repair=True)] == ["0", "1"]
    append_rows(path, [{"format": FORMAT, "id": "2", "sample_index": 0}])
    assert path.read_bytes() == whole  # the append starts on a line of its own


def test_a_bad_middle_line_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"format": 2, "id": "a"}\n{"format": 2, "id": \n{"format": 2, "id": "c"}\n')
    with pytest.raises(PowerSampleError, match=r"rows\.jsonl:2: not valid JSON"):
        read_rows(path)
    path.write_text('{"format": 2, "id": "a"}\n[1, 2]\n')
    with pytest.raises(PowerSampleError, match=r"rows\.jsonl:2: expected a JSON object, got list"):
        read_rows(path)
    data = tmp_path / "data.jsonl"  # task data files go through the same reader (no torn tail allowed there)
    data.write_text('{"prompt": "x"}\n{"prompt": ')
    with pytest.raises(PowerSampleError, match=r"data\.jsonl:2: not valid JSON"):
        read_records(data)


# what version 1 wrote (no "format" field): eval rows had sample/completion/tokens, generate rows
# sample_index/text/completion_tokens and settings
OLD_EVAL_ROW = {"id": "g0", "sample": 0, "correct": True, "extracted": "11", "reason": "ok", "grader_error": False,
                "finished": True, "tokens": 3, "tokens_generated": 9, "logp": -1.5, "seconds": 0.25,
                "acceptance_rate": 0.5, "stats": {}, "completion": "A:11", "checkpoints": []}
OLD_CONFIG = {"task": "gym", "model": "gym", "out": "x", "method": "power", "alpha": 4.0, "mcmc_steps": 10,
              "block_size": 16, "max_new_tokens": 48, "temperature": None, "n": None, "chat": False, "dtype": None,
              "sampler_options": {}, "samples_per_problem": 1, "limit": 2, "shard": "0/1", "seed": 0, "data": None,
              "task_options": {"count": 200, "problem_seed": 1}, "device": None, "batch_size": 8,
              "grade_workers": 2, "data_sha256": None, "task_version": "1"}


@pytest.fixture
def old_run(tmp_path):
    run = tmp_path / "old-run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"format": 1, "config": OLD_CONFIG, "versions": {}}))
    rows = [OLD_EVAL_ROW, {**OLD_EVAL_ROW, "id": "g1", "correct": False, "completion": "A:12"}]
    (run / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def test_an_old_run_directory_is_reported(old_run):
    rows = read_rows(old_run / "rows.jsonl")
    assert [(r["format"], r["sample_index"], r["text"]) for r in rows] == [(1, 0, "A:11"), (1, 0, "A:12")]
    (s,) = report([old_run])
    assert (s.problems, s.graded, s.correct, s.tokens_per_problem) == (2, 2, 1, 9)
    assert "0.500" in format_table([s])


def test_an_old_run_directory_is_not_resumed(old_run, capsys):
    before = (old_run / "rows.jsonl").read_bytes()
    args = ["eval", "--task", "gym", "--model", "gym", "--limit", "2", "--max-new-tokens", "48", "--block-size",
            "16", "--grade-workers", "0", "--no-progress", "--out", str(old_run)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "written by an older powersample (format 1, now 2)" in err, err
    assert "report` reads it" in err and (old_run / "rows.jsonl").read_bytes() == before


def test_an_old_generate_file_is_read_and_not_resumed(tmp_path, capsys):
    old = tmp_path / "out.jsonl"
    row = {"id": "0", "sample_index": 0, "method": "power", "alpha": 4.0, "text": "A:11", "token_ids": [5, 6, 1],
           "completion_tokens": 3, "tokens_generated": 9, "logp": -1.5, "finished": True, "acceptance_rate": 0.5,
           "seconds": 0.2, "stats": {}, "prompt_sha256": "x", "settings": {"model": "gym", "method": "power"}}
    old.write_text(json.dumps(row) + "\n")
    (r,) = read_rows(old)
    assert (r["format"], r["sample_index"], r["text"], r["token_ids"]) == (1, 0, "A:11", [5, 6, 1])
    assert main(["generate", "--model", "gym", "--prompt", "Q:1+1", "--output", str(old), "--resume",
                 "--max-new-tokens", "8"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "written by an older powersample (row format 1, now 2)" in err


def test_an_old_run_and_a_new_one_are_compared_by_what_differs(old_run, tmp_path):
    from powersample.evaluation import EvalConfig
    from powersample.evaluation.report import Run, labels, load_runs

    (old,) = load_runs([old_run])
    cfg = EvalConfig.from_dict({**OLD_CONFIG, "alpha": 2.0}).to_dict()
    assert labels([old, Run([tmp_path / "new"], cfg, [], ["0/1"])]) == ["power alpha=4.0", "power alpha=2.0"]
