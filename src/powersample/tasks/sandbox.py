"""Run untrusted Python (model-written code plus its tests) in a separate, limited process.

The layers, from the outside in:
1. Namespaces (`unshare`, as root): new mount, network and PID namespaces. No network interface at
   all; a fresh /proc that shows only the sandbox's own processes; a private tmpfs as /tmp (the
   program's working directory; it vanishes with the namespace, so nothing is left on disk), and
   /var/tmp, /dev/shm, /run/lock and this package's directory (its shipped HumanEval data holds the
   canonical solutions) covered by read-only tmpfs. The Python installation is bind-mounted at
   /tmp/python and run from there, so `nobody` can import the standard library even when the
   interpreter lives where only root can read (e.g. under /root/.pyenv).
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

A verdict the code under test cannot forge (run_tests). Code running in the same interpreter as its
tests can make them pass without computing anything: return an object equal to everything, patch
`abs` or `math.isclose`, read the expected values from the caller's frame, find any end-of-run token
in the harness's globals and print it, or leave with status 0 before the asserts. No token or pipe
hidden in that interpreter helps, since the code under test can reach everything in it. So the tests
and the solution run in two processes:
- the solution's process runs the prompt + completion, then serves calls: it receives marshalled
  arguments on one pipe and answers on another with repr() of the result (converted to plain data:
  None, bool, numbers, str, bytes, and lists/tuples/sets/dicts of them) or an exception's name and
  message;
- the tester (its parent) runs the prompt + tests with the entry point bound to a proxy that makes
  those calls, parses each answer with ast.literal_eval (literals only: no code runs, no object of the
  solution's choosing reaches the tests), and raises the named builtin exception (else RuntimeError)
  for an error. It reads the tests from stdin only after the fork, so they never exist in the
  solution's memory, and the solution's code never runs in it.
The verdict is the tester's exit status: 0 only if check() returned. Both are `nobody` (a second uid
would be tidier, but the kernel here (6.18) did not deliver the parent-death signal to a child of
another unprivileged uid, so the solution could outlive its tester); the tester makes itself
non-dumpable, so the solution cannot ptrace it, read its memory or reach its file descriptors. What the
solution can do: send wrong answers, die or close its pipe (the proxy then raises), hang (a timeout),
print anything, or signal the tester, which ends it (a failure); only SIGINT does not, it raises
KeyboardInterrupt there, which a bare `except:` in the tests could swallow (HumanEval's tests catch
nothing). What is left to it is the
problem itself, plus looking its answers up in what any user may read: the namespaces hide this
package's copy of HumanEval, but another copy (a second checkout, a --data file, a dataset cache that
others may read) stays readable, and without namespaces nothing is hidden. Without the uid drop
(`--unsafe`), a solution running as root in a user namespace has the capabilities to ptrace the
tester, so those verdicts are only as trustworthy as the machine.

run_python runs one program as is (the layers above; "passed" = exit status 0, which any program can
claim): for trusted programs and for testing the sandbox, not for grading.
"""

from __future__ import annotations

import os
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
_PACKAGE = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))  # hidden from the program
_MAX_REPLY = 16 << 20  # bytes in one answer from the solution (a repr); more fails the call

# Run as the first process (PID 1) of the new namespaces, as root there. $1: the Python prefix to
# bind-mount; $2: 1 to hand the working directory to nobody; $3: this package's directory, hidden (its
# shipped data holds HumanEval's answers), also inside the bind mount; the rest: the command. The shell
# waits for the program rather than exec'ing it: PID 1 ignores signals it has no handler for (the alarm).
_NAMESPACE_SCRIPT = f"""set -e
mount -t tmpfs -o size={_SCRATCH},mode=755,nosuid,nodev sandbox /tmp
mkdir /tmp/python /tmp/work
mount --bind "$1" /tmp/python
for d in /var/tmp /dev/shm /run/lock "$3" "/tmp/python${{3#"$1"}}"; do
  if [ -d "$d" ]; then mount -t tmpfs -o size=4k,mode=755,nosuid,nodev,noexec sandbox "$d"; fi
done
if [ "$2" = 1 ]; then chown {_NOBODY}:{_NOBODY} /tmp/work; fi
cd /tmp/work
shift 3
set +e
"$@"
exit $?
"""

