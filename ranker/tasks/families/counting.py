"""`counting`: count the items of a list, or how often one word occurs in it (checker: numeric)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from ranker.tasks.families.base import Family
from ranker.tasks.problem import Problem

WORDS = ("apple", "banana", "cherry", "grape", "lemon", "mango", "pear", "plum", "peach", "melon",
         "cat", "dog", "bird", "fish", "horse", "mouse", "tiger", "lion", "sheep", "goat",
         "red", "blue", "green", "pink", "black", "white", "car", "bus", "train", "boat")
# difficulty -> (fewest items, most items, count occurrences of one word instead of all items)
LEVELS: dict[int, tuple[int, int, bool]] = {
    1: (2, 4, False),
    2: (3, 6, False),
    3: (5, 9, False),
    4: (4, 8, True),
    5: (8, 14, True),
}
FORMAT_INSTRUCTION = "Answer with just the number."


@dataclass(frozen=True)
class Counting(Family):
    """Count words in a list, e.g. "How many items are in this list: cat, pear, bus?"

    Difficulty levels:
      1. 2-4 distinct items, count them all
      2. 3-6 distinct items, count them all (default)
      3. 5-9 distinct items, count them all
      4. 4-8 items with repeats: how many times does one word occur?
      5. 8-14 items with repeats: how many times does one word occur?
    """

    # Calibrated on SmolLM2-135M-Instruct (T=1, 48 new tokens): level 2 got 10% of samples right
    # (16 prompts x 8, oracle@8 50%), level 1 8% (12 prompts x 8, oracle@8 58%).
    difficulty: int = 2

    name = "counting"
    description = "Count the items of a comma-separated list, or the occurrences of one word; answer is one number."

    def sample(self, rng: random.Random) -> Problem:
        low, high, occurrences = LEVELS[self.difficulty]
        size = rng.randint(low, high)
        if not occurrences:
            items = rng.sample(WORDS, size)
            question = f"How many items are in this list: {', '.join(items)}?"
            return Problem(prompt=f"{question} {FORMAT_INSTRUCTION}", answer=str(size), checker="numeric",
                           meta={"items": items})
        target, *others = rng.sample(WORDS, 4)
        count = rng.randint(1, min(4, size - 1))
        items = [target] * count + [rng.choice(others) for _ in range(size - count)]
        rng.shuffle(items)
        question = f"How many times does the word \"{target}\" appear in this list: {', '.join(items)}?"
        return Problem(prompt=f"{question} {FORMAT_INSTRUCTION}", answer=str(count), checker="numeric",
                       meta={"items": items, "target": target})
