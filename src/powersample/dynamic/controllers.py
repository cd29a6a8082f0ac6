"""Controllers: at each checkpoint of a problem, "enough" (True) or "more" (False).

One registry, spec strings NAME[:ARG]:

    fixed[:K]        more until K chains (default k_max), then enough
    agreement        enough when every chain so far has an answer and they all agree
    beta[:C]         Adaptive-Consistency: enough when P = 1 - I_0.5(a+1, b+1) >= C (default 0.95),
                     a, b the votes of the top two answers
    gbdt:FILE.skops  a learned controller (controller train --model gbdt): enough when P(the current
    mlp:FILE.skops   majority is the final one) >= the file's threshold (or :FILE@THRESHOLD);
    mlp-h:FILE       mlp-h / mlp-hq also read the hidden states H (and Q) of the chains (features.py)
    mlp-hq:FILE
    oracle           reports only: enough as soon as the current majority is the final k_max answer
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..errors import PowerSampleError, check
from ..registry import Registry
from .features import ProblemState, beta_p, features
from .vote import Same, vote_counts

log = logging.getLogger(__name__)
CONTROLLERS: Registry[type] = Registry("controller")


class Controller:
    spec: str = "?"

    def enough(self, state: ProblemState, same: Same) -> bool:
        raise NotImplementedError


@dataclass(frozen=True)
class Fixed(Controller):
    k: int | None = None  # None: k_max

    @property
    def spec(self) -> str:
        return "fixed" if self.k is None else f"fixed:{self.k}"

    def enough(self, state: ProblemState, same: Same) -> bool:
        return state.k >= (self.k or state.k_max)


@dataclass(frozen=True)
class Agreement(Controller):
    spec = "agreement"

    def enough(self, state: ProblemState, same: Same) -> bool:
        counts = vote_counts([c.answer for c in state.chains], [c.logp for c in state.chains], same)
        return len(counts) == 1 and counts[0][0] == state.k


@dataclass(frozen=True)
class Beta(Controller):
    c: float = 0.95

    @property
    def spec(self) -> str:
        return f"beta:{self.c:g}"

    def enough(self, state: ProblemState, same: Same) -> bool:
        counts = vote_counts([c.answer for c in state.chains], [c.logp for c in state.chains], same)
        if not counts:
            return False
        return beta_p(counts[0][0], counts[1][0] if len(counts) > 1 else 0) >= self.c


@dataclass(frozen=True)
class Oracle(Controller):
    spec = "oracle"

    def enough(self, state: ProblemState, same: Same) -> bool:
        if state.final_answer_chain is None:
            raise PowerSampleError("the oracle knows the final answer only when replaying a log; it is for "
                                   "reports, not for live runs", "controller", "oracle")
        counts = vote_counts([c.answer for c in state.chains], [c.logp for c in state.chains], same)
        final = state.final_chains[state.final_answer_chain].answer
        return bool(counts) and final is not None and same(state.chains[counts[0][2]].answer, final)


class Learned(Controller):
    """A trained model (train.py): enough when its probability that the current majority is final >= threshold."""

    def __init__(self, model, threshold: float | None = None, spec: str = "learned"):
        self.model = model  # train.TrainedController
        self.threshold = model.threshold if threshold is None else threshold
        self.spec = spec
        self._cache: dict[tuple, float] = {}

    def probability(self, state: ProblemState, same: Same) -> float:
        projection = self.model.projection
        if projection is not None:  # H and Q must be what it was trained on: the same projection
            found = {c.projection for c in state.chains}
            if found != {projection}:
                what = "no hidden states" if None in found else f"hidden states of projection {sorted(found)}"
                raise PowerSampleError(f"{self.spec} was trained on hidden states of projection (size, dims, seed) "
                                       f"= {projection}; these chains have {what}", "controller", self.spec)
        x = features(state, same, self.model.hidden)
        key = tuple(x)
        if key not in self._cache:
            self._cache[key] = float(self.model.estimator.predict_proba([x])[0, 1])
        return self._cache[key]

    def enough(self, state: ProblemState, same: Same) -> bool:
        return self.probability(state, same) >= self.threshold


def check_budget(controller: Controller, budget) -> None:
    """Warn when a learned controller runs under another budget than it was trained for: its features still
    make sense, but its threshold was chosen for the states the other budget produces."""
    if isinstance(controller, Learned) and tuple(controller.model.budget) != (
            budget.k_min, budget.k_step, budget.k_max, budget.decide):
        k_min, k_step, k_max, decide = controller.model.budget
        log.warning("%s was trained for k_min=%s k_step=%s k_max=%s decide=%s, not k_min=%s k_step=%s k_max=%s "
                    "decide=%s: its threshold may not fit (train it with the run's budget)", controller.spec, k_min,
                    k_step, k_max, decide, budget.k_min, budget.k_step, budget.k_max, budget.decide)


def _fixed(arg: str | None) -> Controller:
    if arg is None:
        return Fixed()
    k = _number(arg, int, "fixed")
    check(k >= 1, f"fixed needs K >= 1, got {k}", "controller", arg)
    return Fixed(k)


def _beta(arg: str | None) -> Controller:
    c = 0.95 if arg is None else _number(arg, float, "beta")
    check(0.0 < c < 1.0, f"beta needs a threshold C in (0, 1), got {c:g}", "controller", arg)
    return Beta(c)


def _no_arg(cls):
    def make(arg: str | None) -> Controller:
        check(arg is None, f"{cls.spec} takes no argument, got {arg!r}", "controller", arg)
        return cls()
    return make


def _learned(kind: str):
    def make(arg: str | None) -> Controller:
        from .train import load_controller

        check(arg is not None, f"{kind} needs a trained file: --controller {kind}:ctrl.skops (made by "
              "`powersample controller train`)", "controller", kind)
        path, threshold = arg, None
        if "@" in arg:
            path, t = arg.rsplit("@", 1)
            threshold = _number(t, float, kind)
        model = load_controller(path)
        check(model.kind == kind, f"{path} holds a {model.kind} controller, not {kind}", "controller", path)
        return Learned(model, threshold, f"{kind}:{path}" + (f"@{threshold:g}" if threshold is not None else ""))
    return make


CONTROLLERS.register("fixed", _fixed)
CONTROLLERS.register("agreement", _no_arg(Agreement))
CONTROLLERS.register("beta", _beta)
CONTROLLERS.register("gbdt", _learned("gbdt"))
CONTROLLERS.register("mlp", _learned("mlp"))
CONTROLLERS.register("mlp-h", _learned("mlp-h"))
CONTROLLERS.register("mlp-hq", _learned("mlp-hq"))
CONTROLLERS.register("oracle", _no_arg(Oracle))


def make_controller(spec: str) -> Controller:
    """A controller from its spec string NAME[:ARG] (see the module docstring)."""
    name, _, arg = str(spec).partition(":")
    return CONTROLLERS.get(name.strip())(arg if arg != "" else None)


def _number(text: str, kind, name: str):
    try:
        return kind(text)
    except ValueError:
        raise PowerSampleError(f"{name}: {text!r} is not a {'whole ' if kind is int else ''}number", "controller",
                               text) from None
