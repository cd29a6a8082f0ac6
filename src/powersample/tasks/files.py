"""Reading task data files (JSON arrays, JSONL, CSV, optionally gzipped) with file:line error messages.

Every record comes with the line it starts on, so a malformed row is reported as `path:line: what is
wrong` instead of a KeyError deep inside a run.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import PowerSampleError

_SHIPPED = "powersample.tasks"  # shipped files live in powersample/tasks/data/


@dataclass(frozen=True)
class Record:
    """One data row and where it came from."""

    source: str  # the file, for messages
    line: int  # 1-based line the row starts on
    index: int  # 0-based position among the rows
    value: Any

    def where(self) -> str:
        return f"{self.source}:{self.line}"

    def field(self, name: str | Iterable[str], kind: type = str, required: bool = True) -> Any:
        """Field `name` (or the first present of several names) of a dict row, checked to be a `kind`."""
        names = [name] if isinstance(name, str) else list(name)
        if not isinstance(self.value, dict):
            raise PowerSampleError(f"{self.where()}: expected an object with field(s) {names}, "
                                   f"got {type(self.value).__name__}", "data", self.source)
        for n in names:
            if n in self.value and self.value[n] is not None:
                v = self.value[n]
                if kind is str and isinstance(v, (int, float)) and not isinstance(v, bool):
                    v = str(v)  # numeric answers written as JSON numbers are fine
                if not isinstance(v, kind):
                    raise PowerSampleError(f"{self.where()}: field {n!r} must be a {kind.__name__}, got "
                                           f"{type(v).__name__}", "data", self.source)
                if kind is str and not v.strip():
                    raise PowerSampleError(f"{self.where()}: field {n!r} is empty", "data", self.source)
                return v
        if required:
            alt = f" (or {', '.join(map(repr, names[1:]))})" if len(names) > 1 else ""
            raise PowerSampleError(f"{self.where()}: missing field {names[0]!r}{alt}; the row has "
                                   f"{sorted(self.value)}", "data", self.source)
        return None


def shipped_path(name: str) -> Any:
    """The packaged data file `name` (a Traversable: open it with `.open('rb')`)."""
    return resources.files(_SHIPPED).joinpath("data", name)


def read_shipped(name: str) -> list[Record]:
    """Records of a data file shipped in powersample/tasks/data/."""
    ref = shipped_path(name)
    with ref.open("rb") as f:
        return parse_records(f.read(), f"powersample/tasks/data/{name}")


def read_records(path: str | Path) -> list[Record]:
    """Records of a user's file: .json (an array of objects), .jsonl, or .csv; each may end in .gz."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise PowerSampleError(f"data file {str(p)!r} does not exist", "data", str(path))
    return parse_records(p.read_bytes(), str(p))


def parse_records(raw: bytes, source: str) -> list[Record]:
    """Records from the bytes of a file named `source` (the suffix picks the format)."""
    name = source.lower()
    if name.endswith(".gz"):
        raw = gzip.decompress(raw)
        name = name[:-3]
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise PowerSampleError(f"{source}: not UTF-8 text ({e})", "data", source) from e
    if name.endswith(".jsonl") or name.endswith(".ndjson"):
        return _jsonl(text, source)
    if name.endswith(".csv"):
        return _csv(text, source)
    if name.endswith(".json"):
        return _json_array(text, source)
    raise PowerSampleError(f"{source}: unknown data format; use .json (array), .jsonl or .csv", "data",
                           source)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _jsonl(text: str, source: str) -> list[Record]:
    from ..jsonl import parse_lines

    return [Record(source, n, i, value) for i, (n, value) in enumerate(parse_lines(text.encode(), source))]


def _json_array(text: str, source: str) -> list[Record]:
    # Decode item by item (not json.loads) so each item knows the line it starts on.
    dec = json.JSONDecoder()
    pos = _skip_ws(text, 0)
    if pos >= len(text) or text[pos] != "[":
        raise PowerSampleError(f"{source}:{_line(text, pos)}: expected a JSON array of objects", "data",
                               source)
    out: list[Record] = []
    pos = _skip_ws(text, pos + 1)
    while pos < len(text) and text[pos] != "]":
        line = _line(text, pos)
        try:
            value, pos = dec.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise PowerSampleError(f"{source}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno})",
                                   "data", source) from e
        out.append(Record(source, line, len(out), value))
        pos = _skip_ws(text, pos)
        if pos < len(text) and text[pos] == ",":
            pos = _skip_ws(text, pos + 1)
        elif pos < len(text) and text[pos] != "]":
            raise PowerSampleError(f"{source}:{_line(text, pos)}: expected ',' or ']' in the array", "data",
                                   source)
    if pos >= len(text):
        raise PowerSampleError(f"{source}:{_line(text, pos)}: the JSON array is not closed", "data", source)
    return out


def _csv(text: str, source: str) -> list[Record]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    out = []
    start = 2  # the header is line 1; reader.line_num is the line a row ends on (fields may span lines)
    for row in reader:
        if None in row:  # more cells than header columns
            raise PowerSampleError(f"{source}:{start}: more cells than the header has columns", "data",
                                   source)
        if any(v is None for v in row.values()):
            raise PowerSampleError(f"{source}:{start}: fewer cells than the header has columns", "data",
                                   source)
        out.append(Record(source, start, len(out), dict(row)))
        start = reader.line_num + 1
    return out


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos
