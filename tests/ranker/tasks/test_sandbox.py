"""python_tests checker and the sandbox under it: right code passes, everything else fails, the host stays unharmed."""

import ctypes
import os
import re
import threading
import time

import pytest

from ranker.tasks import checkers
from ranker.tasks.sandbox import (
    LAYERS,
    SANDBOX_USER_ENV,
    SandboxConfig,
    _parse_reply_value,
    run_python_tests,
    sandbox_layers,
    sandbox_user,
)
from ranker.tasks.sandbox_probes import PROBES, SandboxResult, _Host, probe_sandbox, run_probe

TESTS = ("assert add(1, 2) == 3", "assert add(-1, 1) == 0")
ADD = "def add(a, b):\n    return a + b\n"


# ------------------------------------------------------------------ ordinary behaviour

def test_correct_code_in_fence_passes():
    response = "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```\nExample: add(1, 2) gives 3."
    assert checkers.python_tests(response, TESTS) is True


def test_bare_code_without_fence_passes():
    assert checkers.python_tests(ADD, TESTS) is True


def test_wrong_code_fails():
    assert checkers.python_tests("```python\ndef add(a, b):\n    return a - b\n```", TESTS) is False


@pytest.mark.parametrize(
    "response",
    [
        "def add(a, b) return a + b",  # syntax error
        "```python\ndef add(a, b):\n    raise RuntimeError('boom')\n```",
        "I cannot write code, sorry.",
        "",
        "```python\nimport sys\ndef add(a, b):\n    return a + b\nsys.exit(0)\n```",  # exiting early fails
        "```python\nimport os\ndef add(a, b):\n    return a + b\nos._exit(0)\n```",
        "```python\nx = [0] * (10 ** 10)\n```",  # far beyond the 1 GiB address-space limit
        "\x00\x01 garbage \udcff",
    ],
)
def test_broken_or_evasive_code_fails(response):
    assert checkers.python_tests(response, TESTS) is False


def test_infinite_loop_fails_within_timeout():
    start = time.monotonic()
    looping = "```python\ndef add(a, b):\n    while True:\n        pass\n```"
    result = checkers.python_tests(looping, TESTS, timeout_s=1.0)
    elapsed = time.monotonic() - start
    assert result is False
    assert elapsed < 4.0


def test_fork_is_refused():
    code = ("import os\ndef forked():\n    try:\n        os.fork()\n    except OSError as e:\n"
            "        return type(e).__name__\n    return 'forked'\n")
    result = run_python_tests(code, ("assert forked() == 'PermissionError'",))
    assert result.passed, result.reason


def test_timeout_kills_forked_children_that_left_the_group():
    # Without seccomp and the audit hook fork() works; children that setsid() away from the
    # process group must still be gone after the run.
    code = ("import os, time\nfor _ in range(3):\n    if os.fork() == 0:\n        os.setsid()\n"
            "        print('CHILD', os.getpid(), flush=True)\n        time.sleep(60)\ntime.sleep(60)\n")
    start = time.monotonic()
    config = SandboxConfig(timeout_s=1.0, disable=frozenset({"seccomp", "audit_hook"}))
    result = run_python_tests(code, ("assert True",), config)
    assert result.timed_out is True and result.passed is False and result.returncode is None
    assert time.monotonic() - start < 4.0
    children = [int(pid) for pid in re.findall(r"CHILD (\d+)", result.stdout_tail)]
    assert len(children) == 3
    assert [pid for pid in children if os.path.exists(f"/proc/{pid}")
            and not open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()[0] in "ZX"] == []


def test_runs_in_fresh_temp_dir_with_minimal_environment():
    code = "import os, sys\ncwd = os.getcwd()\nenv = dict(os.environ)\n"
    tests = (
        "assert 'ranker-sandbox-' in cwd",
        "assert sys.flags.isolated == 1",
        "assert 'PYTHONPATH' not in env and 'VIRTUAL_ENV' not in env",
        "assert set(env) <= {'PATH', 'HOME', 'LANG', 'OPENBLAS_NUM_THREADS', 'OMP_NUM_THREADS', 'LC_CTYPE'}",
    )
    result = run_python_tests(code, tests)
    assert result.passed, result.reason


def test_result_reports_failure_details():
    result = run_python_tests("def f():\n    return 1\n", ("assert f() == 2",))
    assert result.passed is False and result.timed_out is False
    assert result.reason == "test 1 `assert f() == 2` is false: got 1"
    plain = run_python_tests("def f():\n    return 0\n", ("assert f()",))
    assert plain.passed is False
    assert plain.reason == "test 1 `assert f()` raised AssertionError"
    assert "AssertionError" in plain.stderr_tail


def test_output_flood_is_capped():
    result = run_python_tests("while True:\n    print('x' * 10000)\n", ("assert True",),
                              SandboxConfig(timeout_s=2.0, max_output_bytes=1 << 16))
    assert result.passed is False and result.timed_out is False  # stopped by the file-size limit, not the clock
    assert "File too large" in result.stderr_tail
    assert result.reason.startswith("the solution raised OSError: [Errno 27] File too large")


