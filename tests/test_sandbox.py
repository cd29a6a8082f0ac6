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
from powersample.tasks import get_task, sandbox
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
    "exit before tests": "import sys\nsys.exit(0)\n",
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
def test_nothing_outlives_a_timeout(setup, monkeypatch):
    use(setup, monkeypatch)
    marker = "psbx" + os.urandom(4).hex()
    run = sandbox.run_python(immortal(marker), sandbox.Limits(timeout=1.0), unsafe=setup != "default")
    assert run.status == "timeout"
    assert wait_until(lambda: not processes_named(marker)), processes_named(marker)


@pytest.mark.parametrize("setup", ["default", "no namespaces", "alarm only"])
def test_nothing_outlives_a_killed_grader(setup, tmp_path, monkeypatch):
    """The grader (a separate process here) is SIGKILLed while the program runs: the program and its
    daemonized children die with it, and no temporary file or directory is left behind.
    "alarm only": no parent-death signal (no setpriv), so only the program's alarm ends it."""
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
    grader = (f"import sys\nfrom powersample.tasks import sandbox\n{patch}"
              f"sandbox.run_python(sys.stdin.read(), sandbox.Limits(timeout={timeout}), unsafe=True)\n")
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
