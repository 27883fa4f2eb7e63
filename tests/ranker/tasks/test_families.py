"""Generated families: registry, determinism, difficulty, and answers that are actually right."""

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ranker.tasks import FAMILIES, check, get_family
from ranker.tasks.families import Arithmetic, Code, Comparison, FunctionCall, TableLookup, UnitConversion
from ranker.tasks.families.base import format_number

REPO_ROOT = Path(__file__).resolve().parents[3]
REQUIRED = {"arithmetic", "word_problem", "function_call", "code", "comparison", "unit_conversion", "table_lookup",
            "counting", "list_position", "weekday", "phrased_arithmetic"}
EXPECTED_CHECKER = {"arithmetic": "numeric", "word_problem": "numeric", "function_call": "json_call",
                    "code": "python_tests", "comparison": "numeric", "unit_conversion": "numeric",
                    "table_lookup": "exact", "counting": "numeric", "list_position": "numeric", "weekday": "numeric",
                    "phrased_arithmetic": "numeric"}


def test_registry_has_the_families():
    assert REQUIRED <= set(FAMILIES)
    for name, family in FAMILIES.items():
        assert family.name == name
        assert family.description
        assert 1 <= family.difficulty <= 5


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_same_seed_same_problems_different_seed_different(name):
    family = FAMILIES[name]
    first, again = family.generate(20, seed=3), family.generate(20, seed=3)
    assert [p.prompt for p in first] == [p.prompt for p in again]
    assert [p.answer for p in first] == [p.answer for p in again]
    other = {p.prompt for p in family.generate(20, seed=4)}
    assert len(other & {p.prompt for p in first}) < 10
    assert len({p.prompt for p in first}) == 20  # no duplicates within a list
    assert [p.prompt for p in family.generate(5, seed=3)] == [p.prompt for p in first[:5]]  # prefix


def test_generation_does_not_depend_on_the_process():
    # A string seed must not go through hash(), which changes with PYTHONHASHSEED.
    script = ("from ranker.tasks import FAMILIES\n"
              "print([p.prompt for name in sorted(FAMILIES) for p in FAMILIES[name].generate(3, 11)])")
    outputs = [
        subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        for seed in ("1", "2")
    ]
    assert outputs[0] == outputs[1] and outputs[0].count("?") >= 7


@pytest.mark.parametrize("name", sorted(REQUIRED))
@pytest.mark.parametrize("difficulty", [1, 2, 3, 4, 5])
def test_reference_answers_pass_their_own_checker(name, difficulty):
    family = get_family(name, difficulty)
    n = 3 if name == "code" else 10
    for problem in family.generate(n, seed=difficulty):
        assert problem.checker == EXPECTED_CHECKER[name]
        assert problem.family == name and problem.meta["difficulty"] == difficulty
        assert problem.prompt.rstrip().endswith((".", "block."))
        assert re.search(r"(Answer with just|Reply with only|Reply with just)", problem.prompt)
        response = f"```python\n{problem.answer}```" if name == "code" else problem.answer
        assert check(problem, response), problem


def test_arithmetic_answers_are_correct_and_levels_change_operands():
    for problem in Arithmetic(difficulty=2).generate(50, seed=0):
        a, op, b = re.fullmatch(r"What is (\d+) ([-+*]) (\d+)\? Answer with just the number\.", problem.prompt).groups()
        a, b = int(a), int(b)
        assert int(problem.answer) == {"+": a + b, "-": a - b, "*": a * b}[op]
        assert 10 <= a <= 99 and (2 <= b <= 9 if op == "*" else 10 <= b <= 99)
    easy = Arithmetic(difficulty=1).generate(30, seed=0)
    assert all(max(map(int, re.findall(r"\d+", p.prompt))) <= 9 for p in easy)
    assert all(int(p.answer) >= 0 for p in easy)
    hard = Arithmetic(difficulty=4).generate(30, seed=0)
    assert any(int(n) >= 100 for p in hard for n in re.findall(r"\d+", p.prompt))


