"""Run directories (evaluation/store.py) through the runner: resume fills only the gaps, a changed
configuration is refused, a torn last line is regenerated, a corrupt middle line is named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from evalstub import config, run, sorted_rows

from powersample.errors import PowerSampleError
from powersample.evaluation.store import ROWS_FILE, read_rows


def test_resume_skips_finished_rows_and_fills_gaps(problems_file, tmp_path):
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


def test_changed_core_configuration_is_refused(problems_file, tmp_path):
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


def test_how_the_work_is_done_may_change(problems_file, tmp_path):
    _, gold = problems_file
    run(config(problems_file, tmp_path / "a", batch_size=5, limit=8), gold)
    run(config(problems_file, tmp_path / "b", batch_size=3, limit=8), gold)
    assert sorted_rows(tmp_path / "a") == sorted_rows(tmp_path / "b")  # batch size changes nothing
    sampler, _ = run(config(problems_file, tmp_path / "a", batch_size=2, limit=8, device="cpu"), gold)
    assert sampler.calls == []  # resumed, not refused


def test_torn_last_line_is_cut_and_regenerated(problems_file, tmp_path):
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


def test_corrupt_middle_line_names_the_line(problems_file, tmp_path):
    _, gold = problems_file
    cfg = config(problems_file, tmp_path / "run", limit=2)
    run(cfg, gold)
    rows_path = Path(cfg.out) / ROWS_FILE
    lines = rows_path.read_text().splitlines()
    lines[1] = "garbage"
    rows_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(PowerSampleError, match=rf"{ROWS_FILE}:2: not valid JSON"):
        run(cfg, gold)


def test_a_run_without_rows_may_change_its_configuration(problems_file, tmp_path):
    _, gold = problems_file
    cfg = config(problems_file, tmp_path / "run", limit=4)
    with pytest.raises(RuntimeError):
        run(cfg, gold, fail_on=1, exc=RuntimeError)  # failed before any row was written
    assert (Path(cfg.out) / "run.json").exists() and read_rows(cfg.out) == []
    run(config(problems_file, cfg.out, limit=4, alpha=2.0), gold)  # nothing to mix: accepted
    assert json.loads((Path(cfg.out) / "run.json").read_text())["config"]["sampler"]["alpha"] == 2.0
