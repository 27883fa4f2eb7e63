"""Run untrusted Python (model-written code plus assert lines) in a throwaway subprocess.

Isolation is best effort, enough for code from a small model, not for an adversary:
- `python -I` (no user site, no PYTHON* variables) in a fresh temporary working dir,
  with a minimal environment and stdin closed;
- resource limits: address space (default 1 GiB), CPU seconds, file size, no core dumps;
- a wall-clock timeout after which the whole process group is killed;
- output goes to size-limited files, never to a pipe we must drain, so a print loop
  cannot fill this process's memory.
Network access is not blocked.

The limits are set by a small harness at the start of the child instead of through
`preexec_fn`, which Python documents as unsafe when the parent has threads (a labeling
job may call this from a thread pool). The harness lowers soft and hard limits before
any untrusted code runs, so the code cannot raise them back (unless run as root).
"""

from __future__ import annotations

import math
import os
import secrets
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Executed by the child: set limits, run the solution, then the tests, in one namespace.
# The pass marker is printed only if everything ran, so code that calls sys.exit(0) or
# os._exit(0) before the tests does not count as passing.
_HARNESS = """\
import resource, sys
_as, _cpu, _fsize, _marker = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
resource.setrlimit(resource.RLIMIT_AS, (_as, _as))
resource.setrlimit(resource.RLIMIT_CPU, (_cpu, _cpu + 1))
resource.setrlimit(resource.RLIMIT_FSIZE, (_fsize, _fsize))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
del sys.argv[1:]
_namespace = {"__name__": "__main__", "__builtins__": __builtins__}
for _file in ("solution.py", "tests.py"):
    with open(_file, encoding="utf-8") as _handle:
        _source = _handle.read()
    exec(compile(_source, _file, "exec"), _namespace)
sys.stdout.write("\\n" + _marker + "\\n")
sys.stdout.flush()
"""


@dataclass(frozen=True)
class SandboxConfig:
    """Limits for one sandboxed run."""

    timeout_s: float = 5.0  # wall-clock limit; the process group is killed after it
    memory_bytes: int = 1 << 30  # RLIMIT_AS: address space of the child
    max_output_bytes: int = 1 << 20  # RLIMIT_FSIZE: caps stdout/stderr files and any file written

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.memory_bytes < (64 << 20):
            raise ValueError(f"memory_bytes must be at least 64 MiB for Python to start, got {self.memory_bytes}")
        if self.max_output_bytes < 1024:
            raise ValueError(f"max_output_bytes must be at least 1024, got {self.max_output_bytes}")


@dataclass(frozen=True)
class SandboxResult:
    """What happened in one sandboxed run."""

    passed: bool  # exit code 0 and every statement ran (pass marker seen)
    returncode: int | None  # None when killed for the timeout
    timed_out: bool
    stdout_tail: str  # last 2,000 characters, for debugging
    stderr_tail: str


def run_python_tests(code: str, tests: tuple[str, ...] | list[str], config: SandboxConfig | None = None) -> SandboxResult:
    """Run `code`, then the `tests` lines, in a sandboxed `python -I` subprocess.

    Never raises for anything the code does (syntax errors, exceptions, infinite loops,
    memory bombs, exits); those come back as `passed=False`.
    """
    config = config or SandboxConfig()
    marker = "SANDBOX-PASSED-" + secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="ranker-sandbox-") as tmp:
        workdir = Path(tmp)
        (workdir / "solution.py").write_text(code, encoding="utf-8", errors="replace")
        (workdir / "tests.py").write_text("\n".join(tests) + "\n", encoding="utf-8", errors="replace")
        (workdir / "harness.py").write_text(_HARNESS, encoding="utf-8")
        cpu_seconds = max(1, math.ceil(config.timeout_s))
        command = [
            sys.executable, "-I", "harness.py",
            str(config.memory_bytes), str(cpu_seconds), str(config.max_output_bytes), marker,
        ]
        env = {"PATH": os.defpath, "HOME": tmp, "LANG": "C.UTF-8", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        with open(workdir / "stdout.txt", "wb") as out, open(workdir / "stderr.txt", "wb") as err:
            # A new session makes the child the leader of its own process group, so a
            # timeout kills anything it forked as well.
            process = subprocess.Popen(
                command, cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                start_new_session=True,
            )
            timed_out = False
            try:
                returncode: int | None = process.wait(timeout=config.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out, returncode = True, None
                _kill_group(process)
            else:
                _kill_group(process)  # reap any children left running in the background
        stdout = _tail(workdir / "stdout.txt")
        stderr = _tail(workdir / "stderr.txt")
    passed = returncode == 0 and marker in stdout
    return SandboxResult(passed=passed, returncode=returncode, timed_out=timed_out,
                         stdout_tail=stdout[-2000:], stderr_tail=stderr[-2000:])


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the child's process group and reap the child."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already gone
    process.wait()


def _tail(path: Path, limit: int = 8192) -> str:
    """Last `limit` bytes of a file as text (the marker is within the last few bytes)."""
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - limit))
        return handle.read().decode("utf-8", errors="replace")
