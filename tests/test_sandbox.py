"""The HumanEval code sandbox (powersample.tasks.sandbox) against hostile programs.

Attacks are hostile completions graded by the real grader path (grade_sample -> HumanEval.grade ->
run_python); each reports "LEAK ..." if it got through and "BLOCKED ..." if it was stopped, and the
tests also check the side effect itself (file intact, no connection accepted, no process left).
Everything is bounded (a few forks, loopback only) so that a broken sandbox cannot hurt CI.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from functools import lru_cache
from pathlib import Path

import pytest

from powersample.errors import PowerSampleError
from powersample.evaluation.config import EvalConfig
from powersample.evaluation.grading import grade_sample
from powersample.evaluation.runner import run_record
from powersample.tasks import files, get_task, sandbox
from powersample.tasks.base import Problem

ROOT = os.geteuid() == 0
FULL = sandbox.isolation() == sandbox.ISOLATED
needs_full = pytest.mark.skipif(not FULL, reason="full isolation needs root with unshare and mount "
                                f"(here: {sandbox.isolation()})")
SRC = str(Path(__file__).resolve().parents[1] / "src")


@lru_cache(maxsize=1)
def fallback_interpreter() -> tuple[str, str] | None:
    """For the setup without namespaces (unshare missing or not allowed), as root with a drop to nobody:
    a Python installation (executable, prefix) nobody can run. None: none here, or not root."""
    if not ROOT:
        return None
    drop = sandbox._Setup(namespaces=False, drop=True)
    # this one, or else the system's: this one may live where only root can read (e.g. under /root)
    for interpreter in (sandbox._interpreter(), (os.path.realpath("/usr/bin/python3"), "/usr")):
        with pytest.MonkeyPatch.context() as m:
            m.setattr(sandbox, "_interpreter", lambda i=interpreter: i)
            if os.path.exists(interpreter[0]) and sandbox._execute(sandbox._PROBE, sandbox.Limits(30), drop).passed:
                return interpreter
    return None


def fallback_code() -> str:
    """What use("no namespaces") does, as code for a grader in another process."""
    return (f"sandbox._setup = lambda: sandbox._Setup(False, True)\n"
            f"sandbox._interpreter = lambda: {fallback_interpreter()!r}\n")


def use(setup: str, monkeypatch) -> None:
    """Run the test under `setup`: "default" (what this machine gives), or "no namespaces"; skip where
    that setup is not available."""
    if setup == "no namespaces":
        interpreter = fallback_interpreter()
        if interpreter is None:
            pytest.skip("without namespaces, a uid drop needs root and a Python installation nobody can "
                        "read; here the program would run with the grader's uid (refused unless unsafe)")
        monkeypatch.setattr(sandbox, "_setup", lambda: sandbox._Setup(namespaces=False, drop=True))
        monkeypatch.setattr(sandbox, "_interpreter", lambda: interpreter)
    elif not FULL:
        pytest.skip(f"full isolation unavailable here ({sandbox.isolation()})")


def grade_hostile(body: str, unsafe: bool = False, timeout: float = 5.0):
    """Grade `body` as the completion of `def f():`, whose test calls f()."""
    task = get_task("humaneval", timeout=timeout, memory_mb=512, unsafe=unsafe)
    problem = Problem(id="attack", prompt="def f():\n",
                      meta={"test": "def check(fn):\n    fn()\n", "entry_point": "f"})
    grade, _ = grade_sample(task, problem, textwrap.indent(body, "    "), True, None)
    return grade


def assert_blocked(grade):
    assert not grade.correct
    assert "LEAK" not in grade.reason, grade.reason
    assert "BLOCKED" in grade.reason, grade.reason  # the attack ran, and was stopped


# -- the common path: wrong, runaway and local programs ---------------------------------------------------

HOSTILE = {
    "infinite loop": "while True:\n    pass\n",
    "sleep": "import time\ntime.sleep(60)\n",
    "fork bomb": "import os\nwhile True:\n    os.fork()\n",
    "huge allocation": "x = bytearray(10 ** 12)\n",
    "network": "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)\n",
    "subprocess": "import subprocess\nsubprocess.run(['true'])\n",
}


@pytest.mark.parametrize("setup", ["default", "no namespaces"])
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_programs_fail(name, setup, monkeypatch):
    use(setup, monkeypatch)
    run = sandbox.run_python(HOSTILE[name] + "print('survived')\n", sandbox.Limits(timeout=1.5, memory_mb=512),
                             unsafe=setup != "default")
    assert not run.passed and "survived" not in run.stdout


def test_correct_and_wrong_programs_and_local_files():
    def run(program):  # trusted programs: run them whatever the isolation here
        return sandbox.run_python(program, unsafe=True)

    assert run("assert sum([1, 2]) == 3\nprint('ok')\n").stdout == "ok"
    wrong = run("def f():\n    return 2\nassert f() == 3, 'f is wrong'\n")
    assert wrong.status == "failed" and wrong.reason() == "AssertionError: f is wrong"
    local = run("open('scratch.txt', 'w').write('ok')\nprint(open('scratch.txt').read())\n")
    assert local.passed and local.stdout.strip() == "ok"


def test_write_outside_the_sandbox_dir_is_refused(tmp_path):
    target = tmp_path / "escaped.txt"
    run = sandbox.run_python(f"open({str(target)!r}, 'w').write('x')\n", unsafe=True)  # the Python guard
    assert not run.passed and "PermissionError" in run.reason()
    assert not target.exists()


def test_limits_are_validated():
    with pytest.raises(PowerSampleError, match="timeout must be > 0"):
        sandbox.Limits(timeout=0)
    with pytest.raises(PowerSampleError, match="memory_mb must be >= 64"):
        get_task("humaneval", memory_mb=1)


# -- item 7: each attack fails --------------------------------------------------------------------------


@pytest.mark.parametrize("setup", ["default", "no namespaces"])
def test_files_cannot_be_written_or_deleted_through_io_or_posix(setup, tmp_path, monkeypatch):
    use(setup, monkeypatch)
    victim, created = tmp_path / "victim.txt", tmp_path / "created.txt"
    victim.write_text("precious")
    body = f"""\
