"""Run untrusted Python (model-written code plus assert lines) in a throwaway subprocess.

The child is `python -I -B harness.py` in a fresh temporary folder, with a minimal
environment, stdin on /dev/null and stdout/stderr going to size-capped files (never a pipe
we must drain). A wall-clock timeout kills its whole process group (and, where seccomp is
off, every process whose argv names the run's folder, i.e. forks that left the group).
The standard library and installed packages can be imported (read-only). The harness,
trusted code generated from the `_child_*` functions below, locks the process down
*before* any untrusted code runs; nothing uses `preexec_fn` (unsafe: the parent has threads).

Verdict protocol: why a program cannot forge a pass
    The tests are never written to disk and the child is never told what "pass" looks
    like. The parent parses the tests with `ast` and plans one step per statement:
    - `assert X <op> L` or `assert L <op> X` with L a literal (ast.literal_eval's grammar,
      plus set(...)/frozenset(...) of a literal), <op> one of == != < <= > >= in, not in
      (`is`/`is not` only with None/True/False): the parent sends only the source of X; the
      child evaluates it and replies repr() of the value (subclasses of builtin types and
      numpy scalars converted to the builtin type first; anything else is an error). The
      parent parses the reply with its own size-capped literal parser (no evaluation: an
      `__eq__` override, a lying type or code in a `__repr__` just fail) and compares the
      builtin values itself. L never reaches the child, so only the right value passes.
      (Note `!=`, `<` and `not in` are weak tests by nature: a wrong value often passes.)
    - Any other statement (setup such as `import math`, plain `assert f(x)`,
      `assert math.isclose(...)`, chained comparisons): the child executes it and answers
      ok/error. Such steps are only as trustworthy as the child: hostile code can answer
      them itself, and it sees their expected values. `SandboxResult.parent_checked` and
      `.child_reported` count the two kinds (the code family's tests are all parent-checked).
    A run passes only if the child reports its layers (sent before the solution runs),
    runs the solution, answers every step rightly and exits with status 0 in time.
    sys.exit()/os._exit() before or during the tests, a closed or garbled channel, or a
    reply over `max_value_chars` fail.

Isolation layers (each turns itself off, with a note, where the host lacks it;
`sandbox_layers()` reports them, `SandboxResult.layers` lists those active for a run)
    separate_user  When the app runs as root the child becomes `nobody` (or the user/uid in
                   LANGUAGE_RANKER_SANDBOX_USER), with no supplementary groups; the temp
                   folder is chown'ed to it. The harness starts as root and drops
                   (setresuid) before untrusted code, aborting the run if it cannot.
                   If that user cannot read the standard library (e.g. Python under
                   /root), it keeps CAP_DAC_READ_SEARCH only (read any file; not write,
                   kill or ptrace), which Landlock confines. Running as root is refused.
    rlimits        Address space, CPU seconds, file size, core dumps, open files, tasks of
                   the uid; soft == hard before untrusted code, so a non-root child cannot
                   raise them (seccomp also denies setrlimit and prlimit64 with a new limit).
    namespaces     New network and IPC namespaces (as root directly, else in a new user
                   namespace where unprivileged ones are allowed): only a down loopback,
                   no host abstract unix sockets or SysV IPC.
    landlock       Linux >= 5.13: reads only below sys.path, system library folders, the
                   temp folder and a few devices; no file writes, execution or device
                   ioctls; ABI >= 4: no TCP bind/connect; ABI >= 6: no signals or abstract
                   unix sockets outside the sandbox; no ptrace of outside processes.
    seccomp        x86_64 BPF filter (ctypes + prctl, no library). EPERM for: socket
                   creation, fork/vfork/clone without CLONE_THREAD (threads work), execve,
                   opening files for writing, every call that changes paths or metadata
                   (rename, unlink, mkdir, chmod, chown, utime, truncate, xattrs, ...),
                   setrlimit/prlimit64 with a new limit, signals (kill/tgkill/... only to
                   itself), setpriority, ioprio_set, affinity/scheduling of others, ptrace,
                   process_vm_*, pidfd_*, setsid/setpgid, unshare/setns/mount, io_uring,
                   bpf, perf_event_open, SysV/POSIX IPC, TIOCSTI and privileged calls.
                   Other architectures: off.
    audit_hook     PEP 578 hook: denies sockets, subprocesses, fork/exec, kill, setrlimit,
                   writing/deleting files, chdir, opening or listing paths outside the read
                   roots, importing ctypes/_posixsubprocess/test modules/subinterpreters,
                   gc.get_objects/referrers, settrace, and replacing itself or any
                   function's code. Clear errors and a speed bump, not a boundary: C code
                   (ctypes-free C extensions, crafted bytecode via marshal) is not audited.
    parent_nondumpable  When the child shares the app's uid (not root), the app process is
                   made non-dumpable (prctl), closing its /proc environ and mem to the child.

What is not blocked (measured with `ranker.tasks.sandbox_probes`, disabling layers)
    With every layer on, every probe fails and leaves the host unharmed; also without
    Landlock and namespaces, and without the audit hook. Gaps that remain if layers are
    missing: without Landlock, reading files the child's uid may read (any file, with
    CAP_DAC_READ_SEARCH kept) and the /proc environ/mem of other dumpable processes of that
    uid is stopped only by the audit hook. Without seccomp, a process of the same uid can
    be chmod'ed/utime'd, prlimit'ed, reniced or re-pinned (setpriority and affinity are
    not audited either), and fork() works (limited by RLIMIT_NPROC, cleaned up after).
    Always: reading the read roots (standard library, site-packages, system libraries);
    CPU and memory of parallel runs add up (each run: one process, `memory_bytes`); the
    verdict leaks one bit and the run time; stdout/stderr tails come back in SandboxResult
    (the checkers drop them). Code that writes files, starts processes or opens sockets fails.
"""
from __future__ import annotations

import ast
import functools
import inspect
import math
import operator
import os
import pwd
import select
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ranker.tasks import python_parsing

# Layer names, as reported by `sandbox_layers()` and accepted by `SandboxConfig.disable`.
LAYERS = ("separate_user", "rlimits", "namespaces", "landlock", "seccomp", "audit_hook", "parent_nondumpable")
SANDBOX_USER_ENV = "LANGUAGE_RANKER_SANDBOX_USER"
_DEFAULT_USER = "nobody"


