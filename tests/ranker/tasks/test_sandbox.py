"""python_tests checker and the sandbox under it: right code passes, everything else fails fast."""

import time

import pytest

from ranker.tasks import checkers
from ranker.tasks.sandbox import SandboxConfig, run_python_tests

TESTS = ("assert add(1, 2) == 3", "assert add(-1, 1) == 0")


def test_correct_code_in_fence_passes():
    response = "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```\nExample: add(1, 2) gives 3."
    assert checkers.python_tests(response, TESTS) is True


def test_bare_code_without_fence_passes():
    assert checkers.python_tests("def add(a, b):\n    return a + b\n", TESTS) is True


def test_wrong_code_fails():
    assert checkers.python_tests("```python\ndef add(a, b):\n    return a - b\n```", TESTS) is False


@pytest.mark.parametrize(
    "response",
    [
        "def add(a, b) return a + b",  # syntax error
        "```python\ndef add(a, b):\n    raise RuntimeError('boom')\n```",
        "I cannot write code, sorry.",
        "",
        "```python\nimport sys\nsys.exit(0)\n```",  # exiting early does not skip the tests
        "```python\nimport os\nos._exit(0)\n```",
        "```python\nx = [0] * (10 ** 10)\n```",  # far beyond the 1 GiB address-space limit
        "\x00\x01 garbage \udcff",
    ],
)
def test_broken_or_evasive_code_fails(response):
    assert checkers.python_tests(response, TESTS) is False


def test_infinite_loop_fails_within_timeout():
    start = time.monotonic()
    result = checkers.python_tests("```python\ndef add(a, b):\n    while True:\n        pass\n```", TESTS, timeout_s=1.0)
    elapsed = time.monotonic() - start
    assert result is False
    assert elapsed < 4.0


def test_timeout_kills_forked_children():
    code = "import os, time\nif os.fork() == 0:\n    time.sleep(60)\ntime.sleep(60)\n"
    start = time.monotonic()
    result = run_python_tests(code, ("assert True",), SandboxConfig(timeout_s=1.0))
    assert result.timed_out is True and result.passed is False and result.returncode is None
    assert time.monotonic() - start < 4.0


def test_runs_in_fresh_temp_dir_with_minimal_environment():
    code = (
        "import os, sys\n"
        "cwd = os.getcwd()\n"
        "env = dict(os.environ)\n"
    )
    tests = (
        "assert 'ranker-sandbox-' in cwd",
        "assert sys.flags.isolated == 1",
        "assert 'PYTHONPATH' not in env and 'VIRTUAL_ENV' not in env",
        "assert set(env) <= {'PATH', 'HOME', 'LANG', 'OPENBLAS_NUM_THREADS', 'OMP_NUM_THREADS', 'LC_CTYPE'}",
    )
    result = run_python_tests(code, tests)
    assert result.passed, result.stderr_tail


def test_result_reports_failure_details():
    result = run_python_tests("def f():\n    return 1\n", ("assert f() == 2",))
    assert result.passed is False
    assert result.returncode == 1 and result.timed_out is False
    assert "AssertionError" in result.stderr_tail


def test_output_flood_is_capped():
    result = run_python_tests("while True:\n    print('x' * 10000)\n", ("assert True",),
                              SandboxConfig(timeout_s=2.0, max_output_bytes=1 << 16))
    assert result.passed is False and result.timed_out is False  # stopped by the file-size limit, not the clock
    assert "File too large" in result.stderr_tail


def test_memory_limit_applies():
    too_big = run_python_tests("x = bytearray(2 * 1024 ** 3)\n", ("assert True",))
    assert too_big.passed is False and "MemoryError" in too_big.stderr_tail
    fits = run_python_tests("x = bytearray(200 * 1024 ** 2)\n", ("assert len(x) == 200 * 1024 ** 2",))
    assert fits.passed is True


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