import _io, posix
done = []
for name, attack in [
        ("FileIO", lambda: _io.FileIO({str(victim)!r}, "w").write(b"x")),
        ("posix.open", lambda: posix.write(posix.open({str(created)!r}, posix.O_WRONLY | posix.O_CREAT), b"x")),
        ("posix.unlink", lambda: posix.unlink({str(victim)!r}))]:
    try:
        attack()
        done.append(name)
    except OSError as e:
        pass
raise SystemExit(("LEAK " if done else "BLOCKED ") + " ".join(done))
"""
    assert_blocked(grade_hostile(body, unsafe=setup != "default"))
    assert victim.read_text() == "precious" and not created.exists()


@pytest.mark.parametrize("setup", ["default", "no namespaces"])
def test_a_secret_under_a_root_only_directory_cannot_be_read(setup, tmp_path, monkeypatch):
    use(setup, monkeypatch)
    secret_dir = tmp_path / "root-only"
    secret_dir.mkdir(mode=0o700)
    secret = secret_dir / "token"
    secret.write_text("s3cr3t-" + os.urandom(4).hex())
    secret.chmod(0o644)  # only the directory protects it, as for files under /root
    body = f"""\
try:
    raise SystemExit("LEAK " + open({str(secret)!r}).read())
except OSError as e:
    raise SystemExit("BLOCKED " + type(e).__name__)
"""
    grade = grade_hostile(body, unsafe=setup != "default")
    assert_blocked(grade)
    assert secret.read_text() not in grade.reason


@pytest.mark.parametrize("setup", ["default", "no namespaces"])
def test_the_graders_environment_cannot_be_read(setup, monkeypatch):
    use(setup, monkeypatch)
    # /proc/<pid>/environ shows the environment a process started with: so the grader is a process
    # started with the secret, as an eval's grader workers are
    key = "sk-fake-" + os.urandom(6).hex()
    body = """\
import os
found = []
for pid in ["GRADER_PID"] + [p for p in os.listdir("/proc") if p.isdigit()]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            if b"POWERSAMPLE_TEST_API_KEY" in f.read():
                found.append(pid)
    except OSError:
        pass