@dataclass(frozen=True)
class SandboxConfig:
    """Limits for one sandboxed run."""

    timeout_s: float = 5.0  # wall-clock limit for the whole run; the process group is killed after it
    memory_bytes: int = 1 << 30  # RLIMIT_AS: address space of the child
    max_output_bytes: int = 1 << 20  # RLIMIT_FSIZE: caps the stdout/stderr files
    max_value_chars: int = 100_000  # longest repr() of a tested value the parent will parse
    max_threads: int = 16  # RLIMIT_NPROC headroom above the tasks the child's uid already has
    disable: frozenset[str] = field(default_factory=frozenset)  # layers to turn off (tests, debugging)

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.memory_bytes < (64 << 20):
            raise ValueError(f"memory_bytes must be at least 64 MiB for Python to start, got {self.memory_bytes}")
        if self.max_output_bytes < 1024:
            raise ValueError(f"max_output_bytes must be at least 1024, got {self.max_output_bytes}")
        if self.max_value_chars < 100:
            raise ValueError(f"max_value_chars must be at least 100, got {self.max_value_chars}")
        if self.max_threads < 1:
            raise ValueError(f"max_threads must be >= 1, got {self.max_threads}")
        unknown = set(self.disable) - set(LAYERS)
        if unknown:
            raise ValueError(f"disable names unknown layers {sorted(unknown)}; layers are {list(LAYERS)}")


@dataclass(frozen=True)
class SandboxResult:
    """What happened in one sandboxed run."""

    passed: bool  # every step verified, solution and steps ran, exit status 0
    returncode: int | None  # None when killed for the timeout
    timed_out: bool
    stdout_tail: str  # last 2,000 characters, for debugging
    stderr_tail: str
    reason: str = ""  # why it failed ("" when passed)
    parent_checked: int = 0  # assert steps whose outcome the parent computed from a returned value
    child_reported: int = 0  # steps whose outcome only the child reported (see module docstring)
    layers: tuple[str, ...] = ()  # isolation layers the child reported active for this run
    pid: int | None = None  # the child's pid (= its process group and session id)


# ------------------------------------------------------------------------ test plan

@dataclass(frozen=True)
class _Step:
    """One top-level statement of the tests, as the parent will run it."""

    kind: str  # "check": parent compares; "exec": child runs and reports; "local": both sides literal
    text: str  # the statement, for reasons
    source: str = ""  # what the child evaluates ("check") or executes ("exec")
    op: str = ""  # comparison name, for "check" and "local"
    literal: Any = None  # the literal side
    literal_left: bool = False  # True when the literal is the left operand


_COMPARE = {
    "Eq": operator.eq, "NotEq": operator.ne, "Lt": operator.lt, "LtE": operator.le, "Gt": operator.gt,
    "GtE": operator.ge, "In": lambda a, b: a in b, "NotIn": lambda a, b: a not in b,
    "Is": operator.is_, "IsNot": operator.is_not,
}


def _literal(node: ast.AST, reply: bool = False) -> Any:
    """Value of a literal expression node; ValueError for anything else.

    The grammar of ast.literal_eval plus set(...)/frozenset(...) of a literal; with
    `reply=True` (values the child sends back) also the names inf and nan, which repr() writes
    for non-finite floats. Nothing is ever evaluated, so a reply cannot run code here.
    """
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        items = [_literal(element, reply) for element in node.elts]
        return tuple(items) if isinstance(node, ast.Tuple) else items if isinstance(node, ast.List) else set(items)
    if isinstance(node, ast.Dict):
        if any(key is None for key in node.keys):
            raise ValueError("dict unpacking is not a literal")
        return {_literal(k, reply): _literal(v, reply) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        operand = _literal(node.operand, reply)
        if type(operand) not in (int, float, complex):
            raise ValueError("sign of a non-number")
        return -operand if isinstance(node.op, ast.USub) else +operand
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
        left, right = _literal(node.left, reply), _literal(node.right, reply)
        if type(left) not in (int, float) or type(right) is not complex:
            raise ValueError("only real +/- imaginary is a literal")
        return left + right if isinstance(node.op, ast.Add) else left - right
    if reply and isinstance(node, ast.Name) and node.id in ("inf", "nan"):
        return float(node.id)
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("set", "frozenset")
            and not node.keywords and len(node.args) <= 1):
        items = _literal(node.args[0], reply) if node.args else ()
        return set(items) if node.func.id == "set" else frozenset(items)
    raise ValueError(f"not a literal: {type(node).__name__}")


def _plan_tests(tests: tuple[str, ...]) -> list[_Step]:
    """One `_Step` per top-level statement of the joined test lines (SyntaxError if they do not parse)."""
    source = "\n".join(tests) + "\n"
    steps = []
    for statement in python_parsing.parse(source).body:
        text = ast.get_source_segment(source, statement) or ast.unparse(statement)
        step = _Step("exec", text, source=text)
        compare = statement.test if isinstance(statement, ast.Assert) else None
        if isinstance(compare, ast.Compare) and len(compare.ops) == 1 and type(compare.ops[0]).__name__ in _COMPARE:
            op, left, right = type(compare.ops[0]).__name__, compare.left, compare.comparators[0]
            sides = []
            for node in (left, right):
                try:
                    sides.append((True, _literal(node)))
                except (ValueError, TypeError):  # TypeError: an unhashable set member or dict key
                    sides.append((False, None))
            (left_ok, left_value), (right_ok, right_value) = sides
            literal_ok, literal = (right_ok, right_value) if right_ok else (left_ok, left_value)
            if op in ("Is", "IsNot") and literal_ok and not any(literal is v for v in (None, True, False)):
                literal_ok = False  # identity with other literals depends on interning
            if literal_ok and left_ok and right_ok:
                step = _Step("local", text, op=op, literal=(left_value, right_value))
            elif literal_ok:
                other = left if right_ok else right
                expression = ast.get_source_segment(source, other) or ast.unparse(other)
                step = _Step("check", text, source=expression, op=op, literal=literal, literal_left=not right_ok)
        steps.append(step)
    return steps


def _parse_reply_value(text: str, max_chars: int) -> Any:
    """The builtin value a repr() from the child stands for; ValueError if it is not a literal."""
    if len(text) > max_chars:
        raise ValueError(f"value repr is {len(text)} characters, over the {max_chars} limit")
    try:
        tree = python_parsing.parse(text, mode="eval")
        return _literal(tree.body, reply=True)
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError) as error:
        raise ValueError(f"value is not a literal ({type(error).__name__}): {text[:80]!r}") from None


