"""The one JSONL reader and writer, and the one row format (docs/format.md).

Files we append to survive crashes: each row is one line, written whole, flushed and fsynced. A kill
mid-write can leave only a partial last line (no newline after it): readers drop it, and `repair`
cuts it from the file so that appends continue cleanly. A bad line anywhere else is an error naming
the file and line: it is damage, not a torn write.

A row is a Result's fields plus the run's ids (`id`, `sample_index`), plus the grade fields where
graded (`powersample eval`) or the prompt hash and settings (`powersample generate`); `format` is
this layout's version. `read_rows` renames the fields of older rows (see `upgrade`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .errors import PowerSampleError

log = logging.getLogger(__name__)

FORMAT = 2  # of rows (and run.json); bump on an incompatible change and teach `upgrade` the old one


def parse_lines(data: bytes, source: str, torn_tail_ok: bool = False) -> Iterator[tuple[int, Any]]:
    """(1-based line number, JSON value) for each non-empty line of `data`, read from `source`.

    With `torn_tail_ok`, text after the final newline (a write cut short by a kill) is skipped.
    """
    if torn_tail_ok:
        data = data[: data.rfind(b"\n") + 1]
    for n, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
            raise PowerSampleError(f"{source}:{n}: not valid JSON ({e})", "path", source) from e
        yield n, value


def iter_rows(path: str | Path, torn_tail_ok: bool = False) -> Iterator[tuple[int, dict]]:
    """(line number, row) for each line of a JSONL file of objects; a bad line raises naming file and line."""
    for n, row in parse_lines(Path(path).read_bytes(), str(path), torn_tail_ok):
        if not isinstance(row, dict):
            raise PowerSampleError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}", "path",
                                   str(path))
        yield n, row


def read_rows(path: str | Path, repair: bool = False) -> list[dict]:
    """The rows of a JSONL file we wrote (none if it does not exist), in the current format. A torn
    last line is dropped, and with `repair` cut from the file so that appends continue cleanly."""
    path = Path(path)
    if not path.exists():
        return []
    rows = [upgrade(row) for _, row in iter_rows(path, torn_tail_ok=True)]
    if repair:
        data = path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            log.warning("%s: dropping a partially written last line (a run was killed mid-write)", path)
            with open(path, "r+b") as f:
                f.truncate(end)
                f.flush()
                os.fsync(f.fileno())
    return rows


def encode(row: dict) -> bytes:
    """One row as one line of compact JSON (tensors and numpy values in `stats` as lists)."""
    return (json.dumps(row, ensure_ascii=False, separators=(",", ":"), default=_plain) + "\n").encode("utf-8")


def append_rows(path: str | Path, rows: Iterable[dict]) -> None:
    """Append rows with one write and force them to disk, so a crash right after loses none of them."""
    data = b"".join(encode(r) for r in rows)
    if not data:
        return
    with open(path, "ab") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def result_row(result, id: str, text: str | None) -> dict[str, Any]:
    """The row of one Result: its fields, keyed by the prompt's `id` instead of its batch position.
    Checkpoints keep their counts, not their token ids (`tokens`: the completion's length then)."""
    return {
        "format": FORMAT, "id": id, "sample_index": result.sample_index, "method": result.method,
        "text": text, "token_ids": list(result.token_ids), "finished": result.finished, "logp": result.logp,
        "tokens_generated": result.tokens_generated, "seconds": result.seconds,
        "acceptance_rate": result.acceptance_rate, "stats": result.stats,
        "checkpoints": [{"block": cp.block, "tokens": len(cp.token_ids), "tokens_generated": cp.tokens_generated,
                         "logp": cp.logp, "acceptance_rate": cp.acceptance_rate, "mean_entropy": cp.mean_entropy,
                         "mean_top1": cp.mean_top1, "seconds": cp.seconds, "ended": cp.ended,
                         "chain_seconds": cp.chain_seconds, "hidden": cp.hidden} for cp in result.checkpoints],
        "prompt_hidden": result.prompt_hidden, "hidden_projection": result.hidden_projection,
    }


# format 1 had no `format` field; eval wrote sample/completion/tokens, generate sample_index/text/completion_tokens
_V1_NAMES = {"sample": "sample_index", "completion": "text"}


def upgrade(row: dict) -> dict:
    """A row in the current field names. Rows of format 1 keep `format: 1`: they can be read, and a
    writer can tell that the file was made by an older version (such files are not resumed)."""
    if "format" in row:
        return row
    out = {"format": 1}
    for k, v in row.items():
        out[_V1_NAMES.get(k, k)] = v
    return out


def _plain(o: Any) -> Any:
    """JSON for what samplers may put in `stats`: tensors and numpy values via tolist(), else str."""
    return o.tolist() if hasattr(o, "tolist") else str(o)
