"""Problem validation and the `check` dispatcher."""

import json

import pytest

from ranker.tasks import Problem, check, check_many


def test_problem_is_hashable_and_meta_does_not_count():
    a = Problem("What is 2 + 2?", "4", "numeric", meta={"seed": 1})
    b = Problem("What is 2 + 2?", "4", "numeric", meta={"seed": 2})
    assert a == b and hash(a) == hash(b)
    assert len({a, b}) == 1


def test_tests_are_stored_as_tuple():
    problem = Problem("Write f.", "", "python_tests", tests=["assert f() == 1"])
    assert problem.tests == ("assert f() == 1",)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(prompt="p", answer="4", checker="fuzzy"), "'fuzzy'"),
        (dict(prompt="", answer="4", checker="numeric"), "prompt"),
        (dict(prompt="p", answer=4, checker="numeric"), "answer must be a string"),
        (dict(prompt="p", answer="four", checker="numeric"), "'four'"),
        (dict(prompt="p", answer="def f(): pass", checker="python_tests"), "at least one test"),
        (dict(prompt="p", answer="x", checker="python_tests", tests="assert True"), "sequence of strings"),
        (dict(prompt="p", answer='{"name": "f"}', checker="json_call"), "json_call answer"),
        (dict(prompt="p", answer="  ", checker="exact"), "non-empty answer"),
    ],
)
def test_invalid_problems_raise_value_error_naming_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Problem(**kwargs)


def test_check_dispatches_to_each_checker():
    assert check(Problem("What is 6 * 7?", "42", "numeric"), "It is 42.") is True
    assert check(Problem("What is 6 * 7?", "42", "numeric"), "It is 24.") is False
    assert check(Problem("Capital of Peru?", "Lima", "exact"), "lima") is True
    assert check(Problem("Capital of Peru?", "Lima", "exact"), "Cusco") is False
    call = Problem("Call f.", json.dumps({"name": "f", "arguments": {"x": 1}}), "json_call")
    assert call.check('{"name": "f", "arguments": {"x": 1.0}}') is True
    assert call.check('{"name": "f", "arguments": {"x": 2}}') is False
    code = Problem("Write f.", "", "python_tests", tests=("assert f() == 1",))
    assert check(code, "def f():\n    return 1") is True
    assert check(code, "def f():\n    return 2") is False
    assert check(Problem("1/2?", "\\frac{1}{2}", "math"), "\\boxed{\\frac12}") is True
    assert check(Problem("1/2?", "\\frac{1}{2}", "math"), "\\boxed{2}") is False


def test_check_refuses_problems_without_checker():
    problem = Problem("Write a poem.", "A poem.", "none", family="dolly")
    with pytest.raises(ValueError, match="no automatic"):
        check(problem, "Roses are red.")


def test_check_rejects_non_string_response():
    with pytest.raises(ValueError, match="response_text must be a string"):
        check(Problem("What is 6 * 7?", "42", "numeric"), 42)


def test_check_many_keeps_order_and_runs_sandboxes_in_parallel():
    code = Problem("Write f.", "", "python_tests", tests=("assert f() == 1",))
    responses = ["def f():\n    return 1", "def f():\n    return 2", "garbage(", "def f(): return 1"] * 3
    assert check_many(code, responses, max_workers=4) == [True, False, False, True] * 3
    numeric = Problem("What is 6 * 7?", "42", "numeric")
    assert check_many(numeric, ["42", "41", "it is 42."]) == [True, False, True]
    with pytest.raises(ValueError, match="max_workers"):
        check_many(numeric, ["42"], max_workers=0)