# The code arrives on stdin (nothing of it lies on disk or in argv): the first {size} bytes are the
# code under test; for run_tests the tests follow, read by the tester only.
_PREAMBLE = r'''
import builtins, ctypes, os, resource, signal, sys
def _read(size=None):
    """`size` bytes of stdin (all of it for None), unbuffered: nothing past them is read."""
    data = b""
    while size is None or len(data) < size:
        chunk = os.read(0, 1 << 20 if size is None else size - len(data))
        if not chunk:
            break
        data += chunk
    return data
def _close_stdin():
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
def _limit(which, value):
    try:
        resource.setrlimit(which, (value, value))
    except (ValueError, OSError):
        pass
_limit(resource.RLIMIT_AS, {memory})
_limit(resource.RLIMIT_CPU, {cpu})
_limit(resource.RLIMIT_FSIZE, {fsize})
_limit(resource.RLIMIT_CORE, 0)
getattr(sys, "set_int_max_str_digits", len)(0)  # repr() of a big int must not fail (3.11+)
_dir = os.getcwd()
_parent = os.getppid()
_source = _read({size}).decode("utf-8")

def _become(uid, parent):
    """Switch to `uid` (where the sandbox drops root), then forbid new processes."""
    signal.alarm({alarm})  # the last resort should every supervisor be gone (a fork does not inherit it)
    if {drop}:  # no try: a failed drop must end the program, never leave it running as root
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG again: a uid change or a fork cleared it
    if os.getppid() != parent:
        os._exit(1)
    _limit(resource.RLIMIT_NPROC, 0)

def _guard():
    import io, shutil, socket, subprocess
    def denied(*args, **kwargs):
        raise PermissionError("disabled in the powersample sandbox")
    for name in ("fork", "forkpty", "system", "popen", "kill", "killpg", "execv", "execve", "execl", "execle",
                 "execlp", "execlpe", "execvp", "execvpe", "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv",
                 "spawnve", "spawnvp", "spawnvpe", "posix_spawn", "posix_spawnp", "remove", "unlink", "rmdir",
                 "removedirs", "rename", "renames", "replace", "truncate", "chmod", "chown", "lchown", "link",
                 "symlink", "setuid", "setgid", "putenv", "chdir", "fchdir", "chroot"):
        if hasattr(os, name):
            setattr(os, name, denied)
    for name in ("rmtree", "move", "chown", "copytree"):
        setattr(shutil, name, denied)
    subprocess.Popen = denied
    socket.socket = denied
    socket.create_connection = denied
    def inside(path):
        path = os.path.realpath(os.fsdecode(path))
        if not (path == _dir or path.startswith(_dir + os.sep)):
            raise PermissionError(f"writing outside the sandbox directory is disabled: {{path}}")
    _open, _os_open = builtins.open, os.open
    def guarded_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+"):
            inside(file)
        return _open(file, mode, *args, **kwargs)
    def guarded_os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND):
            inside(path)
        return _os_open(path, flags, *args, **kwargs)
    builtins.open = io.open = guarded_open
    os.open = guarded_os_open
'''

_RUN_PROGRAM = r'''
_close_stdin()
_become({nobody}, _parent)
_guard()
exec(compile(_source, "program.py", "exec"), {{"__name__": "__main__", "__builtins__": builtins}})
'''

