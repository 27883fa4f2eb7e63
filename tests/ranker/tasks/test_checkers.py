"""Checkers on right and wrong answers, including the tricky extraction cases."""

import json

import pytest

from ranker.tasks import checkers

# ------------------------------------------------------------------------------ numeric

@pytest.mark.parametrize(
    "response, answer",
    [
        ("42", "42"),
        ("The answer is 42.", "42"),
        ("First 3 + 4 = 7, then 7 * 6 = 42", "42"),
        ("It costs $1,234 in total.", "1234"),
        ("1234", "1,234"),
        ("The result is -17.", "-17"),
        ("x = −5", "-5"),  # unicode minus
        ("About 2.50 liters", "2.5"),
        ("We need 3/4 of a cup.", "0.75"),
        ("So it is \\frac{3}{4}", "3/4"),
        ("It is .5", "0.5"),
        ("1e3", "1000"),
        ("100.0000001", "100"),  # within 1e-6 relative
    ],
)
def test_numeric_accepts_equal_last_number(response, answer):
    assert checkers.numeric(response, answer) is True


@pytest.mark.parametrize(
    "response, answer",
    [
        ("42 apples, but after eating 2, 40 remain", "42"),  # last number wins, not the first
        ("The answer is 41.", "42"),
        ("no numbers here", "42"),
        ("", "42"),
        ("10-4", "-4"),  # a minus glued to a digit is subtraction, the last number is 4
        ("H2O", "2"),  # digits inside words are not numbers
        ("100.001", "100"),  # beyond 1e-6 relative
        ("3/0", "3"),  # zero denominators are skipped, leaving no number at all
        ("1,2,3", "123"),  # a list, not thousands separators
    ],
)
def test_numeric_rejects_other_last_number(response, answer):
    assert checkers.numeric(response, answer) is False


def test_last_number_reads_values():
    assert checkers.last_number("1,234,567 and then 12/25/2024") == 2024.0
    assert checkers.last_number("It is 3/4.") == 0.75
    assert checkers.last_number("10 - 4") == 4.0
    assert checkers.last_number("answer: -3.5e2") == -350.0
    assert checkers.parse_number(" -1,000 ") == -1000.0
    assert checkers.parse_number("12 apples") is None


def test_numeric_rejects_non_numeric_answer():
    with pytest.raises(ValueError, match="'forty'"):
        checkers.numeric("40", "forty")


# -------------------------------------------------------------------------------- exact

@pytest.mark.parametrize(
    "response, answer",
    [
        ("Paris", "Paris"),
        ("paris.", "Paris"),
        ("  **Paris**!  ", "Paris"),
        ('"New Delhi"', "new delhi"),
        ("Let me think.\nThe answer is: Tokyo.", "Tokyo"),
        ("The answer is\n\nLima", "Lima"),
        ("The ANSWER IS Seoul", "Seoul"),
        ("x = 5\ncapital = Rome", "Rome"),  # after the last "="
        ("Some thoughts.\n\nOttawa\n\n", "Ottawa"),  # last non-empty line
        ("Euro\n", "Euro"),
    ],
)
def test_exact_accepts(response, answer):
    assert checkers.exact(response, answer) is True


@pytest.mark.parametrize(
    "response, answer",
    [
        ("The capital of France is Paris.", "Paris"),  # a sentence is not the bare answer
        ("The answer is Paris. The answer is Lyon.", "Paris"),  # last "answer is" wins
        ("Paris\nmaybe Lyon", "Paris"),  # last line wins
        ("New  Delhi is big", "New Delhi"),
        ("", "Paris"),
        ("St Louis", "St. Louis"),  # inner punctuation must match
    ],
)
def test_exact_rejects(response, answer):
    assert checkers.exact(response, answer) is False


def test_extract_final_answer_rule_order():
    assert checkers.extract_final_answer("a = 1. The answer is 7") == "7"  # "answer is" beats "="
    assert checkers.extract_final_answer("y = 3 + 4 = 7") == "7"
    assert checkers.extract_final_answer("one\ntwo\n\n") == "two"
    assert checkers.extract_final_answer("") == ""


# ---------------------------------------------------------------------------- json_call

CALL = json.dumps({"name": "get_weather", "arguments": {"city": "Paris", "days": 3}})


