"""Measure the trained gym model: does power sampling beat temperature 1 and temperature 1/alpha?

    powersample gym check --n 200        (the command line is in cli/gym.py)

On held-out problems it scores temperature 1, temperature 1/alpha and greedy (the gym's own exact
sampler), pi_alpha by self-normalised importance sampling (temperature-1 draws weighted by
p^(alpha-1): a sampler-free estimate of what pi_alpha puts on correct answers), and powersample's
MH power sampler at a few step budgets. Intervals are 95%, over problems.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import check
from .grader import grade
from .task import GymProblem, eval_problems


@dataclass(frozen=True)
class Score:
    """Accuracy of one method over problems, with a 95% normal interval over problems."""

    method: str
    accuracy: float
    half_width: float  # 95% interval is accuracy ± half_width
    n: int  # problems
    draws: int  # completions per problem behind each problem's score
    seconds: float
    per_problem: tuple[float, ...]  # each problem's score in [0, 1], for paired comparisons

    def line(self) -> str:
        return (f"{self.method:<34} {100 * self.accuracy:6.1f}% ± {100 * self.half_width:4.1f}  "
                f"(n={self.n}, {self.draws}/problem, {self.seconds:.0f}s)")


def _score(method: str, values: Sequence[float], draws: int, seconds: float) -> Score:
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / max(1, n - 1)
    return Score(method, mean, 1.96 * math.sqrt(var / n), n, draws, seconds, tuple(values))


def paired_gap(a: Score, b: Score) -> tuple[float, float]:
    """(mean of a - b over the same problems, 95% half-width of that mean)."""
    check(a.n == b.n, "paired scores need the same problems", "scores")
    d = [x - y for x, y in zip(a.per_problem, b.per_problem, strict=True)]
    mean = sum(d) / len(d)
    var = sum((v - mean) ** 2 for v in d) / max(1, len(d) - 1)
    return mean, 1.96 * math.sqrt(var / len(d))


def _sampled(model, problems: Sequence[GymProblem], method: str, temperature: float, draws: int,
             seed: int, max_new_tokens: int) -> tuple[Score, list]:
    from .sampling import draw

    t0 = time.perf_counter()
    rows = draw(model, problems, temperature, samples=draws, seed=seed, max_new_tokens=max_new_tokens)
    values = [sum(grade(p, d.text, d.finished).correct for d in row) / draws
              for p, row in zip(problems, rows, strict=True)]
    return _score(method, values, draws, time.perf_counter() - t0), rows


def importance_power(problems: Sequence[GymProblem], rows, alpha: float) -> list[float]:
    """Per problem, SNIS estimate of pi_alpha(correct) from temperature-1 draws (weights p^(alpha-1))."""
    out = []
    for p, row in zip(problems, rows, strict=True):
        logw = [(alpha - 1.0) * d.logp for d in row]
        top = max(logw)
        w = [math.exp(x - top) for x in logw]
        ok = [grade(p, d.text, d.finished).correct for d in row]
        out.append(sum(wi for wi, c in zip(w, ok, strict=True) if c) / sum(w))
    return out


def _mh(path: str, problems: Sequence[GymProblem], alpha: float, steps: int, block_size: int, seed: int,
        max_new_tokens: int, temperature: float | None) -> Score:
    import powersample

    t0 = time.perf_counter()
    extra = {} if temperature is None else {"temperature": temperature}
    res = powersample.sample(path, [p.prompt for p in problems], method="power", alpha=alpha,
                             mcmc_steps=steps, block_size=block_size, max_new_tokens=max_new_tokens,
                             seed=seed, device="cpu", batch_size=len(problems), **extra)
    values = [float(grade(problems[r.prompt_index], r.text or "", r.finished).correct) for r in res]
    q = "1/alpha" if temperature is None else f"{temperature:g}"
    return _score(f"power MH (N={steps}, B={block_size}, q temp {q})", values, 1, time.perf_counter() - t0)


def measure(model_dir: str | Path | None = None, n: int = 200, seed: int = 0, alpha: float = 4.0,
            draws: int = 4, is_draws: int = 64, mh_steps: Sequence[int] = (10, 30), block_size: int = 16,
            max_new_tokens: int = 48, echo=None) -> list[Score]:
    """Score every method on `n` held-out problems (eval seed `seed`) with the model in `model_dir`."""
    from transformers import AutoModelForCausalLM

    from . import model_path

    check(n > 0 and draws > 0 and is_draws > 1, "n, draws must be > 0 and is_draws > 1", "n", n)
    path = str(model_dir or model_path())
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    problems = eval_problems(n, seed)
    say = echo or (lambda _m: None)
    say(f"model {path}, {n} held-out problems (seed {seed}), alpha {alpha:g}")
    scores = []
    baselines = (("temperature 1", 1.0, draws), (f"temperature 1/alpha = {1 / alpha:g}", 1 / alpha, draws),
                 ("greedy", 0.0, 1))
    for method, temp, k in baselines:
        s, _ = _sampled(model, problems, method, temp, k, seed, max_new_tokens)
        scores.append(s)
        say(s.line())
    t0 = time.perf_counter()
    _, rows = _sampled(model, problems, "is", 1.0, is_draws, seed + 1, max_new_tokens)
    s = _score(f"pi_alpha by IS ({is_draws} temp-1 draws)", importance_power(problems, rows, alpha), is_draws,
               time.perf_counter() - t0)
    scores.append(s)
    say(s.line())
    for steps in mh_steps:
        for temp in (None, 1.0):
            s = _mh(path, problems, alpha, steps, block_size, seed, max_new_tokens, temp)
            scores.append(s)
            say(s.line())
    return scores


@dataclass(frozen=True)
class LevelScore:
    """One method on one level of a gym: how often a chain is right and how often two chains agree."""

    digits: int
    method: str
    accuracy: Score  # one chain's P(correct), per problem averaged over its chains
    agree: float | None  # P(two chains of a problem state the same answer), over all pairs; None for IS
    majority: float | None  # majority vote over a problem's chains (ties: higher log p); None if not computed

    def line(self) -> str:
        extra = "" if self.agree is None else f"   2 chains agree {100 * self.agree:5.1f}%"
        extra += "" if self.majority is None else f"   maj@{self.accuracy.draws} {100 * self.majority:5.1f}%"
        return f"  {self.digits} digits  {self.accuracy.line()}{extra}"


def _agreement(answers: Sequence[Sequence[int | None]]) -> float:
    """Share of chain pairs, over problems, that state the same answer (no answer never agrees)."""
    same = pairs = 0
    for row in answers:
        for i in range(len(row)):
            for j in range(i + 1, len(row)):
                pairs += 1
                same += row[i] is not None and row[i] == row[j]
    return same / pairs


def _majority(problem: GymProblem, row) -> float:
    """1.0 when the most frequent answer among the draws (ties: the higher log p) is right."""
    votes: dict[int, tuple[int, float]] = {}
    for d in row:
        g = grade(problem, d.text, d.finished)
        if g.answer is not None and d.finished:
            n, lp = votes.get(g.answer, (0, -math.inf))
            votes[g.answer] = (n + 1, max(lp, d.logp))
    return float(bool(votes) and max(votes, key=votes.get) == problem.answer)


def measure_levels(spec="gym-mixed", model_dir: str | Path | None = None, n: int = 50, seed: int = 0,
                   alpha: float = 4.0, draws: int = 8, is_draws: int = 32, mh_steps: Sequence[int] = (10,),
                   mh_chains: int = 2, block_size: int = 16, max_new_tokens: int = 64,
                   echo=None) -> list[LevelScore]:
    """Per level of gym `spec`: temperature 1 and 1/alpha (`draws` chains per problem), pi_alpha by IS, and
    MH power sampling (`mh_chains` chains per problem) on `n` held-out problems per level."""
    from transformers import AutoModelForCausalLM

    from . import model_path
    from .design import get_spec

    spec = get_spec(spec)
    check(n > 0 and draws > 1 and is_draws > 1 and mh_chains > 1, "need n > 0 and draws, is_draws, mh_chains > 1",
          "n", n)
    path = str(model_dir or model_path(spec))
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    say = echo or (lambda _m: None)
    say(f"model {path}, {n} held-out problems per level (seed {seed}), alpha {alpha:g}")
    out: list[LevelScore] = []
    for level in spec.levels:
        problems = spec.level_problems(level, n, seed)
        for method, temp in (("temperature 1", 1.0), (f"temperature 1/alpha = {1 / alpha:g}", 1 / alpha)):
            score, rows = _sampled(model, problems, method, temp, draws, seed, max_new_tokens)
            answers = [[grade(p, d.text, d.finished).answer for d in row] for p, row in zip(problems, rows,
                                                                                            strict=True)]
            maj = sum(_majority(p, row) for p, row in zip(problems, rows, strict=True)) / len(problems)
            out.append(LevelScore(level.digits, method, score, _agreement(answers), maj))
            say(out[-1].line())
        t0 = time.perf_counter()
        _, rows = _sampled(model, problems, "is", 1.0, is_draws, seed + 1, max_new_tokens)
        score = _score(f"pi_alpha by IS ({is_draws} temp-1 draws)", importance_power(problems, rows, alpha),
                       is_draws, time.perf_counter() - t0)
        out.append(LevelScore(level.digits, score.method, score, None, None))
        say(out[-1].line())
        for steps in mh_steps:
            out.append(_mh_level(path, problems, level.digits, alpha, steps, block_size, seed, max_new_tokens,
                                 mh_chains))
            say(out[-1].line())
    return out


def _mh_level(path: str, problems: Sequence[GymProblem], digits: int, alpha: float, steps: int, block_size: int,
              seed: int, max_new_tokens: int, chains: int) -> LevelScore:
    import powersample

    t0 = time.perf_counter()
    res = powersample.sample(path, [p.prompt for p in problems], method="power", alpha=alpha, mcmc_steps=steps,
                             block_size=block_size, max_new_tokens=max_new_tokens, seed=seed, device="cpu",
                             num_samples=chains, batch_size=len(problems))
    rows: list[list] = [[] for _ in problems]
    for r in res:
        rows[r.prompt_index].append(grade(problems[r.prompt_index], r.text or "", r.finished))
    values = [sum(g.correct for g in row) / len(row) for row in rows]
    score = _score(f"power MH (N={steps}, B={block_size}, q temp 1/alpha)", values, chains,
                   time.perf_counter() - t0)
    return LevelScore(digits, score.method, score, _agreement([[g.answer for g in row] for row in rows]), None)