raise SystemExit(("LEAK " if found else "BLOCKED ") + " ".join(found))
"""
    patch = "" if setup == "default" else fallback_code()
    grader = ("import os, sys\nfrom powersample.tasks import sandbox\n" + patch +
              "sys.path.insert(0, sys.argv[1])\nfrom test_sandbox import grade_hostile\n"
              "body = sys.stdin.read().replace('GRADER_PID', str(os.getpid()))\n"
              f"print(grade_hostile(body, unsafe={setup != 'default'}).reason)\n")
    env = {**os.environ, "PYTHONPATH": SRC, "POWERSAMPLE_TEST_API_KEY": key}
    reason = subprocess.run([sys.executable, "-c", grader, str(Path(__file__).parent)], input=body, env=env,
                            capture_output=True, text=True, timeout=120).stdout.strip()
    assert "LEAK" not in reason and "BLOCKED" in reason, reason
    assert key not in reason


@needs_full
def test_no_network_not_even_through_the_graders_namespace():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.setblocking(False)
    port = server.getsockname()[1]
    body = f"""\
import _socket, ctypes, os
def connect():
    s = _socket.socket()
    s.settimeout(2)
    s.connect(("127.0.0.1", {port}))
got = []
try:
    connect()
    got.append("direct")
except OSError:
    pass
try:  # enter the grader's network namespace, then connect
    fd = os.open("/proc/{os.getpid()}/ns/net", os.O_RDONLY)
    if ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) == 0:
        connect()
        got.append("setns")
except OSError:
    pass
raise SystemExit(("LEAK " if got else "BLOCKED ") + " ".join(got))
"""
    try:
        assert_blocked(grade_hostile(body))
        with pytest.raises(BlockingIOError):  # and nothing connected
            server.accept()
    finally:
        server.close()


@pytest.mark.parametrize("setup", ["default", "no namespaces"])
def test_fork_is_impossible_even_through_libc(setup, monkeypatch):
    use(setup, monkeypatch)
    body = """\
import ctypes, posix
libc = ctypes.CDLL(None)
forked = 0
for i in range(20):  # bounded: a broken sandbox gets 40 short-lived children, not a fork bomb
    for fork in (libc.fork, posix.fork):
        try:
            pid = fork()
        except OSError:
            continue
        if pid == 0:
            libc._exit(0)
        if pid > 0:
            forked += 1
raise SystemExit(f"LEAK forked {forked}" if forked else "BLOCKED")
"""
    assert_blocked(grade_hostile(body, unsafe=setup != "default"))


# -- a completion cannot forge its grade ---------------------------------------------------------------------
# Each SPOOF is a completion of `def f(x):` that does not compute f, yet was graded "passed" before the
# tests moved into a process of their own (those marked "already failed" failed under that one-process
# grader too: its end-of-run sentinel caught early exits). The function body comes first; lines at
# column 0 after it are module-level code, which the HumanEval stop sequences do not cut.

SPOOF_TESTS = "def check(candidate):\n    assert candidate(2) == 5\n    assert abs(candidate(3) - 7.5) < 1e-6\n"

SPOOFS = {
    # print the end-of-run sentinel found in the harness's globals, then leave before the asserts
    "sentinel from sys.modules['__main__']": """\
    import os, sys
    main = vars(sys.modules["__main__"])
    for name in [n for n in main if "sentinel" in n or "nonce" in n or "token" in n]:
        print(main[name], flush=True)
        os._exit(0)
    return 0
""",
    "sentinel from the frame stack": """\
    import os, sys
    frame = sys._getframe()
    while frame is not None:
        for space in (frame.f_locals, frame.f_globals):
            for name in [n for n in space if "sentinel" in n or "nonce" in n or "token" in n]:
                print(space[name], flush=True)
                os._exit(0)
        frame = frame.f_back
    return 0
""",
    "sentinel from gc": """\
    import gc, os
    for space in [o for o in gc.get_objects() if isinstance(o, dict)]:
        for name in [n for n in space if isinstance(n, str) and "sentinel" in n and isinstance(space[n], str)]:
            print(space[name], flush=True)
            os._exit(0)
    return 0
""",
    # a result that equals anything: every comparison in the asserts holds
    "always-equal result": """\
    same = lambda self, *args: self
    true = lambda self, *args: True
    ops = {n: same for n in ("__add__", "__radd__", "__sub__", "__rsub__", "__abs__", "__neg__")}
    ops.update({n: true for n in ("__eq__", "__lt__", "__le__", "__gt__", "__ge__", "__bool__")})
    return type("Anything", (), {**ops, "__ne__": lambda self, other: False, "__hash__": lambda self: 0})()
""",
    # patch a builtin the asserts use: abs(anything) < 1e-6
    "patched builtin": """\
    return 5 if x == 2 else 0