def test_arithmetic_operand_range_draws_both_operands_from_it_at_any_level():
    for difficulty in (1, 5):
        problems = Arithmetic(difficulty=difficulty, operand_range=(2, 20)).generate(200, seed=0)
        operands = [re.fullmatch(r"What is (\d+) ([-+*]) (\d+)\? Answer with just the number\.", p.prompt).groups()
                    for p in problems]
        assert all(2 <= int(a) <= 20 and 2 <= int(b) <= 20 for a, _, b in operands)
        assert {op for _, op, _ in operands} == {"+", "-", "*"}
        assert all(int(p.answer) >= 0 and check(p, p.answer) for p in problems)
        assert problems[0].meta["operand_range"] == [2, 20]
    assert max(int(a) for p in Arithmetic(operand_range=[95, 99]).generate(20) for a in re.findall(r"\d+", p.prompt)) <= 99
    assert "operand_range" not in Arithmetic().generate(1)[0].meta  # the default family's problems are unchanged
    assert Arithmetic(operand_range=(2, 20)).with_difficulty(3).operand_range == (2, 20)


@pytest.mark.parametrize("bad", [(3, 2), (-1, 4), (1.0, 2), (True, 3), (1, 2, 3), 5])
def test_arithmetic_operand_range_must_be_two_ordered_non_negative_ints(bad):
    with pytest.raises(ValueError, match="operand_range must be two ints"):
        Arithmetic(operand_range=bad)


def test_arithmetic_operand_range_writes_the_committed_harder_arithmetic_file():
    # bench/data/arithmetic_small20.jsonl (README: "Arithmetic: where the signal runs out") came from a
    # separate generator that drew operator, a, b from random.Random(20261128); the family draws in
    # the same order, so its `sample` on that stream gives the same problems, line for line.
    committed = [json.loads(line) for line in (REPO_ROOT / "bench" / "data" / "arithmetic_small20.jsonl").open()]
    family, rng = Arithmetic(operand_range=(2, 20)), random.Random(20261128)
    drawn: dict[str, str] = {}
    while len(drawn) < len(committed):
        problem = family.sample(rng)
        drawn.setdefault(problem.prompt, problem.answer)
    assert len(committed) == 300
    assert [(row["prompt"], row["answer"], row["checker"]) for row in committed] == [
        (prompt, answer, "numeric") for prompt, answer in drawn.items()]


def test_word_problem_answers_follow_the_story():
    from ranker.tasks.families import WordProblem

    formulas = {
        "two_buy_packs": lambda a, b, c: a + b * c,
        "two_give_find": lambda a, b, c: a - b + c,
        "two_pages": lambda a, b, c: a * b + c,
        "two_wages": lambda a, b, c: a * b - c,
    }
    checked = 0
    for problem in WordProblem(difficulty=2).generate(100, seed=0):
        assert int(problem.answer) >= 0
        formula = formulas.get(problem.meta["template"])
        if formula is not None:
            a, b, c = map(int, re.findall(r"\d+", problem.prompt))
            assert int(problem.answer) == formula(a, b, c), problem.prompt
            checked += 1
    assert checked > 30
    one_step = WordProblem(difficulty=1).generate(20, seed=0)
    assert all(len(re.findall(r"\d+", p.prompt)) == 2 for p in one_step)


def test_comparison_answer_is_the_asked_extreme():
    for difficulty in (2, 3, 4, 5):
        for problem in Comparison(difficulty=difficulty).generate(30, seed=1):
            numbers = [float(x) for x in problem.meta["numbers"]]
            want = max(numbers) if problem.meta["larger"] else min(numbers)
            assert float(problem.answer) == want
            assert ("larger" in problem.prompt or "largest" in problem.prompt) == problem.meta["larger"]
    # level 4 is the decimal trap: one tenth-precision and one hundredth-precision number
    for problem in Comparison(difficulty=4).generate(10, seed=0):
        assert sorted(len(x.split(".")[1]) for x in problem.meta["numbers"]) == [1, 2]


