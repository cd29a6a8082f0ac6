"""Summaries of eval runs: accuracy with a Wilson 95% interval, pass@k, cost; shards merged.

Reads run.json and rows.jsonl, and dynamic.jsonl for `--method dynamic` runs (merge_runs also
reloads the task's data when the task writes output files, as AlpacaEval does). Run directories
whose configurations differ only in `shard` (and in non-core fields such as device or batch size)
are one run split in pieces: they are merged
(`load_runs` does it on the fly, `merge_runs` writes the merged directory). A directory whose shard
is already there is a rerun, reported as a run of its own.

Accuracy is the share of correct samples over all graded samples (= mean pass@1). Its Wilson interval
treats samples as independent; with several samples per problem they are not (samples of one problem
are correlated), so the interval is then somewhat too narrow.

A dynamic run (docs/dynamic.md) is reported per problem, from its dynamic.jsonl records: accuracy is
the share of recorded problems whose vote (the record's `chosen` chain) is right, cost is per problem
(its k chains summed). pass@k and maj@k are not shown: its problems have different k. Given with a
fixed-k power run of the same task and settings, it is compared with that run's vote over its first
k chains, k = 1..K, on the problems both hold (`versus`).
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import PowerSampleError
from ..jsonl import FORMAT, encode, iter_rows
from .config import NON_CORE, parse_shard
from .passk import mean_pass_at_k, wilson
from .store import ROWS_FILE, RUN_FILE, read_rows, read_run, write_json_atomic

log = logging.getLogger(__name__)

# settings that tell runs apart in labels, in this order (the sampler's settings come after the model)
LABEL_FIELDS = ("task", "model", "chat", "samples_per_problem", "seed", "limit", "data_sha256", "task_options")
DYNAMIC_FILE = "dynamic.jsonl"  # dynamic/live.py's PROBLEMS_FILE: one record per problem of a dynamic run
def _dynamic_settings() -> set[str]:
    """What a dynamic run adds to power's settings (controller, budget, when to ask)."""
    from dataclasses import fields

    from ..dynamic.live import DynamicParams
    from ..samplers.params import PowerParams

    return {f.name for f in fields(DynamicParams)} - {f.name for f in fields(PowerParams)}


@dataclass
class Run:
    """One run, possibly merged from shard directories."""

    dirs: list[Path]
    config: dict[str, Any]
    rows: list[dict[str, Any]]
    shards: list[str]  # the shard of each directory
    versions: dict[str, Any] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)  # dynamic.jsonl, for a dynamic run

    @property
    def shards_missing(self) -> list[int]:
        """Shard numbers of an n-way split that no directory provides."""
        n = parse_shard(self.shards[0])[1]
        have = {parse_shard(s)[0] for s in self.shards}
        return [i for i in range(n) if i not in have]


@dataclass
class Dynamic:
    """What a dynamic run adds to its summary: the controller, the budget, where problems ended."""

    controller: str
    budget: dict[str, int]  # k_min, k_step, k_max
    recorded: int  # problems with a dynamic.jsonl record (the summary's problems)
    started: int  # problems with rows; more than `recorded` while the run is unfinished
    chains: float  # mean chains per recorded problem
    ended_at: dict[int, int]  # k -> problems that ended with k chains
    seconds_per_chain_attributed: bool  # s/problem sums the chains' own seconds (else: batch wall time)
    # fixed-k run of the same settings, on the problems both hold: (label, accuracy, tokens/problem,
    # s/problem or None, chains/problem), fixed k = 1..K then this run
    versus: list[tuple[str, float, float, float | None, float]] = field(default_factory=list)
    versus_run: str = ""
    versus_problems: int = 0


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
    dynamic: Dynamic | None = None  # a --method dynamic run: the numbers above are per problem


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
            runs.append(Run([d], dict(config), read_rows(d), [shard], record.get("versions", {}), read_records(d)))
            continue
        if parse_shard(shard)[1] != parse_shard(run.shards[0])[1]:
            raise PowerSampleError(f"{d} is shard {shard}, {run.dirs[0]} is shard {run.shards[0]}: different "
                                   "splits cannot merge", "run", str(d))
        run.dirs.append(d)
        run.shards.append(shard)
        run.rows.extend(read_rows(d))
        run.records.extend(read_records(d))
    return [r for runs in groups.values() for r in runs]


def read_records(run_dir: str | Path) -> list[dict[str, Any]]:
    """A dynamic run's per-problem records (none for other runs); a torn last line is ignored, as in
    rows.jsonl, and a problem recorded twice keeps its first record."""
    path = Path(run_dir) / DYNAMIC_FILE
    if not path.exists():
        return []
    records, seen = [], set()
    for _, rec in iter_rows(path, torn_tail_ok=True):
        if rec.get("id") not in seen:
            seen.add(rec.get("id"))
            records.append(rec)
    return records