def _shorten(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------- parent side

class _Deadline(Exception):
    """The run's wall-clock budget is spent."""


class _ChannelClosed(Exception):
    """The child closed its end or sent something that is not a protocol message."""


class _Channel:
    """Framed messages to and from the child over two pipes, with a deadline.

    A frame is `<kind> <length>\n` followed by `length` bytes of UTF-8. Frames are cheap to
    produce without importing anything in the child, and a reply's size is known before it
    is read, so an oversized or endless reply is refused without buffering it.
    """

    def __init__(self, send_fd: int, receive_fd: int, deadline: float, max_payload_bytes: int) -> None:
        self.send_fd, self.receive_fd, self.deadline = send_fd, receive_fd, deadline
        self.max_payload_bytes = max_payload_bytes
        self.buffer = b""
        os.set_blocking(send_fd, False)  # a child that stops reading must not block this thread

    def _wait(self, fd: int, events: int) -> None:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise _Deadline()
        poller = select.poll()
        poller.register(fd, events)
        if not poller.poll(max(1, math.ceil(remaining * 1000))):
            raise _Deadline()

    def send(self, kind: str, payload: str = "") -> None:
        body = payload.encode("utf-8", errors="surrogatepass")
        data = f"{kind} {len(body)}\n".encode() + body
        while data:
            self._wait(self.send_fd, select.POLLOUT)
            try:
                data = data[os.write(self.send_fd, data):]
            except BlockingIOError:
                continue
            except OSError:  # BrokenPipeError: the child is gone
                raise _ChannelClosed("the program closed its input") from None

    def _fill(self, enough) -> None:
        """Read from the child until `enough(buffer)` holds."""
        while not enough(self.buffer):
            self._wait(self.receive_fd, select.POLLIN)
            chunk = os.read(self.receive_fd, 1 << 16)
            if not chunk:
                raise _ChannelClosed("the program exited or closed its reply channel")
            self.buffer += chunk

    def receive(self) -> tuple[str, str]:
        """The next (kind, payload) from the child."""
        self._fill(lambda buffer: b"\n" in buffer[:64] or len(buffer) > 64)
        header, newline, rest = self.buffer.partition(b"\n")
        if not newline:
            raise _ChannelClosed(f"garbled reply {header[:40]!r}")
        self.buffer = rest
        parts = header.split(b" ")
        if len(parts) != 2 or not parts[0].isalpha() or not parts[1].isdigit() or len(parts[1]) > 12:
            raise _ChannelClosed(f"garbled reply {header[:40]!r}")
        size = int(parts[1])
        if size > self.max_payload_bytes:
            raise _ChannelClosed(f"reply of {size} bytes, over the {self.max_payload_bytes} limit")
        self._fill(lambda buffer: len(buffer) >= size)
        body, self.buffer = self.buffer[:size], self.buffer[size:]
        return parts[0].decode("ascii"), body.decode("utf-8", errors="replace")

    def close(self) -> None:
        """Close both pipes, once: closing a number twice could close another thread's new descriptor."""
        if self.send_fd >= 0:
            os.close(self.send_fd)
            os.close(self.receive_fd)
            self.send_fd = self.receive_fd = -1


def sandbox_user() -> tuple[int, int] | None:
    """(uid, gid) the child runs as when this process is root; None when it is not root.

    LANGUAGE_RANKER_SANDBOX_USER may name a user or give a numeric uid (its gid is then the
    same number); the default is `nobody` (65534 if there is no such entry).
    """
    if os.geteuid() != 0:
        return None
    spec = os.environ.get(SANDBOX_USER_ENV, "").strip() or _DEFAULT_USER
    try:
        entry = pwd.getpwnam(spec)
        uid, gid = entry.pw_uid, entry.pw_gid
    except KeyError:
        if spec.isdigit():
            uid = gid = int(spec)
        elif spec == _DEFAULT_USER:
            uid = gid = 65534
        else:
            raise ValueError(f"{SANDBOX_USER_ENV}={spec!r} is neither a user on this host nor a numeric uid") from None
    if uid == 0 or gid == 0:
        raise ValueError(f"{SANDBOX_USER_ENV}={spec!r} resolves to uid {uid} gid {gid}; "
                         "the sandbox user must not be root")
    return uid, gid


def _readable_by(path: str, uid: int, gid: int) -> bool:
    """Whether a process with only this uid and gid (no groups) could read `path` (a dir: list it)."""
    def allowed(st: os.stat_result, bits: int) -> bool:
        shift = 6 if st.st_uid == uid else 3 if st.st_gid == gid else 0
        return (st.st_mode >> shift) & bits == bits

    try:
        current = Path(path).resolve()
        for ancestor in reversed(current.parents):
            if not allowed(os.stat(ancestor), 1):
                return False
        return allowed(os.stat(current), 5 if current.is_dir() else 4)
    except OSError:
        return False


@functools.lru_cache(maxsize=None)
def _stdlib_readable_by(uid: int, gid: int) -> bool:
    stdlib = os.path.dirname(os.__file__)
    return all(_readable_by(p, uid, gid) for p in (stdlib, os.path.join(stdlib, "lib-dynload")))


def _count_tasks(uid: int) -> int:
    """Tasks (threads included) of processes whose /proc entry belongs to `uid` (what RLIMIT_NPROC counts)."""
    count = 0
    try:
        entries = list(os.scandir("/proc"))
    except OSError:
        return 0
    for entry in entries:
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    count += len(os.listdir(f"/proc/{entry.name}/task"))
            except OSError:
                pass  # the process exited meanwhile
    return count


_nondumpable_done = False


def _make_parent_nondumpable() -> bool:
    """prctl(PR_SET_DUMPABLE, 0) on this process, once; False if the call is not available."""
    global _nondumpable_done
    if not _nondumpable_done:
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            _nondumpable_done = libc.prctl(4, ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0),
                                           ctypes.c_ulong(0)) == 0
        except (OSError, AttributeError):
            return False
    return _nondumpable_done


def run_python_tests(
    code: str, tests: tuple[str, ...] | list[str], config: SandboxConfig | None = None,
) -> SandboxResult:
    """Run `code`, then the `tests` statements, in a sandboxed `python -I -B` subprocess.

    Never raises for anything the code does (syntax errors, exceptions, infinite loops,
    memory bombs, exits, attacks on the sandbox); those come back as `passed=False` with a
    `reason`. Raises ValueError for a misconfigured sandbox user or for disabling
    `separate_user` while running as root.
    """
    return _run(code, tuple(tests), config or SandboxConfig())[0]


