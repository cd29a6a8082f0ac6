"""One settings path: sample(), generate and eval reach the same validated params with the same
defaults; the flags' help quotes the params classes' defaults. (Bad settings: test_validation.py.)"""

from __future__ import annotations

import json
import re
from dataclasses import MISSING, fields, replace
from pathlib import Path

import pytest

import powersample
import powersample.api
import powersample.engine.loading
from powersample.api import BATCH_SIZE, make_params
from powersample.cli.main import build_parser, main
from powersample.evaluation import EvalConfig
from powersample.samplers.params import BestOfNParams, PowerParams, ScalableParams, SMCParams, TemperatureParams
from powersample.samplers.result import Result


class StubEngine:
    """Enough of an Engine for generate's checks: prompts are token ids."""

    max_length, tokenizer = None, None

    def encode(self, prompt):
        return list(prompt)


def fake_sample(calls):
    """A stand-in for powersample.sample that records its options and returns one Result per sample."""
    def sample(model, prompts, method="power", **options):
        calls.append({"method": method, "n_prompts": len(prompts), **options})
        k = options.get("num_samples", 1)
        return [Result(i, j, [1], "A:1", 0.0, True, 1, 0.0, method) for i in range(len(prompts)) for j in range(k)]
    return sample


def params_of(call):
    """The params the recorded call would run with: what powersample.sample builds from it."""
    options = {k: v for k, v in call.items() if k not in ("n_prompts", "method")}
    return make_params(call["method"], **options)


def via_sample(flags: dict, monkeypatch):
    """The params sample() hands the method's runner."""
    from conftest import tiny_llama

    seen = []
    record = replace(powersample.api.get_method("power"),
                     run=lambda engine, prompts, seeds, params, **kw: seen.append(params) or [])
    with monkeypatch.context() as m:
        m.setattr(powersample.api, "get_method", lambda name: record)
        powersample.sample(tiny_llama(vocab=16), [[0, 3]], "power", seed=0, **flags)
    return seen[0]


def via_generate(flags: list[str], tmp_path, monkeypatch, n_prompts: int = 1):
    calls = []
    monkeypatch.setattr(powersample.api, "sample", fake_sample(calls))
    monkeypatch.setattr(powersample.engine, "open_engine", lambda *a, **k: StubEngine())
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"id": f"p{i}", "prompt_ids": [0, 3]}) + "\n" for i in range(n_prompts)))
    out = tmp_path / "out.jsonl"
    out.unlink(missing_ok=True)
    assert main(["generate", "--model", "m", "--input", str(inp), "--output", str(out), *flags]) == 0
    return calls


def via_eval(flags: list[str], tmp_path, monkeypatch, limit: int = 1):
    calls = []
    monkeypatch.setattr(powersample, "sample", fake_sample(calls))
    monkeypatch.setattr(powersample.engine, "open_engine", lambda *a, **k: object())
    out = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
    assert main(["eval", "--task", "gym", "--model", "m", "--limit", str(limit), "--grade-workers", "0",
                 "--no-progress", "--out", str(out), *flags]) == 0
    return calls


@pytest.mark.parametrize("flags, expected", [
    ({}, PowerParams(alpha=4.0, mcmc_steps=10, max_new_tokens=3072, block_size=192)),  # the paper's
    ({"max_new_tokens": 64}, PowerParams(max_new_tokens=64, block_size=4)),  # B = T/16 whatever T is
    ({"alpha": 2.0, "block_size": 8, "max_new_tokens": 64}, PowerParams(alpha=2.0, max_new_tokens=64, block_size=8)),
])
def test_sample_generate_and_eval_reach_the_same_params(flags, expected, tmp_path, monkeypatch, capsys):
    cli = [x for k, v in flags.items() for x in ("--" + k.replace("_", "-"), str(v))]
    from_sample = via_sample(flags, monkeypatch)
    (g,) = via_generate(cli, tmp_path, monkeypatch)
    (e,) = via_eval(cli, tmp_path, monkeypatch)
    assert from_sample == params_of(g) == params_of(e) == expected


def test_the_same_batch_size_everywhere(tmp_path, monkeypatch, capsys):
    assert EvalConfig(task="gym", model="m", out="x").batch_size == BATCH_SIZE
    n = BATCH_SIZE + 3
    assert [c["n_prompts"] for c in via_generate([], tmp_path, monkeypatch, n_prompts=n)] == [BATCH_SIZE, 3]
    # eval: power streams every problem through one call on BATCH_SIZE x K rows; other methods batch
    assert [(c["n_prompts"], c["batch_size"]) for c in via_eval([], tmp_path, monkeypatch, limit=n)] == \
        [(n, BATCH_SIZE)]
    temperature = via_eval(["--method", "temperature"], tmp_path, monkeypatch, limit=n)
    assert [c["n_prompts"] for c in temperature] == [BATCH_SIZE, 3]