import builtins
builtins.abs = lambda value: 0
""",
    # read the expected values out of the test's own code, the frame that called us
    "answers from the caller's code": """\
    import sys
    numbers = [c for c in sys._getframe(1).f_code.co_consts if type(c) in (int, float)]
    return numbers[numbers.index(x) + 1]
""",
    # already failed: leave with status 0 before the asserts ran
    "os._exit(0) in the body": "    import os\n    os._exit(0)\n",
    "sys.exit(0) at module level": "    return 0\nimport sys\nsys.exit(0)\n",
    "SystemExit(0) raised inside check": "    raise SystemExit(0)\n",
    "os._exit(0) from atexit after a failure": "    return 0\nimport atexit, os\natexit.register(os._exit, 0)\n",
    # already failed: kill the process that runs the tests (the tester is the parent, and the same user)
    "kill the tester": "    import ctypes, os\n    ctypes.CDLL(None).kill(os.getppid(), 9)\n    return 0\n",
    # already failed: write a forged reply (a code string) to every open descriptor, then a wrong answer
    "forged reply on every descriptor": """\
    import os
    forged = b"r__import__('os')._exit(0)"
    for fd in os.listdir("/proc/self/fd"):
        try:
            os.write(int(fd), len(forged).to_bytes(8, "big") + forged)
        except OSError:
            pass
    return 0
""",
}


def grade_spoof(completion: str, unsafe: bool = False):
    task = get_task("humaneval", timeout=5.0, memory_mb=512, unsafe=unsafe)
    problem = Problem(id="spoof", prompt="def f(x):\n", meta={"test": SPOOF_TESTS, "entry_point": "f"})
    grade, _ = grade_sample(task, problem, completion, True, None)
    return grade


def test_the_spoof_problem_grades_honest_completions():
    assert grade_spoof("    return 2.5 * x\n", unsafe=True).correct
    assert not grade_spoof("    return 0\n", unsafe=True).correct


@pytest.mark.parametrize("setup", ["default", "no namespaces"])
@pytest.mark.parametrize("name", sorted(SPOOFS))
def test_a_completion_cannot_forge_a_pass(name, setup, monkeypatch):
    use(setup, monkeypatch)
    grade = grade_spoof(SPOOFS[name], unsafe=setup != "default")
    assert not grade.correct, grade.reason


@pytest.mark.parametrize("setup", ["default", "no namespaces"])
def test_the_solution_cannot_trace_or_read_the_tester(setup, monkeypatch):
    use(setup, monkeypatch)
    body = """\
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
tester, done = os.getppid(), []
if libc.ptrace(16, tester, 0, 0) == 0:  # PTRACE_ATTACH
    done.append("ptrace")
for what in ("mem", "environ", "fd/0"):
    try:
        open(f"/proc/{tester}/{what}", "rb").close()
        done.append(what)
    except OSError:
        pass
raise SystemExit(("LEAK " if done else "BLOCKED ") + " ".join(done))
"""
    assert_blocked(grade_hostile(body, unsafe=setup != "default"))


@needs_full
def test_the_shipped_answers_are_hidden_from_the_solution():
    # the running package's data directory holds every canonical solution: a completion could find
    # its own problem there and run the answer
    data = Path(files.__file__).parent / "data" / "HumanEval.jsonl.gz"
    assert data.is_file()
    body = f"""\
try:
    raise SystemExit("LEAK " + str(len(open({str(data)!r}, "rb").read())))
except OSError as e:
    raise SystemExit("BLOCKED " + type(e).__name__)
"""
    assert_blocked(grade_hostile(body))


def test_the_tests_use_the_prompts_helpers_not_the_completions():
    # HumanEval/32 checks find_zero with the prompt's poly(): a completion that redefined poly at module
    # level used to pass with any answer
    task = get_task("humaneval", timeout=5.0, memory_mb=512, unsafe=True)
    problem = Problem(id="helper", prompt='def half(x):\n    return x / 2\n\n\ndef f(x):\n    """2.5 x"""\n',
                      meta={"test": "def check(candidate):\n    assert half(candidate(4)) == 5\n", "entry_point": "f"})
    assert task.grade(problem, "    return 2.5 * x\n").correct
    grade = task.grade(problem, "    return 0\nhalf = lambda x: 5\n")
    assert not grade.correct and grade.reason == "AssertionError"


SOLUTION = """\
import collections, enum
calls = []
class Color(enum.IntEnum):
    RED = 1
