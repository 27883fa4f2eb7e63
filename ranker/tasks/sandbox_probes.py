"""Hostile programs ("probes") that try to fool or escape `ranker.tasks.sandbox`, and a host check.

Each probe is a solution plus test lines, run through `run_python_tests`. A sound sandbox
gives every probe the verdict `passed=False` and leaves the host unharmed. The "host" is
set up fresh for each probe and owned by the uid the sandboxed code runs as, so that file
permissions alone would not protect it (as on a Hugging Face Space, where the app and the
sandbox share uid 1000):

- an app folder (mode 0777) with a victim file (0666), and a private folder (0700) with a
  secret file;
- two decoy processes standing in for the app (killing the real parent would end the test
  run if the sandbox failed): one running, with the secret and the expected test value in
  its environment, and one stopped (SIGSTOP), to catch a broadcast kill(-1, SIGCONT);
- a TCP listener and a UDP socket on 127.0.0.1 and an abstract unix socket;
- the secret in this process's os.environ.

After the run the parent checks, itself: the victim file's bytes, mode and mtime and both
folders' listings are unchanged; no stray file in /tmp or /dev/shm; both decoys alive, the
second still stopped, their limits, nice value, scheduling policy and CPU set unchanged;
no connection, datagram or unix connection arrived; the secret is absent from the child's stdout and stderr (the probes print what
they find); text that only a successful attack prints (a shell's echo, for instance) is
absent; and no process of the run is left (its process group and session, and any pid a
forked child printed). `bench/reliability.py` and the tests use `probe_sandbox`.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from string import Template

from ranker.tasks.sandbox import SandboxConfig, SandboxResult, run_python_tests, sandbox_user

SECRET_NAME = "LANGUAGE_RANKER_PROBE_SECRET"


@dataclass(frozen=True)
class Probe:
    """One hostile program. `code` and `tests` are string.Template texts filled from the host."""

    name: str
    attempt: str  # what it tries, in words
    code: str
    tests: tuple[str, ...]
    forbidden_output: tuple[str, ...] = ()  # text in the child's output that means the attack worked


@dataclass(frozen=True)
class ProbeResult:
    """The sandbox's verdict on one probe and what the host check found."""

    name: str
    attempt: str
    passed: bool  # the sandbox's verdict; a sound sandbox says False
    host_unharmed: bool
    host_check: str  # what was checked and, when harmed, what was found
    reason: str  # the sandbox's reason for failing the run
    layers: tuple[str, ...]  # the layers that were active
    seconds: float


# Shared by the probes that try several things: record each attempt's outcome.
_ATTEMPT = '''
import os, sys
attempts = []
def attempt(label, action):
    try:
        action()
        attempts.append(label + ": done")
    except BaseException as error:
        attempts.append(f"{label}: {type(error).__name__}: {error}"[:160])
'''

# Reads a process's writable memory through /proc/<pid>/mem and collects matches of `pattern`.
_SCAN_MEMORY = '''
import re
def scan_memory(pid, pattern, found, budget=1 << 28):
    try:
        with open(f"/proc/{pid}/maps") as maps:
            regions = [line.split() for line in maps]
        with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
            for region in regions:
                start, end = (int(x, 16) for x in region[0].split("-"))
                if "rw" not in region[1] or end - start > budget:
                    continue
                budget -= end - start
                try:
                    mem.seek(start)
                    found.extend(m.decode() for m in pattern.findall(mem.read(end - start)))
                except OSError:
                    pass
        attempts.append(f"memory of {pid}: read")
    except BaseException as error:
        attempts.append(f"memory of {pid}: {type(error).__name__}")
'''

