"""The engine's incremental log-probs equal a clean full forward pass, for ragged batches, with and
without KV-cache reuse, through MH cuts (settle accept/reject), row selection and forced tokens."""

from __future__ import annotations

import pytest
import torch
from conftest import full_logp, tiny_llama

from powersample.engine.base import Proposal
from powersample.engine.hf import HFEngine

PROMPTS = [[0, 5, 6, 7, 8, 9, 10], [0, 3], [0], [0, 11, 12, 13, 2]]


def _assert_rows_match(model, seqs, ext_logp_by_row):
    for r, (row_logps) in enumerate(ext_logp_by_row):
        prompt = seqs.tokens[r, : int(seqs.prompt_lengths[r])].tolist()
        comp = seqs.completion(r)
        ref = full_logp(model, prompt, comp)
        assert len(ref) == len(row_logps)
        assert max((abs(a - b) for a, b in zip(ref, row_logps, strict=True)), default=0.0) < 1e-4


@pytest.mark.parametrize("reuse", [True, False])
def test_extend_logp_matches_full_forward(llama, reuse):
    eng = HFEngine(llama, eos_token_ids=[1], reuse_cache=reuse)
    seqs = eng.start(PROMPTS, seeds=[1, 2, 3, 4])
    logps = [[] for _ in PROMPTS]
    for max_new in ([5, 3, 7, 1], [4, 4, 4, 4]):  # two calls: the second continues from the cache
        ext = eng.extend(seqs, torch.tensor(max_new), Proposal(temperature=0.7))
        for r in range(len(PROMPTS)):
            logps[r] += ext.logp[r, : int(ext.lengths[r])].tolist()
        assert bool((ext.lengths <= torch.tensor(max_new)).all())
    _assert_rows_match(llama, seqs, logps)


@pytest.mark.parametrize("reuse", [True, False])
def test_cut_settle_and_select_keep_cache_exact(reuse):
    model = tiny_llama(seed=3, scale=0.5)  # flat distributions: EOS is rare, rows stay long
    eng = HFEngine(model, eos_token_ids=[1], reuse_cache=reuse)
    seqs = eng.start(PROMPTS, seeds=[5, 6, 7, 8])
    eng.extend(seqs, torch.tensor(12), Proposal(temperature=1.0))
    g = torch.Generator().manual_seed(0)
    for step in range(6):
        comp_len = seqs.lengths - seqs.prompt_lengths
        t = (torch.rand(len(seqs), generator=g) * comp_len).long()
        keep = seqs.prompt_lengths + t
        old = [seqs.completion(r) for r in range(len(seqs))]
        ext = eng.extend(seqs, seqs.prompt_lengths + 12 - keep, Proposal(temperature=0.5), keep=keep)
        new = [seqs.completion(r) for r in range(len(seqs))]
        for r in range(len(seqs)):  # the proposal kept exactly the first t tokens
            assert new[r][: int(t[r])] == old[r][: int(t[r])]
            assert new[r][int(t[r]):] == ext.row(r)
        accept = torch.rand(len(seqs), generator=g) < 0.5
        eng.settle(seqs, accept)
        for r in range(len(seqs)):
            assert seqs.completion(r) == (new[r] if accept[r] else old[r])
        if step == 2:  # reorder and duplicate rows mid-run, as SMC resampling does
            seqs = eng.select(seqs, torch.tensor([3, 0, 0, 2]))
    # after all that, one more extension must still score exactly against a clean forward
    before = [seqs.completion(r) for r in range(len(seqs))]
    ext = eng.extend(seqs, torch.tensor(6), Proposal(temperature=1.0))
    for r in range(len(seqs)):
        prompt = seqs.tokens[r, : int(seqs.prompt_lengths[r])].tolist()
        ref = full_logp(model, prompt, seqs.completion(r))[len(before[r]):]
        got = ext.logp[r, : int(ext.lengths[r])].tolist()
        assert len(ref) == len(got) and max((abs(a - b) for a, b in zip(ref, got, strict=True)), default=0) < 1e-4


def test_logq_is_the_tempered_truncated_distribution(llama):
    eng = HFEngine(llama, eos_token_ids=[1])
    prop = Proposal(temperature=0.5, top_k=5)
    seqs = eng.start([[0, 4]], seeds=[0])
    ext = eng.extend(seqs, torch.tensor(1), prop)
    with torch.no_grad():
        logits = llama(input_ids=torch.tensor([[0, 4]])).logits[0, -1].double() / 0.5
    top = logits.topk(5)
    logq = torch.log_softmax(top.values, -1)
    tok = int(ext.tokens[0, 0])
    assert tok in top.indices.tolist()
    assert abs(float(logq[top.indices.tolist().index(tok)]) - float(ext.logq[0, 0])) < 1e-5


def test_forced_first_token_and_topk(llama):
    eng = HFEngine(llama, eos_token_ids=[1])
    seqs = eng.start([[0, 4, 5], [0]], seeds=[0, 1])
    ids, vals = eng.topk(seqs, 3)
    ref0 = torch.log_softmax(llama(input_ids=torch.tensor([[0, 4, 5]])).logits[0, -1].double(), -1)
    assert ids[0].tolist() == ref0.topk(3).indices.tolist()
    assert torch.allclose(vals[0].double(), ref0.topk(3).values, atol=1e-5)
    ext = eng.extend(seqs, torch.tensor(3), Proposal(), first=ids[:, 2])
    assert ext.tokens[:, 0].tolist() == ids[:, 2].tolist()
    assert abs(float(ext.logp[0, 0]) - float(vals[0, 2])) < 1e-5


def test_same_seed_same_tokens_regardless_of_batch(llama):
    eng = HFEngine(llama.double(), eos_token_ids=[1])
    alone = eng.start([[0, 7, 8]], seeds=[42])
    a = eng.extend(alone, torch.tensor(10), Proposal()).row(0)
    crowd = eng.start([[0, 3], [0, 7, 8], [0, 9, 9, 9, 9]], seeds=[1, 42, 2])
    b = eng.extend(crowd, torch.tensor(10), Proposal()).row(1)
    llama.float()
    assert a == b
