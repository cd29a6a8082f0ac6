"""Eval as a stream (issue 11): power sampling hands each chain's Result over the moment it finishes,
so eval writes its row then; a token budget caps the rows; a batch sized past memory shrinks instead of
crashing. A chain's tokens depend on its seed only, so none of this changes a sample."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest
import torch

import powersample
from powersample.engine.toy import ToyEngine
from powersample.errors import PowerSampleError
from powersample.evaluation import EvalConfig, run_eval
from powersample.evaluation.store import read_rows
from powersample.samplers import scheduler
from powersample.samplers.params import PowerParams
from powersample.samplers.power import suffix_log_ratio
from powersample.samplers.scheduler import kv_bytes_per_token, run_chains, token_budget

PARAMS = PowerParams(alpha=4.0, mcmc_steps=3, max_new_tokens=9, block_size=3, temperature=1.0)


class Digits:
    """A tokenizer for the toy engine: each character becomes one of the digits 0-9 (ids 2-11)."""

    chat_template = None

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [0] + [2 + ord(c) % 10 for c in text]}

    def decode(self, ids, skip_special_tokens=True):
        return "".join(str(i - 2) for i in ids if i >= 2)


def _engine(**kw):
    return ToyEngine.random(12, seed=5, scale=1.5, eos_token_ids=[1], tokenizer=Digits(), **kw)


def _summary(r):
    return (r.prompt_index, r.sample_index, r.token_ids, r.tokens_generated, r.stats, r.logp,
            [(c.block, c.token_ids, c.tokens_generated) for c in r.checkpoints])


def _without_seconds(v):
    if isinstance(v, dict):
        return {k: _without_seconds(x) for k, x in v.items() if k not in ("seconds", "chain_seconds")}
    if isinstance(v, list):
        return [_without_seconds(x) for x in v]
    return v


def _rows(out):
    return _without_seconds(sorted(read_rows(out), key=lambda r: (r["id"], r["sample_index"])))


def test_streamed_eval_writes_the_rows_of_a_batch_by_batch_eval(tmp_path, monkeypatch):
    data = tmp_path / "problems.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"{i} plus {i}", "answer": str(i % 10)}) + "\n"
                            for i in range(7)))
    kw = dict(task="jsonl", model="toy", data=str(data), task_options={"grader": "number"}, samples_per_problem=2,
              batch_size=2, grade_workers=0, sampler=dict(alpha=4.0, mcmc_steps=3, max_new_tokens=9, block_size=3))
    calls = []
    sample = powersample.sample

    def recording(*args, **options):
        calls.append(options)
        return sample(*args, **options)

    widths = []

    class Recording(ToyEngine):
        def _extend(self, seqs, *args):
            widths.append(len(seqs))
            return super()._extend(seqs, *args)

    monkeypatch.setattr(powersample, "sample", recording)  # what run_eval calls when no sample_fn is given
    engine = Recording(_engine().next_logp, eos_token_ids=[1], tokenizer=Digits())
    streamed = run_eval(EvalConfig(out=str(tmp_path / "streamed"), **kw), model=engine, progress=False)
    # a stand-in sample_fn takes the batch path: one call per batch of 2 problems
    batched = run_eval(EvalConfig(out=str(tmp_path / "batched"), **kw), model=_engine(), progress=False,
                       sample_fn=lambda *a, **o: sample(*a, **o))
    assert len(calls) == 1 and len(calls[0]["seeds"]) == 7  # every problem queued in one call...
    assert calls[0]["batch_size"] == 2 and callable(calls[0]["on_result"])  # ...on 2 x 2 rows, streamed
    assert max(widths) == 4
    assert streamed.rows_total == batched.rows_total == 14
    assert _rows(tmp_path / "streamed") == _rows(tmp_path / "batched")
    assert len({r["text"] for r in read_rows(tmp_path / "streamed")}) > 7  # not vacuous: samples differ


def test_a_result_is_handed_over_before_the_slowest_chain_ends():
    """Prompt 0 never ends with EOS, so its chain runs every block; the others end at their first EOS.
    Each short chain's Result arrives while chain 0 is still running, though chain 0 is first in line."""
    def law(prefix):
        logits = torch.zeros(6)
        logits[1] = -float("inf") if prefix[1] == 2 else 3.0  # EOS: impossible after prompt [0, 2], likely else
        return logits

    eng = ToyEngine(law, eos_token_ids=[1])
    passes = []
    step = eng._next_logits
    eng._next_logits = lambda *a: passes.append(1) or step(*a)
    arrived = []  # (prompt index, forward passes so far) at each hand-over
    params = PowerParams(alpha=4.0, mcmc_steps=4, max_new_tokens=12, block_size=3, temperature=1.0)
    results = run_chains(eng, [[0, 2], [0, 3], [0, 4], [0, 5]], [1, 2, 3, 4], params, suffix_log_ratio,
                         num_samples=2, on_result=lambda r: arrived.append((r.prompt_index, len(passes))))
    assert sorted(p for p, _ in arrived) == [0, 0, 1, 1, 2, 2, 3, 3]  # each chain handed over once
    assert {p for p, _ in arrived[-2:]} == {0}  # the long chains last
    assert max(n for p, n in arrived if p != 0) < min(n for p, n in arrived if p == 0)
    assert len(results[0].checkpoints) == 4 and all(len(r.checkpoints) < 4 for r in results[2:])


