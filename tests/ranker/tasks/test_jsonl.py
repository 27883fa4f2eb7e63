"""User task files: valid lines load, every invalid line is reported with its number."""

import json

import pytest

from ranker.tasks import Problem, load_tasks_file


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_valid_file_loads_every_checker(tmp_path):
    call = json.dumps({"name": "f", "arguments": {"x": 1}})
    path = write_lines(tmp_path / "mine.jsonl", [
        json.dumps({"prompt": "What is 2 + 3?", "answer": "5", "checker": "numeric"}),
        "",
        "   ",
        json.dumps({"prompt": "Capital of Peru?", "answer": "Lima", "checker": "exact", "family": "geo"}),
        json.dumps({"prompt": "Call f with x=1.", "answer": call, "checker": "json_call", "meta": {"source": "me"}}),
        json.dumps({"prompt": "Write f.", "answer": "", "checker": "python_tests", "tests": ["assert f() == 1"]}),
        json.dumps({"prompt": "Half?", "answer": "\\frac{1}{2}", "checker": "math"}),
    ])
    problems = load_tasks_file(path)
    assert [p.checker for p in problems] == ["numeric", "exact", "json_call", "python_tests", "math"]
    assert problems[0] == Problem("What is 2 + 3?", "5", "numeric", family="mine")
    assert problems[1].family == "geo" and problems[2].meta == {"source": "me"}
    assert problems[3].tests == ("assert f() == 1",)
    assert problems[3].check("def f():\n    return 1") is True


def test_invalid_lines_are_all_reported_with_numbers(tmp_path):
    good = {"prompt": "What is 2 + 3?", "answer": "5", "checker": "numeric"}
    path = write_lines(tmp_path / "bad.jsonl", [
        json.dumps(good),                                                           # 1 ok
        '{"prompt": "broken", ',                                                    # 2 bad JSON
        json.dumps({"prompt": "p", "checker": "numeric"}),                          # 3 missing answer
        json.dumps({**good, "answer": 5}),                                          # 4 answer not a string
        json.dumps({**good, "checker": "fuzzy"}),                                   # 5 unknown checker
        "",                                                                         # 6 blank, skipped
        json.dumps({**good, "checker": "json_call", "answer": "{not json"}),        # 7 bad json_call answer
        json.dumps({**good, "checker": "json_call", "answer": '{"name": "f"}'}),    # 8 no arguments
        json.dumps({**good, "checker": "python_tests"}),                            # 9 no tests
        json.dumps({**good, "answer": "five"}),                                     # 10 numeric answer not a number
        json.dumps({**good, "anwser": "5"}),                                        # 11 unknown field (typo)
        json.dumps({**good, "tests": "assert True"}),                               # 12 tests not a list
        "[1, 2]",                                                                   # 13 not an object
        json.dumps({**good, "checker": "none"}),                                    # 14 none is not allowed in files
    ])
    with pytest.raises(ValueError) as raised:
        load_tasks_file(path)
    message = str(raised.value)
    assert str(path) in message and "12 invalid line(s)" in message
    expected = {
        2: "not valid JSON", 3: "missing field(s) ['answer']", 4: "'answer' must be a string",
        5: "unknown checker 'fuzzy'", 7: "json_call answer is not valid JSON", 8: "json_call answer must be",
        9: "at least one test", 10: "'five'", 11: "unknown field(s) ['anwser']", 12: "'tests' must be a list",
        13: "the line must be an object, got list [1, 2]", 14: "unknown checker 'none'",
    }
    lines = message.splitlines()[1:]
    assert [int(line.split(":")[0].split()[1]) for line in lines] == sorted(expected)
    for line, (number, fragment) in zip(lines, sorted(expected.items())):
        assert line.strip().startswith(f"line {number}:") and fragment in line, line


def test_error_list_is_capped(tmp_path):
    path = write_lines(tmp_path / "many.jsonl", ["{oops"] * 25)
    with pytest.raises(ValueError) as raised:
        load_tasks_file(path)
    message = str(raised.value)
    assert "25 invalid line(s)" in message and "line 20:" in message and "line 21:" not in message
    assert "... and 5 more" in message


def test_empty_and_missing_files(tmp_path):
    with pytest.raises(ValueError, match="no tasks"):
        load_tasks_file(write_lines(tmp_path / "empty.jsonl", ["", "  "]))
    with pytest.raises(ValueError, match="does not exist"):
        load_tasks_file(tmp_path / "nope.jsonl")