def _run(code: str, tests: tuple[str, ...], config: SandboxConfig) -> tuple[SandboxResult, dict[str, list]]:
    """`run_python_tests`, plus the child's layer report {layer: [active, detail]}."""
    try:
        steps = _plan_tests(tests)
    except (SyntaxError, ValueError) as error:
        return SandboxResult(False, None, False, "", "", reason=f"the tests do not parse: {error}"), {}
    if os.geteuid() == 0 and "separate_user" in config.disable:
        raise ValueError("refusing to run untrusted code as root: "
                         "'separate_user' cannot be disabled when running as root")
    user = sandbox_user()
    nondumpable = user is None and "parent_nondumpable" not in config.disable and _make_parent_nondumpable()
    conversation = _Conversation(steps, config)
    deadline = time.monotonic() + config.timeout_s
    with tempfile.TemporaryDirectory(prefix="ranker-sandbox-", ignore_cleanup_errors=True) as tmp:
        workdir = Path(tmp)
        (workdir / "solution.py").write_text(code, encoding="utf-8", errors="replace")
        (workdir / "harness.py").write_text(_harness_source(), encoding="utf-8")
        if user is not None:
            for path in (workdir, workdir / "solution.py", workdir / "harness.py"):
                os.chown(path, *user)
        request_read, request_write = os.pipe()
        reply_read, reply_write = os.pipe()
        settings = _child_settings(tmp, config, user, fds=[request_read, reply_write])
        env = {"PATH": os.defpath, "HOME": tmp, "LANG": "C.UTF-8", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        command = [sys.executable, "-I", "-B", "harness.py", repr(settings)]
        with open(workdir / "stdout.txt", "wb") as out, open(workdir / "stderr.txt", "wb") as err:
            try:
                # A new session makes the child the leader of its own process group, so the
                # final killpg also reaches anything it managed to start.
                process = subprocess.Popen(
                    command, cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                    pass_fds=(request_read, reply_write), start_new_session=True,
                )
            except BaseException:
                for fd in (request_write, reply_read):
                    os.close(fd)
                raise
            finally:
                os.close(request_read)
                os.close(reply_write)
            channel = _Channel(request_write, reply_read, deadline, 4 * config.max_value_chars + 4096)
            timed_out, returncode = False, None
            try:
                conversation.run(channel)
                channel.close()  # EOF tells the harness to finish
                # A passing run must exit cleanly; after a failure, a short grace period only
                # lets the exit status be the program's own.
                grace = deadline - time.monotonic() if conversation.passed else min(0.2, deadline - time.monotonic())
                try:
                    returncode = process.wait(timeout=max(0.0, grace))
                except subprocess.TimeoutExpired:
                    if conversation.passed:
                        raise _Deadline() from None
            except _Deadline:
                channel.close()
                conversation.fail(f"timed out after {config.timeout_s:g} s")
                timed_out = True
            finally:
                _kill_group(process)
                if not conversation.layers.get("seccomp", [False])[0]:
                    _kill_strays(tmp)  # without seccomp, forked children may have left the group
            if not timed_out and returncode is None:
                returncode = process.returncode
        stdout = _tail(workdir / "stdout.txt")
        stderr = _tail(workdir / "stderr.txt")
    if conversation.passed and returncode != 0:
        conversation.fail(f"exit status {returncode} after the tests")
    details = dict(conversation.layers)
    details["parent_nondumpable"] = [
        nondumpable, "" if nondumpable else "not needed: separate user" if user else "disabled or prctl failed"]
    result = SandboxResult(
        passed=conversation.passed, returncode=returncode, timed_out=timed_out, stdout_tail=stdout[-2000:],
        stderr_tail=stderr[-2000:], reason=conversation.reason, parent_checked=conversation.parent_checked,
        child_reported=conversation.child_reported,
        layers=tuple(name for name, (active, _) in details.items() if active), pid=process.pid,
    )
    return result, details


def _child_settings(tmp: str, config: SandboxConfig, user: tuple[int, int] | None, fds: list[int]) -> dict:
    """The harness's argv[1]: limits, user to drop to, layers to skip, protocol descriptors."""
    child_uid = os.getuid() if user is None else user[0]
    cpu_seconds = max(1, math.ceil(config.timeout_s))
    rlimits = {
        "RLIMIT_AS": [config.memory_bytes] * 2, "RLIMIT_CPU": [cpu_seconds, cpu_seconds + 1],
        "RLIMIT_FSIZE": [config.max_output_bytes] * 2, "RLIMIT_CORE": [0, 0], "RLIMIT_NOFILE": [256, 256],
        # RLIMIT_NPROC counts every task of the uid, so leave headroom above what it has now.
        "RLIMIT_NPROC": [_count_tasks(child_uid) + config.max_threads] * 2, "RLIMIT_MSGQUEUE": [0, 0],
    }
    return {
        "tmp": tmp, "fds": fds, "max_value_chars": config.max_value_chars, "disable": sorted(config.disable),
        "rlimits": {} if "rlimits" in config.disable else rlimits,
        "user": None if user is None else [user[0], user[1], not _stdlib_readable_by(*user)],
    }


class _Conversation:
    """Drives the protocol (layers report, solution, then each step) and keeps the verdict."""

    def __init__(self, steps: list[_Step], config: SandboxConfig) -> None:
        self.steps, self.config = steps, config
        self.passed, self.reason = False, "the run did not start"
        self.parent_checked = self.child_reported = 0
        self.layers: dict[str, list] = {}

    def fail(self, reason: str) -> None:
        self.passed, self.reason = False, reason

    def run(self, channel: _Channel) -> None:
        """Talk to the child until every step passed or one failed; raises _Deadline."""
        try:
            if self._talk(channel):
                self.passed, self.reason = True, ""
        except _ChannelClosed as error:
            self.fail(str(error))

    def _talk(self, channel: _Channel) -> bool:
        report = self._expect(channel, "layers", "the layers report", "abort", "sandbox setup failed:")
        if report is None:
            return False
        for line in report.splitlines():
            name, active, detail = (line.split("\t", 2) + ["", ""])[:3]
            self.layers[name] = [active == "1", detail]
        if self._expect(channel, "ready", "the solution to finish", "error", "the solution raised") is None:
            return False
        for number, step in enumerate(self.steps, start=1):
            failure = self._step(channel, step)
            if failure:
                self.fail(f"test {number} `{_shorten(step.text, 80)}` {failure}")
                return False
        return True

    def _expect(self, channel: _Channel, kind: str, what: str, failure_kind: str, failure: str) -> str | None:
        """The payload of the next message if it is `kind`; else record why (`failure` + the child's
        report for a `failure_kind` message, or the unexpected kind) and return None."""
        received, payload = channel.receive()
        if received == kind:
            return payload
        if received == failure_kind:
            self.fail(f"{failure} {_shorten(payload)}")
        else:
            self.fail(f"expected {what}, got {received!r}")
        return None

    def _step(self, channel: _Channel, step: _Step) -> str:
        """Run one step; '' if it passed, else what went wrong."""
        if step.kind == "local":
            if not _compare(step.op, *step.literal):
                return "is false"
            self.parent_checked += 1
            return ""
        channel.send("eval" if step.kind == "check" else "exec", step.source)
        kind, payload = channel.receive()
        if kind == "error":
            return f"raised {_shorten(payload)}"
        if step.kind == "exec":
            if kind != "ok":
                return f"got an unexpected {kind!r} reply"
            self.child_reported += 1
            return ""
        if kind != "value":
            return f"got an unexpected {kind!r} reply"
        try:
            value = _parse_reply_value(payload, self.config.max_value_chars)
        except ValueError as error:
            return f"failed: {error}"
        left, right = (step.literal, value) if step.literal_left else (value, step.literal)
        if not _compare(step.op, left, right):
            return f"is false: got {_shorten(payload, 80)}"
        self.parent_checked += 1
        return ""


def _compare(op: str, left: Any, right: Any) -> bool:
    """`left <op> right` on builtin values; False if they cannot be compared."""
    try:
        return bool(_COMPARE[op](left, right))
    except (TypeError, ValueError, RecursionError, MemoryError):
        return False


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the child's process group and reap the child."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already gone
    process.wait()


def _kill_strays(tmp: str) -> None:
    """SIGKILL every process whose command line names this run's temp folder (the harness and its forks).

    Forked children inherit the harness's argv, which holds the folder's unique path, so this
    finds those that called setsid() to leave the process group. Repeated while it finds any,
    since a fork loop may add processes between two scans.
    """
    tag = repr(tmp).encode()
    for _ in range(20):
        found = False
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    if tag in handle.read():
                        os.kill(int(entry), signal.SIGKILL)
                        found = True
            except (OSError, ProcessLookupError):
                pass  # gone meanwhile, or not ours to kill
        if not found:
            return
        time.sleep(0.01)


def _tail(path: Path, limit: int = 8192) -> str:
    """Last `limit` bytes of a file as text."""
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - limit))
        return handle.read().decode("utf-8", errors="replace")