@pytest.mark.parametrize(
    "response",
    [
        '{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}',
        '{"arguments": {"days": 3, "city": "Paris"}, "name": "get_weather"}',  # key order
        'Sure! Here is the call:\n```json\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 3.0}}\n```\nDone.',
        "I will call {'name': 'get_weather', 'arguments': {'city': 'Paris', 'days': 3}} now",  # Python literal
        '[{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}]',  # one-element list
        '{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\", \\"days\\": 3}"}',  # arguments as string
        'Use {city} syntax? No: {"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}',
        '{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}} {"name": "other", "arguments": {}}',
    ],
)
def test_json_call_accepts(response):
    assert checkers.json_call(response, CALL) is True


@pytest.mark.parametrize(
    "response",
    [
        '{"name": "get_weather", "arguments": {"city": "paris", "days": 3}}',  # string case differs
        '{"name": "get_weather", "arguments": {"city": "Paris", "days": "3"}}',  # "3" is not 3
        '{"name": "get_weather", "arguments": {"city": "Paris"}}',  # missing argument
        '{"name": "get_weather", "arguments": {"city": "Paris", "days": 3, "unit": "C"}}',  # extra argument
        '{"name": "get_forecast", "arguments": {"city": "Paris", "days": 3}}',  # wrong tool
        '{"name": "other", "arguments": {}} then {"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}',
        '{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}',  # unbalanced
        '{"tool": {"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}}',  # nested, not top level
        "no json at all",
        "",
    ],
)
def test_json_call_rejects(response):
    assert checkers.json_call(response, CALL) is False


def test_json_call_booleans_are_not_numbers():
    answer = json.dumps({"name": "f", "arguments": {"flag": True}})
    assert checkers.json_call('{"name": "f", "arguments": {"flag": true}}', answer) is True
    assert checkers.json_call('{"name": "f", "arguments": {"flag": 1}}', answer) is False


def test_json_call_lists_match_in_any_order_but_not_partially():
    answer = json.dumps([{"name": "a", "arguments": {"x": 1}}, {"name": "b", "arguments": {"y": [1, 2]}}])
    assert checkers.json_call('[{"name": "b", "arguments": {"y": [1, 2.0]}}, {"name": "a", "arguments": {"x": 1}}]',
                              answer) is True
    assert checkers.json_call('[{"name": "a", "arguments": {"x": 1}}]', answer) is False
    assert checkers.json_call('[{"name": "a", "arguments": {"x": 1}}, {"name": "a", "arguments": {"x": 1}}]',
                              answer) is False
    # list order inside an argument does matter
    assert checkers.json_call('[{"name": "a", "arguments": {"x": 1}}, {"name": "b", "arguments": {"y": [2, 1]}}]',
                              answer) is False


@pytest.mark.parametrize("answer", ["not json", '{"name": "f"}', '{"arguments": {}}', "[]", '{"name": 3, "arguments": {}}'])
def test_json_call_rejects_bad_reference(answer):
    with pytest.raises(ValueError, match="json_call answer"):
        checkers.json_call('{"name": "f", "arguments": {}}', answer)


# --------------------------------------------------------------------------------- math

@pytest.mark.parametrize(
    "response, answer",
    [
        ("So the result is $\\boxed{\\frac{3}{4}}$.", "\\frac{3}{4}"),
        ("\\boxed{\\dfrac34}", "\\frac{3}{4}"),
        ("\\boxed{0.75}", "\\frac{3}{4}"),  # numeric equality
        ("\\boxed{x = 4}", "4"),
        ("first \\boxed{2}, corrected: \\boxed{ 9 \\pi }", "9\\pi"),  # last box, spaces ignored
        ("\\boxed{\\left( 1, 2 \\right)}", "(1,2)"),
        ("\\boxed{90^\\circ}", "90"),
        ("\\boxed{5 \\text{ cm}}", "5cm"),
        ("The answer is 12.", "12"),  # no box: the exact extraction rule
        ("\\boxed{\\{1, 2\\}}", "\\{1,2\\}"),  # nested braces in the box
    ],
)
def test_math_accepts(response, answer):
    assert checkers.math_answer(response, answer) is True


@pytest.mark.parametrize(
    "response, answer",
    [
        ("\\boxed{\\frac{3}{5}}", "\\frac{3}{4}"),
        ("\\boxed{9\\pi} then \\boxed{3}", "9\\pi"),
        ("\\boxed{4", "4"),  # unclosed box falls back to the last line "\boxed{4"
        ("I think 12", "12"),
    ],
)
def test_math_rejects(response, answer):
    assert checkers.math_answer(response, answer) is False


def test_last_boxed_balances_braces():
    assert checkers.last_boxed("\\boxed{\\frac{1}{2}} and \\boxed{\\sqrt{2}}") == "\\sqrt{2}"
    assert checkers.last_boxed("no box") is None
