"""Run untrusted Python (model-written code plus its tests) in a separate, limited process.

The layers, from the outside in:
1. Namespaces (`unshare`, as root): new mount, network and PID namespaces. No network interface at
   all; a fresh /proc that shows only the sandbox's own processes; a private tmpfs as /tmp (the
   program's working directory; it vanishes with the namespace, so nothing is left on disk), and
   /var/tmp, /dev/shm and /run/lock covered by read-only tmpfs. The Python installation is
   bind-mounted at /tmp/python and run from there, so `nobody` can import the standard library even
   when the interpreter lives where only root can read (e.g. under /root/.pyenv).
2. An unprivileged user: the program switches to `nobody` before its first untrusted line, and stops
   if it cannot (it never runs as root by accident). `nobody` reads only what any user may read
   (world-readable files stay readable), writes only in its directory (and any world-writable one
   not covered above), and cannot read other processes' environments, enter other namespaces, or
   start processes (RLIMIT_NPROC = 0 binds every user but root).
3. Kernel limits, soft = hard: RLIMIT_AS (memory), RLIMIT_CPU, RLIMIT_FSIZE (file size, stdout and
   stderr included), RLIMIT_NPROC = 0, RLIMIT_CORE = 0.
4. Nothing outlives the grader: on timeout the whole process group is SIGKILLed; the kernel kills
   every process of a PID namespace when its first process (a shell that waits for the program) dies;
   and should the grader itself be killed, the parent-death signal (setpriv --pdeathsig, then
   unshare --kill-child) takes the chain down with it. An alarm is the last resort.
5. Python-level guards (fork/exec/kill/subprocess/socket disabled, writes only in the working
   directory): code using ctypes or _io/posix bypasses these; the layers above are what hold.

`isolation()` probes once which layers this machine allows. "Isolated" means all of them (an
unprivileged uid and the namespaces): only root where unshare and mount work achieves it. Anything less
(a non-root user: the program would run with that user's files; a container without CAP_SYS_ADMIN: no
network namespace) is refused unless the caller passes unsafe=True; the layers achieved are then
reported in every Execution (and in run.json).

A program passes only if it exits with status 0 AND prints the per-run sentinel after its last line,
so a completion that calls exit(0) before the tests ran does not pass.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache

from ..errors import PowerSampleError, check

_NOBODY = 65534
ISOLATED = "nobody+net+pid+mnt"  # the full isolation level (see isolation())
_SCRATCH = "64m"  # size of the program's private /tmp (memory-backed)

# Run as the first process (PID 1) of the new namespaces, as root there. $1: the Python prefix to
# bind-mount; $2: 1 to hand the working directory to nobody; the rest: the command. The shell waits
# for the program rather than exec'ing it: PID 1 ignores signals it has no handler for (the alarm).
_NAMESPACE_SCRIPT = f"""set -e
mount -t tmpfs -o size={_SCRATCH},mode=755,nosuid,nodev sandbox /tmp
mkdir /tmp/python /tmp/work
mount --bind "$1" /tmp/python
for d in /var/tmp /dev/shm /run/lock; do
  if [ -d "$d" ]; then mount -t tmpfs -o size=4k,mode=755,nosuid,nodev,noexec sandbox "$d"; fi
