"""`word_problem`: short GSM8K-like stories that need one to three operations (checker: numeric)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from ranker.tasks.families.base import Family
from ranker.tasks.problem import Problem

FORMAT_INSTRUCTION = "Answer with just the number."

NAMES = [("Sam", "He"), ("Mia", "She"), ("Leo", "He"), ("Ava", "She"), ("Noah", "He"), ("Emma", "She"),
         ("Liam", "He"), ("Zoe", "She"), ("Omar", "He"), ("Priya", "She"), ("Ken", "He"), ("Lucy", "She")]
ITEMS = ["apples", "pencils", "stickers", "marbles", "cookies", "books", "cards", "stamps", "shells", "balloons"]

# A template takes (rng, hi, name, pronoun, item) and returns (story, answer). `hi` is the
# largest number drawn; every template keeps intermediate and final results non-negative.
Template = Callable[[random.Random, int, str, str, str], tuple[str, int]]


def _one_buy(rng: random.Random, hi: int, name: str, he: str, item: str) -> tuple[str, int]:
    a, b = rng.randint(2, hi), rng.randint(2, hi)
    return f"{name} has {a} {item}. {he} gets {b} more. How many {item} does {name} have now?", a + b


def _one_give(rng: random.Random, hi: int, name: str, he: str, item: str) -> tuple[str, int]:
    a = rng.randint(3, hi + 2)
    b = rng.randint(1, a - 1)
    return f"{name} has {a} {item}. {he} gives {b} to a friend. How many {item} does {name} have left?", a - b


def _one_groups(rng: random.Random, hi: int, name: str, he: str, item: str) -> tuple[str, int]:
    a, b = rng.randint(2, hi), rng.randint(2, hi)
    return f"{name} has {a} bags with {b} {item} in each bag. How many {item} does {name} have?", a * b


def _two_buy_packs(rng: random.Random, hi: int, name: str, he: str, item: str) -> tuple[str, int]:
    a, b, c = rng.randint(2, hi), rng.randint(2, hi), rng.randint(2, hi)
    story = (f"{name} has {a} {item}. {he} buys {b} packs with {c} {item} in each pack. "
             f"How many {item} does {name} have now?")
    return story, a + b * c


def _two_give_find(rng: random.Random, hi: int, name: str, he: str, item: str) -> tuple[str, int]:
    a = rng.randint(3, hi + 2)
    b, c = rng.randint(1, a - 1), rng.randint(2, hi)
    story = (f"{name} had {a} {item} and gave away {b}. Then {he.lower()} found {c} more. "
             f"How many {item} does {name} have now?")
    return story, a - b + c


def _two_boxes_eat(rng: random.Random, hi: int, name: str, he: str, item: str) -> tuple[str, int]:
    a, b = rng.randint(2, hi), rng.randint(2, hi)
    c = rng.randint(1, a * b - 1)
    story = (f"A box holds {a} {item}. {name} fills {b} boxes and then gives away {c} {item}. "
             f"How many {item} does {name} have left?")
    return story, a * b - c


def _two_pages(rng: random.Random, hi: int, name: str, he: str, item: str) -> tuple[str, int]:
    a, b, c = rng.randint(2, hi), rng.randint(2, hi), rng.randint(2, hi)
    story = (f"{name} reads {a} pages every day for {b} days. The next day {he.lower()} reads {c} pages. "
             f"How many pages does {name} read in total?")
    return story, a * b + c


def _two_wages(rng: random.Random, hi: int, name: str, he: str, item: str) -> tuple[str, int]:
    a, b = rng.randint(2, hi), rng.randint(2, hi)
    c = rng.randint(1, a * b - 1)
    story = (f"{name} earns {a} dollars per hour and works for {b} hours. {he} spends {c} dollars on lunch. "
             f"How many dollars does {name} have left?")
    return story, a * b - c


def _two_share(rng: random.Random, hi: int, name: str, he: str, item: str) -> tuple[str, int]:
    each, friends, extra = rng.randint(2, hi), rng.randint(2, min(hi, 12)), rng.randint(2, hi)
    story = (f"{name} shares {each * friends} {item} equally among {friends} friends. Then each friend gets "
             f"{extra} more {item}. How many {item} does each friend have?")
    return story, each + extra


def _three_buy_give(rng: random.Random, hi: int, name: str, he: str, item: str) -> tuple[str, int]:
    a, b, c = rng.randint(2, hi), rng.randint(2, hi), rng.randint(2, hi)
    d = rng.randint(1, a + b * c - 1)
    story = (f"{name} has {a} {item}. {he} buys {b} packs with {c} {item} in each pack. Then {he.lower()} "
             f"gives {d} {item} to a friend. How many {item} does {name} have now?")
    return story, a + b * c - d


def _three_two_kinds(rng: random.Random, hi: int, name: str, he: str, item: str) -> tuple[str, int]:
    a, b, c, d = (rng.randint(2, hi) for _ in range(4))
    story = (f"{name} buys {a} boxes of pencils with {b} pencils in each box and {c} boxes of pens with "
             f"{d} pens in each box. How many pencils and pens does {name} buy in total?")
    return story, a * b + c * d


def _three_bake_sell(rng: random.Random, hi: int, name: str, he: str, item: str) -> tuple[str, int]:
    a, b = rng.randint(2, hi), rng.randint(2, hi)
    d = rng.randint(2, hi)
    c = rng.randint(1, max(1, (a * b - 1) // d))
    story = (f"{name} bakes {a} trays with {b} cookies on each tray. {he} sells {c} bags with {d} cookies "
             f"in each bag. How many cookies are left?")
    return story, a * b - c * d


ONE_STEP: list[Template] = [_one_buy, _one_give, _one_groups]
TWO_STEP: list[Template] = [_two_buy_packs, _two_give_find, _two_boxes_eat, _two_pages, _two_wages, _two_share]
THREE_STEP: list[Template] = [_three_buy_give, _three_two_kinds, _three_bake_sell]

# difficulty -> (templates, largest number drawn)
LEVELS: dict[int, tuple[list[Template], int]] = {
    1: (ONE_STEP, 10),
    2: (TWO_STEP, 10),
    3: (TWO_STEP, 50),
    4: (THREE_STEP, 12),
    5: (THREE_STEP, 60),
}


@dataclass(frozen=True)
class WordProblem(Family):
    """Story problems in the style of GSM8K.

    Difficulty levels:
      1. one operation, numbers up to 10
      2. two operations, numbers up to 10 (default)
      3. two operations, numbers up to 50
      4. three operations, numbers up to 12
      5. three operations, numbers up to 60
    """

    difficulty: int = 1  # calibrated on SmolLM2-135M-Instruct: it rarely solves level 2 (see the README's results)

    name = "word_problem"
    description = "GSM8K-like story problems with 1-3 operations; answer is one number."

    def sample(self, rng: random.Random) -> Problem:
        templates, hi = LEVELS[self.difficulty]
        template = rng.choice(templates)
        name, pronoun = rng.choice(NAMES)
        story, value = template(rng, hi, name, pronoun, rng.choice(ITEMS))
        return Problem(
            prompt=f"{story} {FORMAT_INSTRUCTION}",
            answer=str(value),
            checker="numeric",
            meta={"template": template.__name__.lstrip("_")},
        )