@functools.lru_cache(maxsize=None)
def _layer_report() -> tuple[tuple[str, bool | str], ...]:
    result, details = _run("", ("assert 1 == 1",), SandboxConfig(timeout_s=10.0))
    report: dict[str, bool | str] = dict.fromkeys(LAYERS, False)
    notes = []
    for name, (active, detail) in details.items():
        report[name] = (detail or True) if active else False
        if not active:
            notes.append(f"{name}: {detail}")
    report["notes"] = "; ".join(notes)
    if not result.passed:
        report["error"] = result.reason or result.stderr_tail[-300:]
    return tuple(report.items())


def sandbox_layers() -> dict[str, bool | str]:
    """Which isolation layers a run gets on this host: {layer: False | True | "detail"}.

    A truthy value means the layer is on (a string says how, e.g. "ABI 7"); "notes" says
    why the others are off, and an "error" key appears if the trial run failed. Measured
    once per process with a trivial program (about 50 ms).
    """
    return dict(_layer_report())


# ---------------------------------------------------------------------- child side
# Everything below runs in the child, as harness.py: `_harness_source()` concatenates these
# functions, so they may use only the standard library and each other, never module globals.

def _child_main() -> None:
    """Lock the process down, report the layers, run the solution, then answer requests.

    Imports only what Python's startup has loaded anyway plus resource (and ctypes in the layers),
    so the harness starts fast; tracebacks are printed by sys.__excepthook__.
    """
    import os
    import resource
    import sys

    settings = eval(sys.argv[1], {"__builtins__": {}})  # the parent's repr() of plain data
    del sys.argv[1:]
    request_fd, reply_fd = settings["fds"]
    sys.dont_write_bytecode = True

    def send(kind, payload=""):
        body = payload.encode("utf-8", "surrogatepass")
        data = b"%s %d\n" % (kind.encode(), len(body)) + body
        while data:
            data = data[os.write(reply_fd, data):]

    def read(size):
        data = b""
        while len(data) < size:
            chunk = os.read(request_fd, size - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def receive():
        header = b""
        while not header.endswith(b"\n"):
            chunk = os.read(request_fd, 1)
            if not chunk:
                return None
            header += chunk
        kind, size = header.split()
        body = read(int(size))
        return None if body is None else (kind.decode(), body.decode("utf-8", "surrogatepass"))

    def abort(reason):
        send("abort", reason)
        os._exit(3)

    try:
        for name, (soft, hard) in settings["rlimits"].items():
            resource.setrlimit(getattr(resource, name), (soft, hard))
        with open("solution.py", encoding="utf-8") as handle:
            solution = handle.read()
    except (OSError, ValueError) as error:
        abort(f"setup: {error}")
    disabled = set(settings["disable"])
    layers = {"rlimits": [bool(settings["rlimits"]), ""]}
    as_root = os.geteuid() == 0
    read_roots = [p for p in sys.path if p] + [settings["tmp"]]

    def layer(function, *args):  # a layer that breaks is reported off, never fatal
        try:
            return function(*args)
        except Exception as error:  # noqa: BLE001
            return [False, f"failed: {type(error).__name__}: {error}"]

    if "namespaces" not in disabled and as_root:
        layers["namespaces"] = layer(_child_unshare, False)
    if settings["user"]:
        uid, gid, keep_read_search = settings["user"]
        try:
            _child_drop_user(uid, gid, keep_read_search)
        except OSError as error:
            abort(f"could not drop privileges to uid {uid}: {error}")
        detail = f"uid {uid} gid {gid}" + (" + CAP_DAC_READ_SEARCH" if keep_read_search else "")
        layers["separate_user"] = [True, detail]
        keep_caps = keep_read_search
    else:
        layers["separate_user"] = [False, "not root: the child keeps the app's uid"]
        keep_caps = False
    if "namespaces" not in disabled and not layers.get("namespaces", [False])[0]:
        layers["namespaces"] = (layer(_child_unshare, True) if not keep_caps
                                else [False, "skipped: a user namespace would drop CAP_DAC_READ_SEARCH"])
    if "landlock" not in disabled:
        layers["landlock"] = layer(_child_landlock, read_roots)
    if "seccomp" not in disabled:
        layers["seccomp"] = layer(_child_seccomp, os.getpid())
    for name in [n for n in sys.modules if n in ("ctypes", "_ctypes") or n.startswith("ctypes.")]:
        del sys.modules[name]  # re-importing them then goes through the audit hook
    if "audit_hook" not in disabled:
        layers["audit_hook"] = layer(_child_audit_hook, tuple(read_roots), settings["tmp"])
    send("layers", "".join(f"{name}\t{int(bool(on))}\t{detail}\n" for name, (on, detail) in layers.items()))

    # The solution runs in a fresh __main__ module, so `import __main__` does not reach the harness.
    module = type(sys)("__main__")
    module.__builtins__ = __builtins__
    sys.modules["__main__"] = module
    namespace = module.__dict__
    max_chars = settings["max_value_chars"]

    def describe(error):
        try:
            text = str(error)
        except Exception:  # noqa: BLE001 - a hostile __str__
            text = ""
        return f"{type(error).__name__}: {text}"[:500] if text else type(error).__name__

    def report(error):
        try:
            sys.__excepthook__(type(error), error, error.__traceback__.tb_next)  # skip the harness frame
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - stderr full or replaced
            pass
        return describe(error)

    try:
        exec(compile(solution, "solution.py", "exec"), namespace)
    except BaseException as error:  # noqa: BLE001 - SystemExit included: exiting early fails
        send("error", report(error))
        os._exit(1)
    send("ready")
    while True:
        request = receive()
        if request is None:
            sys.stdout.flush()
            return
        kind, source = request
        try:
            if kind == "eval":
                text = repr(_child_plain(eval(compile(source, "<test>", "eval"), namespace), 0))
                reply = ("value", text) if len(text) <= max_chars else ("error", f"repr is {len(text)} characters")
            else:
                exec(compile(source, "<test>", "exec"), namespace)
                reply = ("ok", "")
        except BaseException as error:  # noqa: BLE001
            reply = ("error", report(error))
        send(*reply)


def _child_plain(value, depth):
    """`value` with subclasses of builtin types turned into the builtin type, so repr() is a literal.

    Other types raise TypeError (the step fails): the parent would not parse their repr anyway.
    """
    if depth > 100:
        raise ValueError("value nested more than 100 levels deep")
    kind = type(value)
    if kind in (int, float, complex, str, bytes, bool, type(None)):
        return value
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, complex):
        return complex(complex.__complex__(value))
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, tuple):
        return tuple(_child_plain(item, depth + 1) for item in value)
    if isinstance(value, list):
        return [_child_plain(item, depth + 1) for item in value]
    if isinstance(value, frozenset):
        return frozenset(_child_plain(item, depth + 1) for item in value)
    if isinstance(value, set):
        return {_child_plain(item, depth + 1) for item in value}
    if isinstance(value, dict):
        return {_child_plain(k, depth + 1): _child_plain(v, depth + 1) for k, v in value.items()}
    if kind in (type({}.keys()), type({}.items())):
        return {_child_plain(item, depth + 1) for item in value}
    if getattr(kind, "__module__", "") == "numpy" and getattr(value, "ndim", None) == 0:
        return _child_plain(value.item(), depth + 1)  # a numpy scalar (np.int64 == 3 holds in plain Python too)
    raise TypeError(f"the value is a {kind.__name__}, not a builtin literal type")


