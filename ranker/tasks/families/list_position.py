"""`list_position`: at which position a word stands in a short list (checker: numeric)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from ranker.tasks.families.base import Family
from ranker.tasks.families.counting import WORDS  # the same vocabulary of short, common words
from ranker.tasks.problem import Problem

# difficulty -> (fewest items, most items, positions counted from the end allowed)
LEVELS: dict[int, tuple[int, int, bool]] = {
    1: (3, 3, False),
    2: (4, 5, False),
    3: (6, 8, False),
    4: (4, 6, True),
    5: (7, 10, True),
}
FORMAT_INSTRUCTION = "Answer with just the number."


@dataclass(frozen=True)
class ListPosition(Family):
    """Position of a word, e.g. "Here is a list: dog, pear, bus. At which position is "pear", counting from
    the start (the first one is position 1)?" (answer 2).

    Difficulty levels:
      1. three items (default)
      2. four or five items
      3. six to eight items
      4. four to six items; the position may be asked counting from the end
      5. seven to ten items; the position may be asked counting from the end
    """

    # Calibrated on SmolLM2-135M-Instruct (T=1, 48 new tokens, 8 prompts x 8 samples): level 1
    # got 17% of samples right (oracle@8 62%), level 2 9% (oracle@8 62%).
    difficulty: int = 1

    name = "list_position"
    description = "The 1-based position of a word in a comma-separated list (from the start or the end); answer is one number."

    def sample(self, rng: random.Random) -> Problem:
        low, high, from_end_allowed = LEVELS[self.difficulty]
        items = rng.sample(WORDS, rng.randint(low, high))
        index = rng.randrange(len(items))
        from_end = from_end_allowed and rng.random() < 0.5
        answer = len(items) - index if from_end else index + 1
        direction = "counting from the end (the last one is position 1)" if from_end else \
            "counting from the start (the first one is position 1)"
        question = f"Here is a list: {', '.join(items)}. At which position is \"{items[index]}\", {direction}?"
        return Problem(prompt=f"{question} {FORMAT_INSTRUCTION}", answer=str(answer), checker="numeric",
                       meta={"items": items, "from_end": from_end})
