"""The reasoning gym: task, grader, corpus structure, exact design numbers, training, shipped model."""

from __future__ import annotations

import json
import math
import random
from collections import Counter

import pytest

from powersample import PowerSampleError, gym
from powersample.gym.exact import EOS, tempered_value
from powersample.gym.task import GymProblem, train_problem

P = GymProblem(357, 468)  # 825: carries out of the units and the tens


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """A 0.5M-parameter model gains nothing from a second thread, and on a shared 2-core machine two
    OpenMP threads spin-waiting on each other made the model tests 20x slower."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- task ----------------------------------------------------------------------------------------

def test_eval_problems_are_reproducible_distinct_and_held_out():
    a, b = gym.eval_problems(300, seed=3), gym.eval_problems(300, seed=3)
    assert a == b
    assert len({p.id for p in a}) == 300
    assert all(p.heldout and p.prompt == f"Q:{p.a}+{p.b}\n" and p.answer == p.a + p.b for p in a)
    assert gym.eval_problems(50, seed=4) != gym.eval_problems(50, seed=3)
    rng = random.Random(0)
    assert not any(train_problem(rng).heldout for _ in range(2000))  # training never sees them


def test_bad_problems_raise_named_errors():
    with pytest.raises(PowerSampleError, match="operand a"):
        GymProblem(99, 468)
    with pytest.raises(PowerSampleError, match="n must be"):
        gym.eval_problems(0)
    with pytest.raises(PowerSampleError, match="not a gym prompt"):
        gym.parse_prompt("357+468=")
    assert gym.parse_prompt(P.prompt) == P


# -- grader --------------------------------------------------------------------------------------

@pytest.mark.parametrize("completion", [
    gym.worked_solution(P),  # "7+8+0=15;5+6+1=12;3+4+1=08;A:825"
    "A:825",  # a lucky shortcut
    "A:825\n",  # trailing whitespace is harmless
    "whatever came before;A:825",  # only the final answer is graded
])
def test_grader_accepts_right_answers(completion):
    g = gym.grade(P, completion)
    assert g.correct and g.answer == 825 and g.reason == "correct" and bool(g)


@pytest.mark.parametrize("completion, answer, reason", [
    (gym.worked_solution(P, (0, 1, 0)), 835, "wrong answer"),  # a step error carried through
    ("A:731", 731, "wrong answer"),
    ("A:82", 82, "wrong answer"),  # truncated number
    ("", None, "no answer"),
    ("7+8+0=15;5+6+1=12;3+4", None, "no answer"),  # truncated chain
    ("Q:Q:;;++==", None, "no answer"),  # garbage
    ("A:", None, "malformed"),
    ("A:825;", None, "malformed"),  # junk after the answer
    ("A:825A", None, "malformed"),
    ("A:8 25", None, "malformed"),
    ("A:0825", None, "malformed"),  # leading zero: not the canonical number
    ("A:-825", None, "malformed"),
    ("A:825;A:825", None, "more than one"),
    ("A:731;A:825", None, "more than one"),
])
def test_grader_rejects_wrong_and_malformed(completion, answer, reason):
    g = gym.grade(P, completion)
    assert not g.correct and not bool(g)
    assert g.answer == answer
    assert reason in g.reason


def test_grader_rejects_unfinished_and_takes_prompts():
    assert gym.grade(P, "A:825", finished=True).correct
    g = gym.grade(P, "A:825", finished=False)  # cut at max_new_tokens: could have gone on to "A:8250"
    assert not g.correct and "truncated" in g.reason
    assert gym.grade(P.prompt, "A:825").correct
    assert not gym.grade("Q:100+100\n", "A:825").correct
    with pytest.raises(PowerSampleError):
        gym.grade("not a prompt", "A:825")
    with pytest.raises(PowerSampleError):
        gym.grade(P, None)


# -- corpus: the designed structure --------------------------------------------------------------

def test_worked_solution_is_column_addition_and_errors_propagate():
    assert gym.worked_solution(P) == "7+8+0=15;5+6+1=12;3+4+1=08;A:825"
    assert gym.worked_solution(GymProblem(957, 468)).endswith("9+4+1=14;A:1425")
    assert gym.worked_solution(P, (-1, 0, 0)) == "7+8+0=14;5+6+1=12;3+4+1=08;A:824"
    flawed = gym.worked_solution(GymProblem(357, 463), (-1, 0, 0))  # 7+3 written as 09: the carry is lost
    assert flawed == "7+3+0=09;5+6+0=11;3+4+1=08;A:819"
    with pytest.raises(PowerSampleError):
        gym.worked_solution(GymProblem(100, 100), (-1, 0, 0))  # 0+0 cannot be written as -1


def test_completion_distribution_is_a_law_matching_the_sampler():
    dist = gym.completion_distribution(P)
    assert abs(sum(dist.values()) - 1) < 1e-12
    rng = random.Random(1)
    n = 6000
    counts = Counter(gym.sample_completion(P, gym.GymDesign(), rng).completion for _ in range(n))
    assert set(counts) <= set(dist)
    for text in sorted(dist, key=dist.get, reverse=True)[:8]:  # the likeliest texts, within 4 sigma
        p = dist[text]
        assert abs(counts[text] / n - p) < 4 * (p * (1 - p) / n) ** 0.5 + 1e-3, text


def test_corpus_has_the_designed_structure():
    docs = gym.corpus(5000, seed=7)
    styles = Counter(d.style for d in docs)
    first = Counter(d.completion[0] for d in docs)
    shortcut_first = first["A"] / len(docs)
    worked_first = sum(v for k, v in first.items() if k.isdigit()) / len(docs)
    assert shortcut_first > worked_first + 0.1  # the shortcut's first token is individually likelier
    assert styles["shortcut"] == first["A"]
    assert 0.1 < styles["flawed"] / (styles["worked"] + styles["flawed"]) < 0.35  # occasional step errors
    for d in docs:  # worked texts are right, flawed ones wrong, all well-formed
        g = gym.grade(d.problem, d.completion)
        assert g.answer is not None
        assert g.correct == (d.style == "worked") or d.style == "shortcut"
        assert not d.problem.heldout
    # per problem, the shortcut spreads over many continuations, none as likely as the worked answer
    rng = random.Random(2)
    draws = Counter(gym.sample_completion(P, gym.GymDesign(), rng).completion for _ in range(3000))
    shortcuts = {t: c for t, c in draws.items() if t.startswith("A:")}
    assert len(shortcuts) > 60
    assert max(shortcuts.values()) * 10 < draws[gym.worked_solution(P)]


# -- exact numbers under the data distribution ---------------------------------------------------

def test_tempered_value_on_a_hand_computed_trie():
    # "a" then EOS with p=.6 (wrong); "b","c" or "b","d" with .2 each (right)
    leaves = [(("a", EOS), 0.6, False), (("b", "c", EOS), 0.2, True), (("b", "d", EOS), 0.2, True)]
    right = lambda leaf: float(leaf[2])  # noqa: E731
    assert tempered_value(leaves, right, 1.0) == pytest.approx(0.4)
    assert tempered_value(leaves, right, 0.5) == pytest.approx(0.16 / (0.36 + 0.16))  # (.4)^2 vs (.6)^2
    assert tempered_value(leaves, right, 0.0) == 0.0  # greedy takes "a"


def test_design_numbers_show_power_beats_both_temperatures():
    d = gym.design_numbers(gym.eval_problems(40, seed=5), alpha=4.0)
    assert d.shortcut_first > 0.5 > d.top_shortcut_p
    assert d.shortcut_first_low_temperature > d.shortcut_first  # low temperature amplifies the shortcut
    assert d.low_temperature < d.temperature_one
    assert d.power > d.temperature_one + 0.2 and d.power > d.low_temperature + 0.2
    assert d.temperature_one == pytest.approx(d.correct_worked_p + d.shortcut_first * d.shortcut_correct)
    one = gym.design_numbers(gym.eval_problems(40, seed=5), alpha=1.0)  # alpha = 1 is plain sampling
    assert one.power == pytest.approx(one.temperature_one) == pytest.approx(one.low_temperature)


def test_design_numbers_fail_when_the_shortcut_is_one_likely_string():
    # A single rounded guess ("A:700") is one sequence of p=.6: then pi_alpha is fooled as well.
    d = gym.design_numbers(gym.eval_problems(40, seed=5), gym.GymDesign(guess_digits=0), alpha=4.0)
    assert d.power < d.temperature_one
    with pytest.raises(PowerSampleError, match="shortcut_rate"):
        gym.GymDesign(shortcut_rate=1.5)
    with pytest.raises(PowerSampleError, match="alpha"):
        gym.design_numbers(gym.eval_problems(2), alpha=0)


# -- training and the shipped model --------------------------------------------------------------

def test_tiny_training_runs_end_to_end(tmp_path):
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from powersample.gym.train import TINY, TrainConfig, train

    threads = torch.get_num_threads()
    cfg = TrainConfig(**{**TINY, "threads": threads + 1})
    out = train(tmp_path / "m", steps=3, seed=1, config=cfg, echo=None)
    assert torch.get_num_threads() == threads  # training's thread count does not leak out
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.eos_token_id == tok.eos_token_id == model.generation_config.eos_token_id
    assert model.config.vocab_size == len(tok)
    log = json.loads((out / "train_log.json").read_text())
    assert log["config"]["steps"] == 3 and log["history"][-1]["step"] == 2
    with pytest.raises(PowerSampleError, match="hidden"):
        TrainConfig(hidden=30, heads=4)


@pytest.fixture(scope="module")
def shipped():
    pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = gym.model_path()
    return path, AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def test_shipped_model_loads_offline_with_a_real_tokenizer(shipped, monkeypatch):
    path, model, tok = shipped
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(path)
    AutoTokenizer.from_pretrained(path)
    assert (path / "model.safetensors").stat().st_size <= 10 * 2**20
    assert sum(p.numel() for p in model.parameters()) < 3_000_000
    assert type(model).__name__ == "LlamaForCausalLM"
    ids = tok(P.prompt)["input_ids"]
    assert ids[0] == tok.bos_token_id and tok.eos_token_id not in ids and len(ids) == len(P.prompt) + 1
    text = P.prompt + gym.worked_solution(P)
    assert tok.decode(tok(text)["input_ids"], skip_special_tokens=True) == text
    gen = json.loads((path / "generation_config.json").read_text())
    assert gen["eos_token_id"] == model.config.eos_token_id == tok.eos_token_id
    assert not {"do_sample", "top_k", "top_p", "temperature"} & set(gen)


def test_shipped_model_learned_the_design(shipped):
    import torch

    from powersample.gym.sampling import draw

    _, model, tok = shipped
    problems = gym.eval_problems(48, seed=11)
    ids = torch.tensor([tok(p.prompt)["input_ids"] for p in problems])
    with torch.no_grad():
        first = torch.softmax(model(input_ids=ids).logits[:, -1], -1)
    p_short = first[:, tok.convert_tokens_to_ids("A")]
    starts = [tok.convert_tokens_to_ids(str(p.a % 10)) for p in problems]
    p_worked = first[torch.arange(len(problems)), starts]
    assert (p_short > p_worked).float().mean() > 0.9  # shortcut first token is the likelier one
    assert 0.45 < float(p_short.mean()) < 0.75
    rows = draw(model, problems, 0.0, first=starts)  # worked start forced, then greedy
    acc = sum(gym.grade(p, r[0].text, r[0].finished).correct
              for p, r in zip(problems, rows, strict=True)) / len(problems)
    assert acc > 0.8  # the worked path's most likely continuation is the right chain
    rows = draw(model, problems, 1.0, samples=4, seed=3)
    logp = rows[0][0].logp
    full = list(tok(problems[0].prompt)["input_ids"]) + list(rows[0][0].token_ids)
    with torch.no_grad():
        lp = torch.log_softmax(model(input_ids=torch.tensor([full])).logits[0].double(), -1)
    n = len(full) - len(rows[0][0].token_ids)
    ref = sum(float(lp[n - 1 + j, t]) for j, t in enumerate(rows[0][0].token_ids))
    assert logp == pytest.approx(ref, abs=1e-3)  # the sampler's log p is the model's


def test_check_measures_power_above_both_temperatures_on_the_shipped_model(shipped):
    from powersample.gym.check import measure, paired_gap

    scores = measure(shipped[0], n=24, draws=2, is_draws=12, mh_steps=(), echo=None)
    t1, low, greedy, power = scores
    assert [s.n for s in scores] == [24] * 4
    assert power.accuracy > t1.accuracy + 0.2 and power.accuracy > low.accuracy + 0.2
    gap, half = paired_gap(power, t1)
    assert gap == pytest.approx(power.accuracy - t1.accuracy) and gap > half > 0


def test_importance_estimate_weights_draws_by_p_to_the_alpha_minus_one():
    from powersample.gym.check import importance_power
    from powersample.gym.sampling import Draw

    right, wrong = Draw((), "A:825", -1.0, True), Draw((), "A:731", -3.0, True)
    est = importance_power([P], [[right, wrong, wrong]], alpha=4.0)[0]
    assert est == pytest.approx(1 / (1 + 2 * math.exp(-6.0)))  # (e^-1)^3 vs 2 (e^-3)^3
    assert importance_power([P], [[right, wrong]], alpha=1.0)[0] == pytest.approx(0.5)  # plain average


def test_gym_cli_stats_prints_the_numbers(capsys):
    from powersample.cli.main import main

    assert main(["gym", "stats", "--n", "20", "--alpha", "4"]) == 0
    out = capsys.readouterr().out
    assert "pi_alpha (power)" in out and "temperature 1/alpha" in out
    assert main(["gym", "stats", "--n", "5", "--shortcut-rate", "2"]) == 2  # bad input: named error


def test_corpus_rejects_bad_sizes():
    with pytest.raises(PowerSampleError):
        gym.corpus(-1)


# -- the first gym is unchanged by the mixed gym's parametrisation ---------------------------------

def test_first_gym_problems_corpus_and_numbers_are_unchanged():
    # ids, corpus stream and exact numbers as the first gym produced them before GymSpec existed
    assert [p.id for p in gym.eval_problems(3, seed=0)] == ["add-650+278", "add-359+665", "add-320+490"]
    assert [e.text for e in gym.corpus(2, seed=5)] == [
        "Q:205+306\n5+6+0=11;0+0+1=01;2+3+0=05;A:511", "Q:880+667\nA:1416"]
    d = gym.design_numbers(gym.eval_problems(100, seed=0), alpha=4.0)
    assert (d.temperature_one, d.low_temperature, d.greedy, d.power) == pytest.approx(
        (0.3144152, 0.1690363922, 0.0049, 0.9999628576), rel=1e-8)
    assert gym.GYM.levels == (gym.GymDesign(),)
    assert gym.worked_solution(P) == "7+8+0=15;5+6+1=12;3+4+1=08;A:825"


# -- the mixed gym ---------------------------------------------------------------------------------

MIXED = gym.GYM_MIXED


def test_mixed_problems_carry_their_level_and_are_held_out():
    problems = MIXED.eval_problems(20, seed=0)
    assert [p.digits for p in problems] == [1] * 20 + [2] * 20 + [3] * 20 + [4] * 20
    assert len({p.id for p in problems}) == 80
    for p in problems:
        assert p.id == f"add{p.digits}-{p.a}+{p.b}" and p.heldout
        assert len(str(p.a)) == len(str(p.b)) == p.digits
        assert gym.parse_prompt(p.prompt).answer == p.answer
    rng = random.Random(0)
    assert all(q.digits == 4 and not q.heldout for q in (train_problem(rng, 4, "add4") for _ in range(1000)))
    with pytest.raises(PowerSampleError, match="at most 50"):
        gym.eval_problems(60, digits=1)  # one-digit sums: 100 pairs in all
    with pytest.raises(PowerSampleError, match="not a gym prompt"):
        gym.parse_prompt("Q:35+468\n")  # operands of different lengths


def test_mixed_task_is_registered_with_level_ids():
    from powersample.tasks import get_task

    task = get_task("gym-mixed", count=3)
    problems = task.load(None)
    assert [p.id.split("-")[0] for p in problems] == ["add1"] * 3 + ["add2"] * 3 + ["add3"] * 3 + ["add4"] * 3
    p4 = problems[-1]
    a, b = (int(x) for x in p4.prompt[2:-1].split("+"))
    assert task.grade(p4, f"A:{a + b}").correct and not task.grade(p4, f"A:{a + b + 1}").correct


def test_mixed_data_process_matches_its_exact_law():
    rng = random.Random(7)
    for design in MIXED.levels:
        problem = gym.eval_problems(1, seed=2, digits=design.digits, name=MIXED.problem_name(design))[0]
        law = gym.completion_distribution(problem, design)
        assert sum(law.values()) == pytest.approx(1.0)
        n = 2000
        counts = Counter(gym.sample_completion(problem, design, rng).completion for _ in range(n))
        assert set(counts) <= set(law)
        exact = gym.design_numbers([problem], design, alpha=4.0)
        right = sum(c for text, c in counts.items() if gym.grade(problem, text).correct) / n
        sd = math.sqrt(exact.temperature_one * (1 - exact.temperature_one) / n) + 1e-9
        assert abs(right - exact.temperature_one) < 4 * sd + 1e-3  # sampled P(correct) = exact
        short = sum(c for text, c in counts.items() if text.startswith("A")) / n
        assert abs(short - design.shortcut_rate) < 4 * math.sqrt(0.25 / n)
        pairs = [(gym.sample_completion(problem, design, rng), gym.sample_completion(problem, design, rng))
                 for _ in range(1000)]
        agree = sum(gym.extract_answer(x.completion)[0] == gym.extract_answer(y.completion)[0]
                    for x, y in pairs) / len(pairs)
        sd = math.sqrt(exact.agree_temperature_one * (1 - exact.agree_temperature_one) / len(pairs)) + 1e-9
        assert abs(agree - exact.agree_temperature_one) < 4 * sd + 1e-3  # sampled agreement = exact


def test_mixed_levels_differ_in_the_stated_direction():
    levels = gym.level_numbers("gym-mixed", n=12, alpha=4.0)
    assert sorted(levels) == [1, 2, 3, 4]
    t1 = [levels[d].temperature_one for d in (1, 2, 3, 4)]
    low = [levels[d].low_temperature for d in (1, 2, 3, 4)]
    agree = [levels[d].agree_temperature_one for d in (1, 2, 3, 4)]
    assert t1 == sorted(t1, reverse=True) and t1[0] > 0.9 and t1[3] < 0.3  # one chain: ever less often right
    assert low == sorted(low, reverse=True) and low[3] < 0.1  # low temperature falls for the shortcut
    assert agree == sorted(agree, reverse=True) and agree[0] > 0.9 and agree[3] < 0.1  # two chains: agree less
    assert all(levels[d].power > 0.99 for d in levels)  # pi_alpha is right at every level
    assert levels[1].shortcut_correct == 1.0  # level 1's shortcut is the sum itself


def test_draw_keeps_problem_order_across_prompt_lengths():
    pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM

    from powersample.gym.sampling import draw

    model = AutoModelForCausalLM.from_pretrained(gym.model_path()).eval()
    mixed = [P, GymProblem(35, 46, 2, "add2"), GymProblem(120, 333), GymProblem(7, 8, 1, "add1")]
    together = draw(model, mixed, 0.0, max_new_tokens=20)
    alone = [draw(model, [p], 0.0, max_new_tokens=20)[0] for p in mixed]
    for a, b in zip(together, alone, strict=True):
        assert a[0].token_ids == b[0].token_ids and a[0].logp == pytest.approx(b[0].logp, abs=1e-4)
    assert together[1][0].token_ids != together[0][0].token_ids  # not all the same row


def test_agreement_and_majority_on_constructed_cases():
    from powersample.gym.check import _agreement, _majority
    from powersample.gym.sampling import Draw

    assert _agreement([[1, 1, 2], [None, None]]) == pytest.approx(1 / 4)  # 1 of 3 pairs, 0 of 1
    right, wrong = Draw((), "A:825", -5.0, True), Draw((), "A:731", -1.0, True)
    assert _majority(P, [right, right, wrong]) == 1.0
    assert _majority(P, [right, wrong]) == 0.0  # a tie goes to the higher log p
    assert _majority(P, [Draw((), "A:825", 0.0, False), wrong]) == 0.0  # unfinished chains do not vote


def test_tiny_mixed_training_logs_every_level(tmp_path):
    pytest.importorskip("torch")
    from powersample.gym.train import TINY, TrainConfig, train

    out = train(tmp_path / "m", steps=2, config=TrainConfig(**TINY), spec="gym-mixed", echo=None)
    log = json.loads((out / "train_log.json").read_text())
    assert log["gym"] == "gym-mixed" and [d["digits"] for d in log["levels"]] == [1, 2, 3, 4]


def test_gym_cli_stats_per_level(capsys):
    from powersample.cli.main import main

    assert main(["gym", "stats", "--gym", "gym-mixed", "--n", "4", "--alpha", "4"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.split()[:1] in (["1"], ["4"])]
    assert [r[0] for r in rows] == ["1", "4"] and float(rows[0][3]) > float(rows[1][3])  # temp-1 accuracy


def test_shipped_mixed_model_loads_and_its_levels_differ():
    pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from powersample.gym.check import _agreement, importance_power
    from powersample.gym.sampling import draw

    path = gym.model_path("gym-mixed")
    assert (path / "model.safetensors").stat().st_size <= 10 * 2**20
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    assert tok("Q:35+46\n")["input_ids"][0] == tok.bos_token_id
    acc, agree, low, power = {}, {}, {}, {}
    for design in MIXED.levels:
        d = design.digits
        problems = gym.eval_problems(12, seed=5, digits=d, name=MIXED.problem_name(design))
        rows = draw(model, problems, 1.0, samples=8, seed=0, max_new_tokens=64)
        grades = [[gym.grade(p, x.text, x.finished) for x in row] for p, row in zip(problems, rows, strict=True)]
        acc[d] = sum(g.correct for row in grades for g in row) / (12 * 8)
        agree[d] = _agreement([[g.answer for g in row] for row in grades])
        power[d] = sum(importance_power(problems, rows, 4.0)) / 12
        cold = draw(model, problems, 0.25, samples=8, seed=0, max_new_tokens=64)
        low[d] = sum(gym.grade(p, x.text, x.finished).correct for p, row in zip(problems, cold, strict=True)
                     for x in row) / (12 * 8)
    # one chain is less often right and two chains agree less often, level by level, as the design says
    # (levels 3 and 4 differ by 0.31 vs 0.22 at temperature 1: too close for 12 problems, so the low
    # temperature, 0.17 vs 0.03, separates them here; `gym check` measures the full order on more)
    assert acc[1] > acc[2] > acc[3] and acc[2] > acc[4] and acc[1] > 0.9 and acc[4] < 0.4
    assert agree[1] > agree[2] > agree[3] and agree[2] > agree[4] and agree[4] < 0.15
    assert low[1] > low[2] > low[3] > low[4]
    assert all(power[d] > acc[d] for d in (2, 3, 4)) and power[4] > 0.6  # pi_alpha still finds the answer


def test_measure_levels_scores_every_level():
    from powersample.gym.check import measure_levels

    scores = measure_levels("gym-mixed", n=3, draws=2, is_draws=2, mh_steps=(), echo=None)
    assert [(s.digits, s.method.split()[0]) for s in scores] == [
        (d, m) for d in (1, 2, 3, 4) for m in ("temperature", "temperature", "pi_alpha")]
    assert all(s.accuracy.n == 3 and 0 <= s.accuracy.accuracy <= 1 for s in scores)
    assert scores[0].agree is not None and scores[2].agree is None  # no agreement for the IS estimate