def chain_seconds(row: dict[str, Any]) -> float | None:
    """A chain's own compute seconds (its share of each forward pass, summed: samplers/result.py's
    Checkpoint.chain_seconds) at its last checkpoint; None for rows without them (older runs)."""
    cps = row.get("checkpoints") or []
    if cps and cps[-1].get("chain_seconds") is not None:
        return float(cps[-1]["chain_seconds"])
    return None


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
    if run.records:
        with open(out / DYNAMIC_FILE, "wb") as f:
            for rec in sorted(run.records, key=lambda r: str(r["id"])):
                f.write(encode(rec))
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
    if run.config.get("method") == "dynamic":
        return summarize_dynamic(run, label)
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


def summarize_dynamic(run: Run, label: str | None = None) -> Summary:
    """A dynamic run per problem: the vote's accuracy over recorded problems, tokens and seconds of
    their k chains, where problems ended; no pass@k or maj@k (problems have different k)."""
    rows = {(str(r["id"]), r["sample_index"]): r for r in run.rows}
    started = {str(r["id"]) for r in run.rows}
    outcomes = [_problem(rec, rows) for rec in run.records]
    graded = [o for o in outcomes if o["correct"] is not None]
    correct = sum(bool(o["correct"]) for o in graded)
    used = [r for rec in run.records for j in range(rec["k"]) if (r := rows.get((str(rec["id"]), j)))]
    attributed = bool(outcomes) and all(o["chain_seconds"] is not None for o in outcomes)
    cfg, sampler = run.config, run.config.get("sampler") or {}
    dyn = Dynamic(
        controller=str(sampler.get("controller", "?")),
        budget={k: sampler[k] for k in ("k_min", "k_step", "k_max") if k in sampler},
        recorded=len(run.records), started=len(started | {str(rec["id"]) for rec in run.records}),
        chains=_mean(rec["k"] for rec in run.records),
        ended_at=dict(sorted(Counter(rec["k"] for rec in run.records).items())),
        seconds_per_chain_attributed=attributed)
    return Summary(
        label=label or "dynamic", task=cfg.get("task", "?"), model=cfg.get("model", "?"), method="dynamic",
        dirs=[str(d) for d in run.dirs], problems=len(run.records),
        samples_per_problem=min((rec["k"] for rec in run.records), default=0), rows=len(run.rows),
        graded=len(graded), correct=correct, accuracy=correct / len(graded) if graded else None,
        ci95=wilson(correct, len(graded)) if graded else None, pass_at_k={}, maj_at_k={},
        tokens_per_problem=_mean(rec["tokens"] for rec in run.records),
        tokens_per_sample=_mean(r.get("tokens_generated", 0) for r in used),
        seconds_per_problem=_mean(o["chain_seconds"] if attributed else o["seconds"] for o in outcomes),
        grader_errors=sum(bool(r.get("grader_error")) for r in used),
        unfinished=sum(r.get("finished") is False for r in used), shards_missing=run.shards_missing, dynamic=dyn)


def _problem(record: dict[str, Any], rows: dict[tuple[str, int], dict[str, Any]]) -> dict[str, Any]:
    """One recorded problem: its vote's verdict (None while the chosen chain's row is missing or
    ungraded), and its seconds: the k chains' own seconds summed (None unless all have them), and the
    batch wall time per problem its rows carry (their mean, as for a fixed run)."""
    chains = [rows.get((str(record["id"]), j)) for j in range(record["k"])]
    chosen = rows.get((str(record["id"]), record["chosen"]))
    own = [chain_seconds(r) if r else None for r in chains]
    return {"correct": None if chosen is None else chosen.get("correct"),
            "chain_seconds": sum(own) if own and None not in own else None,
            "seconds": _mean(r.get("seconds", 0.0) for r in chains if r)}


def compare_with_fixed(dyn: Run, dyn_summary: Summary, fixed: Run, fixed_label: str) -> None:
    """Fill `dyn_summary.dynamic.versus`: on the problems both runs hold (recorded in the dynamic run,
    every chain graded in the fixed one), fixed k = 1..K (the vote over the fixed run's first k
    chains, their tokens and own seconds summed) beside the dynamic run's figures."""
    from ..dynamic.vote import equivalence, majority
    from ..tasks import get_task

    try:
        same = equivalence(get_task(dyn.config.get("task", "?"), **(dyn.config.get("task_options") or {})))
    except PowerSampleError:  # a task this version does not know: no vote to replay
        return
    by_problem: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in fixed.rows:
        by_problem[str(r["id"])].append(r)
    rows = {(str(r["id"]), r["sample_index"]): r for r in dyn.rows}
    records = [rec for rec in dyn.records if str(rec["id"]) in by_problem
               and all(r.get("correct") is not None for r in by_problem[str(rec["id"])])]
    outcomes = [_problem(rec, rows) for rec in records]
    keep = [(rec, o) for rec, o in zip(records, outcomes, strict=True) if o["correct"] is not None]
    if not keep:
        return
    chains = [sorted(by_problem[str(rec["id"])], key=lambda r: r["sample_index"]) for rec, _ in keep]
    lines = []
    for k in range(1, min(len(c) for c in chains) + 1):
        hits, tokens, secs = [], [], []
        for c in chains:
            first = c[:k]
            chosen = majority([r.get("extracted") for r in first], [r["logp"] for r in first], same)
            hits.append(bool(first[chosen]["correct"]))
            tokens.append(sum(r.get("tokens_generated", 0) for r in first))
            secs.append([chain_seconds(r) for r in first])
        own = None if any(None in s for s in secs) else _mean(sum(s) for s in secs)
        lines.append((f"fixed k={k}", _mean(hits), _mean(tokens), own, float(k)))
    own = [o["chain_seconds"] for _, o in keep]
    lines.append((f"{dyn_summary.label} ({dyn_summary.dynamic.controller})", _mean(bool(o["correct"]) for _, o in keep),
                  _mean(rec["tokens"] for rec, _ in keep), None if None in own else _mean(own),
                  _mean(rec["k"] for rec, _ in keep)))
    dyn_summary.dynamic.versus, dyn_summary.dynamic.versus_run = lines, fixed_label
    dyn_summary.dynamic.versus_problems = len(keep)


