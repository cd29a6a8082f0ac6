"""Users' output stays free of library warnings that are ours to fix (issue 9 item 16): the engine
passes its KV cache under the name the installed transformers expects, so no deprecation warning
(a FutureWarning, or transformers' own logged one) is raised by any engine call or sampler."""

from __future__ import annotations

import logging
import warnings

import pytest

import powersample
from powersample.engine.base import Proposal
from powersample.engine.hf import HFEngine


class _Recorder(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def no_library_warnings():
    """Turn every Python warning into an error and collect what transformers logs at WARNING or above."""

    logger = logging.getLogger("transformers")
    recorder = _Recorder()
    logger.addHandler(recorder)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            yield recorder
    finally:
        logger.removeHandler(recorder)
    assert recorder.messages == []


def test_engine_calls_raise_no_deprecation_warning(llama, no_library_warnings):
    import torch

    engine = HFEngine(llama)
    seqs = engine.start([[0, 5, 6, 7], [0, 8]], seeds=[1, 2])
    engine.extend(seqs, torch.tensor(4), Proposal(temperature=1.0))
    engine.extend(seqs, torch.tensor(3), Proposal(temperature=0.5), keep=seqs.prompt_lengths + 1)
    engine.settle(seqs, torch.tensor([True, False]))
    engine.topk(engine.select(seqs, torch.tensor([0, 0, 1])), 3)


@pytest.mark.parametrize("method, options", [("power", dict(mcmc_steps=2, block_size=3)),
                                             ("smc", dict(particles=4)),
                                             ("scalable", dict(top_k_candidates=2, rollouts=2, horizon=2))])
def test_samplers_raise_no_deprecation_warning(llama, no_library_warnings, method, options):
    powersample.sample(llama, [[0, 5, 6], [0, 9]], method, max_new_tokens=6, seed=0, **options)
