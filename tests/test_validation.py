"""Bad input gets a one-line error naming the problem, before the model loads, from every entry point:
sample(), EvalConfig and the runner, `generate`, `eval`, and the KEY=VALUE parser they share."""

from __future__ import annotations

import json
import os

import pytest
from conftest import one_line_error as _one_line_error
from conftest import run_generate as _gen
from conftest import tiny_llama
from conftest import write_prompts as _prompts

import powersample
import powersample.engine.loading
from powersample.cli.main import main
from powersample.cli.options import parse_pairs
from powersample.errors import PowerSampleError
from powersample.evaluation import EvalConfig, run_eval
from powersample.evaluation.runner import select_problems
from powersample.evaluation.store import read_rows
from powersample.tasks.base import Problem

PROMPTS = [[0, 3, 4], [0, 5], [0, 6, 7, 8]]
SMALL = dict(max_new_tokens=12, block_size=4, mcmc_steps=2)


@pytest.fixture(scope="module")
def model():
    return tiny_llama(vocab=16, scale=2.0)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    tiny_llama(vocab=16, scale=2.0).save_pretrained(path)
    return path


# -- sample() ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, match", [
    (dict(alpha=0.0), "alpha must be > 0"),
    (dict(alpha=-1.0), "alpha must be > 0"),
    (dict(block_size=0), "block_size must be in"),
    (dict(block_size=13), "block_size must be in"),
    (dict(max_new_tokens=0), "max_new_tokens must be a positive integer"),
    (dict(mcmc_steps=-1), "mcmc_steps must be"),
    (dict(num_samples=0), "num_samples must be >= 1"),
    (dict(bogus=1), "unknown option"),
])
def test_bad_settings_are_named(model, kwargs, match):
    with pytest.raises(PowerSampleError, match=match):
        powersample.sample(model, PROMPTS, "power", **{**SMALL, **kwargs})


def test_bad_inputs_are_named(model, monkeypatch):
    with pytest.raises(PowerSampleError, match="prompts is empty"):
        powersample.sample(model, [], **SMALL)
    with pytest.raises(PowerSampleError, match="unknown method 'powr'.*Did you mean 'power'"):
        powersample.sample(model, PROMPTS, "powr", **SMALL)
    with pytest.raises(PowerSampleError, match="need a tokenizer"):
        powersample.sample(model, ["text without a tokenizer"], **SMALL)
    with pytest.raises(PowerSampleError, match="prompt 1 is empty"):
        powersample.sample(model, [[0], []], **SMALL)
    short = tiny_llama(vocab=16, context=16)
    with pytest.raises(PowerSampleError, match="prompt 0 has 20 tokens.*context of 16"):
        powersample.sample(short, [[0] * 20], **SMALL)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PowerSampleError, match="could not load model 'no-such-org/no-such-model'"):
        powersample.sample("no-such-org/no-such-model", PROMPTS, **SMALL)


# -- the settings every command shares ---------------------------------------------------------------------


def test_key_value_parser():
    assert parse_pairs(["a=3", "b=0.5", "c=true", "d=null", "e=hello", "top-p=0.9", "f=[1, 2]", "g= x "],
                       "--option") == {"a": 3, "b": 0.5, "c": True, "d": None, "e": "hello", "top_p": 0.9,
                                       "f": [1, 2], "g": "x"}
    for bad, message in [("top_p", "--option takes KEY=VALUE, got 'top_p'"), ("=3", "takes KEY=VALUE"),
                         ("a=1 a=2", "--option a is given twice")]:
        with pytest.raises(PowerSampleError, match=message):
            parse_pairs(bad.split(" "), "--option")