def _child_libc():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return libc


def _child_unshare(with_user_namespace):
    """New network + IPC namespaces (inside a new user namespace when not root)."""
    import ctypes
    import os

    flags = 0x40000000 | 0x08000000  # CLONE_NEWNET | CLONE_NEWIPC
    if with_user_namespace:
        flags |= 0x10000000  # CLONE_NEWUSER
    libc = _child_libc()
    if libc.unshare(ctypes.c_int(flags)) != 0:
        return [False, f"unshare failed: {os.strerror(ctypes.get_errno())}"]
    return [True, "net+ipc" + (" in a user namespace" if with_user_namespace else "")]


def _child_drop_user(uid, gid, keep_read_search):
    """setresuid/setresgid to the sandbox user with no groups; optionally keep CAP_DAC_READ_SEARCH only."""
    import ctypes
    import os

    libc = _child_libc()
    if keep_read_search and libc.prctl(8, 1, 0, 0, 0) != 0:  # PR_SET_KEEPCAPS
        raise OSError(ctypes.get_errno(), "PR_SET_KEEPCAPS failed")
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if keep_read_search:
        header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
        data = (ctypes.c_uint32 * 6)(1 << 2, 1 << 2, 0, 0, 0, 0)  # effective, permitted, inheritable x 2 words
        if libc.syscall(ctypes.c_long(126), header, data) != 0:  # capset
            raise OSError(ctypes.get_errno(), "capset failed")
        libc.prctl(8, 0, 0, 0, 0)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid) or os.getgroups():
        raise OSError(0, f"still uid {os.getresuid()} gid {os.getresgid()} groups {os.getgroups()}")


