"""The counting, list_position, weekday and phrased_arithmetic families: determinism, every level, checker and hand-checked answers."""

import re

import pytest

from ranker.tasks import FAMILIES, check, get_family
from ranker.tasks.families import Counting, ListPosition, PhrasedArithmetic, Weekday
from ranker.tasks.families.phrased_arithmetic import NUMBER_WORDS

NEW = ("counting", "list_position", "weekday", "phrased_arithmetic")
WEEK = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def list_in(prompt: str) -> list[str]:
    """The comma-separated list shown in a counting or list_position prompt."""
    return re.search(r"(?:list|list:) ([a-z, ]+)[.?]", prompt).group(1).split(", ")


def days_forward(start: str, end: str) -> int:
    """Days from `start` to the next `end`, found by walking the week one day at a time."""
    steps, day = 0, start
    while True:
        day = WEEK[(WEEK.index(day) + 1) % 7]
        steps += 1
        if day == end:
            return steps


@pytest.mark.parametrize("name", NEW)
def test_registered_with_a_numeric_checker_at_the_calibrated_default(name):
    assert FAMILIES[name].name == name and FAMILIES[name].description
    assert FAMILIES[name].difficulty == {"counting": 2, "list_position": 1, "weekday": 2, "phrased_arithmetic": 1}[name]
    assert {p.checker for p in FAMILIES[name].generate(20)} == {"numeric"}


@pytest.mark.parametrize("name", NEW)
def test_same_seed_same_prompts_other_seed_other_prompts(name):
    family = FAMILIES[name]
    first = family.generate(30, seed=5)
    assert [(p.prompt, p.answer) for p in first] == [(p.prompt, p.answer) for p in family.generate(30, seed=5)]
    assert len({p.prompt for p in first} & {p.prompt for p in family.generate(30, seed=6)}) < 10


@pytest.mark.parametrize("name", NEW)
def test_at_least_400_distinct_prompts_at_the_default_level(name):
    assert len({p.prompt for p in FAMILIES[name].generate(400, seed=0)}) == 400


@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("difficulty", [1, 2, 3, 4, 5])
def test_every_level_generates_problems_whose_answer_passes_and_a_wrong_one_fails(name, difficulty):
    problems = get_family(name, difficulty).generate(40, seed=difficulty)
    assert len({p.prompt for p in problems}) == 40
    for problem in problems:
        assert problem.prompt.endswith("Answer with just the number.")
        assert problem.meta["difficulty"] == difficulty
        answer = int(problem.answer)
        assert check(problem, f"The answer is {answer}.")
        assert check(problem, f"Let me see.\n{answer}")
        assert not check(problem, f"The answer is {answer + 1}.")
        assert not check(problem, f"I think {answer}, no wait, {answer - 1}.")  # the last number counts


def test_counting_answer_is_the_list_length_or_the_word_count():
    for difficulty, (low, high) in {1: (2, 4), 2: (3, 6), 3: (5, 9)}.items():
        for problem in Counting(difficulty=difficulty).generate(50, seed=0):
            items = list_in(problem.prompt)
            assert int(problem.answer) == len(items) and low <= len(items) <= high
            assert len(set(items)) == len(items)
    for difficulty in (4, 5):
        for problem in Counting(difficulty=difficulty).generate(50, seed=0):
            target = re.search(r'the word "(\w+)"', problem.prompt).group(1)
            items = list_in(problem.prompt)
            assert int(problem.answer) == sum(item == target for item in items) >= 1
            assert len(set(items)) > 1  # some other word is in the list too


def test_counting_hand_checked_examples():
    level2 = Counting().generate(1, seed=0)[0]
    assert level2.prompt == ("How many items are in this list: blue, fish, melon, peach, bus? "
                             "Answer with just the number.")
    assert level2.answer == "5"  # blue, fish, melon, peach, bus
    level5 = Counting(difficulty=5).generate(1, seed=0)[0]
    assert level5.prompt.startswith('How many times does the word "boat" appear in this list: boat, boat, grape, bus,')
    assert level5.answer == "3"  # boat at positions 1, 2 and 11 of 12


def test_list_position_answer_is_the_one_based_index():
    for difficulty in (1, 2, 3, 4, 5):
        for problem in ListPosition(difficulty=difficulty).generate(50, seed=1):
            items = list_in(problem.prompt)
            word = re.search(r'position is "(\w+)"', problem.prompt).group(1)
            from_end = "counting from the end" in problem.prompt
            assert from_end == problem.meta["from_end"]
            expected = list(reversed(items)).index(word) + 1 if from_end else items.index(word) + 1
            assert int(problem.answer) == expected
    assert not any(p.meta["from_end"] for p in ListPosition(difficulty=3).generate(50))
    assert any(p.meta["from_end"] for p in ListPosition(difficulty=4).generate(50))
    assert {len(list_in(p.prompt)) for p in ListPosition(difficulty=1).generate(50)} == {3}


def test_list_position_hand_checked_example():
    problem = ListPosition().generate(1, seed=0)[0]
    assert problem.prompt.startswith('Here is a list: mouse, train, mango. At which position is "mango", counting from the start')
    assert problem.answer == "3"


