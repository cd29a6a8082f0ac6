"""The checkpoint features against direct computation (issue 14): after MH power sampling on a small
transformers model, one plain forward pass over a chain's completion gives the checkpoint's log p
(perplexity), mean entropy and mean top-1 of p's next-token distributions, its hidden state H (the state
that drew the last token) and the prompt's Q (the mean state over the prompt), for the final completion
and for every intermediate checkpoint's."""

from __future__ import annotations

import pytest
import torch

import powersample


def _direct(model, prompt: list[int], completion: list[int]) -> dict:
    """What one plain forward pass over prompt + completion says about the completion."""
    with torch.no_grad():
        out = model(input_ids=torch.tensor([prompt + completion]), output_hidden_states=True)
    n, p = len(completion), len(prompt)
    logp = torch.log_softmax(out.logits[0].double(), -1)[p - 1: p - 1 + n]  # the laws that drew each token
    states = out.hidden_states[-1][0].double()
    return {"logp": float(logp[range(n), completion].sum()),
            "mean_entropy": float(-(logp.exp() * logp).sum(-1).mean()),
            "mean_top1": float(logp.exp().max(-1).values.mean()),
            "hidden": states[p - 2 + n].tolist(),  # the position whose output drew the last token
            "prompt_hidden": states[:p].mean(0).tolist()}


def test_checkpoint_features_equal_one_plain_forward_pass(llama):
    prompts = [[0, 5, 9, 4, 4], [0, 7]]  # ragged
    # hidden_dims = d = 32: logged as they are (no projection), to 4 significant digits
    results = powersample.sample(llama, prompts, method="power", alpha=2.0, mcmc_steps=3, block_size=4,
                                 max_new_tokens=12, seed=3, num_samples=3, hidden_dims=32, progress=False)
    checked = 0
    for r in results:
        prompt = prompts[r.prompt_index]
        assert r.checkpoints[-1].token_ids == r.token_ids
        assert r.logp == pytest.approx(_direct(llama, prompt, r.token_ids)["logp"], abs=1e-4)
        for cp in r.checkpoints:  # the last is the final completion; the others intermediate ones
            want = _direct(llama, prompt, cp.token_ids)
            assert cp.logp == pytest.approx(want["logp"], abs=1e-4)
            assert cp.mean_entropy == pytest.approx(want["mean_entropy"], abs=1e-4)
            assert cp.mean_top1 == pytest.approx(want["mean_top1"], abs=1e-4)
            assert cp.hidden == pytest.approx(want["hidden"], rel=1e-3, abs=1e-4)
            assert r.prompt_hidden == pytest.approx(want["prompt_hidden"], rel=1e-3, abs=1e-4)
            checked += 1
    assert checked >= 12 and any(r.acceptance_rate for r in results)  # MH moves happened
