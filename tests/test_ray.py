"""`eval --ray` (issue 12): problems spread over Ray workers give the rows of a single-process run,
whatever dies on the way. One local cluster (2 CPUs) serves the whole module."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from conftest import interrupt_after_saves

from powersample.errors import PowerSampleError
from powersample.evaluation import EvalConfig, run_eval
from powersample.evaluation.store import read_rows

ray = pytest.importorskip("ray")

SETTINGS = dict(task="gym", model="gym", method="power", samples_per_problem=2, limit=6, grade_workers=0,
                sampler={"alpha": 4.0, "mcmc_steps": 2, "max_new_tokens": 12, "block_size": 4})


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """A single-process run of SETTINGS: its directory and its rows by key."""
    out = tmp_path_factory.mktemp("local")
    run_eval(EvalConfig(out=str(out), **SETTINGS), progress=False)
    return out, _by_key(read_rows(out))


def _by_key(rows):
    """What a row says about its sample. log p is rounded: a problem's batch shape differs between the
    runs (alone on a worker vs. with the others), which moves float32 sums in the 7th digit."""
    return {(r["id"], r["sample_index"]): (r["text"], r["token_ids"], round(r["logp"], 4), r["tokens_generated"],
                                           r["acceptance_rate"], r["extracted"], r["correct"],
                                           [(cp["tokens"], cp["answer"], cp["correct"]) for cp in r["checkpoints"]])
            for r in rows}


def test_ray_gives_the_rows_of_a_single_process_run(cluster, local, tmp_path):
    local_rows = local[1]
    summary = run_eval(EvalConfig(out=str(tmp_path), ray="", workers=2, **SETTINGS), progress=False)
    rows = read_rows(tmp_path)
    assert len(rows) == summary.rows_total == 12
    assert _by_key(rows) == local_rows
    info = json.loads((tmp_path / "run.json").read_text())["ray"]
    assert info["workers"] == 2 and info["device"] == "CPU"
    assert sum(w["samples"] for w in info["per_worker"]) == 12


def test_faults_lose_nothing_and_duplicate_nothing(cluster, local, tmp_path):
    """A worker process dies mid-problem (as if killed or out of memory): its problems are redone
    elsewhere. A problem whose sampling always raises becomes error rows after 3 tries; the run ends."""
    local_rows = local[1]
    marker, broken = str(tmp_path / "died"), sorted(local_rows)[0][0]

    def faulty_sample(model, prompts, **kwargs):
        import os

        import powersample
        from powersample.tasks import get_task

        if not os.path.exists(marker):  # the first chunk any worker gets kills that worker
            open(marker, "w").close()
            os._exit(1)
        if next(p.prompt for p in get_task("gym").load(None) if p.id == broken) in prompts:
            raise RuntimeError("this problem breaks the sampler")
        return powersample.sample(model, prompts, **kwargs)

    out = tmp_path / "run"
    run_eval(EvalConfig(out=str(out), ray="", workers=2, **SETTINGS), sample_fn=faulty_sample, progress=False)
    rows = read_rows(out)
    keys = [(r["id"], r["sample_index"]) for r in rows]
    assert (tmp_path / "died").exists()
    assert len(keys) == len(set(keys)) == 12  # every sample exactly once
    bad = [r for r in rows if r["id"] == broken]
    assert len(bad) == 2 and all(r["correct"] is None and "failed on 3 tries" in r["reason"] and
                                 "breaks the sampler" in r["reason"] for r in bad)
    assert _by_key([r for r in rows if r["id"] != broken]) == {k: v for k, v in local_rows.items()
                                                                 if k[0] != broken}
    per_worker = json.loads((out / "run.json").read_text())["ray"]["per_worker"]
    # the dead worker's count is gone with it (it did none); its replacement may still be starting at the end
    assert 1 <= len(per_worker) <= 2 and sum(w["samples"] for w in per_worker) == 10


def test_ray_errors_are_one_line(cluster, tmp_path, monkeypatch):
    with pytest.raises(PowerSampleError, match="workers must be an integer >= 1"):
        EvalConfig(out=str(tmp_path), ray="", workers=0, **SETTINGS)
    with pytest.raises(PowerSampleError, match=r"workers needs ray \(--ray \[ADDRESS\]\)"):
        EvalConfig(out=str(tmp_path), workers=2, **SETTINGS)
    with pytest.raises(PowerSampleError, match="--workers 3 needs 3 CPUs, and the Ray cluster has 2"):
        run_eval(EvalConfig(out=str(tmp_path), ray="", workers=3, **SETTINGS), progress=False)
    with pytest.raises(PowerSampleError, match="a Ray worker could not load the model") as e:
        config = EvalConfig(out=str(tmp_path / "m"), ray="", workers=1, **{**SETTINGS, "model": str(tmp_path / "no")})
        run_eval(config, progress=False)
    assert "\n" not in str(e.value) and "is not a local folder" in str(e.value)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    with pytest.raises(PowerSampleError, match=r'needs Ray, which is not installed: pip install "powersample\[ray\]"'):
        run_eval(EvalConfig(out=str(tmp_path), ray="", workers=1, **SETTINGS), progress=False)


def test_a_bad_address_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "powersample.cli.main", "eval", "--task", "gym", "--model", "gym",
                           "--limit", "1", "--out", str(tmp_path), "--ray", "127.0.0.1:1", "--workers", "1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "cannot reach a Ray cluster at '127.0.0.1:1'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_ray_run_resumes_after_the_driver_dies(cluster, local, tmp_path, capsys):
    from powersample.cli.main import main

    local_dir, local_rows = local
    out = tmp_path / "run"
    shutil.copytree(local_dir, out)
    args = ["eval", "--task", "gym", "--model", "gym", "--limit", "6", "--samples-per-problem", "2",
            "--alpha", "4", "--mcmc-steps", "2", "--max-new-tokens", "12", "--block-size", "4",
            "--grade-workers", "0", "--no-progress", "--out", str(out), "--ray", "--workers", "2"]
    # a driver killed mid-run: the last rows never written, the last one torn mid-line
    lines = (out / "rows.jsonl").read_bytes().splitlines(keepends=True)
    (out / "rows.jsonl").write_bytes(b"".join(lines[:7]) + lines[7][:20])
    assert main(args) == 0
    assert "5 new rows, 12 in total" in capsys.readouterr().out
    rows = read_rows(out)
    assert len(rows) == 12 and _by_key(rows) == local_rows
    # --ray and --workers are not core: the same run resumes with or without Ray
    (out / "rows.jsonl").write_bytes(b"".join(lines[:9]))
    assert main(args[:-3]) == 0
    rows = read_rows(out)
    assert len(rows) == 12 and _by_key(rows) == local_rows


def test_ray_workers_continue_chains_saved_mid_problem(cluster, local, tmp_path, monkeypatch):
    """A single-process run interrupted mid-problem leaves chain states; the rerun on Ray continues them
    (one is tampered with, its accepted count lowered, so that its row shows the state was used) and
    deletes each once its row is written."""
    out = tmp_path / "run"
    interrupt_after_saves(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        run_eval(EvalConfig(out=str(out), **SETTINGS), progress=False)
    monkeypatch.undo()
    files = sorted((out / "chains").glob("*.json"))
    saved = [json.loads(f.read_text()) for f in files]
    tampered = next(i for i, s in enumerate(saved) if s["state"]["accepted"] > 0)
    saved[tampered]["state"]["accepted"] -= 1
    files[tampered].write_text(json.dumps(saved[tampered]))
    run_eval(EvalConfig(out=str(out), ray="", workers=2, **SETTINGS), progress=False)
    rows = _by_key(read_rows(out))
    key = (saved[tampered]["id"], saved[tampered]["sample_index"])
    assert rows[key] != local[1][key] and {k: v for k, v in rows.items() if k != key} == \
        {k: v for k, v in local[1].items() if k != key}
    assert list((out / "chains").glob("*")) == []