def f(kind, scale=1):
    calls.append(kind)
    if kind == "bad":
        raise ValueError(f"bad kind, scale {scale}")
    print("called with", kind)
    return {"namedtuple": collections.namedtuple("P", "a b")(1, 2), "counter": collections.Counter("aab"),
            "enum": Color.RED, "floats": [float("inf"), -float("inf"), float("nan"), -0.0, 1e-300],
            "big": 10 ** 5000, "mixed": {(1, "a"): {b"x", None}, None: [True, 1j, "\\u00e9\\udc80"]},
            "calls": len(calls), "object": object()}[kind]
"""

TESTS = """\
import math
def check(candidate):
    assert candidate("namedtuple") == (1, 2) and type(candidate("namedtuple")) is tuple
    assert candidate("counter") == {"a": 2, "b": 1} and type(candidate("counter")) is dict
    assert candidate("enum") == 1 and type(candidate("enum")) is int
    inf, minus_inf, nan, zero, tiny = candidate("floats")
    assert inf == math.inf and minus_inf == -math.inf and math.isnan(nan) and math.copysign(1, zero) == -1
    assert tiny == 1e-300 and candidate("big") == 10 ** 5000
    assert candidate("mixed") == {(1, "a"): {b"x", None}, None: [True, 1j, "\\u00e9\\udc80"]}
    try:
        candidate("bad", scale=3)
    except ValueError as e:  # the solution's exception, raised in the tests as the same builtin type
        assert str(e) == "bad kind, scale 3"
    else:
        assert False
    assert candidate("calls") == 11  # one process serves every call: its state persists
    assert f is candidate  # the entry point's name is the proxy too (HumanEval/33's tests use it)
    candidate("object")
"""


def test_run_tests_returns_plain_data_exceptions_and_keeps_state():
    run = sandbox.run_tests(SOLUTION, TESTS, "f", unsafe=True)
    # everything up to the last call held: that one returns an object, which cannot reach the tests
    assert not run.passed and run.reason().startswith("TypeError: returned a object: only None"), run.reason()
    assert "called with big" in run.stdout
    assert sandbox.run_tests(SOLUTION, TESTS.replace('    candidate("object")\n', ""), "f", unsafe=True).passed


def test_run_tests_fails_code_that_does_not_load_even_if_never_called():
    never = "def check(candidate):\n    pass\n"
    assert sandbox.run_tests("def f():\n    return 1\n", never, "f", unsafe=True).passed
    run = sandbox.run_tests("def f(:\n", never, "f", unsafe=True)
    assert not run.passed and run.reason().startswith("SyntaxError"), run.reason()
    run = sandbox.run_tests("def g():\n    return 1\n", never, "f", unsafe=True)
    assert not run.passed and run.reason() == "NameError: the code defines no function f", run.reason()


# -- item 7: refuse, or record, the isolation --------------------------------------------------------------


def test_partial_isolation_is_refused_unless_unsafe(monkeypatch, capsys):
    # e.g. a container without CAP_SYS_ADMIN: at best nobody, and the network stays reachable
    monkeypatch.setattr(sandbox, "_setup", lambda: sandbox._Setup(namespaces=False, drop=False))
    level = sandbox.isolation()
    with pytest.raises(PowerSampleError, match=f"refusing to run model-written code.*{level}.*--unsafe"):
        sandbox.run_python("print('hi')\n")
    config = EvalConfig(task="humaneval", model="gym", out="unused")
    with pytest.raises(PowerSampleError, match="--unsafe"):
        run_record(config, get_task("humaneval"))  # before anything is written
    from powersample.cli.main import main

    assert main(["eval", "--task", "humaneval", "--model", "gym", "--out", "unused", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "refusing to run model-written code" in err and len(err.splitlines()) == 1
    unsafe = EvalConfig(task="humaneval", model="gym", out="unused", task_options={"unsafe": True})
    record = run_record(unsafe, get_task("humaneval", unsafe=True))
    assert record["grading"] == {"isolation": level}
    assert record["config"]["task_options"]["unsafe"] is True
    assert sandbox.run_python("print('hi')\n", unsafe=True).stdout == "hi"


@needs_full
def test_run_json_records_full_isolation():
    config = EvalConfig(task="humaneval", model="gym", out="unused")
    assert run_record(config, get_task("humaneval"))["grading"] == {"isolation": "nobody+net+pid+mnt"}


# -- item 8: nothing outlives its grader --------------------------------------------------------------------


def processes_named(name: str) -> list[int]:
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == name:
                out.append(int(pid))
        except OSError:
            pass
    return out


def wait_until(condition, limit: float = 15.0) -> bool:
    """Poll `condition` for up to `limit` seconds (a bound on waiting, not a speed requirement)."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def immortal(marker: str) -> str:
    """A program that names itself `marker`, ignores every signal it can, tries to daemonize (setsid +
    double fork through libc) and sleeps forever."""
    return f"""\
import ctypes, signal, time
libc = ctypes.CDLL(None)
libc.prctl(15, {marker.encode()!r})  # PR_SET_NAME
for s in signal.valid_signals():
    try:
        signal.signal(s, signal.SIG_IGN)
    except (OSError, ValueError):
        pass
libc.setsid()
if libc.fork() == 0:
    libc.setsid()
    if libc.fork() == 0:
        libc.prctl(15, {marker.encode()!r})
        while True:
            time.sleep(1)
    libc._exit(0)
while True:
    time.sleep(1)
"""


