"""Fault injection for crash tests (test-only; on PYTHONPATH of a Snakemake run started by a test).

Python imports `sitecustomize` at start-up, so every job process of that run gets this hook. It wraps
``os.replace``, the last step of every atomic write in selectit: when the destination path contains
``SELECTIT_TEST_CRASH_AT`` and the file ``SELECTIT_TEST_CRASH_MARK`` does not exist yet, it creates the mark and
then, by ``SELECTIT_TEST_CRASH_MODE``:
  killall (default)  SIGKILLs its whole process group (Snakemake and the job: a node crash mid-write; the complete
                     temp file is left beside the missing output),
  exit137            exits the job with status 137, as the kernel's OOM killer would (Snakemake survives).
Only the first matching write of a run is hit (the mark makes it one-shot). See also the slow-step hook below.
"""

import os
import signal


def _claim(mark: str, text: str) -> bool:
    """Create the mark file if nobody has: exactly one of several processes running at once gets True."""
    try:
        fd = os.open(mark, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return True


_AT = os.environ.get("SELECTIT_TEST_CRASH_AT")
_MARK = os.environ.get("SELECTIT_TEST_CRASH_MARK")
_MODE = os.environ.get("SELECTIT_TEST_CRASH_MODE", "killall")

if _AT and _MARK:
    _real_replace = os.replace

    def _replace(src, dst, *args, **kwargs):
        if _AT in os.fspath(dst) and _claim(_MARK, f"{os.getpid()} {os.fspath(dst)}\n"):
            if _MODE == "exit137":
                os._exit(137)
            os.killpg(os.getpgid(0), signal.SIGKILL)
        return _real_replace(src, dst, *args, **kwargs)

    os.replace = _replace

# Slow training steps (a job that would overrun its time limit): with SELECTIT_TEST_SLOW_STEP=<seconds> and
# SELECTIT_TEST_SLOW_MARK=<path>, the first process that trains (it creates the mark) sleeps that long in every
# Trainer.training_step; later processes (the resubmitted job) run at full speed.
_SLOW = os.environ.get("SELECTIT_TEST_SLOW_STEP")
_SLOW_MARK = os.environ.get("SELECTIT_TEST_SLOW_MARK")

if _SLOW and _SLOW_MARK:
    import importlib.abc
    import sys
    import time

    class _SlowTrainerFinder(importlib.abc.MetaPathFinder):
        """Wraps transformers.trainer's module execution to patch Trainer.training_step once it is defined."""

        def find_spec(self, name, path, target=None):
            if name != "transformers.trainer":
                return None
            sys.meta_path.remove(self)
            try:
                import importlib.util

                spec = importlib.util.find_spec(name)
            finally:
                sys.meta_path.insert(0, self)
            if spec is None or spec.loader is None:
                return spec
            real_exec = spec.loader.exec_module

            def exec_module(module):
                real_exec(module)
                if not _claim(_SLOW_MARK, f"{os.getpid()}\n"):
                    return
                step = module.Trainer.training_step

                def slow_step(self, *args, **kwargs):
                    time.sleep(float(_SLOW))
                    return step(self, *args, **kwargs)

                module.Trainer.training_step = slow_step

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _SlowTrainerFinder())