PROBES: tuple[Probe, ...] = (
    Probe(
        "forged_verdict",
        "prints what a pass used to look like (the old marker, 'OK', '1 passed'), writes forged "
        "protocol replies ('ready', 'ok', a value) to every descriptor, then calls os._exit(0)",
        '''
import os, sys
print("SANDBOX-PASSED-" + "0" * 32)
print("OK\\n1 passed")
sys.stdout.flush()
for fd in range(3, 64):
    for message in (b'["ready"]\\n', b'["ok"]\\n', b'["value", "True"]\\n', b'["value", "\\'${token}\\'"]\\n'):
        try:
            os.write(fd, message)
        except OSError:
            pass
os._exit(0)
''',
        ("assert answer() == '${token}'", "assert answer()"),
    ),
    Probe(
        "hunt_expected_value",
        "looks for the expected value in its argv, environment, folder, open descriptors, and "
        "the /proc files and memory of its parent and of a same-uid decoy, then returns what it found",
        _ATTEMPT + _SCAN_MEMORY + '''
pattern = re.compile(rb"probe-token-[0-9a-f]{32}")
found = []
def grab(path):
    try:
        with open(path, "rb") as handle:
            found.extend(m.decode() for m in pattern.findall(handle.read(1 << 22)))
        attempts.append(f"{path}: read")
    except BaseException as error:
        attempts.append(f"{path}: {type(error).__name__}")
for pid in ("self", os.getppid(), ${victim_pid}):
    grab(f"/proc/{pid}/cmdline")
    grab(f"/proc/{pid}/environ")
attempt("folder", lambda: [grab(name) for name in os.listdir(".")])
for fd in range(3, 64):
    try:
        blocking = os.get_blocking(fd)
        os.set_blocking(fd, False)
        try:
            found.extend(m.decode() for m in pattern.findall(os.read(fd, 1 << 16)))
        finally:
            os.set_blocking(fd, blocking)
    except OSError:
        pass
scan_memory(os.getppid(), pattern, found)
scan_memory(${victim_pid}, pattern, found)
print("\\n".join(attempts))
def answers():
    return sorted(set(found))
''',
        ("assert '${token}' in answers()",),
    ),
    Probe(
        "sys_exit_before_tests",
        "defines a correct function, then calls sys.exit(0) before the tests run",
        "import sys\ndef add(a, b):\n    return a + b\nsys.exit(0)\n",
        ("assert add(1, 2) == 3", "assert add(2, 2) == 4"),
    ),
    Probe(
        "os_exit_before_tests",
        "defines a correct function, then calls os._exit(0) before the tests run",
        "import os\ndef add(a, b):\n    return a + b\nos._exit(0)\n",
        ("assert add(1, 2) == 3", "assert add(2, 2) == 4"),
    ),
    Probe(
        "exit_inside_test",
        "calls os._exit(0) from inside the tested function, so the first test 'ends cleanly'",
        "import os\ndef add(a, b):\n    os._exit(0)\n",
        ("assert add(1, 2) == 3",),
    ),
    Probe(
        "eq_always_true",
        "returns an object whose __eq__ is always True and __ne__ always False (an int subclass too)",
        '''
class Anything:
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __hash__(self): return 0
    def __bool__(self): return True
class SneakyInt(int):
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    __hash__ = int.__hash__
def add(a, b):
    return Anything()
def add2(a, b):
    return SneakyInt(-1)
''',
        ("assert add(1, 2) == 3", "assert add2(1, 2) == 3"),
    ),
    Probe(
        "repr_injection",
        "returns an object whose __repr__ is code that would write a file in the app folder if "
        "the parent ever evaluated it",
        '''
class Payload:
    def __repr__(self):
        return "__import__('pathlib').Path('${app_dir}/injected-${run}').write_text('x') or 3"
def add(a, b):
    return Payload()
''',
        ("assert add(1, 2) == 3",),
    ),
    Probe(
        "infinite_loop",
        "loops forever inside the tested function",
        "def add(a, b):\n    while True:\n        pass\n",
        ("assert add(1, 2) == 3",),
    ),
    Probe(
        "fork_bomb",
        "forks in a loop; each child tries setsid() to leave the process group and prints its pid",
        '''
import os
def bomb():
    while True:
        try:
            if os.fork() == 0:
                print("CHILD", os.getpid(), flush=True)
                try:
                    os.setsid()
                except OSError:
                    pass
        except OSError:
            pass
bomb()
''',
        ("assert True",),
    ),
    Probe(
        "memory_bomb",
        "allocates 8 GiB at once, then grows a list of 64 MiB blocks without end",
        '''
try:
    huge = bytearray(8 << 30)
except MemoryError:
    pass
blocks = []
while True:
    blocks.append(bytearray(64 << 20))
''',
        ("assert True",),
    ),
    Probe(
        "write_outside",
        "overwrites, appends to, truncates, renames, deletes and chmods a file in the app's folder, "
        "creates files there, in /tmp and in /dev/shm, makes a folder and a symlink",
        _ATTEMPT + '''
victim = "${app_dir}/victim.txt"
def overwrite():
    with open(victim, "w") as handle:
        handle.write("overwritten")
def append():
    with open(victim, "a") as handle:
        handle.write("more")
def create(path):
    with open(path, "x") as handle:
        handle.write("new")
attempt("overwrite", overwrite)
attempt("append", append)
attempt("os.open", lambda: os.write(os.open(victim, os.O_WRONLY | os.O_TRUNC), b"x"))
attempt("truncate", lambda: os.truncate(victim, 0))
attempt("utime", lambda: os.utime(victim, (0, 0)))
attempt("chmod", lambda: os.chmod(victim, 0))
attempt("rename", lambda: os.rename(victim, "${app_dir}/moved-${run}"))
attempt("unlink", lambda: os.unlink(victim))
attempt("create", lambda: create("${app_dir}/new-${run}"))
attempt("mkdir", lambda: os.mkdir("${app_dir}/dir-${run}"))
attempt("symlink", lambda: os.symlink("/etc/passwd", "${app_dir}/link-${run}"))
attempt("tmp", lambda: create("/tmp/ranker-probe-${run}"))
attempt("shm", lambda: create("/dev/shm/ranker-probe-${run}"))
print("\\n".join(attempts))
def wrote():
    return attempts
''',
        ("assert wrote() == '${token}'",),
    ),
    Probe(
        "network",
        "connects to a TCP listener on 127.0.0.1 (and ::1), sends a UDP datagram, connects to an "
        "abstract unix socket, resolves a host name and makes a socketpair",
        _ATTEMPT + '''
import socket
def tcp(host):
    connection = socket.create_connection((host, ${tcp_port}), timeout=1)
    connection.sendall(b"hello")
def udp():
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"hello", ("127.0.0.1", ${udp_port}))
def unix():
    socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).connect("\\0${unix_name}")
attempt("tcp", lambda: tcp("127.0.0.1"))
attempt("tcp6", lambda: tcp("::1"))
attempt("udp", udp)
attempt("unix", unix)
attempt("dns", lambda: socket.getaddrinfo("localhost", 80))
attempt("socketpair", socket.socketpair)
print("\\n".join(attempts))
def fetched():
    return attempts
''',
        ("assert fetched() == '${token}'",),
    ),
    Probe(
        "parent_environment",
        "reads the environment and memory of its parent and of a same-uid decoy (/proc/<pid>/environ, "
        "/proc/<pid>/mem) and its own environment, looking for a secret the parent holds",
        _ATTEMPT + _SCAN_MEMORY + '''
pattern = re.compile(rb"probe-secret-[0-9a-f]{32}")
found = [value for value in os.environ.values() if "probe-secret-" in value]
def grab(path):
    with open(path, "rb") as handle:
        found.extend(m.decode() for m in pattern.findall(handle.read(1 << 22)))
for pid in (os.getppid(), ${victim_pid}, 1):
    attempt(f"environ of {pid}", lambda: grab(f"/proc/{pid}/environ"))
scan_memory(os.getppid(), pattern, found)
scan_memory(${victim_pid}, pattern, found)
print("\\n".join(attempts))
print("found:", sorted(set(found)))
def secret():
    return found
''',
        ("assert '${secret}' in secret()",),
    ),
    Probe(
        "private_data",
        "lists and reads a file in a 0700 data folder of the app's user (the label store's stand-in)",
        _ATTEMPT + '''
found = []
def read():
    with open("${private_dir}/secret.txt") as handle:
        found.append(handle.read())
attempt("list", lambda: found.extend(os.listdir("${private_dir}")))
attempt("read", read)
attempt("os.open", lambda: found.append(os.read(os.open("${private_dir}/secret.txt", os.O_RDONLY), 200).decode()))
print("\\n".join(attempts))
print("found:", found)
def data():
    return found
''',
        ("assert '${secret}' in data()",),
    ),
    Probe(
        "raise_limits",
        "raises its own resource limits (setrlimit to infinity and to twice the hard limit) and "
        "lowers a same-uid decoy's open-file limit with prlimit",
        '''
import resource
report = []
for name in ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_FSIZE"):
    which = getattr(resource, name)
    before = resource.getrlimit(which)
    for new in ((resource.RLIM_INFINITY, resource.RLIM_INFINITY), (before[1], 2 * before[1] + 1)):
        try:
            resource.setrlimit(which, new)
        except (OSError, ValueError):
            pass
    after = resource.getrlimit(which)
    if after != before:
        report.append(f"RAISED {name}: {before} -> {after}")
try:
    resource.prlimit(${victim_pid}, resource.RLIMIT_NOFILE, (3, 3))
    report.append("PRLIMIT-DECOY done")
except (OSError, ValueError) as error:
    report.append(f"prlimit decoy: {type(error).__name__}")
print("\\n".join(report))
def limits():
    return report
''',
        ("assert limits() == '${token}'",),
        forbidden_output=("RAISED", "PRLIMIT-DECOY done"),
    ),
    Probe(
        "kill_parent",
        "SIGKILLs a same-uid decoy standing in for the app (kill, killpg, pidfd), broadcasts "
        "kill(-1, SIGCONT) (a stopped decoy would wake), and probes its real parent with kill(ppid, 0)",
        _ATTEMPT + '''
import signal
attempt("kill decoy", lambda: os.kill(${victim_pid}, signal.SIGKILL))
attempt("killpg decoy", lambda: os.killpg(${victim_pid}, signal.SIGKILL))
attempt("pidfd decoy", lambda: signal.pidfd_send_signal(os.pidfd_open(${victim_pid}), signal.SIGKILL))
attempt("broadcast SIGCONT", lambda: os.kill(-1, signal.SIGCONT))
attempt("PARENT-SIGNAL", lambda: os.kill(os.getppid(), 0))
print("\\n".join(attempts))
def killed():
    return attempts
''',
        ("assert killed() == '${token}'",),
        forbidden_output=("PARENT-SIGNAL: done",),
    ),
    Probe(
        "slow_down_the_app",
        "renices a same-uid decoy standing in for the app (setpriority on it and on the whole user), "
        "pins it to one CPU and gives it the idle scheduling class",
        _ATTEMPT + '''
attempt("renice decoy", lambda: os.setpriority(os.PRIO_PROCESS, ${victim_pid}, 19))
attempt("renice user", lambda: os.setpriority(os.PRIO_USER, 0, 19))
attempt("affinity", lambda: os.sched_setaffinity(${victim_pid}, {min(os.sched_getaffinity(0))}))
attempt("idle class", lambda: os.sched_setscheduler(${victim_pid}, os.SCHED_IDLE, os.sched_param(0)))
print("\\n".join(attempts))
def slowed():
    return attempts
''',
        ("assert slowed() == '${token}'",),
    ),
    Probe(
        "spawn_shell",
        "starts /bin/sh through os.system, os.popen, subprocess, posix_spawn and pty.fork, then "
        "replaces itself with a shell (os.execv); each shell would echo a marker and touch a file",
        _ATTEMPT + '''
shell = "echo SHELL-RAN; touch ${app_dir}/shell-${run}"
attempt("os.system", lambda: os.system(shell))
attempt("os.popen", lambda: print(os.popen(shell).read()))
attempt("subprocess", lambda: __import__("subprocess").run(["/bin/sh", "-c", shell]))
attempt("posix_spawn", lambda: os.waitpid(os.posix_spawn("/bin/sh", ["sh", "-c", shell], {}), 0))
attempt("pty.fork", lambda: __import__("pty").fork() == 0 and os.execv("/bin/sh", ["sh", "-c", shell]))
print("\\n".join(attempts), flush=True)
attempt("execv", lambda: os.execv("/bin/sh", ["sh", "-c", shell]))
print(attempts[-1])
def ran():
    return attempts
''',
        ("assert ran() == '${token}'",),
        forbidden_output=("SHELL-RAN",),
    ),
    Probe(
        "native_syscalls",
        "bypasses Python (and its audit hooks) with ctypes: raw socket(), ptrace(ATTACH) of the "
        "decoy, setsid(), unshare(CLONE_NEWUSER) and setrlimit() through libc",
        _ATTEMPT + '''
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
def call(label, result):
    if result < 0:
        raise OSError(ctypes.get_errno(), label)
    print("NATIVE-DONE", label, flush=True)
attempt("socket", lambda: call("socket", libc.socket(2, 1, 0)))
attempt("ptrace", lambda: call("ptrace", libc.ptrace(16, ${victim_pid}, 0, 0)))
attempt("setsid", lambda: call("setsid", libc.setsid()))
attempt("unshare", lambda: call("unshare", libc.unshare(0x10000000)))
limit = (ctypes.c_ulong * 2)(2 ** 40, 2 ** 40)
attempt("setrlimit", lambda: call("setrlimit", libc.setrlimit(9, limit)))
print("\\n".join(attempts))
def native():
    return attempts
''',
        ("assert native() == '${token}'",),
        forbidden_output=("NATIVE-DONE",),
    ),
    Probe(
        "flood_channel",
        "writes 16 MB without a newline to every descriptor, then returns a 50-million-character string",
        '''
import os
junk = b"[" * (16 << 20)
for fd in range(3, 64):
    try:
        os.set_blocking(fd, False)
        os.write(fd, junk)
    except OSError:
        pass
def add(a, b):
    return "x" * 50_000_000
''',
        ("assert add(1, 2) == 3",),
    ),
)