# The two processes of run_tests (see the module docstring). A message is 8 bytes of length, then a
# tag: from the tester, marshalled (args, kwargs); from the solution, b"r" + repr(result) or
# b"e" + exception name + "\n" + message (its first message says whether the code loaded).
_RUN_TESTS = r'''
import marshal
def _send(fd, data):
    data = memoryview(len(data).to_bytes(8, "big") + data)
    while data:
        data = data[os.write(fd, data):]
def _receive(fd, limit=None):
    """The next message, or None once the other end is closed."""
    def exactly(size):
        data = b""
        while len(data) < size:
            chunk = os.read(fd, min(size - len(data), 1 << 20))
            if not chunk:
                return None
            data += chunk
        return data
    head = exactly(8)
    size = None if head is None else int.from_bytes(head, "big")
    if size is not None and limit is not None and size > limit:
        raise RuntimeError(f"the solution sent {{size}} bytes, more than {{limit}}")
    return None if size is None else exactly(size)

def _plain(value):
    """`value` as plain data: what can cross to the tester."""
    if value is None or type(value) in (bool, int, float, complex, str, bytes):
        return value
    for kind in (int, float, complex, str, bytes):  # e.g. an IntEnum, a str subclass
        if isinstance(value, kind):
            return kind(value)
    for kind in (list, tuple, set):  # e.g. a namedtuple
        if isinstance(value, kind):
            return kind(_plain(v) for v in value)
    if isinstance(value, dict):  # e.g. a Counter, a defaultdict
        return {{_plain(k): _plain(v) for k, v in value.items()}}
    raise TypeError(f"returned a {{type(value).__name__}}: only None, bools, numbers, str, bytes and "
                    "lists, tuples, sets and dicts of them can be returned to the tests")

def _failure(error):
    import traceback
    traceback.print_exc()
    return b"e" + f"{{type(error).__name__}}\n{{error}}".encode("utf-8", "backslashreplace")

def _serve(calls, replies):
    """The solution's process: load the code, then answer calls until the tester closes its pipe."""
    space = {{"__name__": "__main__", "__builtins__": builtins}}
    try:
        exec(compile(_source, "program.py", "exec"), space)
        function = space.get({entry})
        if not callable(function):
            raise NameError("the code defines no function " + {entry})
    except BaseException as e:
        _send(replies, _failure(e))
        sys.stdout.flush()
        os._exit(1)
    _send(replies, b"rNone")
    while (request := _receive(calls)) is not None:
        try:
            args, kwargs = marshal.loads(request)
            reply = b"r" + repr(_plain(function(*args, **kwargs))).encode("utf-8", "surrogatepass")
        except BaseException as e:
            reply = _failure(e)
        sys.stdout.flush()
        _send(replies, reply)
    sys.stdout.flush()
    os._exit(0)


def _answer():
    """The solution's next answer, as the tests see it: a literal value, or a raised exception."""
    try:
        reply = _receive(_replies[0], {max_reply})
    except OSError:
        reply = None
    if reply is None:
        raise _ended()
    text = reply[1:].decode("utf-8", "surrogatepass")
    if reply[:1] == b"r":
        try:
            return ast.literal_eval(_Floats().visit(ast.parse(text, mode="eval")))
        except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
            raise RuntimeError(f"the solution's answer is not plain data: {{text[:200]}}") from None
    name, _, message = text.partition("\n")
    kind, error = getattr(builtins, name, None), None
    if isinstance(kind, type) and issubclass(kind, Exception):  # e.g. a ValueError a test expects
        try:
            error = kind(message) if message else kind()
        except TypeError:  # one that needs other arguments
            pass
    raise error or RuntimeError(f"{{name}}: {{message}}")

def _ended():
    import time
    for _ in range(100):  # the pipe closes a moment before the process can be waited for
        pid, status = os.waitpid(_solution, os.WNOHANG)
        if pid:
            code = os.waitstatus_to_exitcode(status)
            how = f"was killed by {{signal.Signals(-code).name}}" if code < 0 else f"exited with status {{code}}"
            return RuntimeError(f"the solution's process {{how}} before answering")
        time.sleep(0.01)
    return RuntimeError("the solution's process closed its pipe")

def _call(*args, **kwargs):
    try:
        _send(_calls[1], marshal.dumps((args, kwargs)))
    except OSError:
        raise _ended() from None
    return _answer()

_calls, _replies = os.pipe(), os.pipe()
_tester = os.getpid()
_solution = os.fork()
if _solution == 0:  # forked before the tests are read: they never exist in this process
    os.close(_calls[1])
    os.close(_replies[0])
    _close_stdin()
    _become({nobody}, _tester)
    _guard()
    _receive(_calls[0])  # the tester's go: it cannot be traced any more
    _serve(_calls[0], _replies[1])
os.close(_calls[0])
os.close(_replies[1])
_become({nobody}, _parent)
ctypes.CDLL(None).prctl(4, 0)  # PR_SET_DUMPABLE 0: the solution (same uid) can neither trace nor read us
_send(_calls[1], b"")
_tests = _read().decode("utf-8")
_close_stdin()
import ast  # here, while the solution loads
class _Floats(ast.NodeTransformer):
    def visit_Name(self, node):  # repr() writes these floats as bare names
        return ast.Constant(float(node.id)) if node.id in ("inf", "nan") else node
_space = {{"__name__": "__main__", "__builtins__": builtins}}
exec(compile(_tests, "tests.py", "exec"), _space)
_answer()  # the code loaded (or its error is raised here)
_space[{entry}] = _call
_space["check"](_call)
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)  # passed; no interpreter teardown to wait for
'''