def test_memory_limit_applies():
    too_big = run_python_tests("x = bytearray(2 * 1024 ** 3)\n", ("assert True",))
    assert too_big.passed is False and "MemoryError" in too_big.stderr_tail
    fits = run_python_tests("x = bytearray(200 * 1024 ** 2)\n", ("assert len(x) == 200 * 1024 ** 2",))
    assert fits.passed is True


def test_parallel_runs_in_threads_all_pass():
    results = [None] * 6

    def work(index):
        results[index] = run_python_tests(ADD, (f"assert add({index}, 1) == {index + 1}",)).passed

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [True] * 6


def test_extract_code_prefers_python_fence():
    text = "```\nnot this\n```\n```python\nprint('yes')\n```\n```python\nprint('second')\n```"
    assert checkers.extract_code(text) == "print('yes')\n"
    assert checkers.extract_code("```\nany = 1\n```") == "any = 1\n"
    assert checkers.extract_code("```python\ndef cut_off():\n    pass") == "def cut_off():\n    pass"
    assert checkers.extract_code("x = 1") == "x = 1"


def test_python_tests_needs_tests():
    with pytest.raises(ValueError, match="at least one test"):
        checkers.python_tests("x = 1", ())


def test_sandbox_config_rejects_bad_limits():
    with pytest.raises(ValueError, match="timeout_s"):
        SandboxConfig(timeout_s=0)
    with pytest.raises(ValueError, match="memory_bytes"):
        SandboxConfig(memory_bytes=1000)
    with pytest.raises(ValueError, match="max_value_chars"):
        SandboxConfig(max_value_chars=10)
    with pytest.raises(ValueError, match="unknown layers"):
        SandboxConfig(disable=frozenset({"firewall"}))


# -------------------------------------------------------------------- verdict protocol

def test_steps_are_checked_by_the_parent_or_reported_by_the_child():
    code = "def sq(x):\n    return x * x\n"
    tests = ("import math", "assert sq(2) == 4", "assert 9 == sq(3)", "assert sq(3) in (9, 10)",
             "assert math.isclose(sq(0.1), 0.01)", "assert 1 == 1", "assert sq(1) is not None")
    result = run_python_tests(code, tests)
    assert result.passed, result.reason
    assert (result.parent_checked, result.child_reported) == (5, 2)


def test_expected_values_never_reach_the_child():
    # The solution wraps builtins.compile, which the harness uses, and logs every source it gets.
    spy = ("import builtins, sys\n_compile = builtins.compile\n"
           "def logging_compile(source, *args, **kwargs):\n    sys.stderr.write('SOURCE ' + repr(source) + '\\n')\n"
           "    return _compile(source, *args, **kwargs)\nbuiltins.compile = logging_compile\n"
           "def f(x):\n    return 'seen'\n")
    result = run_python_tests(spy, ("assert f(1) == 'expected-7f3a9c'", "assert f(2) != 'other-5b1e'"))
    assert result.passed is False
    assert "SOURCE 'f(1)'" in result.stderr_tail
    assert "expected-7f3a9c" not in result.stderr_tail + result.stdout_tail
    assert "SOURCE 'f(2)'" not in result.stderr_tail  # the run stops at the first failed step


def test_values_are_compared_as_builtins():
    code = ("import collections, enum\nPoint = collections.namedtuple('Point', 'x y')\n"
            "class Color(enum.IntEnum):\n    RED = 1\n"
            "def point():\n    return Point(1, 2)\ndef color():\n    return Color.RED\n"
            "def counts():\n    return collections.Counter('aab')\ndef big():\n    return float('inf')\n")
    tests = ("assert point() == (1, 2)", "assert color() == 1", "assert counts() == {'a': 2, 'b': 1}",
             "assert big() == 1e999", "assert set(counts()) == set(('a', 'b'))")
    result = run_python_tests(code, tests)
    assert result.passed, result.reason
    fraction = run_python_tests("from fractions import Fraction\ndef half():\n    return Fraction(1, 2)\n",
                                ("assert half() == 0.5",))
    assert fraction.passed is False
    assert fraction.reason.endswith("raised TypeError: the value is a Fraction, not a builtin literal type")


@pytest.mark.parametrize("text", [
    "__import__('os').system('touch /tmp/x')", "Anything()", "[" * 300 + "]" * 300, "x" * 200_001, "1 +", "{[1]: 2}",
])
def test_reply_parser_rejects_non_literals(text):
    with pytest.raises(ValueError):
        _parse_reply_value(text, 200_000)


def test_reply_parser_reads_what_repr_writes():
    values = [1, -2.5, float("inf"), [float("-inf")], (1 + 2j), "a'b\"c\n", b"\x00", {1: {2, 3}}, frozenset({1}),
              set(), None, True, (), {"k": [1, (2,)]}]
    for value in values:
        assert _parse_reply_value(repr(value), 1000) == value
    assert repr(_parse_reply_value("nan", 1000)) == "nan"


# ------------------------------------------------------------------------- the probes

