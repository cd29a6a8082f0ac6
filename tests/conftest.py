"""Shared fixtures: tiny random transformers models built in code (no downloads), a small JSONL task file."""

from __future__ import annotations

import json
import os

# OpenMP threads that spin while waiting make torch many times slower when processes share 2 cores
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402


def tiny_llama(vocab: int = 32, hidden: int = 32, layers: int = 2, heads: int = 4, kv_heads: int = 2,
               eos: int = 1, seed: int = 0, scale: float = 1.0, dtype=torch.float32, context: int = 256,
               eos_bias: float = 0.0):
    """A random Llama; `scale` multiplies the output head so next-token distributions are peakier;
    `eos_bias` is added to EOS's logit (through a biased output head) to make EOS rarer or likelier."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=context,
                      bos_token_id=0, eos_token_id=eos, pad_token_id=None, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).to(dtype)
    with torch.no_grad():
        model.lm_head.weight.mul_(scale)
        if eos_bias:
            head = torch.nn.Linear(hidden, vocab, bias=True)
            head.weight.copy_(model.lm_head.weight)
            head.bias.zero_()
            head.bias[eos] = eos_bias
            model.lm_head = head
    model.generation_config.eos_token_id = eos
    return model.eval()


def full_logp(model, prompt: list[int], completion: list[int]) -> list[float]:
    """log p of each completion token by one clean forward pass over prompt + completion."""
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    n = len(prompt)
    return [float(logp[n - 1 + j, t]) for j, t in enumerate(completion)]


# -- MH chains on a toy model (tests/test_scheduler.py, tests/test_dynamic_live.py) -------------------------

CHAIN_PROMPTS = [[0, 2], [0, 3, 4], [0], [0, 5]]  # ragged, one a lone BOS
CHAIN_SEEDS = [11, 12, 13, 14]


def chain_engine():
    """A random 6-token toy model whose EOS (1) is likely enough that chains end at different blocks."""
    from powersample.engine.toy import ToyEngine

    return ToyEngine.random(6, seed=3, scale=2.0, eos_token_ids=[1])


@pytest.fixture(scope="session")
def llama():
    return tiny_llama()


@pytest.fixture
def problems_file(tmp_path):
    """12 problems for the jsonl task (exact grader: fast, no math-verify)."""
    path = tmp_path / "problems.jsonl"
    rows = [{"id": f"q{i}", "prompt": f"What is {i} * 7?", "answer": str(7 * i)} for i in range(12)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, {r["prompt"]: r["answer"] for r in rows}


# -- the generate CLI in-process (tests/test_cli_generate.py, tests/test_validation.py) -----------------------

def write_prompts(path, n):
    """A JSONL of n token-id prompts (ids p0, p1, ...)."""
    import json

    path.write_text("".join(json.dumps({"id": f"p{i}", "prompt_ids": [0, 2 + i % 10]}) + "\n" for i in range(n)))
    return path


def run_generate(model_dir, inp, out, *extra):
    """`powersample generate` in-process with small MH settings; returns the exit code."""
    from powersample.cli.main import main

    return main(["generate", "--model", str(model_dir), "--input", str(inp), "--output", str(out),
                 "--max-new-tokens", "8", "--block-size", "4", "--mcmc-steps", "2", "--batch-size", "2", *extra])


def one_line_error(capsys, *expected):
    """stderr is one line, no traceback, containing each of `expected`; returns it."""
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for text in expected:
        assert text in err, err
    return err


def interrupt_after_saves(monkeypatch, n: int) -> None:
    """Make eval's n-th chain-state save raise KeyboardInterrupt once it is written (a Ctrl-C mid-problem);
    `monkeypatch.undo()` or setting ChainFiles.save back restores it."""
    from powersample.evaluation.runner import ChainFiles

    save, saves = ChainFiles.save, []

    def interrupted(self, chain, state):
        save(self, chain, state)
        saves.append(chain)
        if len(saves) == n:
            raise KeyboardInterrupt

    monkeypatch.setattr(ChainFiles, "save", interrupted)
