"""A run directory: `run.json` (configuration and versions, written first) and `rows.jsonl`
(one graded (problem, sample) per line, appended and fsynced as each is graded).

Resuming: the rows already written are kept and their (id, sample_index) keys skipped. A process killed
mid-write leaves at most one partial last line (no trailing newline); opening the store for writing
cuts it off. A rerun whose core configuration differs from run.json is refused, naming the fields.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import jsonl
from ..errors import PowerSampleError
from ..jsonl import FORMAT
from .config import upgrade_config

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
ROWS_FILE = "rows.jsonl"


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """The parsed run.json of a run directory, its config in the current layout (its "format" unchanged)."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        raise PowerSampleError(f"{run_dir} is not an eval run directory: it has no {RUN_FILE}", "run",
                               str(run_dir))
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise PowerSampleError(f"{path}:{e.lineno}: not valid JSON ({e.msg})", "run", str(path)) from e
    return {**record, "config": upgrade_config(record.get("config", {}))}


def read_rows(run_dir: str | Path) -> list[dict[str, Any]]:
    """The complete rows of a run, first copy of each (id, sample_index); a torn last line is ignored."""
    rows, seen = [], set()
    for row in jsonl.read_rows(Path(run_dir) / ROWS_FILE):
        key = (row.get("id"), row.get("sample_index"))
        if key in seen:  # only possible if two processes wrote the same run; keep the first
            log.warning("%s: duplicate row for %s sample %s ignored", run_dir, *key)
            continue
        seen.add(key)
        rows.append(row)
    return rows


def diff_core(old: Mapping[str, Any], new: Mapping[str, Any], core: Iterable[str]) -> dict[str, tuple[Any, Any]]:
    """{field: (old value, new value)} for the core fields that differ between two configurations; a
    dict field (the sampler's settings) by its keys, as "sampler.alpha"."""
    out = {}
    for k in sorted(core):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out.update({f"{k}.{sub}": (a.get(sub), b.get(sub)) for sub in sorted(set(a) | set(b))
                        if a.get(sub) != b.get(sub)})
        elif a != b:
            out[k] = (a, b)
    return out


class RunStore:
    """Append-only writer for one run directory (thread-safe: graders' callbacks append)."""

    def __init__(self, run_dir: Path, rows: list[dict[str, Any]], handle, lock_handle):
        self.dir = run_dir
        self.rows_at_open = rows
        self._f = handle
        self._lock_file = lock_handle  # holds an exclusive flock while this store is open
        self._lock = threading.Lock()

    @classmethod
    def open(cls, run_dir: str | Path, record: dict[str, Any], core: Iterable[str]) -> RunStore:
        """Create the run (writing run.json) or resume it after checking its core configuration.

        record: {"config": {...}, "versions": {...}}; `core` names the config keys that must match.
        """
        run_dir = Path(run_dir)
        if run_dir.exists() and not run_dir.is_dir():
            raise PowerSampleError(f"--out {run_dir} is a file, not a run directory; give a directory", "out",
                                   str(run_dir))
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            lock_handle = _lock(run_dir)
        except OSError as e:  # under a file, on a read-only file system, no permission
            raise PowerSampleError(f"cannot write the run directory {run_dir}: {e.strerror or e}", "out",
                                   str(run_dir)) from e
        try:
            return cls._open_locked(run_dir, record, core, lock_handle)
        except OSError as e:
            lock_handle.close()
            raise PowerSampleError(f"cannot write the run directory {run_dir}: {e.strerror or e}", "out",
                                   str(run_dir)) from e
        except BaseException:
            lock_handle.close()
            raise

    @classmethod
    def _open_locked(cls, run_dir: Path, record: dict[str, Any], core: Iterable[str],
                     lock_handle) -> RunStore:
        run_path = run_dir / RUN_FILE
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        if run_path.exists():
            old = read_run(run_dir)
            rows = read_rows(run_dir)
            if old.get("format", 1) < FORMAT or any(r["format"] < FORMAT for r in rows):
                raise PowerSampleError(f"{run_dir} was written by an older powersample (format "
                                       f"{old.get('format', 1)}, now {FORMAT}): `powersample report` reads it, "
                                       "but it cannot be resumed; use another --out directory", "out", str(run_dir))
            differing = diff_core(old.get("config", {}), record["config"], core)
            if differing and not rows:
                # nothing written yet (e.g. the first attempt failed on a bad setting): nothing to mix
                log.info("%s has no rows yet: replacing its configuration (%s)", run_dir,
                         ", ".join(differing))
                old, differing = {}, {}
            if differing:
                detail = "; ".join(f"{k}: {a!r} in the run, {b!r} now" for k, (a, b) in differing.items())
                raise PowerSampleError(
                    f"{run_dir} holds a run with a different configuration ({detail}). Use another --out "
                    f"directory, or rerun with the run's settings to resume it.", "out", str(run_dir))
            if old and old.get("versions") != record.get("versions"):
                log.warning("resuming %s with different versions: %s then, %s now", run_dir,
                            old.get("versions"), record.get("versions"))
            created = old.get("created", now)
            resumed = old.get("resumed", []) + [now]
            record = {**record, "created": created, "resumed": resumed}
        elif (run_dir / ROWS_FILE).exists():
            raise PowerSampleError(f"{run_dir} has {ROWS_FILE} but no {RUN_FILE}: not a run this version can "
                                   "resume; use another --out directory", "out", str(run_dir))
        else:
            record = {**record, "created": now}
        write_json_atomic(run_path, {"format": FORMAT, **record})

        rows_path = run_dir / ROWS_FILE
        jsonl.read_rows(rows_path, repair=True)  # cut a line torn by a kill, so appends start on a new line
        handle = open(rows_path, "ab")
        return cls(run_dir, read_rows(run_dir), handle, lock_handle)

    def done(self) -> set[tuple[str, int]]:
        """(id, sample) of every row written before this store was opened."""
        return {(r["id"], r["sample_index"]) for r in self.rows_at_open}

    def append(self, row: dict[str, Any]) -> None:
        """Write one row durably: a single write of the whole line, flushed and fsynced."""
        line = jsonl.encode(row)
        with self._lock:
            self._f.write(line)
            self._f.flush()
            os.fsync(self._f.fileno())

    def close(self) -> None:
        with self._lock:
            if not self._f.closed:
                self._f.close()
            self._lock_file.close()  # releases the flock

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _lock(run_dir: Path):
    """An exclusive lock on the run: two processes appending to one rows.jsonl would duplicate work."""
    import fcntl

    handle = open(run_dir / ".lock", "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        handle.close()
        raise PowerSampleError(f"another process is writing the run in {run_dir}; wait for it or use another "
                               "--out directory", "out", str(run_dir)) from e
    return handle


def write_json_atomic(path: Path, value: Any) -> None:
    """Write JSON to a temporary file, fsync it, then rename it over `path`: all or nothing."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, sort_keys=False, default=str)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
