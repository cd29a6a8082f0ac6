"""log p and log q of cut-and-extend proposals (`extend` with keep=), checked against one clean forward
pass over the whole sequence: the numbers MH's acceptance ratio is built from, for truncated proposals too."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_llama

from powersample.engine.base import Proposal
from powersample.engine.hf import HFEngine

PROMPTS = [[0, 2, 5], [0, 7]]


def reference_logq(logits: torch.Tensor, proposal: Proposal) -> torch.Tensor:
    """log q over the vocabulary at one position, written out from the definition of the proposal: the base
    model at `temperature`, keep the top_k tokens, then the smallest set whose mass reaches top_p."""
    q = torch.softmax(logits.double() / proposal.temperature, -1)
    keep = torch.ones_like(q, dtype=torch.bool)
    if proposal.top_k:
        keep[q.argsort(descending=True)[proposal.top_k:]] = False
    q = torch.where(keep, q, 0.0)
    q = q / q.sum()
    if proposal.top_p < 1:
        mass = 0.0
        for v in q.argsort(descending=True).tolist():
            if mass >= proposal.top_p:
                q[v] = 0.0
            mass += float(q[v]) if q[v] > 0 else 0.0
        q = q / q.sum()
    return q.log()


@pytest.mark.parametrize("proposal", [Proposal(0.5), Proposal(0.7, top_k=4), Proposal(1.0, top_p=0.8),
                                      Proposal(0.6, top_k=6, top_p=0.9)], ids=str)
def test_cut_and_extend_reports_the_true_log_p_and_log_q(proposal):
    torch.set_num_threads(2)
    model = tiny_llama(vocab=16, hidden=16, layers=2, heads=2, kv_heads=1, seed=3, scale=3.0, eos_bias=-4.0)
    engine = HFEngine(model, eos_token_ids=[1])
    seqs = engine.start(PROMPTS, [4, 9])
    engine.extend(seqs, torch.tensor([6, 6]), proposal)
    for cut in (0, 2, 5):  # redraw each row's suffix from position `cut` of its completion
        old = [seqs.completion(r) for r in range(2)]
        keep = seqs.prompt_lengths + torch.tensor([cut, min(cut + 1, len(old[1]))])
        ext = engine.extend(seqs, torch.tensor([4, 4]), proposal, keep=keep)
        for r, prompt in enumerate(PROMPTS):
            head = old[r][: int(keep[r]) - len(prompt)]
            new = ext.row(r)
            assert len(new) == int(ext.lengths[r]) > 0
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([prompt + head + new])).logits[0]
            for j, tok in enumerate(new):
                at = logits[len(prompt) + len(head) + j - 1]
                logq = reference_logq(at, proposal)
                assert torch.isfinite(logq[tok])  # the token is inside the truncated proposal's support
                assert abs(float(ext.logq[r, j]) - float(logq[tok])) < 1e-4
                assert abs(float(ext.logp[r, j]) - float(torch.log_softmax(at.double(), -1)[tok])) < 1e-4
        engine.settle(seqs, torch.tensor([cut % 2 == 0, True]))  # accept some, refuse others
