"""The proposal q as defined (Proposal.log_probs), by hand and on the transformers backend. The rest of
the engine contract (log p against a full forward pass, cut/settle/select, seeds, EOS, context) is
checked for every backend in test_conformance.py."""

from __future__ import annotations

import math

import torch

from powersample.engine.base import Proposal
from powersample.engine.hf import HFEngine


def test_proposal_log_probs_by_hand():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    inf = -math.inf
    cases = [
        (Proposal(), [0.5, 0.3, 0.2]),
        (Proposal(top_k=2), [0.5 / 0.8, 0.3 / 0.8, 0.0]),
        (Proposal(top_p=0.5), [1.0, 0.0, 0.0]),  # the first token alone reaches 0.5
        (Proposal(top_p=0.6), [0.5 / 0.8, 0.3 / 0.8, 0.0]),  # the token that crosses top_p is kept
        (Proposal(temperature=0.5), [0.25 / 0.38, 0.09 / 0.38, 0.04 / 0.38]),  # p^2, renormalised
        (Proposal(temperature=0.0), [1.0, 0.0, 0.0]),
    ]
    for proposal, q in cases:
        got = proposal.log_probs(logits)[0]
        want = torch.tensor([math.log(x) if x > 0 else inf for x in q])
        assert torch.equal(got.isinf(), want.isinf()), proposal
        assert torch.allclose(got[~want.isinf()], want[~want.isinf()].float(), atol=1e-6), proposal


def test_draw_reports_log_q_of_forced_and_greedy_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]]))
    seeds, draws = torch.tensor([0, 1]), torch.tensor([0, 0])
    tok, logq = Proposal(temperature=0.0).draw(logits, seeds, draws, forced=torch.tensor([1, -1]))
    assert tok.tolist() == [1, 2] and logq.tolist() == [-math.inf, 0.0]
    tok, logq = Proposal(top_k=1).draw(logits, seeds, draws)
    assert tok.tolist() == [0, 2] and logq.tolist() == [0.0, 0.0]


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
