"""A stub sampler for the evaluation tests: deterministic Results that depend only on (seed, sample index),
and the small runs built with it (test_runner, test_store, test_report, test_validation)."""

from __future__ import annotations

import random

from powersample.evaluation import EvalConfig, run_eval
from powersample.evaluation.store import read_rows
from powersample.samplers.result import Checkpoint, Result


class CharModel:
    """A stand-in model whose tokens are characters: what the runner decodes checkpoints with."""

    def decode(self, ids):
        return "".join(map(chr, ids))


def stub_answer(gold: str, seed: int, j: int) -> tuple[str, str]:
    """(completion text, its final answer): right with probability 0.6, from (seed, j) alone."""
    rng = random.Random(f"{seed}/{j}")
    answer = gold if rng.random() < 0.6 else str(rng.randint(1000, 9999))
    return f"Working {rng.random():.6f} it out.\nSo \\boxed{{{answer}}}", answer


class StubSampler:
    """Records each call; `fail_on` makes the n-th call raise (an interrupt, a crash)."""

    def __init__(self, gold: dict[str, str], fail_on: int | None = None, exc: type = KeyboardInterrupt):
        self.gold, self.calls, self.fail_on, self.exc = gold, [], fail_on, exc

    def __call__(self, model, prompts, *, method, seeds, num_samples, **options):
        self.calls.append({"prompts": list(prompts), "seeds": list(seeds), "num_samples": num_samples,
                           "method": method, **options})
        if self.fail_on is not None and len(self.calls) == self.fail_on:
            raise self.exc()
        out = []
        for i, (prompt, seed) in enumerate(zip(prompts, seeds, strict=True)):
            for j in range(num_samples):
                text, _ = stub_answer(self.gold[prompt], seed, j)
                ids = [ord(c) for c in text]
                cps = [Checkpoint(b, ids[: len(ids) * b // 3], -1.0 * b, 7 * b, 0.5, 1.2, 0.4, 0.01 * b)
                       for b in (1, 2, 3)]
                out.append(Result(i, j, ids, text, -2.5, True, 21, 0.05, method, 0.5, {"proposals": 3}, cps))
        return out


def config(problems_file, out, alpha=None, **kw) -> EvalConfig:
    path, _ = problems_file
    base = dict(task="jsonl", model="stub", out=str(out), data=str(path), task_options={"grader": "exact"},
                samples_per_problem=3, batch_size=4, grade_workers=0, sampler={} if alpha is None else {"alpha": alpha})
    return EvalConfig(**{**base, **kw})


def run(cfg, gold, **kw):
    sampler = StubSampler(gold, **kw)
    summary = run_eval(cfg, sample_fn=sampler, model=CharModel(), progress=False)
    return sampler, summary


def sorted_rows(out):
    return sorted(read_rows(out), key=lambda r: (r["id"], r["sample_index"]))
