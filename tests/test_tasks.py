"""Tasks: registry, data loading (and its error messages), answer extraction and every grader, on
real items of the shipped MATH500 and HumanEval data (the code sandbox: test_sandbox.py)."""

from __future__ import annotations

import json
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from powersample.errors import PowerSampleError
from powersample.tasks import TASKS, Registry, get_task
from powersample.tasks.answers import choice_letter, final_line, last_boxed
from powersample.tasks.base import Problem
from powersample.tasks.files import read_records
from powersample.tasks.humaneval import STOP_SEQUENCES, truncate


@pytest.fixture(scope="module")
def math500():
    task = get_task("math500", timeout=2)
    return task, {p.id: p for p in task.load(None)}


@pytest.fixture(scope="module")
def humaneval():
    task = get_task("humaneval", timeout=5.0, unsafe=True)  # trusted code: grade it wherever tests run
    return task, task.load(None)


# -- registry ------------------------------------------------------------------------------------

class TestRegistry:
    def test_duplicate_name_raises(self):
        reg = Registry("widget")
        reg.register("a", 1)
        with pytest.raises(PowerSampleError, match="widget 'a' is already registered"):
            reg.register("a", 2)

    def test_unknown_name_suggests_and_lists(self):
        with pytest.raises(PowerSampleError, match=r"unknown task 'math5000'\. Did you mean 'math500'\?"
                                                   r".*Available: alpacaeval, gpqa, gym, gym-mixed, humaneval, jsonl, "
                                                   r"math500"):
            TASKS.get("math5000")

    def test_lazy_entry_is_imported_on_first_get(self):
        reg = Registry("thing")
        reg.register("join", "os.path:join")
        assert reg.get("join") is os.path.join

    def test_task_options_are_checked_and_coerced(self):
        assert get_task("humaneval", timeout="3.5").timeout == 3.5  # strings from --task-option
        with pytest.raises(PowerSampleError, match="has no option"):
            get_task("math500", grader="exact")
        with pytest.raises(PowerSampleError, match="must be a int"):
            get_task("gpqa", shuffle_seed="x")
        with pytest.raises(PowerSampleError, match="grader must be one of math, exact"):
            get_task("jsonl", grader="fuzzy")


# -- data files ------------------------------------------------------------------------------------

class TestDataFiles:
    def test_malformed_jsonl_names_file_and_line(self, tmp_path):
        path = tmp_path / "mine.jsonl"
        path.write_text('{"prompt": "1+1", "answer": "2"}\n\n{"prompt": "2+2", "answer": \n')
        with pytest.raises(PowerSampleError, match=r"mine\.jsonl:3: not valid JSON"):
            get_task("jsonl").load(str(path))

    def test_missing_field_names_file_and_line(self, tmp_path):
        path = tmp_path / "mine.jsonl"
        path.write_text('{"prompt": "1+1", "answer": "2"}\n{"prompt": "2+2"}\n')
        with pytest.raises(PowerSampleError, match=r"mine\.jsonl:2: missing field 'answer'"):
            get_task("jsonl").load(str(path))

    def test_json_array_items_know_their_line(self, tmp_path):
        path = tmp_path / "math.json"
        rows = [{"problem": "1+1", "answer": "2", "unique_id": "a"}, {"problem": "x", "answer": ""}]
        path.write_text("[\n" + ",\n".join(json.dumps(r, indent=1) for r in rows) + "\n]\n")
        second = 2 + json.dumps(rows[0], indent=1).count("\n") + 1  # "[" line, first item, then the second
        with pytest.raises(PowerSampleError, match=rf"math\.json:{second}: field 'answer' is empty"):
            get_task("math500").load(str(path))
        assert [r.line for r in read_records(path)] == [2, second]

    def test_csv_rows_report_the_line_they_start_on(self, tmp_path):
        path = tmp_path / "t.csv"
        path.write_text('a,b\n1,"two\nlines"\n3\n')  # row 2 starts on line 4 and lacks a cell
        with pytest.raises(PowerSampleError, match=r"t\.csv:4: fewer cells"):
            read_records(path)

    def test_missing_file_and_unknown_format(self, tmp_path):
        with pytest.raises(PowerSampleError, match="does not exist"):
            get_task("jsonl").load(str(tmp_path / "nope.jsonl"))
        (tmp_path / "x.txt").write_text("hi")
        with pytest.raises(PowerSampleError, match="unknown data format"):
            read_records(tmp_path / "x.txt")

    def test_jsonl_task_requires_data(self):
        with pytest.raises(PowerSampleError, match="pass --data"):
            get_task("jsonl").load(None)


# -- extraction ----------------------------------------------------------------------------------------