def test_max_batch_tokens_caps_the_rows_and_keeps_the_draws():
    prompts, seeds = [[0, 2], [0, 3, 4], [0], [0, 5]], [11, 12, 13, 14]
    widths = []

    class Recording(ToyEngine):
        def _extend(self, seqs, *args):
            widths.append(len(seqs))
            return super()._extend(seqs, *args)

    free = run_chains(_engine(), prompts, seeds, PARAMS, suffix_log_ratio, num_samples=3)
    eng = Recording(_engine().next_logp, eos_token_ids=[1])
    # the longest prompt (3) + T (9) = 12 tokens a row: 40 tokens hold 3 rows
    capped = run_chains(eng, prompts, seeds, PARAMS, suffix_log_ratio, num_samples=3, max_batch_tokens=40)
    assert max(widths) == 3
    assert [_summary(r) for r in capped] == [_summary(r) for r in free]
    with pytest.raises(PowerSampleError, match="max_batch_tokens=11 does not hold one row of 12 tokens"):
        run_chains(eng, prompts, seeds, PARAMS, suffix_log_ratio, max_batch_tokens=11)


def test_a_batch_past_memory_shrinks_and_gives_the_same_samples(caplog):
    """An engine that runs out of memory above 3 rows (after a few calls, so that some chains have
    finished by then): the run halves its rows until it fits, says so, hands each chain over once, and
    every sample is the one a run with memory to spare draws."""
    prompts, seeds = [[0, 2 + i % 8] for i in range(8)], list(range(8))

    handed, at_first_oom = [], []

    class Small(ToyEngine):
        calls = 0

        def _extend(self, seqs, *args):
            self.calls += 1
            if len(seqs) > 3 and self.calls > 6:
                at_first_oom.append(len(handed))
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return super()._extend(seqs, *args)

    reference = run_chains(_engine(), prompts, seeds, PARAMS, suffix_log_ratio, num_samples=2, rows=16)
    with caplog.at_level(logging.WARNING, logger=scheduler.__name__):
        got = run_chains(Small(_engine().next_logp, eos_token_ids=[1]), prompts, seeds, PARAMS, suffix_log_ratio,
                         num_samples=2, rows=16, on_result=handed.append)
    said = [r.getMessage() for r in caplog.records]
    assert any("on 8 rows" in m for m in said) and any("on 2 rows" in m for m in said), said
    assert 0 < at_first_oom[0] < 16  # some chains had finished: they are kept, not drawn again
    assert sorted((r.prompt_index, r.sample_index) for r in handed) == [(i, j) for i in range(8) for j in range(2)]
    assert [_summary(r) for r in got] == [_summary(r) for r in reference]
    with pytest.raises(RuntimeError, match="boom"):  # any other error is not a memory problem: it propagates

        class Broken(ToyEngine):
            def _extend(self, seqs, *args):
                raise RuntimeError("boom")

        run_chains(Broken(_engine().next_logp, eos_token_ids=[1]), prompts, seeds, PARAMS, suffix_log_ratio)


def test_the_cuda_token_budget_from_free_memory_and_kv_bytes(monkeypatch):
    # Qwen2.5-1.5B's shape: 28 layers, 2 KV heads of 128 dims, bf16: 2 x 28 x 2 x 128 x 2 = 28,672 bytes a token
    qwen = SimpleNamespace(num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2, hidden_size=1536,
                           head_dim=128)
    assert kv_bytes_per_token(qwen, 2) == 28_672
    # GPT-2 small's shape (no KV-head or head-dim fields: 12 heads of 768/12 = 64), fp32: 2 x 12 x 12 x 64 x 4
    gpt2 = SimpleNamespace(num_hidden_layers=12, num_attention_heads=12, hidden_size=768)
    assert kv_bytes_per_token(gpt2, 4) == 73_728
    # half of 80 GiB of free memory: 42,949,672,960 bytes / 28,672 = 1,497,965.7 tokens
    assert token_budget(80 * 2**30, 28_672) == 1_497_965
    # from an engine: the model's config and dtype (bf16), 1 GiB free: 2**29 / 28,672 = 18,724.6
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2**30, 2**36))
    model = SimpleNamespace(config=qwen, dtype=torch.bfloat16)
    assert scheduler.cuda_token_budget(SimpleNamespace(model=model, device=torch.device("cuda"))) == 18_724
    assert scheduler.cuda_token_budget(_engine()) is None  # no transformers config: unlimited
