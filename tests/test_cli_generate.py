"""`powersample generate`: JSONL out, rows flushed per batch, --resume after a kill, clear input errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import tiny_llama

from powersample.cli.main import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    tiny_llama(vocab=16, scale=2.0).save_pretrained(path)
    return path


def _prompts(path, n):
    path.write_text("".join(json.dumps({"id": f"p{i}", "prompt_ids": [0, 2 + i % 10]}) + "\n" for i in range(n)))
    return path


def _gen(model_dir, inp, out, *extra):
    return main(["generate", "--model", str(model_dir), "--input", str(inp), "--output", str(out),
                 "--max-new-tokens", "8", "--block-size", "4", "--mcmc-steps", "2", "--batch-size", "2", *extra])


def test_generate_writes_rows_and_resume_skips_finished(model_dir, tmp_path):
    inp, out = _prompts(tmp_path / "in.jsonl", 5), tmp_path / "out.jsonl"
    assert _gen(model_dir, inp, out) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"p{i}" for i in range(5)]
    for r in rows:
        assert r["completion_tokens"] == len(r["token_ids"]) and 0 <= r["acceptance_rate"] <= 1
        assert r["tokens_generated"] >= r["completion_tokens"] and r["seconds"] > 0
    # drop the last two rows and tear the third: --resume redoes exactly those, identically (same seeds)
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:2]) + lines[2][:10])
    assert _gen(model_dir, inp, out, "--resume") == 0
    again = [json.loads(x) for x in out.read_text().splitlines()]
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
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


def test_malformed_input_names_the_line(model_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt_ids": [0, 3]}\n{"prompt_ids": [0, 4]\n')
    assert _gen(model_dir, bad, tmp_path / "o.jsonl") == 2
    assert "bad.jsonl, line 2" in capsys.readouterr().err
    bad.write_text('{"prompt_ids": [0, 3]}\n\n{"text": "x"}\n')
    assert _gen(model_dir, bad, tmp_path / "o.jsonl") == 2
    assert "line 3: needs a \"prompt\"" in capsys.readouterr().err
    assert _gen(model_dir, tmp_path / "missing.jsonl", tmp_path / "o.jsonl") == 2
    assert "does not exist" in capsys.readouterr().err
    assert _gen(model_dir, _prompts(tmp_path / "ok.jsonl", 2), tmp_path / "o2.jsonl", "--alpha", "0") == 2
    assert "alpha must be > 0" in capsys.readouterr().err
