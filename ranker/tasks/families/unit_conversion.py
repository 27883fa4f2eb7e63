"""`unit_conversion`: convert a quantity between everyday units (checker: numeric)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from fractions import Fraction

from ranker.tasks.families.base import Family, format_number
from ranker.tasks.problem import Problem

FORMAT_INSTRUCTION = "Answer with just the number."

# (larger unit, smaller unit, smaller units per larger unit); units as written after a number.
CONVERSIONS: list[tuple[str, str, int]] = [
    ("meters", "centimeters", 100),
    ("kilometers", "meters", 1000),
    ("centimeters", "millimeters", 10),
    ("kilograms", "grams", 1000),
    ("liters", "milliliters", 1000),
    ("hours", "minutes", 60),
    ("minutes", "seconds", 60),
    ("days", "hours", 24),
    ("weeks", "days", 7),
    ("years", "months", 12),
    ("feet", "inches", 12),
    ("yards", "feet", 3),
    ("dozen", "eggs", 12),
]
PHRASINGS = [
    "How many {target} are in {quantity} {source}?",
    "Convert {quantity} {source} to {target}.",
    "{quantity} {source} is how many {target}?",
]
# Two-step chains for level 4: (larger unit, smaller unit, factor), e.g. hours -> seconds.
CHAINS: list[tuple[str, str, int]] = [
    ("hours", "seconds", 3600),
    ("days", "minutes", 1440),
    ("kilometers", "centimeters", 100000),
    ("weeks", "hours", 168),
    ("meters", "millimeters", 1000),
    ("yards", "inches", 36),
]


@dataclass(frozen=True)
class UnitConversion(Family):
    """How many <small units> are in <quantity> <large units>?

    Difficulty levels:
      1. large to small, quantity 2-9
      2. large to small, quantity 2-99 (default)
      3. small to large ("How many hours are in 180 minutes?"), whole results 2-60
      4. two-step chains (hours to seconds), quantity 2-20
      5. large to small with a decimal quantity (2.5 kilograms)
    Levels 1 and 4 have only about 300 distinct prompts.
    """

    difficulty: int = 1  # calibrated on SmolLM2-135M-Instruct: it rarely solves level 2 (see the README's results)

    name = "unit_conversion"
    description = "Convert a quantity between everyday units; answer is one number."

    def sample(self, rng: random.Random) -> Problem:
        level = self.difficulty
        large, small, factor = rng.choice(CHAINS if level == 4 else CONVERSIONS)
        if level == 3:
            result = Fraction(rng.randint(2, 60))
            source, target = small, large
            question = rng.choice(PHRASINGS).format(quantity=format_number(result * factor), source=small, target=large)
        else:
            if level == 1:
                quantity = Fraction(rng.randint(2, 9))
            elif level == 2:
                quantity = Fraction(rng.randint(2, 99))
            elif level == 4:
                quantity = Fraction(rng.randint(2, 20))
            else:
                quantity = Fraction(rng.randint(1, 20)) + Fraction(rng.choice([10, 20, 25, 50, 75]), 100)
            result = quantity * factor
            source, target = large, small
            question = rng.choice(PHRASINGS).format(quantity=format_number(quantity), source=large, target=small)
        return Problem(prompt=f"{question} {FORMAT_INSTRUCTION}", answer=format_number(result),
                       checker="numeric", meta={"from": source, "to": target, "factor": factor})