@pytest.mark.parametrize("setup", ["default", "no namespaces"])
@pytest.mark.parametrize("runner", ["run_python", "run_tests"])
def test_nothing_outlives_a_timeout(runner, setup, monkeypatch):
    use(setup, monkeypatch)
    marker = "psbx" + os.urandom(4).hex()
    limits, unsafe = sandbox.Limits(timeout=1.0), setup != "default"
    if runner == "run_python":
        run = sandbox.run_python(immortal(marker), limits, unsafe=unsafe)
    else:  # the solution's process (the tester's child) never answers
        run = sandbox.run_tests(immortal(marker), "def check(candidate):\n    candidate()\n", "f", limits, unsafe)
    assert run.status == "timeout"
    assert wait_until(lambda: not processes_named(marker)), processes_named(marker)


@pytest.mark.parametrize(("setup", "runner"), [("default", "run_python"), ("no namespaces", "run_python"),
                                               ("alarm only", "run_python"), ("default", "run_tests"),
                                               ("no namespaces", "run_tests")])
def test_nothing_outlives_a_killed_grader(setup, runner, tmp_path, monkeypatch):
    """The grader (a separate process here) is SIGKILLed while the program runs: the program and its
    daemonized children die with it, and no temporary file or directory is left behind.
    "alarm only": no parent-death signal (no setpriv), so only the program's alarm ends it.
    run_tests: the program is the solution, the tester's child."""
    use("no namespaces" if setup == "no namespaces" else "default", monkeypatch)  # the grader patches itself
    marker = "psbx" + os.urandom(4).hex()
    if setup == "alarm only":  # a program that does not ignore SIGALRM: as PID 1 it would anyway
        program, timeout = (f"import ctypes, time\nctypes.CDLL(None).prctl(15, {marker.encode()!r})\n"
                            "while True:\n    time.sleep(1)\n"), 1.0
    else:
        program, timeout = immortal(marker), 120.0
    patch = {"default": "",
             "no namespaces": fallback_code(),
             "alarm only": "import shutil\nwhich = shutil.which\n"
                           "shutil.which = lambda n: None if n == 'setpriv' else which(n)\n"}[setup]
    tests = ', "def check(candidate):\\n    candidate()\\n", "f"' if runner == "run_tests" else ""
    grader = (f"import sys\nfrom powersample.tasks import sandbox\n{patch}"
              f"sandbox.{runner}(sys.stdin.read(){tests}, limits=sandbox.Limits(timeout={timeout}), unsafe=True)\n")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "PYTHONPATH": SRC, "TMPDIR": str(tmp)}
    proc = subprocess.Popen([sys.executable, "-c", grader], stdin=subprocess.PIPE, env=env)
    try:
        proc.stdin.write(program.encode())
        proc.stdin.close()
        assert wait_until(lambda: processes_named(marker)), "the program never started"
        if setup == "alarm only":  # the supervisor's own timeout must not be what ends it
            proc.send_signal(signal.SIGKILL)
        else:
            time.sleep(0.3)  # let the double fork happen (or fail)
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert wait_until(lambda: not processes_named(marker)), processes_named(marker)
    finally:
        proc.kill()
        proc.wait()
        for pid in processes_named(marker):  # never leave a stray process behind, even on failure
            os.kill(pid, signal.SIGKILL)
    if setup != "no namespaces":  # without namespaces the working directory lives on the host
        assert wait_until(lambda: not list(tmp.iterdir())), list(tmp.iterdir())
