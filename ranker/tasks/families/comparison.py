"""`comparison`: pick the larger or smaller of a few numbers (checker: numeric)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from fractions import Fraction

from ranker.tasks.families.base import Family, format_number
from ranker.tasks.problem import Problem

FORMAT_INSTRUCTION = "Answer with just the number."


@dataclass(frozen=True)
class Comparison(Family):
    """Which number is larger (or smaller)?

    Difficulty levels:
      1. two two-digit numbers at least 20 apart
      2. two two-digit numbers, often the same digits swapped ("47 or 74") (default)
      3. three two-digit numbers
      4. two decimals with different digit counts ("9.9 or 9.11")
      5. four numbers mixing negatives and decimals
    """

    difficulty: int = 2

    name = "comparison"
    description = "Pick the largest or smallest of 2-4 numbers; answer is one number."

    def sample(self, rng: random.Random) -> Problem:
        numbers = self._numbers(rng)
        want_larger = rng.random() < 0.5
        target = max(numbers) if want_larger else min(numbers)
        texts = [format_number(n) for n in numbers]
        if len(texts) == 2:
            word = "larger" if want_larger else "smaller"
            question = f"Which number is {word}: {texts[0]} or {texts[1]}?"
        else:
            word = "largest" if want_larger else "smallest"
            question = f"Which number is the {word}: {', '.join(texts[:-1])} or {texts[-1]}?"
        return Problem(prompt=f"{question} {FORMAT_INSTRUCTION}", answer=format_number(target),
                       checker="numeric", meta={"numbers": texts, "larger": want_larger})

    def _numbers(self, rng: random.Random) -> list[Fraction]:
        """Distinct numbers for the current level (see the class docstring)."""
        level = self.difficulty
        if level == 1:
            a = rng.randint(10, 79)
            b = rng.randint(a + 20, 99)
            pair = [a, b]
            rng.shuffle(pair)
            return [Fraction(n) for n in pair]
        if level == 2:
            tens, ones = rng.sample(range(1, 10), 2)
            if rng.random() < 0.5:  # digit swap: the classic trap for small models
                return [Fraction(10 * tens + ones), Fraction(10 * ones + tens)]
            return [Fraction(n) for n in rng.sample(range(10, 100), 2)]
        if level == 3:
            return [Fraction(n) for n in rng.sample(range(10, 100), 3)]
        if level == 4:
            whole = rng.randint(1, 20)
            short = Fraction(whole) + Fraction(rng.randint(1, 9), 10)
            # Two decimal places with a non-zero last digit, so "9.11" never collapses to "9.1".
            long = Fraction(whole) + Fraction(rng.choice([h for h in range(11, 100) if h % 10]), 100)
            pair = [short, long]
            rng.shuffle(pair)
            return pair
        values: set[Fraction] = set()
        while len(values) < 4:
            value = Fraction(rng.randint(-99, 99)) + Fraction(rng.choice([0, 0, rng.randint(1, 9)]), 10)
            values.add(value)
        numbers = sorted(values)
        rng.shuffle(numbers)
        return numbers
