"""JSONL files that survive crashes: rows appended and fsynced; a torn last line is detected and dropped."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import PowerSampleError


def iter_rows(path: str | Path, torn_tail_ok: bool = False) -> Iterator[tuple[int, dict]]:
    """(line number, row) for each non-empty line of a JSONL file; a bad line raises naming file and line.

    With `torn_tail_ok`, text after the final newline (a write cut short by a kill) is skipped.
    """
    path = Path(path)
    data = path.read_bytes()
    if torn_tail_ok:
        data = data[: data.rfind(b"\n") + 1]
    for n, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise PowerSampleError(f"{path}, line {n}: not valid JSON ({e})", "path", str(path)) from e
        if not isinstance(row, dict):
            raise PowerSampleError(f"{path}, line {n}: expected a JSON object", "path", str(path))
        yield n, row


def read_rows(path: str | Path, repair: bool = False) -> list[dict]:
    """All rows of a JSONL file we wrote (none if it does not exist). A torn last line is dropped,
    and with `repair` cut from the file so that appends continue cleanly."""
    path = Path(path)
    if not path.exists():
        return []
    rows = [row for _, row in iter_rows(path, torn_tail_ok=True)]
    if repair:
        data = path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            with open(path, "r+b") as f:
                f.truncate(end)
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