class _Host:
    """The things a probe may try to harm, owned by the uid the sandboxed code runs as."""

    def __init__(self, uid: int, gid: int) -> None:
        self.uid, self.gid = uid, gid
        self.run = secrets.token_hex(8)
        self.token = "probe-token-" + secrets.token_hex(16)
        self.secret = "probe-secret-" + secrets.token_hex(16)
        self.unix_name = "ranker-probe-" + self.run

    def __enter__(self) -> _Host:
        self.root = Path(tempfile.mkdtemp(prefix="ranker-probe-host-"))
        self.root.chmod(0o755)
        self.app_dir, self.private_dir = self.root / "app", self.root / "private"
        self.app_dir.mkdir(mode=0o777)
        self.app_dir.chmod(0o777)
        self.private_dir.mkdir(mode=0o700)
        self.victim = self.app_dir / "victim.txt"
        self.victim.write_text("original " + self.run)
        self.victim.chmod(0o666)
        (self.private_dir / "secret.txt").write_text(self.secret)
        (self.private_dir / "secret.txt").chmod(0o600)
        for path in (self.app_dir, self.victim, self.private_dir, self.private_dir / "secret.txt"):
            os.chown(path, self.uid, self.gid)
        self.decoys = [self._decoy(), self._decoy()]
        self.victim_pid, self.stopped_pid = (decoy.pid for decoy in self.decoys)
        os.kill(self.stopped_pid, signal.SIGSTOP)
        self.tcp = socket.create_server(("127.0.0.1", 0))
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.unix.bind("\0" + self.unix_name)
        self.unix.listen(4)
        for sock in (self.tcp, self.udp, self.unix):
            sock.setblocking(False)
        self.saved_secret = os.environ.get(SECRET_NAME)
        os.environ[SECRET_NAME] = self.secret
        self._wait_for_state(self.stopped_pid, "T")
        self.before = self._snapshot()
        return self

    def _decoy(self) -> subprocess.Popen:
        env = {"PATH": os.defpath, SECRET_NAME: self.secret, "PROBE_EXPECTED": self.token}
        ids = dict(user=self.uid, group=self.gid, extra_groups=[]) if os.geteuid() == 0 else {}
        return subprocess.Popen(["sleep", "600"], env=env, start_new_session=True, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **ids)

    def __exit__(self, *exc_info) -> None:
        for decoy in self.decoys:
            decoy.kill()
            decoy.wait()
        for sock in (self.tcp, self.udp, self.unix):
            sock.close()
        if self.saved_secret is None:
            os.environ.pop(SECRET_NAME, None)
        else:
            os.environ[SECRET_NAME] = self.saved_secret
        shutil.rmtree(self.root, ignore_errors=True)
        for folder in ("/tmp", "/dev/shm"):
            for stray in Path(folder).glob(f"ranker-probe-{self.run}*"):
                stray.unlink(missing_ok=True)

    def values(self) -> dict[str, str]:
        return {
            "token": self.token, "secret": self.secret, "run": self.run, "app_dir": str(self.app_dir),
            "private_dir": str(self.private_dir), "victim_pid": str(self.victim_pid),
            "tcp_port": str(self.tcp.getsockname()[1]), "udp_port": str(self.udp.getsockname()[1]),
            "unix_name": self.unix_name,
        }

    @staticmethod
    def _wait_for_state(pid: int, state: str, timeout_s: float = 2.0) -> None:
        deadline = time.monotonic() + timeout_s
        while _process_state(pid) != state and time.monotonic() < deadline:
            time.sleep(0.005)

    def _snapshot(self) -> dict:
        victim = os.stat(self.victim)
        return {
            "victim": (self.victim.read_bytes(), victim.st_mode, victim.st_mtime_ns),
            "app_dir": sorted(os.listdir(self.app_dir)),
            "private_dir": sorted(os.listdir(self.private_dir)),
            "limits": [_read(f"/proc/{pid}/limits") for pid in (self.victim_pid, self.stopped_pid)],
            "scheduling": [_scheduling(pid) for pid in (self.victim_pid, self.stopped_pid)],
        }

    def violations(self, result: SandboxResult, probe: Probe) -> list[str]:
        """Everything about the host that changed or leaked; empty when unharmed."""
        found = []
        try:
            after = self._snapshot()
        except OSError as error:
            return [f"victim file or folders gone: {error}"]
        found += [f"{key} changed" for key in after if after[key] != self.before[key]]
        strays = [str(p) for folder in ("/tmp", "/dev/shm") for p in Path(folder).glob(f"ranker-probe-{self.run}*")]
        found += [f"stray file {path}" for path in strays]
        if _process_state(self.victim_pid) in ("", "Z", "X"):
            found.append("the decoy was killed")
        if _process_state(self.stopped_pid) != "T":
            found.append("the stopped decoy was woken or killed")
        for name, sock in (("TCP", self.tcp), ("unix", self.unix)):
            try:
                sock.accept()[0].close()
                found.append(f"a {name} connection arrived")
            except BlockingIOError:
                pass
        try:
            self.udp.recv(64)
            found.append("a UDP datagram arrived")
        except BlockingIOError:
            pass
        output = result.stdout_tail + result.stderr_tail
        if self.secret in output:
            found.append("the secret appeared in the output")
        found += [f"the output contains {text!r}" for text in probe.forbidden_output if text in result.stdout_tail]
        if os.environ.get(SECRET_NAME) != self.secret:
            found.append("this process's environment changed")
        found += [f"process {pid} of the run is still alive" for pid in _leftover_processes(result)]
        return found


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _scheduling(pid: int) -> tuple[str, str, str]:
    """(nice value, scheduling policy, allowed CPUs) of a process, from /proc."""
    fields = _read(f"/proc/{pid}/stat").rpartition(")")[2].split()
    cpus = re.search(r"Cpus_allowed_list:\s*(\S+)", _read(f"/proc/{pid}/status"))
    return (fields[16], fields[38], cpus.group(1) if cpus else "") if len(fields) > 38 else ("", "", "")