@dataclass(frozen=True)
class Limits:
    """Resource limits for one execution."""

    timeout: float = 10.0  # wall-clock seconds before the process group is killed
    memory_mb: int = 2048  # address space (RLIMIT_AS), per process
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
    """Execute `program` (Python source) in a fresh limited process; "passed" = it exited with status 0
    in time, which the program itself decides: to grade code, use run_tests. Refuses
    (PowerSampleError) where isolation is not full, unless `unsafe`."""
    require_isolation(unsafe)
    return _execute(program, limits, _setup())


def run_tests(solution: str, tests: str, entry_point: str, limits: Limits = Limits(),
              unsafe: bool = False) -> Execution:
    """Grade `solution` (Python source defining `entry_point`) with `tests` (Python source defining
    check(candidate), HumanEval's convention): "passed" iff check returned, which the solution cannot
    forge (see the module docstring). The tests run in their own process, with `entry_point` and
    `candidate` both a proxy that calls the solution's function in its process (arguments and results
    are plain data: marshal's types one way, literals the other). Refuses (PowerSampleError) where
    isolation is not full, unless `unsafe`."""
    require_isolation(unsafe)
    check(entry_point.isidentifier(), f"entry_point must be a Python name, got {entry_point!r}",
          "entry_point", entry_point)
    return _execute(solution, limits, _setup(), tests, entry_point)


def _execute(source: str, limits: Limits, setup: _Setup, tests: str | None = None,
             entry_point: str | None = None) -> Execution:
    """Run `source` as a program (tests=None), or as the solution that `tests` check."""
    code = source.encode("utf-8", "surrogatepass")
    cpu = limits.cpu_seconds or int(limits.timeout) + 1
    preamble = (_PREAMBLE + (_RUN_PROGRAM if tests is None else _RUN_TESTS)).format(
        memory=limits.memory_mb << 20, cpu=cpu, fsize=limits.output_kb << 10, nobody=_NOBODY,
        drop=setup.drop, alarm=int(limits.timeout) + 5, max_reply=_MAX_REPLY,
        size=None if tests is None else len(code), entry=repr(entry_point))
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
            src.write(code + (tests or "").encode("utf-8", "surrogatepass"))
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
    status = "timeout" if timed_out else "passed" if returncode == 0 else "failed"
    return Execution(status, None if timed_out else returncode, stdout.rstrip(), stderr, seconds,
                     setup.isolation)


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
                "1" if setup.drop else "0", _PACKAGE]
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