class TestExtraction:
    def test_last_boxed(self):
        assert last_boxed(r"first \boxed{1} then \boxed{\frac{1}{2}}.") == r"\frac{1}{2}"
        assert last_boxed(r"\boxed{\{1, 2\}}") == r"\{1, 2\}"
        assert last_boxed(r"so \boxed 5 done") == "5"
        assert last_boxed(r"so \boxed 5. Done") == "5" and last_boxed(r"\boxed12") == "12"
        assert last_boxed(r"\boxedfoo{3}") is None  # another macro, not a box
        assert last_boxed(r"\boxed{3} and a cut-off \boxed{\frac{1") == "3"  # unclosed box is skipped
        assert last_boxed("no box") is None

    @pytest.mark.parametrize("text,letter", [
        ("Therefore the answer is (C).", "C"), (r"... \boxed{B}", "B"), ("Answer: D", "D"),
        (r"\boxed{\text{A}}", "A"), ("**Answer:** (B)", "B"), ("I pick A, then B, finally C", "C"),
        ("the answer is a mess", None), ("nothing to choose", None), ("Answer: E", None),
    ])
    def test_choice_letter(self, text, letter):
        assert choice_letter(text) == letter

    def test_final_line(self):
        assert final_line("work\n\n  forty two  \n") == "forty two"
        assert final_line(r"blah \boxed{7}" + "\nlast") == "7"


# -- MATH500 ---------------------------------------------------------------------------------------------

class TestMath500:
    def test_shipped_data_and_prompt(self, math500):
        task, problems = math500
        assert len(problems) == 500
        p = problems["test/precalculus/807.json"]
        assert p.prompt.startswith("Can you solve the following math problem? Convert the point $(0,3)$")
        assert p.prompt.endswith(r"Please reason step by step, and put your final answer within \boxed{}.")

    @pytest.mark.parametrize("pid,written", [
        ("test/counting_and_probability/282.json", "0.5"),  # gold \frac{1}{2}
        ("test/counting_and_probability/803.json", "1/4"),  # gold \frac{1}{4}
        ("test/geometry/843.json", "6*sqrt(2)"),  # gold 6\sqrt{2}
        ("test/algebra/2036.json", r"\sqrt{117}"),  # gold 3\sqrt{13}
        ("test/precalculus/807.json", r"(3, \pi/2)"),  # gold \left( 3, \frac{\pi}{2} \right)
        ("test/precalculus/1056.json", r"288\pi"),  # gold 288 \pi
    ])
    def test_equivalent_forms_are_right(self, math500, pid, written):
        task, problems = math500
        g = task.grade(problems[pid], f"Some work.\nSo the answer is $\\boxed{{{written}}}$.")
        assert g.correct is True and g.extracted == written and not g.error

    def test_every_gold_answer_grades_right_and_a_wrong_one_wrong(self, math500):
        task, problems = math500
        sample = list(problems.values())[::25]  # 20 problems spread over the file
        for p in sample:
            assert task.grade(p, f"\\boxed{{{p.answer}}}").correct, p.id
        ints = [p for p in problems.values() if p.answer.isdigit()][:10]
        for p in ints:
            g = task.grade(p, f"\\boxed{{{int(p.answer) + 1}}}")
            assert g.correct is False and g.reason == "not equivalent"

    def test_last_box_counts_and_no_box_is_wrong(self, math500):
        task, problems = math500
        p = problems["test/number_theory/572.json"]  # gold 9
        assert task.grade(p, r"maybe \boxed{9}? no: \boxed{8}").correct is False
        assert task.grade(p, r"maybe \boxed{8}? no: \boxed{9}").correct is True
        g = task.grade(p, "the answer is 9")
        assert g.correct is False and g.reason == r"no \boxed{} answer"

    @pytest.mark.parametrize("completion,gold,correct", [
        (r"so \boxed 12.", "12", True),  # unbraced: the sentence's full stop is not the answer's
        (r"so \boxed 12, done", "12", True),
        (r"so \boxed12", "12", True),
        (r"\boxed{3.}", "3", True),
        (r"\boxed{12,}", "12", True),
        (r"\boxed 3.5.", "3.5", True),
        (r"\boxed{3.5}", "35", False),
        (r"\boxed{\text{(C) } 5}", r"\text{(C)}", True),  # a choice is compared by its letter
        (r"\boxed{(C)}", r"\text{(C)}", True),
        (r"\boxed{C}", r"\text{(C)}", True),
        (r"\boxed{\text{(D) } 5}", r"\text{(C)}", False),
        (r"\boxed{5.4\text{ cents}}", r"5.4 \text{ cents}", True),
        (r"\boxed{5.4\text{ dollars}}", r"5.4 \text{ cents}", False),  # math-verify alone: right
        (r"\boxed{5.4}", r"5.4 \text{ cents}", True),  # no unit given: judged on the number
        (r"\boxed{864 \text{ square inches}}", r"864 \mbox{ inches}^2", True),
        (r"\boxed{864\text{ in}^2}", r"864 \mbox{ inches}^2", True),
        (r"\boxed{864 \text{ feet}^2}", r"864 \mbox{ inches}^2", False),
        (r"\boxed{\text{Evelyn}}", r"\text{Evelyn}", True),
        (r"\boxed{\text{Bob}}", r"\text{Evelyn}", False),
    ])
    def test_answer_forms(self, completion, gold, correct):
        task = get_task("math500", timeout=2)
        g = task.grade(Problem("p", "x", gold), completion)
        assert g.correct is correct and not g.error, g

    def test_pathological_latex_is_wrong_with_reason_not_a_crash(self, math500):
        task, problems = math500
        p = problems["test/number_theory/572.json"]
        g = task.grade(p, r"\boxed{9^{9^{9^{9}}}}")
        assert g.correct is False and g.error and "timed out" in g.reason

    def test_grading_works_in_worker_threads(self, math500):
        task, problems = math500
        p = problems["test/counting_and_probability/282.json"]
        assert threading.current_thread() is threading.main_thread()
        with ThreadPoolExecutor(2) as ex:  # math-verify's SIGALRM timeouts would raise here
            grades = list(ex.map(lambda t: task.grade(p, t), [r"\boxed{0.5}", r"\boxed{0.6}"]))
        assert [g.correct for g in grades] == [True, False]


