"""JSONL files that survive crashes: rows appended and fsynced; a torn last line is detected and dropped."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from .errors import PowerSampleError


def read_rows(path: str | Path, repair: bool = False) -> list[dict]:
    """All rows of a JSONL file (none if it does not exist).

    A malformed line raises an error naming the file and line, except a torn last line (text after
    the final newline: a write cut short by a kill), which is dropped, and cut from the file if `repair`.
    """
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    complete, _, torn = data.rpartition(b"\n") if b"\n" in data else (b"", b"", data)
    rows = []
    for n, line in enumerate(complete.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise PowerSampleError(f"{path}, line {n}: not valid JSON ({e})", "path", str(path)) from e
        if not isinstance(row, dict):
            raise PowerSampleError(f"{path}, line {n}: expected a JSON object", "path", str(path))
        rows.append(row)
    if torn.strip() and repair:
        with open(path, "r+b") as f:
            f.truncate(len(data) - len(torn))
    return rows


def append_rows(path: str | Path, rows: Iterable[dict]) -> None:
    """Append rows and force them to disk, so a crash right after loses none of them."""
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if not text:
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