done
if [ "$2" = 1 ]; then chown {_NOBODY}:{_NOBODY} /tmp/work; fi
cd /tmp/work
shift 2
set +e
"$@"
exit $?
"""

# The program arrives on stdin (first line: the sentinel), so nothing of it lies on disk or in argv.
_PREAMBLE = r'''
import os, resource, signal, sys
_sentinel, _, _source = sys.stdin.buffer.read().decode("utf-8").partition("\n")
_null = os.open(os.devnull, os.O_RDONLY)
os.dup2(_null, 0)
os.close(_null)
def _limit(which, value):
    try:
        resource.setrlimit(which, (value, value))
    except (ValueError, OSError):
        pass
_limit(resource.RLIMIT_AS, {memory})
_limit(resource.RLIMIT_CPU, {cpu})
_limit(resource.RLIMIT_FSIZE, {fsize})
_limit(resource.RLIMIT_CORE, 0)
signal.alarm({alarm})  # the last resort should every supervisor be gone
_dir = os.getcwd()
_parent = os.getppid()
if {drop}:  # no try: a failed drop must end the program, never leave it running as root
    os.setgroups([])
    os.setgid({nobody})
    os.setuid({nobody})
    import ctypes
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG again: changing uid cleared it
    if os.getppid() != _parent:
        os._exit(1)
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
del _name

exec(compile(_source, "program.py", "exec"), {{"__name__": "__main__", "__builtins__": builtins}})
sys.stdout.flush()
sys.stdout.write("\n" + _sentinel + "\n")
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
    isolation: str  # the layers used, e.g. "nobody+net+pid+mnt" (see isolation())

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


@dataclass(frozen=True)
class _Setup:
    """How programs are started on this machine."""

    namespaces: bool  # under unshare, with the mount script above
    drop: bool  # switch to nobody

    @property
    def isolation(self) -> str:
        user = "nobody" if self.drop else ("root" if os.geteuid() == 0 else "user")
        return user + ("+net+pid+mnt" if self.namespaces else "")


def isolation() -> str:
    """The layers this machine allows: "nobody+net+pid+mnt" (isolated), or less, e.g. "nobody" (no
    namespaces: the network is reachable), "user+net+pid+mnt" (not root: the program has the user's
    files), "root" (nothing)."""
    return _setup().isolation


def require_isolation(unsafe: bool = False) -> str:
    """The isolation level; raises PowerSampleError when it is not full, unless `unsafe`."""
    level = isolation()
    if not (level == ISOLATED or unsafe):
        raise PowerSampleError(
            f"refusing to run model-written code: this machine only allows sandbox isolation {level!r}, "
            f"not {ISOLATED} (that needs root with working `unshare` and `mount`, e.g. as root in a "
            "VM); pass --unsafe (unsafe=True) to run it anyway, ideally in a container without network",
            "unsafe", unsafe)
    return level


def run_python(program: str, limits: Limits = Limits(), unsafe: bool = False) -> Execution:
    """Execute `program` (Python source) in a fresh limited process; see the module docstring.
    Refuses (PowerSampleError) where isolation is not full, unless `unsafe`."""
    require_isolation(unsafe)
    return _execute(program, limits, _setup())


def _execute(program: str, limits: Limits, setup: _Setup) -> Execution:
    sentinel = "powersample-done-" + secrets.token_hex(8)
    cpu = limits.cpu_seconds or int(limits.timeout) + 1
    preamble = _PREAMBLE.format(memory=limits.memory_mb << 20, cpu=cpu, fsize=limits.output_kb << 10,
                                nobody=_NOBODY, drop=setup.drop, alarm=int(limits.timeout) + 5)
    # without namespaces the working directory lives on the host (and is left behind if the grader is
    # SIGKILLed); with them it is the namespace's private tmpfs
    workdir = None if setup.namespaces else tempfile.mkdtemp(prefix="powersample-sandbox-")
    try:
        if workdir is not None and setup.drop:
            os.chown(workdir, _NOBODY, _NOBODY)
        home = workdir or "/tmp/work"
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": home, "TMPDIR": home,
               "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
        with tempfile.TemporaryFile() as src, tempfile.TemporaryFile() as out, \
                tempfile.TemporaryFile() as err:
            src.write(f"{sentinel}\n{program}".encode())
            src.seek(0)
            start = time.monotonic()
            proc = subprocess.Popen(_command(setup, ["-I", "-S", "-c", preamble]), cwd=workdir, env=env,
                                    stdin=src, stdout=out, stderr=err, start_new_session=True)
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
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
    returncode = proc.returncode
    if setup.namespaces and returncode > 128:  # the waiting shell reports "killed by signal n" as 128 + n
        returncode = -(returncode - 128)
    if timed_out:
        status = "timeout"
    elif returncode == 0 and stdout.rstrip().endswith(sentinel):
        status = "passed"
    else:
        status = "failed"
    return Execution(status, None if timed_out else returncode, stdout.replace(sentinel, "").rstrip(),
                     stderr, seconds, setup.isolation)


def _command(setup: _Setup, python_args: list[str]) -> list[str]:
    """The command line: [setpriv --pdeathsig KILL] [unshare ... sh -c SCRIPT] python ARGS."""
    python, prefix = _interpreter()
    cmd = []
    setpriv = shutil.which("setpriv")
    if setpriv:  # the supervisor's death kills the chain (unshare passes it on with --kill-child)
        cmd += [setpriv, "--pdeathsig", "KILL"]
    if setup.namespaces:
        user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
        cmd += [shutil.which("unshare") or "unshare", *user, "--mount", "--net", "--pid", "--fork",
                "--kill-child", "--mount-proc", "sh", "-c", _NAMESPACE_SCRIPT, "sandbox", prefix,
                "1" if setup.drop else "0"]
        if python.startswith(prefix.rstrip(os.sep) + os.sep):  # run it from the bind mount
            python = os.path.join("/tmp/python", os.path.relpath(python, prefix))
    return [*cmd, python, *python_args]


def _interpreter() -> tuple[str, str]:
    """The Python executable to run and its installation prefix."""
    # the base interpreter: a venv's python works too, but -I -S means its site-packages are unused anyway
    return getattr(sys, "_base_executable", None) or sys.executable, sys.base_prefix


def _kill_group(proc: subprocess.Popen) -> None:
    # The child leads its own session, so its pid is the group id; killing the group also takes any
    # children it managed to start (and, with a PID namespace, the death of its first process takes
    # the whole namespace).
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


_PROBE = "import collections, decimal, json, os\nprint(os.getuid())\n"


@lru_cache(maxsize=1)
def _setup() -> _Setup:
    """The strongest setup that works here, found by running a probe program through each in turn."""
    root = os.geteuid() == 0
    candidates = [_Setup(True, True), _Setup(False, True)] if root else []
    candidates += [_Setup(True, False), _Setup(False, False)]
    if shutil.which("unshare") is None:
        candidates = [c for c in candidates if not c.namespaces]
    for setup in candidates[:-1]:
        try:
            run = _execute(_PROBE, Limits(timeout=30), setup)
        except OSError:
            continue
        if run.passed and (not setup.drop or run.stdout.strip() == str(_NOBODY)):
            return setup
    return candidates[-1]