# -- HumanEval --------------------------------------------------------------------------------------------

class TestHumanEval:
    def test_shipped_data(self, humaneval):
        _, problems = humaneval
        assert len(problems) == 164 and len({p.id for p in problems}) == 164
        assert all({"test", "entry_point", "canonical_solution"} <= set(p.meta) for p in problems)

    def test_truncation_at_stop_sequences(self):
        body = "    return x + 1\n"
        for stop in STOP_SEQUENCES:
            assert truncate(body + stop + "junk()\n") == body
        nested = "    def helper():\n        return 1\n    return helper()\n"
        assert truncate(nested) == nested  # indented defs are part of the body

    def test_canonical_solutions_pass(self, humaneval):
        task, problems = humaneval
        sample = problems[::11]  # 15 problems
        with ThreadPoolExecutor(4) as ex:
            grades = list(ex.map(lambda p: task.grade(p, p.meta["canonical_solution"]), sample))
        assert [g.reason for g in grades] == ["passed"] * len(sample)

    def test_all_164_canonical_solutions_pass(self, humaneval):
        task, problems = humaneval
        with ThreadPoolExecutor(4) as ex:  # each grade is its own subprocess
            grades = list(ex.map(lambda p: task.grade(p, p.meta["canonical_solution"]), problems))
        failed = [(p.id, g.reason) for p, g in zip(problems, grades, strict=True) if not g.correct]
        assert failed == []

    def test_wrong_solution_fails_with_the_assertion(self, humaneval):
        task, problems = humaneval
        p = problems[0]
        g = task.grade(p, "    return False\n")
        assert g.correct is False and "AssertionError" in g.reason

    def test_completion_after_stop_sequence_is_not_run(self, humaneval):
        task, problems = humaneval
        p = problems[0]
        g = task.grade(p, p.meta["canonical_solution"] + "\nprint(undefined_name)\n")
        assert g.correct is True


# -- GPQA ----------------------------------------------------------------------------------------------

GPQA_COLUMNS = ["Record ID", "Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2",
                "Incorrect Answer 3"]


def _gpqa_csv(path, n=8, broken_row=None):
    import csv

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(GPQA_COLUMNS)
        for i in range(n):  # synthetic questions (the real set is gated and never shipped)
            row = [f"rec{i}", f"Which number is {i}?\nPick one.", *(str(i + d) for d in (0, 10, 20, 30))]
            if i == broken_row:
                row[3] = ""
            w.writerow(row)
    return str(path)