def _child_landlock(read_roots):
    """Landlock: read-only access below `read_roots` and system library folders; nothing else."""
    import ctypes
    import os
    import stat
    import struct

    libc = _child_libc()
    abi = libc.syscall(ctypes.c_long(444), None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 1:
        return [False, f"unavailable: {os.strerror(ctypes.get_errno())}"]
    handled_fs = (1 << 13) - 1  # ABI 1: execute, write/read file, read dir, remove and make anything
    for bit, since in ((13, 2), (14, 3), (15, 5)):  # refer (ABI 2), truncate (3), ioctl on devices (5)
        handled_fs |= (1 << bit) if abi >= since else 0
    handled_net = 3 if abi >= 4 else 0  # BIND_TCP | CONNECT_TCP
    scoped = 3 if abi >= 6 else 0  # abstract unix sockets | signals
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    attributes = ctypes.create_string_buffer(struct.pack("=QQQ", handled_fs, handled_net, scoped))
    ruleset = libc.syscall(ctypes.c_long(444), attributes, ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        return [False, f"create_ruleset failed: {os.strerror(ctypes.get_errno())}"]
    read_file, read_dir = 1 << 2, 1 << 3
    system = ["/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/local/lib", "/etc/ld.so.cache", "/etc/localtime",
              "/usr/share/zoneinfo", "/dev/null", "/dev/zero", "/dev/urandom"]
    try:
        for path in list(read_roots) + system:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # not on this host
            try:
                access = read_file | read_dir if stat.S_ISDIR(os.fstat(fd).st_mode) else read_file
                rule = ctypes.create_string_buffer(struct.pack("=Qi", access, fd))
                if libc.syscall(ctypes.c_long(445), ctypes.c_long(ruleset), ctypes.c_long(1), rule, ctypes.c_uint32(0)):
                    return [False, f"add_rule {path} failed: {os.strerror(ctypes.get_errno())}"]
            finally:
                os.close(fd)
        if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
            return [False, "PR_SET_NO_NEW_PRIVS failed"]
        if libc.syscall(ctypes.c_long(446), ctypes.c_long(ruleset), ctypes.c_uint32(0)) != 0:
            return [False, f"restrict_self failed: {os.strerror(ctypes.get_errno())}"]
    finally:
        os.close(ruleset)
    return [True, f"ABI {abi}"]


def _child_seccomp(pid):
    """Install the x86_64 seccomp filter described in the module docstring; `pid` is this process."""
    import ctypes
    import os
    import struct

    if os.uname().machine != "x86_64":
        return [False, f"no filter for {os.uname().machine}"]
    eperm, enosys = 1, 38
    denied = {  # x86_64 syscall numbers, all answered with EPERM
        "socket": 41, "socketpair": 53, "fork": 57, "vfork": 58, "execve": 59, "execveat": 322,
        "creat": 85, "rename": 82, "renameat": 264, "renameat2": 316, "mkdir": 83, "mkdirat": 258, "rmdir": 84,
        "link": 86, "linkat": 265, "unlink": 87, "unlinkat": 263, "symlink": 88, "symlinkat": 266,
        "chmod": 90, "fchmod": 91, "fchmodat": 268, "fchmodat2": 452, "chown": 92, "fchown": 93, "lchown": 94,
        "fchownat": 260, "truncate": 76, "ftruncate": 77, "fallocate": 285, "mknod": 133, "mknodat": 259,
        "utime": 132, "utimes": 235, "utimensat": 280, "futimesat": 261, "setxattr": 188, "lsetxattr": 189,
        "fsetxattr": 190, "removexattr": 197, "lremovexattr": 198, "fremovexattr": 199, "memfd_create": 319,
        "open_by_handle_at": 304, "name_to_handle_at": 303, "setrlimit": 160,
        "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "pidfd_open": 434,
        "pidfd_send_signal": 424, "pidfd_getfd": 438, "setsid": 112, "setpgid": 109,
        "unshare": 272, "setns": 308, "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161,
        "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
        "mount_setattr": 442, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
        "bpf": 321, "perf_event_open": 298, "userfaultfd": 323, "keyctl": 250, "add_key": 248, "request_key": 249,
        "shmget": 29, "shmat": 30, "shmctl": 31, "semget": 64, "semop": 65, "semctl": 66, "shmdt": 67,
        "msgget": 68, "msgsnd": 69, "msgrcv": 70, "msgctl": 71, "semtimedop": 220, "mq_open": 240, "mq_unlink": 241,
        "reboot": 169, "kexec_load": 246, "kexec_file_load": 320, "init_module": 175, "finit_module": 313,
        "delete_module": 176, "swapon": 167, "swapoff": 168, "acct": 163, "settimeofday": 164,
        "clock_settime": 227, "adjtimex": 159, "clock_adjtime": 305, "sethostname": 170, "setdomainname": 171,
        "iopl": 172, "ioperm": 173, "syslog": 103, "quotactl": 179, "vhangup": 153, "fanotify_init": 300,
        "setpriority": 141, "ioprio_set": 251, "migrate_pages": 256, "move_pages": 279,
    }
    unavailable = {"clone3": 435, "openat2": 437}  # ENOSYS: glibc falls back to clone / openat, which are filtered

    def statement(code, k):
        return struct.pack("=HBBI", code, 0, 0, k)

    def jump(k, jt, jf, code=0x15):  # BPF_JMP|BPF_JEQ|BPF_K by default
        return struct.pack("=HBBI", code, jt, jf, k)

    def load(offset):  # BPF_LD|BPF_W|BPF_ABS on struct seccomp_data
        return statement(0x20, offset)

    def ret(value):
        return statement(0x06, value)

    def arg_low(index):  # low 32 bits of argument `index` (little endian)
        return 16 + 8 * index

    allow, kill = 0x7FFF0000, 0x80000000
    deny, missing = 0x00050000 | eperm, 0x00050000 | enosys
    jset = 0x45
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC
    namespace_flags = 0x7E020000  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
    own_pid, own_group = pid & 0xFFFFFFFF, (-pid) & 0xFFFFFFFF

    def guarded(number, body):  # `body` runs only for this syscall and returns on every path
        return [jump(number, 0, len(body))] + body

    def open_rule(number, flags_arg):
        return guarded(number, [load(arg_low(flags_arg)), jump(write_flags, 0, 1, jset), ret(deny), ret(allow)])

    def only_self(number):  # first argument must be this process
        return guarded(number, [load(arg_low(0)), jump(own_pid, 0, 1), ret(allow), ret(deny)])

    def only_self_or_zero(number):  # first argument must be this process, or 0 (= the caller)
        return guarded(number, [load(arg_low(0)), jump(0, 1, 0), jump(own_pid, 0, 1), ret(allow), ret(deny)])

    program = [load(4), jump(0xC000003E, 1, 0), ret(kill),  # AUDIT_ARCH_X86_64 only (no int 0x80)
               load(0), jump(0x40000000, 0, 1, 0x35), ret(missing)]  # no x32 syscalls
    for number in denied.values():
        program += [jump(number, 0, 1), ret(deny)]
    for number in unavailable.values():
        program += [jump(number, 0, 1), ret(missing)]
    program += open_rule(2, 1) + open_rule(257, 2)  # open(path, flags), openat(dirfd, path, flags)
    program += guarded(56, [load(arg_low(0)), jump(namespace_flags, 2, 0, jset), jump(0x10000, 0, 1, jset),
                            ret(allow), ret(deny)])  # clone: threads only (CLONE_THREAD, no namespaces)
    program += guarded(62, [load(arg_low(0)), jump(0, 3, 0), jump(own_pid, 2, 0), jump(own_group, 1, 0),
                            ret(deny), ret(allow)])  # kill: own process, own group (0 or -pid)
    for number in (200, 234, 129, 297):  # tkill, tgkill, rt_sigqueueinfo, rt_tgsigqueueinfo
        program += only_self(number)
    for number in (203, 144, 142, 314):  # sched_setaffinity, sched_setscheduler, sched_setparam, sched_setattr
        program += only_self_or_zero(number)
    program += guarded(302, [load(arg_low(2)), jump(0, 0, 3), load(arg_low(2) + 4), jump(0, 0, 1),
                             ret(allow), ret(deny)])  # prlimit64: reading only (new_limit == NULL)
    program += guarded(16, [load(arg_low(1)), jump(0x5412, 1, 0), jump(0x541C, 0, 1), ret(deny),
                            ret(allow)])  # ioctl: no TIOCSTI / TIOCLINUX
    program.append(ret(allow))

    libc = _child_libc()
    code = ctypes.create_string_buffer(b"".join(program))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(program), ctypes.addressof(code))
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        return [False, "PR_SET_NO_NEW_PRIVS failed"]
    if libc.prctl(22, 2, ctypes.addressof(fprog), 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
        return [False, f"PR_SET_SECCOMP failed: {os.strerror(ctypes.get_errno())}"]
    return [True, f"x86_64 BPF, {len(program)} instructions"]


def _child_audit_hook(read_roots, cwd):
    """Install the PEP 578 hook described in the module docstring."""
    import os
    import sys
    import types

    denied_events = frozenset({
        "os.system", "os.fork", "os.forkpty", "os.kill", "os.killpg", "signal.pthread_kill",
        "resource.setrlimit", "resource.prlimit", "os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod",
        "os.chown", "os.chflags", "os.lchflags", "os.link", "os.symlink", "os.truncate", "os.utime",
        "os.setxattr", "os.removexattr", "os.chdir", "os.add_dll_directory", "os.startfile",
        "sys.settrace", "sys.setprofile", "sys._current_frames", "sys._current_exceptions",
        "gc.get_objects", "gc.get_referrers", "gc.get_referents", "cpython.PyInterpreterState_New",
    })
    denied_prefixes = ("socket.", "subprocess.", "ctypes.", "os.exec", "os.spawn", "os.posix_spawn", "shutil.",
                       "syslog.", "pty.", "webbrowser.")
    denied_modules = frozenset({"ctypes", "_ctypes", "_posixsubprocess", "_xxsubinterpreters", "_xxinterpchannels",
                                "_testcapi", "_testinternalcapi", "_testbuffer", "_testmultiphase", "_ctypes_test"})
    roots = tuple(read_roots) + ("/dev/null", "/dev/zero", "/dev/urandom", "/usr/share/zoneinfo", "/etc/localtime")
    root_prefixes = tuple(r.rstrip("/") + "/" for r in roots)

    class Hook:
        """The hook; a callable object so that it can recognise (and protect) its own function."""

        __slots__ = ()

        # Everything used here is bound as a default: the code under test can patch modules and
        # globals, but not these. Replacing any function's __code__, or this class's attributes
        # or this method's defaults, is itself denied below.
        def __call__(self, event, args, _denied=denied_events, _prefixes=denied_prefixes, _modules=denied_modules,
                     _roots=roots, _root_prefixes=root_prefixes, _cwd=cwd, _write=_child_write_mask(os),
                     _type=type, _str=str, _bytes=bytes, _int=int, _function=types.FunctionType,
                     _startswith=str.startswith, _split=str.split, _join="/".join, _partition=str.partition,
                     _decode=bytes.decode, _error=PermissionError, _import_error=ImportError):
            if event in _denied or _startswith(event, _prefixes):
                raise _error(f"sandbox: {event} is not allowed")
            if event == "open" or event == "os.listdir" or event == "os.scandir":
                path = args[0]
                if event == "open" and (_type(args[2]) is not _int or args[2] & _write):
                    raise _error("sandbox: opening files for writing is not allowed")
                if _type(path) is _int or path is None:
                    return  # an already-open descriptor, or the current folder
                if _type(path) is _bytes:
                    path = _decode(path, "utf-8", "surrogateescape")
                if _type(path) is not _str:
                    raise _error("sandbox: paths must be str or bytes")
                if not _startswith(path, "/"):
                    path = _cwd + "/" + path
                parts = []
                for part in _split(path, "/"):  # resolve "." and ".." lexically (os.path can be patched)
                    if part == "" or part == ".":
                        continue
                    if part == "..":
                        if parts:
                            parts.pop()
                    else:
                        parts.append(part)
                path = "/" + _join(parts)
                if not (path in _roots or _startswith(path, _root_prefixes)):
                    raise _error(f"sandbox: reading {path} is not allowed")
            elif event == "import":
                name = args[0]
                if _type(name) is not _str or _partition(name, ".")[0] in _modules:
                    # ImportError, so that `try: import ctypes except ImportError` falls back
                    raise _import_error(f"sandbox: importing {name!r} is not allowed")
            elif event == "object.__setattr__":
                target = args[0]
                if (target is _type(self) or target is _type(self).__call__
                        or (_type(target) is _function and args[1] == "__code__")):
                    raise _error("sandbox: replacing the audit hook or a function's code is not allowed")

    sys.addaudithook(Hook())
    return [True, ""]


def _child_write_mask(os_module):
    """Open flags that make an open() a write."""
    return os_module.O_WRONLY | os_module.O_RDWR | os_module.O_CREAT | os_module.O_TRUNC | os_module.O_APPEND


_CHILD_FUNCTIONS = (_child_main, _child_plain, _child_libc, _child_unshare, _child_drop_user, _child_landlock,
                    _child_seccomp, _child_audit_hook, _child_write_mask)


@functools.lru_cache(maxsize=None)
def _harness_source() -> str:
    """harness.py: the `_child_*` functions and a call of `_child_main()`."""
    parts = ["# Generated from ranker/tasks/sandbox.py; runs in the sandboxed child.\n"]
    parts += [inspect.getsource(function) for function in _CHILD_FUNCTIONS]
    parts.append("\n_child_main()\n")
    return "\n\n".join(parts)
