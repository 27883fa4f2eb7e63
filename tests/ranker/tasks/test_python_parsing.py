"""Our parses go through one lock, because two threads parsing at once can fail on CPython 3.11."""

import ast
import threading

import pytest

from ranker.tasks import python_parsing
from ranker.tasks.checkers import python_tests


def test_parse_and_literal_eval_give_what_ast_gives():
    source = "assert f(2) == 4\nx = [1, {'a': (2, -3.5)}]\n"
    assert ast.dump(python_parsing.parse(source)) == ast.dump(ast.parse(source))
    assert ast.dump(python_parsing.parse("1 + 2", mode="eval")) == ast.dump(ast.parse("1 + 2", mode="eval"))
    for literal in ("  [1, 2.5, 'x', None, True]", "{'a': (1, -2)}", "-3", "set()"):
        try:
            expected = ast.literal_eval(literal)
        except ValueError:
            with pytest.raises(ValueError):
                python_parsing.literal_eval(literal)
        else:
            assert python_parsing.literal_eval(literal) == expected
    with pytest.raises(SyntaxError):
        python_parsing.parse("def (")
    with pytest.raises(ValueError):
        python_parsing.literal_eval("__import__('os')")


def test_the_checkers_and_the_sandbox_parse_only_under_the_lock(monkeypatch):
    """Every ast.parse that checking a code answer and a call written as a Python literal makes happens while the lock is held."""
    from ranker.tasks.checkers import json_call

    calls, real_parse = [], ast.parse
    monkeypatch.setattr(ast, "parse", lambda *a, **k: calls.append(python_parsing._PARSE_LOCK.locked()) or real_parse(*a, **k))
    assert python_tests("def f(x):\n    return 2 * x", ["assert f(2) == 4", "assert f(3) == 6"])
    assert json_call("Call {'name': 'f', 'arguments': {'x': 1}}", '{"name": "f", "arguments": {"x": 1}}')  # a Python literal
    assert len(calls) >= 3 and all(calls), calls  # test lines, the reply value(s), the answer snippet