def test_unit_conversion_answers_use_the_right_factor():
    factors = {("meters", "centimeters"): 100, ("kilometers", "meters"): 1000, ("hours", "minutes"): 60,
               ("weeks", "days"): 7, ("feet", "inches"): 12, ("dozen", "eggs"): 12, ("kilograms", "grams"): 1000}
    checked = 0
    for problem in UnitConversion(difficulty=2).generate(200, seed=0):
        key = (problem.meta["from"], problem.meta["to"])
        if key in factors:
            quantity = int(re.search(r"\d+", problem.prompt).group())
            assert int(problem.answer) == quantity * factors[key]
            checked += 1
    assert checked > 50
    checked = 0
    for problem in UnitConversion(difficulty=3).generate(200, seed=0):  # small to large
        key = (problem.meta["to"], problem.meta["from"])
        if key in factors:
            quantity = int(re.search(r"\d+", problem.prompt).group())
            assert int(problem.answer) * factors[key] == quantity
            checked += 1
    assert checked > 50


def test_table_lookup_answer_is_in_the_asked_cell():
    for problem in TableLookup(difficulty=3).generate(40, seed=0):
        lines = problem.prompt.split("\n\n")[0].splitlines()[1:]
        header, rows = lines[0].split(" | "), [line.split(" | ") for line in lines[1:]]
        assert len(rows) == 5
        question = problem.prompt.split("\n\n")[1]
        match = re.match(r"What is the (\w+) of (.+) in the table\?", question)
        if match:
            column, country = match.groups()
            row = next(r for r in rows if r[0] == country)
            assert row[header.index(column)] == problem.answer
        else:
            column, value = re.match(r"Which country in the table has the (\w+) (.+)\?", question).groups()
            matching = [r[0] for r in rows if r[header.index(column)] == value]
            assert matching == [problem.answer]


def test_function_call_answer_names_a_listed_tool_with_values_from_the_request():
    for difficulty, shown in ((1, 2), (2, 3), (5, 8)):
        for problem in FunctionCall(difficulty=difficulty).generate(20, seed=0):
            call = json.loads(problem.answer)
            tool_lines = problem.prompt.split("\n\n")[0].splitlines()[1:]
            assert len(tool_lines) == shown
            listed = {json.loads(line)["name"]: json.loads(line)["parameters"] for line in tool_lines}
            assert call["name"] in listed and set(call["arguments"]) == set(listed[call["name"]])
            request = problem.prompt.split("User request: ")[1].split("\n")[0]
            for value in call["arguments"].values():
                assert str(value) in request or f"{value:02d}" in request


def test_code_tests_reject_a_wrong_solution():
    problem = Code(difficulty=1).generate(1, seed=0)[0]
    function = problem.meta["function"]
    assert check(problem, f"```python\n{problem.answer}```") is True
    assert check(problem, f"```python\ndef {function}(*args):\n    return None\n```") is False


def test_difficulty_is_validated():
    with pytest.raises(ValueError, match="got 0"):
        get_family("arithmetic", 0)
    with pytest.raises(ValueError, match="got 6"):
        Comparison(difficulty=6)
    with pytest.raises(ValueError, match="'algebra'"):
        get_family("algebra")
    with pytest.raises(ValueError, match="n must be"):
        Arithmetic().generate(-1)


def test_exhausted_family_raises_instead_of_repeating():
    with pytest.raises(ValueError, match="distinct prompts"):
        Arithmetic(difficulty=1).generate(1000, seed=0)


def test_format_number_is_exact():
    from fractions import Fraction
    assert format_number(Fraction(3, 10) * 1000) == "300"
    assert format_number(Fraction(27, 10)) == "2.7"
    assert format_number(Fraction(-1, 8)) == "-0.125"
    with pytest.raises(ValueError):
        format_number(Fraction(1, 3))
