"""AlpacaEval 2.0: generate outputs for its 805 instructions; the judging is done by `alpaca_eval`.

Nothing is graded here (correct is None). At the end of a run the outputs are written in the exact
format the `alpaca_eval` tool reads, a JSON list of {"instruction", "output", "generator", "dataset"}
in the benchmark's order: `alpaca_eval_outputs.json` (sample 0 of each instruction; further samples
go to alpaca_eval_outputs.sample{j}.json). Then judge them (needs an OpenAI key; AlpacaEval 2.0's
default annotator and length-controlled win rate):

    pip install alpaca-eval
    alpaca_eval --model_outputs RUN_DIR/alpaca_eval_outputs.json

Data: the hub file `alpaca_eval.json` of the dataset tatsu-lab/alpaca_eval (needs huggingface_hub,
which transformers installs, and network), or `--data` a .json array / .jsonl with an `instruction`
field (and optionally `dataset`), e.g. that same file downloaded once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import PowerSampleError
from . import files
from .base import Grade, Problem, Task

HUB_REPO = "tatsu-lab/alpaca_eval"
HUB_FILE = "alpaca_eval.json"
OUTPUTS = "alpaca_eval_outputs.json"


@dataclass(frozen=True)
class AlpacaEval(Task):
    name = "alpacaeval"
    version = "1"
    answers_at_checkpoints = False

    def load(self, data: str | None) -> list[Problem]:
        records = files.read_records(data if data is not None else _download())
        out = []
        for r in records:
            instruction = r.field("instruction")
            dataset = r.field("dataset", required=False) or "alpaca_eval"
            # instructions are unique in AlpacaEval; the position keeps ids stable and short
            out.append(Problem(id=f"alpacaeval/{r.index}", prompt=instruction, meta={"dataset": dataset}))
        return out

    def extract(self, text: str) -> str | None:
        return None

    def grade(self, problem: Problem, completion: str, finished: bool | None = None) -> Grade:
        return Grade(None, None, "not graded here: judge the outputs file with alpaca_eval")

    def export(self, run_dir: Path, rows: Sequence[Mapping[str, Any]], problems: Sequence[Problem],
               generator: str) -> list[Path]:
        """Write the alpaca_eval outputs file(s) for the problems that have rows."""
        by_key = {(r["id"], r["sample_index"]): r for r in rows}
        samples = sorted({r["sample_index"] for r in rows})
        written = []
        for j in samples:
            entries = [{"instruction": p.prompt, "output": by_key[(p.id, j)]["text"].strip(),
                        "generator": generator, "dataset": p.meta.get("dataset", "alpaca_eval")}
                       for p in problems if (p.id, j) in by_key]
            path = Path(run_dir) / (OUTPUTS if j == 0 else OUTPUTS.replace(".json", f".sample{j}.json"))
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(entries, ensure_ascii=False, indent=1), encoding="utf-8")
            os.replace(tmp, path)  # whole file or nothing
            written.append(path)
        return written


def _download() -> str:
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as e:
        raise PowerSampleError("loading AlpacaEval from the hub needs huggingface_hub: pip install "
                               "'powersample[hub]'; or pass --data alpaca_eval.json", "data") from e
    try:
        return hf_hub_download(HUB_REPO, HUB_FILE, repo_type="dataset")
    except Exception as e:  # offline, proxy, hub outage: the same way out for all
        raise PowerSampleError(
            f"could not download {HUB_FILE} from the Hugging Face dataset {HUB_REPO} ({type(e).__name__}: "
            f"{str(e)[:300]}). With network access it downloads once and is cached; offline, download "
            f"https://huggingface.co/datasets/{HUB_REPO}/resolve/main/{HUB_FILE} elsewhere and pass "
            f"--data {HUB_FILE}", "data") from e