class TestGPQA:
    def test_load_shuffle_and_grade(self, tmp_path):
        task = get_task("gpqa")
        problems = task.load(_gpqa_csv(tmp_path / "gpqa.csv"))
        assert [p.id for p in problems] == [f"rec{i}" for i in range(8)]
        letters = [p.answer for p in problems]
        assert len(set(letters)) > 1  # the right option does not always sit in one place
        for i, p in enumerate(problems):
            opts = p.meta["options"]
            assert sorted(opts) == sorted([str(i), str(i + 10), str(i + 20), str(i + 30)])
            assert opts["ABCD".index(p.answer)] == str(i)
            assert f"{p.answer}) {i}\n" in p.prompt + "\n"
            wrong = next(x for x in "ABCD" if x != p.answer)
            assert task.grade(p, f"Reasoning... The answer is ({p.answer}).").correct is True
            assert task.grade(p, f"\\boxed{{{wrong}}}").correct is False
        assert task.grade(problems[0], "I cannot decide.").reason == "no option letter found"

    def test_shuffle_is_seeded_per_problem(self, tmp_path):
        path = _gpqa_csv(tmp_path / "gpqa.csv", n=12)
        a = [p.answer for p in get_task("gpqa").load(path)]
        assert a == [p.answer for p in get_task("gpqa").load(path)]
        assert a != [p.answer for p in get_task("gpqa", shuffle_seed=1).load(path)]

    def test_jsonl_with_original_columns(self, tmp_path):
        path = tmp_path / "gpqa.jsonl"
        row = {"Question": "Q?", "Correct Answer": "yes", "Incorrect Answer 1": "no",
               "Incorrect Answer 2": "maybe", "Incorrect Answer 3": "never"}
        path.write_text(json.dumps(row) + "\n")
        (p,) = get_task("gpqa").load(str(path))
        assert p.id == "gpqa/0" and p.meta["options"]["ABCD".index(p.answer)] == "yes"

    def test_bad_row_names_file_and_line(self, tmp_path):
        path = _gpqa_csv(tmp_path / "gpqa.csv", broken_row=2)
        # header line 1; each row spans 2 lines (the question has a newline): row 2 starts on line 6
        with pytest.raises(PowerSampleError, match=r"gpqa\.csv:6: missing or empty column 'Incorrect Answer"):
            get_task("gpqa").load(path)

    def test_missing_file_says_how_to_get_the_data(self, tmp_path):
        with pytest.raises(PowerSampleError) as e:
            get_task("gpqa").load(str(tmp_path / "gpqa_diamond.csv"))
        msg = str(e.value)
        assert "does not exist" in msg and "huggingface.co/datasets/Idavidrein/gpqa" in msg
        assert "--data" in msg and "github.com/idavidrein/gpqa" in msg

    def test_hub_without_datasets_names_the_extra(self, monkeypatch):
        monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
        with pytest.raises(PowerSampleError, match=r"pip install 'powersample\[hub\]'"):
            get_task("gpqa").load(None)


# -- AlpacaEval, jsonl, gym ------------------------------------------------------------------------------

def test_alpacaeval_from_file_is_ungraded(tmp_path):
    path = tmp_path / "alpaca_eval.json"
    path.write_text(json.dumps([{"instruction": "Say hi", "dataset": "helpful_base", "output": "x",
                                 "generator": "y"}, {"instruction": "Count to 3"}]))
    task = get_task("alpacaeval")
    problems = task.load(str(path))
    assert [p.prompt for p in problems] == ["Say hi", "Count to 3"]
    assert [p.meta["dataset"] for p in problems] == ["helpful_base", "alpaca_eval"]
    g = task.grade(problems[0], "hi")
    assert g.correct is None and "alpaca_eval" in g.reason


def test_jsonl_exact_and_math_graders(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps({"id": "q1", "prompt": "Capital of France?", "answer": "Paris"}) + "\n"
                    + json.dumps({"prompt": "Half of one?", "answer": "1/2"}) + "\n")
    exact = get_task("jsonl", grader="exact")
    p1, p2 = exact.load(str(path))
    assert (p1.id, p2.id) == ("q1", "row1")
    assert exact.grade(p1, "Let me think.\n  paris. ").correct is True
    assert exact.grade(p1, "Lyon").correct is False
    math = get_task("jsonl")
    assert math.grade(p2, r"\boxed{0.5}").correct is True
    assert math.grade(p2, r"\boxed{0.25}").correct is False


def test_gym_task_uses_the_gym_grader():
    task = get_task("gym", count=5)
    problems = task.load(None)
    assert len(problems) == 5 and problems[0].prompt.startswith("Q:")
    p = problems[0]
    assert task.grade(p, f"1+2+0=03;A:{p.answer}", finished=True).correct is True
    assert task.grade(p, f"A:{int(p.answer) + 1}", finished=True).correct is False
    assert task.grade(p, f"A:{p.answer}", finished=False).correct is False  # cut off before EOS
    assert task.extract(f"x;A:{p.answer}") == p.answer
    with pytest.raises(PowerSampleError, match="takes no --data"):
        task.load("x.jsonl")


def test_problems_are_picklable_for_grader_processes(math500):
    import pickle

    task, problems = math500
    p = next(iter(problems.values()))
    task2, p2 = pickle.loads(pickle.dumps((task, p)))
    assert task2 == task and p2 == p and isinstance(p2, Problem)
