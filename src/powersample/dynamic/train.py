"""Learning a controller from logged fixed-k_max runs, and saving it with skops (no code runs on load).

Training rows: one per (problem, checkpoint b, k in the budget's chain counts), the first k chains
after block b; label = the majority answer of those chains equals the final majority answer of all
k_max chains. With the budget's decide="end" only the checkpoint where the first k chains have all
ended is a row (the only state such a controller is asked about, exactly as a replay shows it); with
decide="block" every block is (in a replay, chains added later stand at an earlier block than the
first ones; the training states have all k chains at one block). Cross-validation is grouped by problem (GroupKFold):
each problem gets probabilities from the model that did not see it, the held-out problems are then
replayed for a grid of thresholds, and the cheapest threshold whose replayed accuracy is at most
`target` below fixed k_max is kept. The final model is fitted on every row.

Kinds: `gbdt` and `mlp` on the scalar features; `mlp-h` and `mlp-hq` (the DPS README's MLP-H / MLP-HQ)
add the mean projected hidden state H of the chains and the prompt's Q (features.py), from a log with
hidden states. The file records the feature names and the projection (hidden size d, dims m, seed), and
a controller refuses states without hidden states or with another projection, in one line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from ..errors import PowerSampleError, check
from .controllers import Fixed, Learned
from .features import FEATURES, ProblemState, feature_names, features
from .log import LoggedProblem
from .replay import Budget, Outcome, final_vote, replay_problem
from .vote import Same, majority

KINDS = ("gbdt", "mlp", "mlp-h", "mlp-hq")
HIDDEN = {"mlp-h": "h", "mlp-hq": "hq"}  # the hidden-state features each kind adds (features.py)
MIN_PROBLEMS = 10
THRESHOLDS = tuple(round(x, 3) for x in np.linspace(0.30, 0.99, 24))


@dataclass
class TrainedController:
    kind: str
    estimator: object  # a scikit-learn classifier with predict_proba
    threshold: float
    budget: tuple  # (k_min, k_step, k_max, decide) it was trained for
    features: tuple[str, ...] = FEATURES
    versions: dict = field(default_factory=dict)
    cv: dict = field(default_factory=dict)
    projection: tuple[int, int, int] | None = None  # (hidden size d, dims m, seed) of H/Q; None: scalar only

    @property
    def hidden(self) -> str:
        """Which hidden-state features it reads: "", "h" or "hq"."""
        return HIDDEN.get(self.kind, "")


def estimator(kind: str):
    """The scikit-learn model of a kind (fixed seeds: training twice gives the same file)."""
    if kind == "gbdt":
        from sklearn.ensemble import GradientBoostingClassifier

        return GradientBoostingClassifier(n_estimators=150, max_depth=3, learning_rate=0.05, random_state=0)
    if kind in ("mlp", *HIDDEN):  # inputs standardized: log p sums, counts and hidden states differ in scale
        from sklearn.neural_network import MLPClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(32, 16), max_iter=800,
                                                             random_state=0))
    raise PowerSampleError(f"unknown controller model {kind!r}; choose one of {', '.join(KINDS)}", "model", kind)


def log_projection(problems: Sequence[LoggedProblem]) -> tuple[int, int, int]:
    """The one projection of H and Q in a log (a one-line error if it has none, or several)."""
    found = {s.projection for p in problems for c in p.chains for s in c.states}
    if None in found:
        raise PowerSampleError("this log has no hidden states (H, Q) for mlp-h / mlp-hq: log with --method power "
                               "and hidden_dims > 0 on a transformers model", "hidden")
    if len(found) > 1:
        raise PowerSampleError(f"this log mixes hidden-state projections {sorted(found)}: one at a time", "hidden")
    return found.pop()


def training_rows(problems: Sequence[LoggedProblem], budget: Budget, same: Same, hidden: str = ""):
    """(X, y, groups) as described in the module docstring; `hidden`: which hidden features (features.py)."""
    X, y, groups = [], [], []
    for g, p in enumerate(problems):
        finals = tuple(c.final for c in p.chains[:budget.k_max])
        final = finals[final_vote(p, budget.k_max, same)].answer
        for k in budget.ks():
            blocks = max(len(c.states) for c in p.chains[:k])
            for b in range(blocks if budget.decide == "end" else 1, blocks + 1):
                state = ProblemState(tuple(c.at(b) for c in p.chains[:k]), b, budget.k_max)
                x = features(state, same, hidden)
                answers = [c.answer for c in state.chains]
                lead = majority(answers, [c.logp for c in state.chains], same)
                X.append(x)
                y.append(int(final is not None and answers[lead] is not None and same(answers[lead], final)))
                groups.append(g)
    return np.array(X, dtype=float), np.array(y), np.array(groups)


def train(problems: Sequence[LoggedProblem], same: Same, kind: str = "gbdt", budget: Budget | None = None,
          target: float = 0.01, folds: int = 5) -> TrainedController:
    from sklearn.base import clone
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupKFold

    budget = budget or Budget()
    check(len(problems) >= MIN_PROBLEMS, f"{len(problems)} problems are too few to train and cross-validate a "
          f"controller; log at least {MIN_PROBLEMS}", "problems", len(problems))
    check(len(problems[0].chains) >= budget.k_max, f"the log has {len(problems[0].chains)} chains per problem, "
          f"fewer than k_max={budget.k_max}", "budget", budget.k_max)
    base = estimator(kind)
    hidden = HIDDEN.get(kind, "")
    projection = log_projection(problems) if hidden else None
    names = feature_names(hidden, projection[1] if projection else 0)
    X, y, groups = training_rows(problems, budget, same, hidden)
    check(0 < y.sum() < len(y), f"every training row is labelled {int(y[0])}: nothing to learn", "labels")
    folds = min(folds, len(problems))
    oof = np.zeros(len(y))
    fold_models, aucs = {}, []
    for train_idx, test_idx in GroupKFold(n_splits=folds).split(X, y, groups):
        if len(set(y[train_idx])) < 2:
            raise PowerSampleError("a cross-validation fold has one label only: log more problems", "labels")
        m = clone(base).fit(X[train_idx], y[train_idx])
        oof[test_idx] = m.predict_proba(X[test_idx])[:, 1]
        if len(set(y[test_idx])) == 2:
            aucs.append(float(roc_auc_score(y[test_idx], oof[test_idx])))
        model = Learned(TrainedController(kind, m, 0.5, (budget.k_min, budget.k_step, budget.k_max, budget.decide),
                                          names, projection=projection))
        for g in set(groups[test_idx]):
            fold_models[int(g)] = model
    # replay each held-out problem with the model that did not see it, for every threshold
    fixed = [replay_problem(p, Fixed(), budget, same, False) for p in problems]
    fixed_acc = float(np.mean([o.correct for o in fixed]))
    fixed_tokens = float(np.mean([o.tokens for o in fixed]))
    sweep = []
    for t in THRESHOLDS:
        outs = []
        for g, p in enumerate(problems):
            fold_models[g].threshold = t
            outs.append(replay_problem(p, fold_models[g], budget, same, False))
        sweep.append({"threshold": t, "accuracy": float(np.mean([o.correct for o in outs])),
                      "tokens": float(np.mean([o.tokens for o in outs]))})
    ok = [s for s in sweep if s["accuracy"] >= fixed_acc - target - 1e-12]
    best = min(ok, key=lambda s: (s["tokens"], -s["accuracy"])) if ok else max(sweep, key=lambda s: s["accuracy"])
    cv = {"folds": folds, "problems": len(problems), "rows": int(len(y)), "positive_share": float(y.mean()),
          "auc_per_fold": aucs, "auc_mean": float(np.mean(aucs)) if aucs else math.nan,
          "fixed_k_max_accuracy": fixed_acc, "fixed_k_max_tokens": fixed_tokens, "target": target,
          "target_met": bool(ok), "threshold": best["threshold"], "accuracy": best["accuracy"],
          "tokens": best["tokens"], "token_share": best["tokens"] / fixed_tokens if fixed_tokens else math.nan,
          "sweep": sweep}
    final = clone(base).fit(X, y)
    trained_for = (budget.k_min, budget.k_step, budget.k_max, budget.decide)
    return TrainedController(kind, final, float(best["threshold"]), trained_for, names, _versions(), cv, projection)


def cross_fit(problems: Sequence[LoggedProblem], same: Same, kind: str = "gbdt", budget: Budget | None = None,
              target: float = 0.01, parts: int = 5) -> tuple[list[Outcome], list[TrainedController]]:
    """Every problem replayed by a controller that never saw it: problem i goes to part i mod `parts`, and
    each part is replayed by a controller trained (its threshold chosen too) on the other parts. So a whole
    log is scored, not half of it; parts=2 is `train --split 0/2` + `replay --split 1/2`, and the swap.
    Returns the outcomes in the order of `problems`, and the `parts` controllers."""
    budget = budget or Budget()
    check(parts >= 2, f"cross-fitting needs at least 2 parts, got {parts}", "parts", parts)
    models = [train([p for i, p in enumerate(problems) if i % parts != h], same, kind, budget, target)
              for h in range(parts)]
    outcomes = [replay_problem(p, Learned(models[i % parts]), budget, same, False) for i, p in enumerate(problems)]
    return outcomes, models


def _versions() -> dict:
    out = {}
    for dist in ("powersample", "scikit-learn", "skops", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _skops():
    try:
        import skops.io as sio
    except ImportError:
        raise PowerSampleError("saving and loading controllers needs skops: pip install 'powersample[dynamic]'",
                               "skops") from None
    return sio


def save_controller(c: TrainedController, path: str | Path) -> Path:
    sio = _skops()
    path = Path(path)
    payload = {"kind": c.kind, "estimator": c.estimator, "threshold": c.threshold, "budget": list(c.budget),
               "features": list(c.features), "versions": c.versions, "cv": _plain(c.cv),
               "projection": list(c.projection) if c.projection else None}
    tmp = path.with_name(path.name + ".tmp")
    sio.dump(payload, tmp)
    tmp.replace(path)  # a crash never leaves half a file under the real name
    return path


def load_controller(path: str | Path) -> TrainedController:
    """Load a controller file; only scikit-learn and numpy types are trusted (skops runs no other code)."""
    sio = _skops()
    path = Path(path)
    if not path.is_file():
        raise PowerSampleError(f"controller file {path} does not exist", "controller", str(path))
    try:
        untrusted = sio.get_untrusted_types(file=path)
        bad = [t for t in untrusted if not t.startswith(("sklearn.", "numpy."))]
        if bad:
            raise PowerSampleError(f"{path} holds types that are not scikit-learn's or numpy's ({', '.join(bad)}); "
                                   "refusing to load it", "controller", str(path))
        d = sio.load(path, trusted=untrusted)
    except PowerSampleError:
        raise
    except Exception as e:
        raise PowerSampleError(f"{path} is not a controller file ({type(e).__name__}: {str(e)[:100]})",
                               "controller", str(path)) from None
    if not isinstance(d, dict) or "estimator" not in d or "features" not in d:
        raise PowerSampleError(f"{path} is not a controller file (no estimator or feature list)", "controller",
                               str(path))
    projection = tuple(d["projection"]) if d.get("projection") else None
    expected = feature_names(HIDDEN.get(d.get("kind"), ""), projection[1] if projection else 0)
    if tuple(d["features"]) != expected:
        raise PowerSampleError(f"{path} was trained on other features ({len(d['features'])}: "
                               f"{', '.join(d['features'][:3])}...) than this version computes; retrain it",
                               "controller", str(path))
    return TrainedController(d["kind"], d["estimator"], float(d["threshold"]), tuple(d["budget"]),
                             tuple(d["features"]), d.get("versions", {}), d.get("cv", {}), projection)


def _plain(o):
    """NaN-free plain values for the file's metadata."""
    if isinstance(o, float):
        return None if math.isnan(o) else o
    if isinstance(o, dict):
        return {str(k): _plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_plain(v) for v in o]
    return o
