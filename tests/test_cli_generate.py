"""`powersample generate`: JSONL out, rows flushed per batch, --resume after a kill, clear input errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import one_line_error as _one_line_error
from conftest import run_generate as _gen
from conftest import tiny_llama
from conftest import write_prompts as _prompts


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    tiny_llama(vocab=16, scale=2.0).save_pretrained(path)
    return path


def test_generate_writes_rows_and_resume_skips_finished(model_dir, tmp_path):
    inp, out = _prompts(tmp_path / "in.jsonl", 5), tmp_path / "out.jsonl"
    assert _gen(model_dir, inp, out) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"p{i}" for i in range(5)]
    for r in rows:
        assert r["format"] == 2 and r["sample_index"] == 0 and 0 <= r["acceptance_rate"] <= 1
        assert r["tokens_generated"] >= len(r["token_ids"]) and r["seconds"] > 0
        assert [c["block"] for c in r["checkpoints"]] == list(range(1, len(r["checkpoints"]) + 1))
    # drop the last two rows and tear the third: --resume redoes exactly those, identically (same seeds)
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:2]) + lines[2][:10])
    assert _gen(model_dir, inp, out, "--resume") == 0
    again = [json.loads(x) for x in out.read_text().splitlines()]
    def strip(rs):  # wall-clock fields differ between runs
        timed = ("seconds", "chain_seconds")
        return [{**{k: v for k, v in r.items() if k not in timed},
                 "checkpoints": [{k: v for k, v in c.items() if k not in timed} for c in r["checkpoints"]]} for r in rs]

    assert strip(again) == strip(rows)  # the same samples: each prompt's seed derives from its id
    assert _gen(model_dir, inp, out) == 2  # exists, neither --resume nor --overwrite: refused


def test_killed_run_keeps_finished_rows(model_dir, tmp_path):
    inp, out = _prompts(tmp_path / "in.jsonl", 40), tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "powersample", "generate", "--model", str(model_dir), "--input", str(inp),
           "--output", str(out), "--max-new-tokens", "24", "--block-size", "4", "--mcmc-steps", "4",
           "--batch-size", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 2):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = [json.loads(x) for x in out.read_text().splitlines() if x.strip()]
    assert 2 <= len(kept) < 40
    subprocess.run(cmd + ["--resume"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(f"p{i}" for i in range(40))  # each exactly once
    assert rows[: len(kept)] == kept


def test_overwrite_keeps_the_old_file_until_the_new_one_has_rows(model_dir, tmp_path, capsys, monkeypatch):
    inp, out = _prompts(tmp_path / "in.jsonl", 3), tmp_path / "out.jsonl"
    out.write_text('{"id": "old"}\n')
    assert _gen(model_dir, inp, out, "--overwrite", "--alpha", "0") == 2
    _one_line_error(capsys, "alpha must be > 0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert _gen(tmp_path / "no-such-model", inp, out, "--overwrite") == 2
    _one_line_error(capsys, "no-such-model")
    assert out.read_text() == '{"id": "old"}\n'  # failed runs left it alone
    assert _gen(model_dir, inp, out, "--overwrite") == 0
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["p0", "p1", "p2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl"]  # no temporary file left


def test_resume_refuses_other_settings_and_changed_prompts(model_dir, tmp_path, capsys):
    inp, out = _prompts(tmp_path / "in.jsonl", 3), tmp_path / "out.jsonl"
    assert _gen(model_dir, inp, out) == 0
    capsys.readouterr()  # the progress bar
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert {r["settings"]["alpha"] for r in rows} == {4.0} and len({r["prompt_sha256"] for r in rows}) == 3
    before = out.read_text()
    assert _gen(model_dir, inp, out, "--resume", "--method", "temperature") == 2
    _one_line_error(capsys, "other settings", "method: 'power' there, 'temperature' now")
    assert _gen(model_dir, inp, out, "--resume", "--alpha", "2") == 2
    _one_line_error(capsys, "alpha: 4.0 there, 2.0 now")
    lines = inp.read_text().splitlines()
    lines[1] = json.dumps({"id": "p1", "prompt_ids": [0, 9, 9]})
    inp.write_text("\n".join(lines) + "\n")
    assert _gen(model_dir, inp, out, "--resume") == 2
    _one_line_error(capsys, "prompt 'p1'", "in.jsonl, line 2")
    assert out.read_text() == before
