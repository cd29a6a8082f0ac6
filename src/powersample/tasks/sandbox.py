"""Run untrusted Python (model-written code plus its tests) in a separate, limited process.

What it does, layer by layer:
1. A fresh interpreter (`python -I -S`: no user site, no PYTHON* variables, no site-packages), started
   in its own session (process group), with a minimal environment, in a new temporary directory as cwd,
   reading/writing stdout and stderr through files capped in size.
2. Kernel limits set before any untrusted line runs (soft = hard, so they cannot be raised again):
   RLIMIT_AS (memory), RLIMIT_CPU, RLIMIT_FSIZE (file size), RLIMIT_NPROC = 0 (no new processes or
   threads), RLIMIT_CORE = 0. Linux skips RLIMIT_NPROC for root, so a root parent also drops the child
   to the `nobody` user before untrusted code runs.
3. Namespaces where `unshare` allows them (a user namespace when not root): a new network namespace
   (no interfaces: no network at all) and a new PID namespace (when its first process dies, the kernel
   kills every process left in it).
4. Defence in depth inside the interpreter: os.fork/exec/spawn/kill/system, subprocess and socket are
   disabled, files can only be opened for writing inside the temporary directory, and destructive
   os/shutil functions (remove, rename, rmtree, chmod...) are gone. These are Python-level patches that
   code using ctypes can bypass; the kernel layers above are what hold.
5. Wall-clock timeout: the whole process group is SIGKILLed (and with it the PID namespace). Should
   the supervising process itself die first, an alarm set before the program starts ends it anyway.

This keeps buggy or runaway code (infinite loops, fork bombs, huge allocations, stray writes, network
calls) from harming the evaluation. It is NOT a security boundary against deliberately malicious code:
the filesystem stays readable, and without namespaces a process that calls setsid() can outlive the
timeout. For that, run evaluations inside a container or VM without network.

A program passes only if it exits with status 0 AND prints the per-run sentinel after its last line,
so a completion that calls exit(0) before the tests ran does not pass.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache

from ..errors import check

_NOBODY = 65534

_PREAMBLE = r'''
import os, resource, sys
def _limit(which, value):
    try:
        resource.setrlimit(which, (value, value))
    except (ValueError, OSError):
        pass
_limit(resource.RLIMIT_AS, {memory})
_limit(resource.RLIMIT_CPU, {cpu})
_limit(resource.RLIMIT_FSIZE, {fsize})
_limit(resource.RLIMIT_CORE, 0)
import signal
signal.alarm({alarm})  # ends a program whose supervisor died (e.g. the eval was killed) and cannot kill it
with open("program.py", encoding="utf-8") as _f:
    _source = _f.read()
_dir = os.getcwd()
if {drop}:  # root ignores RLIMIT_NPROC: become nobody first
    try:
        os.setgroups([])
        os.setgid({nobody})
        os.setuid({nobody})
    except OSError:
        pass
_limit(resource.RLIMIT_NPROC, 0)

import builtins, io, shutil, socket, subprocess
def _denied(*args, **kwargs):
    raise PermissionError("disabled in the powersample sandbox")
for _name in ("fork", "forkpty", "system", "popen", "kill", "killpg", "execv", "execve", "execl", "execle",
              "execlp", "execlpe", "execvp", "execvpe", "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv",
              "spawnve", "spawnvp", "spawnvpe", "posix_spawn", "posix_spawnp", "remove", "unlink", "rmdir",
              "removedirs", "rename", "renames", "replace", "truncate", "chmod", "chown", "lchown", "link",
              "symlink", "setuid", "setgid", "putenv", "chdir", "fchdir", "chroot"):
    if hasattr(os, _name):
        setattr(os, _name, _denied)
for _name in ("rmtree", "move", "chown", "copytree"):
    setattr(shutil, _name, _denied)
subprocess.Popen = _denied
socket.socket = _denied
socket.create_connection = _denied
_open = builtins.open
def _guarded_open(file, mode="r", *args, **kwargs):
    if isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+"):
        path = os.path.realpath(os.fsdecode(file))
        if not (path == _dir or path.startswith(_dir + os.sep)):
            raise PermissionError(f"writing outside the sandbox directory is disabled: {{path}}")
    return _open(file, mode, *args, **kwargs)
builtins.open = io.open = _guarded_open
_os_open = os.open
def _guarded_os_open(path, flags, *args, **kwargs):
    if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND):
        real = os.path.realpath(os.fsdecode(path))
        if not (real == _dir or real.startswith(_dir + os.sep)):
            raise PermissionError(f"writing outside the sandbox directory is disabled: {{real}}")
    return _os_open(path, flags, *args, **kwargs)
os.open = _guarded_os_open
del _name, _f

exec(compile(_source, "program.py", "exec"), {{"__name__": "__main__", "__builtins__": builtins}})
sys.stdout.flush()
sys.stdout.write("\n{sentinel}\n")
sys.stdout.flush()
'''


@dataclass(frozen=True)
class Limits:
    """Resource limits for one execution."""

    timeout: float = 10.0  # wall-clock seconds before the process group is killed
    memory_mb: int = 2048  # address space (RLIMIT_AS)
    cpu_seconds: int | None = None  # RLIMIT_CPU; None = ceil(timeout) + 1
    output_kb: int = 1024  # largest file the program may write, its stdout/stderr included

    def __post_init__(self):
        check(self.timeout > 0, f"timeout must be > 0 seconds, got {self.timeout}", "timeout", self.timeout)
        check(self.memory_mb >= 64, f"memory_mb must be >= 64, got {self.memory_mb}", "memory_mb",
              self.memory_mb)
        check(self.cpu_seconds is None or self.cpu_seconds >= 1,
              f"cpu_seconds must be >= 1, got {self.cpu_seconds}", "cpu_seconds", self.cpu_seconds)
        check(self.output_kb >= 1, f"output_kb must be >= 1, got {self.output_kb}", "output_kb",
              self.output_kb)


@dataclass(frozen=True)
class Execution:
    """How a sandboxed program ended."""

    status: str  # "passed", "failed", "timeout"
    returncode: int | None
    stdout: str  # the last few KB
    stderr: str
    seconds: float
    isolation: str  # the kernel layers used, e.g. "net+pid+nobody" or "none"

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def reason(self) -> str:
        """One line saying why it did not pass (the exception line of a traceback, a signal, a timeout)."""
        if self.status == "passed":
            return "passed"
        if self.status == "timeout":
            return f"timed out after {self.seconds:.1f}s"
        lines = [ln for ln in self.stderr.strip().splitlines() if ln.strip()]
        if lines:
            return lines[-1][:300]
        if self.returncode is not None and self.returncode < 0:
            try:
                return f"killed by {signal.Signals(-self.returncode).name}"
            except ValueError:
                return f"killed by signal {-self.returncode}"
        if self.returncode == 0:
            return "exited before the tests finished"
        return f"exit status {self.returncode}"


def run_python(program: str, limits: Limits = Limits()) -> Execution:
    """Execute `program` (Python source) in a fresh limited process; see the module docstring."""
    sentinel = "powersample-done-" + secrets.token_hex(8)
    cpu = limits.cpu_seconds or int(limits.timeout) + 1
    drop = _can_drop_privileges()
    preamble = _PREAMBLE.format(memory=limits.memory_mb << 20, cpu=cpu, fsize=limits.output_kb << 10,
                                nobody=_NOBODY, sentinel=sentinel, drop=drop,
                                alarm=int(limits.timeout) + 5)
    workdir = tempfile.mkdtemp(prefix="powersample-sandbox-")
    try:
        with open(os.path.join(workdir, "program.py"), "w", encoding="utf-8") as f:
            f.write(program)
        with open(os.path.join(workdir, "main.py"), "w", encoding="utf-8") as f:
            f.write(preamble)
        if drop:  # the child becomes nobody: let it use its directory
            os.chown(workdir, _NOBODY, _NOBODY)
        prefix, isolation = _unshare_prefix()
        isolation += "+nobody" if drop else ""
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir,
               "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            start = time.monotonic()
            proc = subprocess.Popen([*prefix, _python(), "-I", "-S", "main.py"], cwd=workdir, env=env,
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)
            timed_out = False
            try:
                proc.wait(timeout=limits.timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill_group(proc)
            seconds = time.monotonic() - start
            stdout, stderr = _tail(out), _tail(err)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if timed_out:
        status = "timeout"
    elif proc.returncode == 0 and stdout.rstrip().endswith(sentinel):
        status = "passed"
    else:
        status = "failed"
    return Execution(status, None if timed_out else proc.returncode, stdout.replace(sentinel, "").rstrip(),
                     stderr, seconds, isolation)


def _kill_group(proc: subprocess.Popen) -> None:
    # The child leads its own session, so its pid is the group id; killing the group also takes any
    # children it managed to start (and, with a PID namespace, unshare's death takes the namespace).
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _tail(f, limit: int = 4096) -> str:
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(max(0, size - limit))
    return f.read().decode("utf-8", errors="replace")


def _python() -> str:
    # the base interpreter: a venv's python works too, but -I -S means its site-packages are unused anyway
    return getattr(sys, "_base_executable", None) or sys.executable


@lru_cache(maxsize=1)
def _unshare_prefix() -> tuple[list[str], str]:
    """The `unshare` command line that gives a new network and PID namespace, if this machine allows it."""
    tool = shutil.which("unshare")
    if tool is None:
        return [], "none"
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    cmd = [tool, *user, "--net", "--pid", "--fork", "--kill-child"]
    try:
        ok = subprocess.run([*cmd, "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    return (cmd, "net+pid") if ok else ([], "none")


@lru_cache(maxsize=1)
def _can_drop_privileges() -> bool:
    """Root, and `nobody` could still import the standard library (every directory on the way to it is
    world-searchable and its files world-readable)."""
    if os.geteuid() != 0:
        return False
    stdlib = os.path.dirname(os.__file__)
    path = stdlib
    while True:
        mode = os.stat(path).st_mode
        if not mode & stat.S_IXOTH or (path == stdlib and not mode & stat.S_IROTH):
            return False
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return bool(os.stat(os.path.join(stdlib, "os.py")).st_mode & stat.S_IROTH)
