"""GPQA-Diamond (Rein et al. 2023): 198 graduate-level multiple-choice questions, four options each.

The data is gated by its authors to keep it out of training sets, so powersample does not ship it:
it comes from the Hugging Face hub with your credentials (`Idavidrein/gpqa`, config `gpqa_diamond`)
or from your own copy (`--data gpqa_diamond.csv`, or .jsonl) with the original column names
Question, Correct Answer, Incorrect Answer 1, Incorrect Answer 2, Incorrect Answer 3.

Options are shuffled per problem with a seed derived from (`shuffle_seed`, problem id), so the
position of the right answer is random but the same in every run. Grading: the chosen letter
(\\boxed{C}, "The answer is (C)", "Answer: C", or the last standalone A-D) equals the right one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..errors import PowerSampleError
from ..rng import derive_seeds
from . import files
from .answers import choice_letter
from .base import Grade, Problem, Task

HUB_DATASET = ("Idavidrein/gpqa", "gpqa_diamond")
COLUMNS = ("Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")
LETTERS = "ABCD"

PROMPT = ("Answer the following multiple choice question. Think step by step, then give your final "
          "answer as \\boxed{{X}}, where X is the letter (A, B, C or D) of the correct option.\n\n"
          "{question}\n\nA) {A}\nB) {B}\nC) {C}\nD) {D}")

HOW_TO_GET = (
    "GPQA is gated by its authors and not shipped with powersample. Either\n"
    "  1. accept the dataset's terms at https://huggingface.co/datasets/Idavidrein/gpqa, log in with\n"
    "     `hf auth login` (or set HF_TOKEN), install the hub extra: pip install 'powersample[hub]', and\n"
    "     run with network access; or\n"
    "  2. download dataset.zip from https://github.com/idavidrein/gpqa (its README gives the password),\n"
    "     unzip it and pass --data dataset/gpqa_diamond.csv")


def format_question(question: str, options: list[str]) -> str:
    """The prompt for a question and its four options in display order."""
    shown = {k: o.strip() for k, o in zip(LETTERS, options, strict=True)}
    return PROMPT.format(question=question.strip(), **shown)


def shuffle_options(correct: str, incorrect: list[str], seed: int) -> tuple[list[str], str]:
    """The four options in a seeded random order, and the letter of the correct one."""
    options = [correct, *incorrect]
    order = list(range(4))
    random.Random(seed).shuffle(order)
    return [options[i] for i in order], LETTERS[order.index(0)]


@dataclass(frozen=True)
class GPQA(Task):
    shuffle_seed: int = 0  # with the problem id, fixes where the correct option lands

    name = "gpqa"
    version = "1"

    def load(self, data: str | None) -> list[Problem]:
        rows = self._hub_rows() if data is None else self._file_rows(data)
        out = []
        for index, (where, row) in enumerate(rows):
            values = []
            for col in COLUMNS:
                v = row.get(col)
                if not isinstance(v, str) or not v.strip():
                    raise PowerSampleError(f"{where}: missing or empty column {col!r}; GPQA files need the "
                                           f"columns {', '.join(COLUMNS)}", "data", where)
                values.append(v)
            pid = str(row.get("Record ID") or f"gpqa/{index}")
            options, letter = shuffle_options(values[1], values[2:], derive_seeds(self.shuffle_seed, pid))
            out.append(Problem(id=pid, prompt=format_question(values[0], options), answer=letter,
                               meta={"options": options}))
        return out

    def _file_rows(self, data: str) -> list[tuple[str, dict]]:
        try:
            records = files.read_records(data)
        except PowerSampleError as e:
            if "does not exist" in str(e):
                raise PowerSampleError(f"GPQA data file {data!r} does not exist.\n{HOW_TO_GET}", "data",
                                       data) from e
            raise
        for r in records:
            if not isinstance(r.value, dict):
                raise PowerSampleError(f"{r.where()}: expected a row with GPQA columns", "data", data)
        return [(r.where(), r.value) for r in records]

    def _hub_rows(self) -> list[tuple[str, dict]]:
        try:
            import datasets
        except ImportError as e:
            raise PowerSampleError("loading GPQA from the Hugging Face hub needs the `datasets` package: "
                                   f"pip install 'powersample[hub]'.\n{HOW_TO_GET}", "data") from e
        try:
            ds = datasets.load_dataset(*HUB_DATASET, split="train")
        except Exception as e:  # gated, offline, no token: every cause gets the same instructions
            raise PowerSampleError(f"could not load {'/'.join(HUB_DATASET)} from the Hugging Face hub "
                                   f"({type(e).__name__}: {str(e)[:300]}).\n{HOW_TO_GET}", "data") from e
        return [(f"hub:{HUB_DATASET[0]}[{i}]", dict(row)) for i, row in enumerate(ds)]

    def extract(self, text: str) -> str | None:
        return choice_letter(text, LETTERS)

    def check(self, problem: Problem, answer: str) -> Grade:
        ok = answer == problem.answer
        return Grade(ok, answer, "right option" if ok else f"chose {answer}, the answer is {problem.answer}")

    def grade(self, problem: Problem, completion: str, finished: bool | None = None) -> Grade:
        answer = self.extract(completion)
        if answer is None:
            return Grade(False, None, "no option letter found")
        return self.check(problem, answer)