@pytest.mark.parametrize("command", ["generate", "eval"])
@pytest.mark.parametrize("flags, message", [
    (["--option", "particles"], "--option takes KEY=VALUE, got 'particles'"),
    (["--alpha", "2", "--option", "alpha=3"], "--option alpha is not a sampler setting"),
    (["--option", "seeds=[1]"], "--option seeds is not a sampler setting"),
    (["--option", "bogus=1"], "unknown option(s) ['bogus'] for method 'power'"),
    (["--max-new-tokens", "8", "--block-size", "9"], "block_size must be in [1, max_new_tokens=8]"),
])
def test_bad_settings_are_one_line_errors_before_the_model_loads(command, flags, message, tmp_path, monkeypatch,
                                                                 capsys):
    monkeypatch.setattr(powersample.engine, "open_engine", lambda *a, **k: pytest.fail("loaded"))
    where = ["--prompt", "Q:1+1", "--output", str(tmp_path / "o.jsonl")] if command == "generate" else \
        ["--task", "gym", "--out", str(tmp_path / "run")]
    assert main([command, "--model", "gym", *where, *flags]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err


# -- EvalConfig and the runner -----------------------------------------------------------------------------


def test_sampler_settings_are_checked_before_the_model_loads(tmp_path):
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


def test_duplicate_problem_ids_are_refused():
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
def test_config_validation(kw, msg):
    with pytest.raises(PowerSampleError, match=msg):
        EvalConfig(task="gym", model="gym", out="x", **kw)


# -- generate ----------------------------------------------------------------------------------------------


def test_malformed_input_names_the_line(model_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt_ids": [0, 3]}\n{"prompt_ids": [0, 4]\n')
    assert _gen(model_dir, bad, tmp_path / "o.jsonl") == 2
    assert "bad.jsonl:2: not valid JSON" in capsys.readouterr().err
    bad.write_text('{"prompt_ids": [0, 3]}\n\n{"text": "x"}\n')
    assert _gen(model_dir, bad, tmp_path / "o.jsonl") == 2
    assert "line 3: needs a \"prompt\"" in capsys.readouterr().err
    assert _gen(model_dir, tmp_path / "missing.jsonl", tmp_path / "o.jsonl") == 2
    assert "does not exist" in capsys.readouterr().err
    assert _gen(model_dir, _prompts(tmp_path / "ok.jsonl", 2), tmp_path / "o2.jsonl", "--alpha", "0") == 2
    assert "alpha must be > 0" in capsys.readouterr().err


def test_generate_names_a_prompt_too_long_for_the_context(model_dir, tmp_path, capsys):
    inp, out = _prompts(tmp_path / "in.jsonl", 5), tmp_path / "out.jsonl"
    lines = inp.read_text().splitlines()
    lines[3] = json.dumps({"id": "long", "prompt_ids": [0] + [3] * 300})  # the context is 256
    inp.write_text("\n".join(lines) + "\n")
    assert _gen(model_dir, inp, out) == 2
    _one_line_error(capsys, "line 4: prompt 'long' has 301 tokens", "context of 256")
    assert not out.exists()  # nothing was sampled


def _under_a_file(tmp_path):
    (tmp_path / "a-file").write_text("x")
    return tmp_path / "a-file" / "out.jsonl"


# Tests run as root, which may write anywhere that permission bits forbid; a path under a regular file
# (and sysfs, where root cannot create files) fails for root too.
BAD_FLAGS = {
    "batch size 0": (["--batch-size", "0"], "--batch-size must be >= 1"),
    "no samples": (["--num-samples", "0"], "--num-samples must be >= 1"),
    "block size 0": (["--block-size", "0"], "block_size must be in [1, max_new_tokens=8]"),
    "no CUDA": (["--device", "cuda"], "sees no CUDA GPU"),
    "unknown device": (["--device", "gpu7"], "not a device torch knows"),
    "output under a file": (None, "cannot write"),
    "read-only output": ("/sys/powersample-test/out.jsonl", "cannot write"),
}


@pytest.mark.parametrize("case", sorted(BAD_FLAGS))
def test_generate_bad_flags_fail_in_one_line_before_the_model_loads(case, model_dir, tmp_path, capsys, monkeypatch):
    import torch

    import powersample.engine.loading

    extra, message = BAD_FLAGS[case]
    out = tmp_path / "out.jsonl"
    if case == "no CUDA" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    if case == "output under a file":
        extra, out = [], _under_a_file(tmp_path)
    if case == "read-only output":
        if not os.path.isdir("/sys/kernel"):
            pytest.skip("no sysfs here")
        extra, out = [], extra
    monkeypatch.setattr(powersample.engine, "open_engine",
                        lambda *a, **k: pytest.fail("the model was loaded before the error"))
    assert _gen(model_dir, _prompts(tmp_path / "in.jsonl", 3), out, *extra) == 2
    _one_line_error(capsys, message)


# -- eval --------------------------------------------------------------------------------------------------


def test_unknown_task_suggests(tmp_path, capsys):
    assert main(["eval", "--task", "math5000", "--model", "gym", "--out", str(tmp_path / "r")]) == 2
    assert "Did you mean 'math500'?" in capsys.readouterr().err

def test_jsonl_needs_data(tmp_path, capsys):
    assert main(["eval", "--task", "jsonl", "--model", "gym", "--out", str(tmp_path / "r")]) == 2
    assert "pass --data" in capsys.readouterr().err


# Tests run as root, which writes where permission bits forbid: a path under a regular file, and
# sysfs (where root cannot create files), are unwritable for root too.
@pytest.mark.parametrize("case", ["out under a file", "out is a file", "read-only out", "batch size 0",
                                  "no CUDA", "empty task file", "empty shard"])
def test_eval_bad_settings_fail_in_one_line(case, problems_file, tmp_path, capsys, monkeypatch):
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


def test_eval_names_a_prompt_too_long_for_the_context(tmp_path, capsys):
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


def test_ray_with_the_live_dynamic_method_is_refused():
    from powersample.evaluation import EvalConfig

    with pytest.raises(PowerSampleError, match="--method dynamic runs in one process"):
        EvalConfig(task="gym", model="gym", out="o", method="dynamic", ray="auto")
