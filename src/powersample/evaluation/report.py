"""Summaries of eval runs: accuracy with a Wilson 95% interval, pass@k, cost; shards merged.

Reads only run.json and rows.jsonl (merge_runs also reloads the task's data when the task writes
output files, as AlpacaEval does). Run directories whose configurations differ only in `shard`
(and in non-core fields such as device or batch size) are one run split in pieces: they are merged
(`load_runs` does it on the fly, `merge_runs` writes the merged directory). A directory whose shard
is already there is a rerun, reported as a run of its own.

Accuracy is the share of correct samples over all graded samples (= mean pass@1). Its Wilson interval
treats samples as independent; with several samples per problem they are not (samples of one problem
are correlated), so the interval is then somewhat too narrow.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import PowerSampleError
from ..jsonl import FORMAT, encode
from .config import NON_CORE, parse_shard
from .passk import mean_pass_at_k, wilson
from .store import ROWS_FILE, RUN_FILE, read_rows, read_run, write_json_atomic

log = logging.getLogger(__name__)

# settings that tell runs apart in labels, in this order (the sampler's settings come after the model)
LABEL_FIELDS = ("task", "model", "chat", "samples_per_problem", "seed", "limit", "data_sha256", "task_options")


@dataclass
class Run:
    """One run, possibly merged from shard directories."""

    dirs: list[Path]
    config: dict[str, Any]
    rows: list[dict[str, Any]]
    shards: list[str]  # the shard of each directory
    versions: dict[str, Any] = field(default_factory=dict)

    @property
    def shards_missing(self) -> list[int]:
        """Shard numbers of an n-way split that no directory provides."""
        n = parse_shard(self.shards[0])[1]
        have = {parse_shard(s)[0] for s in self.shards}
        return [i for i in range(n) if i not in have]


@dataclass
class Summary:
    """The numbers `report` prints for one run."""

    label: str
    task: str
    model: str
    method: str
    dirs: list[str]
    problems: int
    samples_per_problem: int  # the fewest samples any problem has (pass@k is defined up to this k)
    rows: int
    graded: int
    correct: int
    accuracy: float | None
    ci95: tuple[float, float] | None
    pass_at_k: dict[int, float]
    maj_at_k: dict[int, float]  # the vote over samples 0..k-1 is right (dynamic/vote.py), k = 2..K
    tokens_per_problem: float  # every generated token, rejected proposals included, summed over samples
    tokens_per_sample: float
    seconds_per_problem: float
    grader_errors: int
    unfinished: int  # samples cut at max_new_tokens (no EOS)
    shards_missing: list[int]
    # (mean tokens generated so far, accuracy of the running answer) after each block, when recorded
    checkpoint_curve: list[tuple[float, float]] = field(default_factory=list)


def _group_key(config: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in config.items() if k not in NON_CORE and k != "shard"}, sort_keys=True,
                      default=str)


def load_runs(dirs: Iterable[str | Path]) -> list[Run]:
    """Read run directories, merging those that are shards of one run (same config but shard).

    A directory joins the first run of its configuration that lacks its shard; one whose shard is
    already there is a rerun, and starts a run of its own (so reruns can be compared side by side).
    """
    groups: dict[str, list[Run]] = defaultdict(list)
    seen: dict[Path, Path] = {}
    for d in dirs:
        d = Path(d)
        if d.resolve() in seen:
            raise PowerSampleError(f"{d} is given twice (also as {seen[d.resolve()]})", "run", str(d))
        seen[d.resolve()] = d
        record = read_run(d)
        config = record.get("config", {})
        shard = config.get("shard", "0/1")
        runs = groups[_group_key(config)]
        run = next((r for r in runs if shard not in r.shards), None)
        if run is None:
            runs.append(Run([d], dict(config), read_rows(d), [shard], record.get("versions", {})))
            continue
        if parse_shard(shard)[1] != parse_shard(run.shards[0])[1]:
            raise PowerSampleError(f"{d} is shard {shard}, {run.dirs[0]} is shard {run.shards[0]}: different "
                                   "splits cannot merge", "run", str(d))
        run.dirs.append(d)
        run.shards.append(shard)
        run.rows.extend(read_rows(d))
    return [r for runs in groups.values() for r in runs]


def merge_runs(dirs: Sequence[str | Path], out: str | Path) -> Path:
    """Write the shards `dirs` of one run as a single run directory `out` (shard 0/1)."""
    runs = load_runs(dirs)
    if len(runs) != 1:
        raise PowerSampleError(f"the directories hold {len(runs)} runs, not the shards of one run: their "
                               "configurations differ in more than the shard, or a shard comes twice", "run")
    run = runs[0]
    out = Path(out)
    if (out / ROWS_FILE).exists():
        raise PowerSampleError(f"{out} already holds a run; merge into a new directory", "out", str(out))
    out.mkdir(parents=True, exist_ok=True)
    config = {**run.config, "shard": "0/1", "out": str(out)}
    write_json_atomic(out / RUN_FILE, {"format": FORMAT, "config": config, "versions": run.versions,
                                        "merged_from": [str(d) for d in run.dirs]})
    with open(out / ROWS_FILE, "wb") as f:
        for row in sorted(run.rows, key=lambda r: (str(r["id"]), r["sample_index"])):
            f.write(encode(row))
    _export(config, out, run.rows)
    return out


def _export(config: dict[str, Any], out: Path, rows: list[dict[str, Any]]) -> None:
    """Task output files (AlpacaEval's) for the merged run; they need the task's data again."""
    from ..tasks import get_task
    from ..tasks.base import Task
    from .config import EvalConfig
    from .runner import generator_name, select_problems

    task = get_task(config["task"], **config.get("task_options", {}))
    if type(task).export is Task.export:
        return
    try:
        problems = select_problems(task.load(config.get("data")), config.get("limit"), (0, 1))
    except PowerSampleError as e:
        log.warning("merged rows written, but not the %s output files: %s", config["task"], e)
        return
    task.export(out, rows, problems, generator_name(EvalConfig.from_dict(config)))


def summarize(run: Run, label: str | None = None) -> Summary:
    """Accuracy, its interval, pass@k for k = 1..K, cost and the checkpoint curve of one run."""
    by_problem: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in run.rows:
        by_problem[r["id"]].append(r)
    graded = [r for r in run.rows if r.get("correct") is not None]
    correct = sum(bool(r["correct"]) for r in graded)
    counts = []
    for rows in by_problem.values():
        g = [r for r in rows if r.get("correct") is not None]
        if g:
            counts.append((len(g), sum(bool(r["correct"]) for r in g)))
    k_max = min((n for n, _ in counts), default=0)
    cfg = run.config
    return Summary(
        label=label or cfg.get("method", "?"), task=cfg.get("task", "?"), model=cfg.get("model", "?"),
        method=cfg.get("method", "?"), dirs=[str(d) for d in run.dirs], problems=len(by_problem),
        samples_per_problem=min((len(v) for v in by_problem.values()), default=0), rows=len(run.rows),
        graded=len(graded), correct=correct, accuracy=correct / len(graded) if graded else None,
        ci95=wilson(correct, len(graded)) if graded else None,
        pass_at_k={k: mean_pass_at_k(counts, k) for k in range(1, k_max + 1)}, maj_at_k=majority_at_k(run, k_max),
        tokens_per_problem=_mean(sum(r.get("tokens_generated", 0) for r in v) for v in by_problem.values()),
        tokens_per_sample=_mean(r.get("tokens_generated", 0) for r in run.rows),
        seconds_per_problem=_mean(_mean(r.get("seconds", 0.0) for r in v) for v in by_problem.values()),
        grader_errors=sum(bool(r.get("grader_error")) for r in run.rows),
        unfinished=sum(r.get("finished") is False for r in run.rows),
        shards_missing=run.shards_missing, checkpoint_curve=checkpoint_curve(run.rows))


def majority_at_k(run: Run, k_max: int) -> dict[int, float]:
    """maj@k for k = 2..k_max over the problems whose samples are all graded; {} for tasks without
    answers to compare (code, AlpacaEval) or a task this version does not know."""
    from ..dynamic.vote import equivalence, maj_at_k
    from ..tasks import get_task

    try:
        same = equivalence(get_task(run.config.get("task", "?"), **(run.config.get("task_options") or {})))
    except PowerSampleError:
        return {}
    by_problem: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in run.rows:
        by_problem[r["id"]].append(r)
    graded = [v for v in by_problem.values() if all(r.get("correct") is not None for r in v)]
    return {k: maj_at_k(graded, same, k) for k in range(2, k_max + 1)}


def checkpoint_curve(rows: Sequence[dict[str, Any]]) -> list[tuple[float, float]]:
    """Per block b: (mean tokens generated by then, share of samples whose running answer is right).

    A sample that finished before block b counts with its last checkpoint (its answer is final).
    Empty when the rows have no graded checkpoints (tasks without running answers, or baselines).
    """
    tracks = [r.get("checkpoints") or [] for r in rows if r.get("correct") is not None]
    tracks = [t for t in tracks if t and all(c.get("correct") is not None for c in t)]
    if not tracks:
        return []
    curve = []
    for b in range(max(len(t) for t in tracks)):
        points = [t[min(b, len(t) - 1)] for t in tracks]
        curve.append((_mean(c["tokens_generated"] for c in points),
                      _mean(bool(c["correct"]) for c in points)))
    return curve


def labels(runs: Sequence[Run]) -> list[str]:
    """Short distinct labels: the method plus whatever setting differs between the runs (a sampler
    setting only when it differs between the runs whose method uses it)."""
    used = [used_settings(r.config) for r in runs]
    sampler_keys = sorted({k for r in runs for k in r.config.get("sampler") or {}})

    def differs(k: str) -> bool:
        if k in sampler_keys:
            values = [r.config["sampler"][k] for r, u in zip(runs, used, strict=True) if k in u]
        else:
            values = [r.config.get(k) for r in runs]
        return len({json.dumps(v, sort_keys=True, default=str) for v in values}) > 1

    varying = [k for k in (*LABEL_FIELDS[:2], *sampler_keys, *LABEL_FIELDS[2:]) if differs(k)]
    out = []
    for r, u in zip(runs, used, strict=True):
        parts = [r.config.get("method", "?")]
        for k in varying:
            if k in sampler_keys:
                if k not in u:
                    continue
                v = r.config["sampler"][k]
            else:
                v = r.config.get(k)
            if k == "model":
                v = Path(str(v).rstrip("/")).name
            elif k == "data_sha256" and v:
                v = str(v)[:8]
            parts.append(f"{k}={v}")
        out.append(" ".join(parts))
    if len(set(out)) < len(out):  # identical settings (e.g. reruns): the directory tells them apart
        out = [f"{lab} [{r.dirs[0].name}]" for lab, r in zip(out, runs, strict=True)]
    return out


def used_settings(config: dict[str, Any]) -> set[str]:
    """The sampler settings of the run the method reads: those whose change changes the method's
    parameters (temperature ignores alpha; low-temperature samples at 1/alpha, whatever temperature)."""
    from ..api import make_params

    method, settings = config.get("method", "?"), dict(config.get("sampler") or {})
    try:
        base = make_params(method, **settings)
    except PowerSampleError:  # a method or option this version does not know: count every setting
        return set(settings)
    used = set()
    for k, v in settings.items():
        try:
            if make_params(method, **{**settings, k: _changed(v)}) != base:
                used.add(k)
        except PowerSampleError:  # the changed value is out of range for the method: it reads it
            used.add(k)
    return used


def _changed(v: Any) -> Any:
    """Another value of the same kind (a number doubled, a flag flipped), to see whether a setting matters."""
    if isinstance(v, bool):
        return not v
    if v is None or isinstance(v, (int, float)):
        return (v or 1) * 2
    return f"{v}?"


def report(dirs: Sequence[str | Path]) -> list[Summary]:
    """Summaries of the runs in `dirs` (shards merged), labelled so they can be told apart."""
    runs = load_runs(dirs)
    return [summarize(r, lab) for r, lab in zip(runs, labels(runs), strict=True)]


def format_table(summaries: Sequence[Summary]) -> str:
    """A Markdown table, one run per row: accuracy [95% CI], pass@k (k = 1, 2, 4, ... and K), cost."""
    ks = sorted({k for s in summaries for k in s.pass_at_k if k & (k - 1) == 0 or k == max(s.pass_at_k)})
    majs = [k for k in ks if any(k in s.maj_at_k for s in summaries)]
    head = ["run", "task", "problems", "samples", "accuracy [95% CI]", *[f"pass@{k}" for k in ks],
            *[f"maj@{k}" for k in majs],
            "tokens/problem", "s/problem", "grader errors", "no EOS"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summaries:
        acc = "—" if s.accuracy is None else f"{s.accuracy:.3f} [{s.ci95[0]:.3f}, {s.ci95[1]:.3f}]"
        cells = [s.label, s.task, str(s.problems), str(s.samples_per_problem), acc,
                 *[f"{s.pass_at_k[k]:.3f}" if k in s.pass_at_k else "" for k in ks],
                 *[f"{s.maj_at_k[k]:.3f}" if k in s.maj_at_k else "" for k in majs],
                 f"{s.tokens_per_problem:.0f}", f"{s.seconds_per_problem:.2f}", str(s.grader_errors),
                 str(s.unfinished)]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- {s.label}: shards {s.shards_missing} of the split are missing: partial results"
             for s in summaries if s.shards_missing]
    return "\n".join(lines + ([""] + notes if notes else []))


def write_report(summaries: Sequence[Summary], out_dir: str | Path) -> list[Path]:
    """report.md (the table) and report.json (every number) in `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / "report.md"
    md.write_text(format_table(summaries) + "\n", encoding="utf-8")
    js = out_dir / "report.json"
    js.write_text(json.dumps(_finite([asdict(s) for s in summaries]), indent=2) + "\n", encoding="utf-8")
    return [md, js]


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.fmean(values) if values else math.nan


def _finite(o: Any) -> Any:
    """NaN -> None throughout, so report.json is strict JSON; tuples become lists, dict keys strings."""
    if isinstance(o, float):
        return None if math.isnan(o) or math.isinf(o) else o
    if isinstance(o, dict):
        return {str(k): _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o