# Default: every layer this host has. Space-like: no Landlock, no namespaces (what a
# container that forbids them gives). Kernel only: no audit hook, so the OS layers alone must hold.
CONFIGS = {
    "default": SandboxConfig(timeout_s=1.0),
    "space_like": SandboxConfig(timeout_s=1.0, disable=frozenset({"landlock", "namespaces"})),
    "kernel_only": SandboxConfig(timeout_s=1.0, disable=frozenset({"audit_hook"})),
}


@pytest.mark.parametrize("config_name", list(CONFIGS))
@pytest.mark.parametrize("probe", PROBES, ids=[probe.name for probe in PROBES])
def test_probe_fails_and_host_is_unharmed(probe, config_name):
    result = run_probe(probe, CONFIGS[config_name])
    assert result.passed is False, result.reason
    assert result.host_unharmed is True, result.host_check
    assert result.host_check.startswith("unharmed:")


def test_probes_cover_the_required_attacks():
    names = {probe.name for probe in PROBES}
    assert names >= {"forged_verdict", "sys_exit_before_tests", "os_exit_before_tests", "eq_always_true",
                     "infinite_loop", "fork_bomb", "memory_bomb", "write_outside", "network", "parent_environment",
                     "private_data", "raise_limits", "kill_parent", "spawn_shell"}


def test_probe_sandbox_runs_the_named_probes():
    results = probe_sandbox(SandboxConfig(timeout_s=2.0), names=("sys_exit_before_tests", "eq_always_true"))
    assert [r.name for r in results] == ["sys_exit_before_tests", "eq_always_true"]
    assert [r.passed for r in results] == [False, False]
    assert results[0].reason == "the solution raised SystemExit: 0"
    with pytest.raises(ValueError, match="unknown probes"):
        probe_sandbox(names=("no_such_probe",))


def test_host_check_detects_harm():
    # The checks must be able to fail: do the harm from outside the sandbox and look.
    uid, gid = sandbox_user() or (os.getuid(), os.getgid())
    with _Host(uid, gid) as host:
        host.victim.write_text("overwritten")
        os.kill(host.victim_pid, 9)
        os.kill(host.stopped_pid, 18)  # SIGCONT
        host.decoys[0].wait()
        host._wait_for_state(host.stopped_pid, "S")
        import socket
        socket.create_connection(("127.0.0.1", host.tcp.getsockname()[1])).close()
        open(f"/tmp/ranker-probe-{host.run}-x", "w").close()
        leaked = SandboxResult(False, 0, False, f"found {host.secret}", "", pid=None)
        found = host.violations(leaked, PROBES[0])
    assert "victim changed" in found
    assert "the decoy was killed" in found and "the stopped decoy was woken or killed" in found
    assert "a TCP connection arrived" in found
    assert any(item.startswith("stray file /tmp/ranker-probe-") for item in found)
    assert "the secret appeared in the output" in found


# ----------------------------------------------------------------------------- layers

def _landlock_abi() -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc.syscall(ctypes.c_long(444), None, ctypes.c_size_t(0), ctypes.c_uint32(1))


def test_sandbox_layers_match_this_host():
    layers = sandbox_layers()
    assert set(LAYERS) <= set(layers) and "error" not in layers
    assert bool(layers["separate_user"]) == (os.geteuid() == 0)
    assert bool(layers["parent_nondumpable"]) == (os.geteuid() != 0)
    assert layers["rlimits"] is True and layers["audit_hook"] is True
    assert bool(layers["seccomp"]) == (os.uname().machine == "x86_64")
    abi = _landlock_abi()
    assert layers["landlock"] == (f"ABI {abi}" if abi > 0 else False)
    result = run_python_tests(ADD, TESTS)
    assert set(result.layers) == {name for name in LAYERS if layers[name]}


def test_disabled_layers_are_off():
    result = run_python_tests(ADD, TESTS, SandboxConfig(disable=frozenset({"landlock", "seccomp", "audit_hook"})))
    assert result.passed, result.reason
    assert not {"landlock", "seccomp", "audit_hook"} & set(result.layers)


def test_root_must_drop_privileges():
    config = SandboxConfig(disable=frozenset({"separate_user"}))
    if os.geteuid() == 0:
        with pytest.raises(ValueError, match="refusing to run untrusted code as root"):
            run_python_tests(ADD, TESTS, config)
    else:
        assert run_python_tests(ADD, TESTS, config).passed is True


def test_sandbox_user_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(SANDBOX_USER_ENV, "12345")
    if os.geteuid() != 0:
        assert sandbox_user() is None
        return
    assert sandbox_user() == (12345, 12345)
    result = run_python_tests("import os\n", ("assert os.getresuid() == (12345, 12345, 12345)",
                                              "assert os.getgroups() == []"))
    assert result.passed, result.reason
    monkeypatch.setenv(SANDBOX_USER_ENV, "0")
    with pytest.raises(ValueError, match="must not be root"):
        sandbox_user()
    monkeypatch.setenv(SANDBOX_USER_ENV, "no-such-user-here")
    with pytest.raises(ValueError, match="neither a user"):
        sandbox_user()
