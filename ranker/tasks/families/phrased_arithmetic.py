"""`phrased_arithmetic`: small sums, differences and products asked in words (checker: numeric)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from ranker.tasks.families.base import Family
from ranker.tasks.problem import Problem

FORMAT_INSTRUCTION = "Answer with just the number."
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve")
# operator -> question templates over the two operands {a}, {b}; "-" templates always have a >= b
TEMPLATES: dict[str, tuple[str, ...]] = {
    "+": ("What is {b} more than {a}?", "What is the sum of {a} and {b}?", "What do you get when you add {b} to {a}?",
          "What is {a} plus {b}?"),
    "-": ("What is {b} less than {a}?", "What is {a} minus {b}?", "What do you get when you take {b} away from {a}?",
          "What is the difference between {a} and {b}?"),
    "*": ("What is the product of {a} and {b}?", "What is {a} times {b}?", "What do you get when you multiply {a} by {b}?"),
}
# difficulty -> (smallest operand, largest operand, operands written as words)
LEVELS: dict[int, tuple[int, int, bool]] = {
    1: (1, 9, False),
    2: (1, 12, True),
    3: (10, 99, False),
}  # levels 4 and 5: two operations in a row (`_two_steps`)


@dataclass(frozen=True)
class PhrasedArithmetic(Family):
    """Arithmetic asked in words, e.g. "What is 3 more than 5? Answer with just the number."

    The same sums as `arithmetic`, with the operation in words instead of a symbol, in one of
    four (three for products) phrasings. The answer is always a non-negative integer.

    Difficulty levels:
      1. one-digit operands as digits (default)
      2. operands 1-12 written as words ("What is seven times eight?"), answer in digits
      3. two-digit operands as digits
      4. two additions or subtractions in a row on one-digit operands ("Start with 4, add 3, then
         subtract 5."), never below zero
      5. as 4, with products too ("Start with 4, add 3, then multiply by 2.")
    """

    # Calibrated on SmolLM2-135M-Instruct (T=1, 48 new tokens, 16 prompts x 8 samples per level,
    # 2026-12-03, bench/calibrate_family.py): level 1 got 15.6% of samples right (oracle@8 50%), level 2 7.0%, level 3 3.9%,
    # level 4 1.6%, level 5 6.2%.
    difficulty: int = 1

    name = "phrased_arithmetic"
    description = "Small integer + - * asked in words (\"3 more than 5\"); answer is one number."

    def sample(self, rng: random.Random) -> Problem:
        if self.difficulty >= 4:
            return self._two_steps(rng)
        low, high, as_words = LEVELS[self.difficulty]
        operator = rng.choice("+-*")
        a, b = rng.randint(low, high), rng.randint(low, high)
        if operator == "-" and a < b:
            a, b = b, a
        value = a + b if operator == "+" else a - b if operator == "-" else a * b
        shown = (NUMBER_WORDS[a], NUMBER_WORDS[b]) if as_words else (str(a), str(b))
        question = rng.choice(TEMPLATES[operator]).format(a=shown[0], b=shown[1])
        return Problem(prompt=f"{question} {FORMAT_INSTRUCTION}", answer=str(value), checker="numeric",
                       meta={"expression": f"{a} {operator} {b}"})

    def _two_steps(self, rng: random.Random) -> Problem:
        """Levels 4-5: start from a number, apply two operations in order (level 5 allows products)."""
        value = start = rng.randint(1, 9)
        steps, operators = [], "+-" if self.difficulty == 4 else "+-*"
        for _ in range(2):
            operator = rng.choice(operators)
            operand = rng.randint(1, 9) if operator != "-" else rng.randint(1, max(1, value))
            if operator == "-" and operand > value:
                operator = "+"
            value = value + operand if operator == "+" else value - operand if operator == "-" else value * operand
            steps.append({"+": f"add {operand}", "-": f"subtract {operand}", "*": f"multiply by {operand}"}[operator])
        question = f"Start with {start}, {steps[0]}, then {steps[1]}. What number do you get?"
        return Problem(prompt=f"{question} {FORMAT_INSTRUCTION}", answer=str(value), checker="numeric",
                       meta={"start": start, "steps": steps})
