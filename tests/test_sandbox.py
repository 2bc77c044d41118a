"""The HumanEval execution sandbox contains what generated code can do; every escape attempt is a failure."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from selectit.evaluation import sandbox

REPO = Path(__file__).resolve().parents[1]

PROBLEM = {
    "task_id": "Test/0",
    "prompt": "def add(a, b):\n    \"\"\"Return a + b.\"\"\"\n",
    "entry_point": "add",
    "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(-1, 1) == 0\n",
}


def _uid_processes(uid: int | None) -> list[int]:
    """Pids still running as the sandbox's uid (must be none after a run)."""
    if uid is None:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("Uid:") and int(line.split()[1]) == uid:
                pids.append(int(entry))
    return pids


def _assert_contained(res: sandbox.SandboxResult) -> None:
    assert not res.passed
    assert res.status in (sandbox.FAILED, sandbox.TIMEOUT)
    assert _uid_processes(res.uid) == []


MODES = ["namespace", "rlimit"] if sandbox.isolation_mode() == "namespace" else ["rlimit"]


@pytest.fixture(params=MODES)
def mode(request):
    """Each containment test runs under every isolation level this machine offers (the fallback too)."""
    return request.param


def test_isolation_mode_is_reported():
    assert sandbox.isolation_mode() in ("namespace", "rlimit")
    res = sandbox.run_program("x = 1\n")
    assert res.isolation == sandbox.isolation_mode()


def test_correct_solution_passes():
    res = sandbox.check_completion(PROBLEM, "    return a + b\n", timeout=10)
    assert res.passed, res
    assert res.reason == "passed"


def test_wrong_solution_fails():
    res = sandbox.check_completion(PROBLEM, "    return a - b\n", timeout=10)
    assert res.status == sandbox.FAILED
    assert "AssertionError" in res.reason


def test_early_exit_is_not_a_pass(mode):
    for completion in ("    return a + b\nimport sys\nsys.exit(0)\n", "    return a + b\nimport os\nos._exit(0)\n"):
        res = sandbox.check_completion(PROBLEM, completion, isolation=mode, timeout=10)
        assert res.status == sandbox.FAILED, (completion, res)


def test_infinite_loop_times_out_and_is_killed(mode):
    start = time.monotonic()
    res = sandbox.run_program("while True:\n    pass\n", isolation=mode, timeout=1.5)
    assert res.status == sandbox.TIMEOUT
    assert time.monotonic() - start < 8
    _assert_contained(res)


def test_fork_bomb_is_contained(mode):
    start = time.monotonic()
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    res = sandbox.run_program(bomb, isolation=mode, timeout=2)
    assert time.monotonic() - start < 10
    _assert_contained(res)
    res = sandbox.run_program("import os\nwhile True:\n    os.fork()\n", isolation=mode, timeout=2)
    _assert_contained(res)


def test_detached_child_does_not_survive(mode):
    prog = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\n"
            "else:\n    time.sleep(60)\n")
    res = sandbox.run_program(prog, isolation=mode, timeout=1.5)
    _assert_contained(res)


@pytest.mark.parametrize("where", ["tmp", "repo"])
def test_writes_outside_the_workdir_are_blocked(where, mode):
    name = f"selectit-sandbox-escape-{uuid.uuid4().hex}.txt"
    target = Path("/tmp") / name if where == "tmp" else REPO / name
    try:
        prog = f"with open({str(target)!r}, 'w') as fh:\n    fh.write('escaped')\n"
        res = sandbox.run_program(prog, isolation=mode, timeout=10)
        assert not target.exists(), f"sandboxed code created {target}"
        _assert_contained(res)
        # writing inside its own working dir is fine
        ok = sandbox.run_program("open('scratch.txt', 'w').write('x')\nassert open('scratch.txt').read() == 'x'\n",
                                 isolation=mode, timeout=10)
        assert ok.passed, ok
    finally:
        if target.exists():
            target.unlink()


def test_socket_to_localhost_fails(mode):
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        prog = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=3)\ns.sendall(b'hi')\n"
        res = sandbox.run_program(prog, isolation=mode, timeout=10)
        _assert_contained(res)
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.accept()
    finally:
        server.close()


def test_memory_hog_is_stopped(mode):
    res = sandbox.run_program("x = bytearray(8 * 1024 ** 3)\n", isolation=mode, timeout=10, memory_mb=512)
    _assert_contained(res)
    assert "MemoryError" in res.reason or "killed" in res.reason
    res = sandbox.run_program("chunks = []\nwhile True:\n    chunks.append(bytearray(50 * 1024 ** 2))\n",
                              isolation=mode, timeout=10, memory_mb=512)
    _assert_contained(res)


def test_output_flood_is_capped(mode):
    res = sandbox.run_program("while True:\n    print('x' * 10000)\n", isolation=mode, timeout=10, file_mb=1)
    _assert_contained(res)
    assert len(res.stdout) <= 4000


def test_run_many_keeps_order():
    progs = ["assert True\n", "assert False\n", "x = 1\n"]
    results = sandbox.run_many(progs, workers=2, timeout=10)
    assert [r.status for r in results] == [sandbox.PASSED, sandbox.FAILED, sandbox.PASSED]


@pytest.mark.skipif("namespace" not in MODES, reason="needs root and a working unshare")
def test_no_process_of_a_run_outlives_it():
    """The kernel reaps a PID namespace's processes after ``unshare`` is reaped; run_program must wait for
    the last of them. Unwaited, about one short fork-bomb run in ten left processes behind; 30 runs."""
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    leftovers = {}
    for _ in range(30):
        res = sandbox.run_program(bomb, isolation="namespace", timeout=0.3)
        assert res.status == sandbox.TIMEOUT
        left = _uid_processes(res.uid)
        if left:
            leftovers[res.uid] = left
    assert leftovers == {}


@pytest.mark.skipif(os.geteuid() != 0, reason="starting a process under another uid needs root")
def test_await_uid_gone_kills_and_waits_for_every_process_of_the_uid():
    uid = 990000 + os.getpid() % 9000

    def drop():
        os.setgid(uid)
        os.setuid(uid)

    procs = [subprocess.Popen(["sleep", "60"], preexec_fn=drop) for _ in range(3)]
    try:
        assert sorted(_uid_processes(uid)) == sorted(p.pid for p in procs)
        reaper = threading.Thread(target=lambda: [p.wait() for p in procs])
        reaper.start()  # the parent reaps them as they die, as unshare's PID 1 does
        assert sandbox._await_uid_gone(uid) == []
        assert _uid_processes(uid) == []
        reaper.join(5)
        assert all(p.returncode == -9 for p in procs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