def test_an_option_reaches_the_method_the_same_way(tmp_path, monkeypatch, capsys):
    flags = ["--method", "best-of-n", "--option", "top-p=0.5", "--option", "n=3"]
    (g,) = via_generate(flags, tmp_path, monkeypatch)
    (e,) = via_eval(flags, tmp_path, monkeypatch)
    assert params_of(g) == params_of(e) == BestOfNParams(n=3, top_p=0.5)


def test_eval_config_records_every_setting_and_a_spelled_out_default_matches():
    cfg = EvalConfig(task="gym", model="m", out="x", sampler={"max_new_tokens": 64})
    assert cfg.sampler == {"alpha": 4.0, "block_size": 4, "hidden_dims": 32, "max_new_tokens": 64, "mcmc_steps": 10,
                           "stop_at_eos": True, "temperature": None, "top_k": 0, "top_p": 1.0}
    assert EvalConfig(task="gym", model="m", out="x", sampler={"max_new_tokens": 64, "alpha": 4.0}) == cfg
    assert EvalConfig.from_dict(cfg.to_dict()) == cfg
    low = EvalConfig(task="gym", model="m", out="x", method="low-temperature", sampler={"alpha": 2.0})
    assert low.sampler["temperature"] == 0.5 and EvalConfig.from_dict(low.to_dict()) == low


def test_old_run_configs_are_read_in_the_new_layout():
    old = {"task": "gym", "model": "m", "out": "x", "method": "power", "alpha": 2.0, "mcmc_steps": 3,
           "block_size": 4, "max_new_tokens": 16, "temperature": None, "n": None, "chat": False,
           "sampler_options": {"top_k": 5}, "batch_size": 8}
    cfg = EvalConfig.from_dict(old)
    assert make_params("power", **cfg.sampler) == PowerParams(alpha=2.0, mcmc_steps=3, block_size=4,
                                                                max_new_tokens=16, top_k=5)


def test_the_help_quotes_the_params_defaults():
    sub = build_parser()._subparsers._group_actions[0].choices
    helps = {a.dest: a.help for a in sub["generate"]._actions}
    p, t, b = PowerParams(), TemperatureParams(), BestOfNParams()
    assert f"(default {p.alpha:g})" in helps["alpha"] and f"(default {p.mcmc_steps})" in helps["mcmc_steps"]
    assert f"(default {p.max_new_tokens})" in helps["max_new_tokens"]
    assert PowerParams(max_new_tokens=160).block_size == 10 and "(default T/16)" in helps["block_size"]
    assert f"(default {t.temperature:g}; power: 1/alpha)" in helps["temperature"] and p.temperature is None
    assert f"(default {b.n})" in helps["n"] and f"(default {BATCH_SIZE})" in helps["batch_size"]
    assert {a.dest: a.help for a in sub["eval"]._actions}["alpha"] == helps["alpha"]  # one flag group


def test_the_readme_settings_table_states_the_params_defaults():
    """Every field of every params class is in the README's one table, with its default."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    table = readme.split("### Settings", 1)[1].split("\n\n", 3)[2]
    stated = {}
    for line in table.splitlines()[2:]:
        names, default = line.split("|")[1:3]
        names = re.findall(r"`(\w+)`", names)  # the settings; flags (`--x`) do not match
        parts = [default.strip()] if len(names) == 1 else [x.strip() for x in default.split(",")]
        stated.update(zip(names, parts, strict=False))

    def text(v):
        return str(v).lower() if isinstance(v, bool) else f"{v:g}" if isinstance(v, float) else str(v)

    for cls in (PowerParams, TemperatureParams, BestOfNParams, SMCParams, ScalableParams):
        for f in fields(cls):
            if f.name == "exact_zeta":  # testing only
                continue
            assert f.name in stated, f"{cls.__name__}.{f.name} is not in the README's settings table"
            if f.default not in (None, MISSING):
                assert stated[f.name].startswith(text(f.default)), (cls.__name__, f.name, stated[f.name])
    assert "`max_new_tokens // 16`" in stated["block_size"] and PowerParams(max_new_tokens=3072).block_size == 192
    assert stated["batch_size"] == str(BATCH_SIZE)
