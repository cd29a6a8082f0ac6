"""The reasoning gym: a synthetic addition task, a grader, and a small trained model shipped with powersample.

    from powersample import gym
    problems = gym.eval_problems(100, seed=0)          # held out from training
    gym.grade(problems[0], "A:825")                    # Grade(correct=..., answer=825, reason=...)
    gym.model_path()                                   # folder for AutoModelForCausalLM.from_pretrained
    gym.design_numbers()                               # exact accuracies under the data distribution

    from powersample.gym.train import train            # retrain: train(out_dir, steps=5000, seed=0)

Task, data, grader and exact numbers are pure Python; only train, check and sampling need torch.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import PowerSampleError
from .data import ANSWER, Example, completion_distribution, corpus, sample_completion, worked_solution
from .design import GymDesign
from .exact import DesignNumbers, design_numbers
from .grader import Grade, extract_answer, grade
from .task import Problem, eval_problems, is_heldout, parse_prompt

__all__ = ["ANSWER", "DesignNumbers", "Example", "Grade", "GymDesign", "Problem", "completion_distribution",
           "corpus", "design_numbers", "eval_problems", "extract_answer", "grade", "is_heldout", "model_path",
           "parse_prompt", "sample_completion", "worked_solution"]


def model_path() -> Path:
    """The folder of the shipped, trained gym model (weights, config and tokenizer)."""
    path = Path(__file__).resolve().parent / "model"
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise PowerSampleError(f"the gym model is missing from {path}: reinstall powersample, or train it "
                               f"with `powersample gym train --out {path}`", "model", str(path))
    return path

