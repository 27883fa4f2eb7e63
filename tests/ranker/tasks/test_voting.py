from ranker.tasks import Problem
from ranker.tasks.voting import answer_key


def test_numeric_keys_merge_equal_numbers():
    problem = Problem("What is 5 + 7?", "12", "numeric")
    assert answer_key(problem, "The answer is 12.") == answer_key(problem, "5 + 7 = 12.0")
    assert answer_key(problem, "13") != answer_key(problem, "12")
    assert answer_key(problem, "I do not know") is None


def test_exact_keys_follow_the_checker_normalisation():
    problem = Problem("Capital of France?", "Paris", "exact")
    assert answer_key(problem, "The answer is Paris.") == answer_key(problem, "paris") == "paris"


def test_json_call_keys_ignore_argument_order():
    problem = Problem("call", '{"name": "f", "arguments": {"a": 1, "b": 2}}', "json_call")
    first = answer_key(problem, 'Sure: {"name": "f", "arguments": {"b": 2, "a": 1}}')
    second = answer_key(problem, '{"name": "f", "arguments": {"a": 1, "b": 2}}')
    assert first == second is not None
    assert answer_key(problem, '{"name": "g", "arguments": {"a": 1, "b": 2}}') != first


def test_code_keys_merge_only_identical_programs():
    problem = Problem("add", "", "python_tests", tests=("assert add(1, 2) == 3",))
    one = "```python\ndef add(a, b):\n    return a + b\n```"
    assert answer_key(problem, one) == answer_key(problem, one.replace("\n    return", "\n\n    return"))
    assert answer_key(problem, one) != answer_key(problem, one.replace("a + b", "b + a"))


def test_free_form_responses_vote_by_the_final_answer_rule():
    from ranker.tasks.voting import response_keys

    keys = response_keys(["The answer is 12.", "5 + 7 = 12", "12", "I think it is 13, or maybe not", ""])
    assert keys[:3] == ["12", "12", "12"]
    assert keys[3] == "i think it is 13, or maybe not" and keys[4] is None
