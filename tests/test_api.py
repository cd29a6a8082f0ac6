"""powersample.sample: every method through one call, reproducibility, engines and methods by name.
(Its errors on bad input: test_validation.py.)"""

from __future__ import annotations

import pytest
import torch
from conftest import full_logp, tiny_llama

import powersample
from powersample.engine import ENGINES
from powersample.engine.toy import ToyEngine
from powersample.errors import PowerSampleError
from powersample.samplers import METHODS

PROMPTS = [[0, 3, 4], [0, 5], [0, 6, 7, 8]]
SMALL = dict(max_new_tokens=12, block_size=4, mcmc_steps=2)


@pytest.fixture(scope="module")
def model():
    return tiny_llama(vocab=16, scale=2.0)


@pytest.mark.parametrize("method", METHODS.names())
def test_every_method_returns_scored_completions(model, method):
    extra = {"controller": "fixed:2"} if method == "dynamic" else {}  # dynamic: its controller says 2 chains
    res = powersample.sample(model, PROMPTS, method, seed=3, num_samples=2, **SMALL, **extra)
    assert [(r.prompt_index, r.sample_index) for r in res] == [(i, j) for i in range(3) for j in range(2)]
    for r in res:
        assert 1 <= len(r.token_ids) <= 12 and r.method == method and r.text is None
        assert r.finished == (r.token_ids[-1] == 1)  # EOS (id 1) ends a finished completion
        assert r.tokens_generated >= len(r.token_ids)
        assert abs(r.logp - sum(full_logp(model, PROMPTS[r.prompt_index], r.token_ids))) < 1e-4


def test_greedy_is_the_argmax_path(model):
    (r,) = powersample.sample(model, PROMPTS[:1], "greedy", **SMALL)
    ids = list(PROMPTS[0])
    for _ in r.token_ids:
        with torch.no_grad():
            ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    assert r.token_ids == ids[len(PROMPTS[0]):][: len(r.token_ids)]


def test_best_of_n_keeps_the_most_likely_candidate(model):
    res = powersample.sample(model, PROMPTS, "best-of-n", n=6, temperature=1.0, seed=0, **SMALL)
    for r in res:
        assert len(r.stats["candidate_logp"]) == 6
        assert abs(r.logp - max(r.stats["candidate_logp"])) < 1e-9


def test_same_seed_same_output_and_batch_composition_does_not_matter(model):
    a = powersample.sample(model, PROMPTS, "power", seed=11, **SMALL)
    b = powersample.sample(model, PROMPTS, "power", seed=11, **SMALL)
    assert [r.token_ids for r in a] == [r.token_ids for r in b]
    c = powersample.sample(model, PROMPTS, "power", seed=12, **SMALL)
    assert [r.token_ids for r in a] != [r.token_ids for r in c]
    # a prompt's samples depend on its own seed only: alone, or batched with others, or in other batches
    seeds = [101, 202, 303]
    together = powersample.sample(model.double(), PROMPTS, "power", seeds=seeds, **SMALL)
    alone = powersample.sample(model, PROMPTS[1:2], "power", seeds=seeds[1:2], **SMALL)
    split = powersample.sample(model, PROMPTS, "power", seeds=seeds, batch_size=2, **SMALL)
    model.float()
    assert together[1].token_ids == alone[0].token_ids
    assert [r.token_ids for r in together] == [r.token_ids for r in split]


def test_power_checkpoints_track_each_block(model):
    (r,) = powersample.sample(model, PROMPTS[:1], "power", seed=1, **{**SMALL, "max_new_tokens": 16})
    assert 1 <= len(r.checkpoints) <= 4
    assert [c.block for c in r.checkpoints] == list(range(1, len(r.checkpoints) + 1))
    assert r.checkpoints[-1].token_ids == r.token_ids
    assert abs(r.checkpoints[-1].logp - r.logp) < 1e-6
    assert all(len(c.token_ids) <= 4 * c.block for c in r.checkpoints)


def test_engine_option_picks_a_registered_backend(model):
    def law(prefix):  # a toy model: the next token is likelier the closer it is to the last one
        return [-abs(t - prefix[-1]) / 2.0 for t in range(8)]

    by_name = powersample.sample(law, PROMPTS, "power", engine="toy", eos_token_id=1, seed=4, **SMALL)
    by_object = powersample.sample(ToyEngine(law, eos_token_ids=[1]), PROMPTS, "power", seed=4, **SMALL)
    assert [r.token_ids for r in by_name] == [r.token_ids for r in by_object]
    table = {tuple(p): law(p) for p in PROMPTS}
    (r,) = powersample.sample(table, PROMPTS[:1], "temperature", engine="toy", max_new_tokens=1, seed=0)
    assert abs(r.logp - float(torch.log_softmax(torch.tensor(law(PROMPTS[0])), -1)[r.token_ids[0]])) < 1e-6
    with pytest.raises(PowerSampleError, match="unknown engine 'tyo'. Did you mean 'toy'"):
        powersample.sample(law, PROMPTS, engine="tyo", **SMALL)
    with pytest.raises(PowerSampleError, match="toy engine takes no option.*reuse_cache"):
        powersample.sample(law, PROMPTS, engine="toy", reuse_cache=False, **SMALL)
    with pytest.raises(PowerSampleError, match="toy engine needs a table"):
        powersample.sample("gpt2", PROMPTS, engine="toy", **SMALL)
    assert ENGINES.names() == ["hf", "toy"]


def test_a_registered_method_is_reachable_everywhere(model, monkeypatch, capsys):
    """Adding a method is one registration: sample() runs it, and the CLI lists it."""
    from powersample.cli.main import main
    from powersample.samplers import Method
    from powersample.samplers.baselines import temperature_sample
    from powersample.samplers.params import TemperatureParams

    monkeypatch.setitem(METHODS._entries, "my-method", Method(TemperatureParams, temperature_sample))
    res = powersample.sample(model, PROMPTS, "my-method", seed=0, **SMALL)
    assert len(res) == 3
    monkeypatch.setenv("COLUMNS", "300")  # argparse wraps the method list (and may break at "my-")
    for command in ("eval", "generate", "demo"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "my-method" in capsys.readouterr().out