def same_settings(dyn: dict[str, Any], fixed: dict[str, Any]) -> bool:
    """A fixed-k power run that a dynamic run can be compared with: same task, data, model, seed and
    sampler settings (less the dynamic ones); `limit` may differ (the common problems are compared)."""
    keys = ("task", "task_options", "data_sha256", "task_version", "model", "chat", "dtype", "seed")
    if fixed.get("method") != "power" or any(dyn.get(k) != fixed.get(k) for k in keys):
        return False
    d = {k: v for k, v in (dyn.get("sampler") or {}).items() if k not in _dynamic_settings()}
    return d == (fixed.get("sampler") or {})


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
            if k == "samples_per_problem" and r.config.get("method") == "dynamic":
                continue  # (the controller chooses a dynamic run's chains)
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
    labs = labels(runs)
    summaries = [summarize(r, lab) for r, lab in zip(runs, labs, strict=True)]
    for run, s in zip(runs, summaries, strict=True):
        if s.dynamic is None:
            continue
        fixed = next(((f, lab) for f, lab in zip(runs, labs, strict=True) if same_settings(run.config, f.config)),
                     None)
        if fixed is not None:
            compare_with_fixed(run, s, *fixed)
    return summaries


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
        samples = str(s.samples_per_problem) if s.dynamic is None else f"{s.dynamic.chains:.2f} (mean)"
        cells = [s.label, s.task, str(s.problems), samples, acc,
                 *[f"{s.pass_at_k[k]:.3f}" if k in s.pass_at_k else "" for k in ks],
                 *[f"{s.maj_at_k[k]:.3f}" if k in s.maj_at_k else "" for k in majs],
                 f"{s.tokens_per_problem:.0f}", f"{s.seconds_per_problem:.2f}", str(s.grader_errors),
                 str(s.unfinished)]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- {s.label}: shards {s.shards_missing} of the split are missing: partial results"
             for s in summaries if s.shards_missing]
    notes += [_dynamic_note(s) for s in summaries if s.dynamic is not None]
    out = lines + ([""] + notes if notes else [])
    for s in summaries:
        if s.dynamic is not None and s.dynamic.versus:
            out += ["", f"{s.label} vs {s.dynamic.versus_run} on the {s.dynamic.versus_problems} problems both hold "
                    "(fixed k: the vote over its first k chains):", "",
                    "| run | accuracy | tokens/problem | s/problem (chains' own) | chains |", "|---|---|---|---|---|"]
            out += [f"| {name} | {acc:.3f} | {tok:.0f} | {'—' if sec is None else f'{sec:.2f}'} | {k:.2f} |"
                    for name, acc, tok, sec, k in s.dynamic.versus]
            if all(sec is None for *_, sec, _ in s.dynamic.versus):
                out.append("(no per-chain seconds in these rows: s/problem not compared)")
    return "\n".join(out)


def _dynamic_note(s: Summary) -> str:
    d = s.dynamic
    budget = f"k_min={d.budget.get('k_min')} +{d.budget.get('k_step')} up to k_max={d.budget.get('k_max')}"
    ended = ", ".join(f"k={k}: {n}" for k, n in d.ended_at.items()) or "none yet"
    left = d.started - d.recorded
    return (f"- {s.label}: a dynamic run, per problem (its chains' vote, dynamic.jsonl): controller {d.controller}, "
            f"budget {budget}; problems ending with k chains: {ended}; mean {d.chains:.2f} chains and "
            f"{s.tokens_per_problem:.0f} tokens per problem; s/problem is "
            + ("the chains' own seconds summed" if d.seconds_per_chain_attributed
               else "the batch's wall time per problem")
            + "; pass@k and maj@k not shown (problems have different k)"
            + (f"; unfinished: {d.recorded} problems recorded, {left} more started (resume the run)" if left else ""))


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