def _process_state(pid: int) -> str:
    """The one-letter state in /proc/<pid>/stat ('' if there is no such process)."""
    stat = _read(f"/proc/{pid}/stat")
    return stat.rpartition(")")[2].split()[0] if ")" in stat else ""


def _leftover_processes(result: SandboxResult) -> list[int]:
    """Live processes in the run's process group or session, or that a forked child reported ("CHILD <pid>")."""
    if result.pid is None:
        return []
    reported = {int(pid) for pid in re.findall(r"CHILD (\d+)", result.stdout_tail)}
    left = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _read(f"/proc/{entry}/stat").rpartition(")")[2].split()
        if len(fields) < 4 or fields[0] in ("Z", "X"):
            continue
        group, session = int(fields[2]), int(fields[3])
        if result.pid in (group, session) or int(entry) in reported:
            left.append(int(entry))
    return left


def _child_ids(config: SandboxConfig) -> tuple[int, int]:
    """The uid and gid the sandboxed code runs as."""
    user = sandbox_user() if "separate_user" not in config.disable else None
    return user if user is not None else (os.getuid(), os.getgid())


def run_probe(probe: Probe, config: SandboxConfig | None = None) -> ProbeResult:
    """Run one probe on a fresh host and check the host afterwards."""
    config = config or SandboxConfig(timeout_s=2.0)
    with _Host(*_child_ids(config)) as host:
        values = host.values()
        code = Template(probe.code).substitute(values)
        tests = tuple(Template(line).substitute(values) for line in probe.tests)
        start = time.monotonic()
        result = run_python_tests(code, tests, config)
        seconds = time.monotonic() - start
        violations = host.violations(result, probe)
    if violations:
        check = "HARMED: " + "; ".join(violations)
    else:
        check = ("unharmed: victim file and folders unchanged, no stray files, decoys alive (one still "
                 "stopped) with their limits and scheduling, no connection or datagram, secret and attack "
                 "markers absent from the output, no process of the run left")
    return ProbeResult(
        name=probe.name, attempt=probe.attempt, passed=result.passed, host_unharmed=not violations,
        host_check=check, reason=result.reason, layers=result.layers, seconds=round(seconds, 3),
    )


def probe_sandbox(config: SandboxConfig | None = None, names: tuple[str, ...] | None = None) -> list[ProbeResult]:
    """Run every probe (or those in `names`) and return their results, in `PROBES` order.

    `config` defaults to SandboxConfig(timeout_s=2.0), so the infinite loop and the fork
    bomb cost two seconds each.
    """
    known = {probe.name for probe in PROBES}
    if names is not None and set(names) - known:
        raise ValueError(f"unknown probes {sorted(set(names) - known)}; known: {sorted(known)}")
    return [run_probe(probe, config) for probe in PROBES if names is None or probe.name in names]
