"""`powersample eval` with the real sampler, killed mid-run (SIGKILL, Ctrl-C): the rerun resumes to the
uninterrupted result, nothing lost, nothing duplicated."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from powersample.errors import PowerSampleError
from powersample.evaluation.store import ROWS_FILE, read_rows


@pytest.fixture(scope="module")
def real_model_dir(tmp_path_factory):
    """The shipped gym model if it is there, else a tiny random Llama with the gym's tokenizer."""
    from conftest import tiny_llama

    from powersample import gym
    from powersample.gym import tokenizer as tok

    try:
        return str(gym.model_path())
    except PowerSampleError:  # not shipped in this checkout
        pass

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
            return {k: clean(x) for k, x in v.items() if k not in ("seconds", "chain_seconds")}
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
