"""The reasoning gym: a synthetic addition task, a grader, and a small trained model shipped with powersample.

    from powersample import gym
    problems = gym.eval_problems(100, seed=0)          # held out from training
    gym.grade(problems[0], "A:825")                    # GymGrade(correct=..., answer=825, reason=...)
    gym.model_path()                                   # folder for AutoModelForCausalLM.from_pretrained
    gym.design_numbers()                               # exact accuracies under the data distribution

    gym.GYM_MIXED.eval_problems(50, seed=0)            # the mixed gym: 1..4-digit sums, ids "add2-35+46"
    gym.level_numbers("gym-mixed")                     # its exact numbers per level
    gym.model_path("gym-mixed")

    from powersample.gym.train import train            # retrain: train(out_dir, steps=5000, seed=0)

Task, data, grader and exact numbers are pure Python; only train, check and sampling need torch.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import PowerSampleError
from .data import ANSWER, Example, completion_distribution, corpus, sample_completion, worked_solution
from .design import GYM, GYM_MIXED, GymDesign, GymSpec, get_spec
from .exact import DesignNumbers, design_numbers, level_numbers
from .grader import GymGrade, extract_answer, grade
from .task import GymProblem, eval_problems, is_heldout, parse_prompt

__all__ = ["ANSWER", "GYM", "GYM_MIXED", "DesignNumbers", "Example", "GymDesign", "GymGrade", "GymProblem", "GymSpec",
           "completion_distribution", "corpus", "design_numbers", "eval_problems", "extract_answer", "get_spec",
           "grade", "is_heldout", "level_numbers", "model_path", "parse_prompt", "sample_completion",
           "worked_solution"]


def model_path(spec: GymSpec | str = "gym") -> Path:
    """The folder of a shipped, trained gym model (weights, config and tokenizer): "gym" or "gym-mixed"."""
    spec = get_spec(spec)
    path = Path(__file__).resolve().parent / spec.model_dir
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise PowerSampleError(f"the {spec.name} model is missing from {path}: reinstall powersample, or train "
                               f"it with `powersample gym train --gym {spec.name} --out {path}`", "model", str(path))
    return path