def test_weekday_answer_is_the_gap_between_the_days():
    for difficulty in (1, 2, 3, 4, 5):
        for problem in Weekday(difficulty=difficulty).generate(60, seed=2):
            today = re.match(r"Today is (\w+)\.", problem.prompt).group(1)
            answer = int(problem.answer)
            if match := re.search(r"was last (\w+)\. How many days ago", problem.prompt):
                assert days_forward(match.group(1), today) == answer
            elif match := re.search(r"is on (\w+) next week\.", problem.prompt):
                # Weeks start on Monday: walk to next week's Monday, then on to the day.
                to_monday = days_forward(today, "Monday")
                assert answer == to_monday + WEEK.index(match.group(1)) and 1 <= answer <= 13
            else:
                day = re.search(r"is on (\w+)\. In how many days", problem.prompt).group(1)
                assert days_forward(today, day) == answer
            if difficulty == 1:  # same week: the event is later in the week than today
                assert WEEK.index(today) < WEEK.index(problem.meta["day"]) and answer <= 3
    assert {p.meta["kind"] for p in Weekday(difficulty=2).generate(60)} == {"future"}
    assert {p.meta["kind"] for p in Weekday(difficulty=5).generate(60)} == {"future", "past", "next_week"}


def test_weekday_hand_checked_examples():
    level2 = Weekday().generate(1, seed=0)[0]
    assert level2.prompt == ("Today is Wednesday. Noah's dentist visit is on Saturday. In how many days is it? "
                             "Answer with just the number.")
    assert level2.answer == "3"  # Thursday, Friday, Saturday
    level5 = Weekday(difficulty=5).generate(1, seed=0)[0]
    assert level5.prompt.startswith("Today is Friday. Mia's piano lesson was last Saturday. How many days ago")
    assert level5.answer == "6"  # Saturday, Sunday, ..., Thursday, Friday: six steps


def operand(text: str) -> int:
    """A phrased_arithmetic operand: digits, or a number word."""
    return int(text) if text.isdigit() else NUMBER_WORDS.index(text)


def test_phrased_arithmetic_answer_is_the_phrased_operation():
    """Each phrasing read back independently of the templates' code: which operand comes first matters."""
    forms = [
        (r"What is (\w+) more than (\w+)\?", lambda a, b: b + a), (r"What is the sum of (\w+) and (\w+)\?", int.__add__),
        (r"What do you get when you add (\w+) to (\w+)\?", int.__add__), (r"What is (\w+) plus (\w+)\?", int.__add__),
        (r"What is (\w+) less than (\w+)\?", lambda a, b: b - a), (r"What is (\w+) minus (\w+)\?", int.__sub__),
        (r"What do you get when you take (\w+) away from (\w+)\?", lambda a, b: b - a),
        (r"What is the difference between (\w+) and (\w+)\?", int.__sub__),
        (r"What is the product of (\w+) and (\w+)\?", int.__mul__), (r"What is (\w+) times (\w+)\?", int.__mul__),
        (r"What do you get when you multiply (\w+) by (\w+)\?", int.__mul__),
    ]
    seen = set()
    for difficulty, (low, high) in {1: (1, 9), 2: (1, 12), 3: (10, 99)}.items():
        for problem in PhrasedArithmetic(difficulty=difficulty).generate(200, seed=3):
            matches = [(i, m, f) for i, (pattern, f) in enumerate(forms) if (m := re.match(pattern, problem.prompt))]
            assert len(matches) == 1, problem.prompt
            index, match, operation = matches[0]
            seen.add(index)
            a, b = operand(match.group(1)), operand(match.group(2))
            assert low <= a <= high and low <= b <= high
            assert match.group(1).isdigit() == (difficulty != 2)
            assert int(problem.answer) == operation(a, b) >= 0
    assert seen == set(range(len(forms)))  # every phrasing is drawn


def test_phrased_arithmetic_two_steps_apply_in_order():
    for difficulty in (4, 5):
        problems = PhrasedArithmetic(difficulty=difficulty).generate(100, seed=4)
        for problem in problems:
            match = re.match(r"Start with (\d+), (.+), then (.+)\. What number do you get\?", problem.prompt)
            value = int(match.group(1))
            for step in (match.group(2), match.group(3)):
                verb, amount = step.rsplit(" ", 1)
                value = {"add": value + int(amount), "subtract": value - int(amount), "multiply by": value * int(amount)}[verb]
                assert value >= 0
            assert int(problem.answer) == value
        assert any("multiply" in p.prompt for p in problems) == (difficulty == 5)


def test_phrased_arithmetic_hand_checked_examples():
    level1 = PhrasedArithmetic().generate(1, seed=0)[0]
    assert level1.prompt == "What is 9 more than 9? Answer with just the number."
    assert level1.answer == "18"  # 9 + 9
    level2 = PhrasedArithmetic(difficulty=2).generate(1, seed=0)[0]
    assert level2.prompt == "What is the product of seven and five? Answer with just the number."
    assert level2.answer == "35"
