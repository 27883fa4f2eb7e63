"""`weekday`: how many days lie between two days of the week (checker: numeric)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from ranker.tasks.families.base import Family
from ranker.tasks.problem import Problem

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
NAMES = ("Sam", "Mia", "Leo", "Ava", "Noah", "Emma", "Liam", "Zoe", "Omar", "Priya", "Ken", "Lucy")
EVENTS = ("birthday party", "piano lesson", "football match", "school trip", "dentist visit", "book club")
# difficulty -> (smallest gap, largest gap, gap may wrap past Sunday, past events allowed, next week's events allowed)
LEVELS: dict[int, tuple[int, int, bool, bool, bool]] = {
    1: (1, 3, False, False, False),
    2: (1, 6, True, False, False),
    3: (1, 6, True, True, False),
    4: (1, 6, True, False, True),
    5: (1, 6, True, True, True),
}
FORMAT_INSTRUCTION = "Answer with just the number."


@dataclass(frozen=True)
class Weekday(Family):
    """Calendar gaps, e.g. "Today is Tuesday. Sam's piano lesson is on Friday. In how many days is it?"

    Difficulty levels:
      1. an event 1-3 days later in the same week (never past Sunday)
      2. an event 1-6 days later, possibly in the next week ("Today is Friday ... on Tuesday") (default)
      3. as 2, or an event 1-6 days ago ("How many days ago was it?")
      4. as 2, or an event on a day of next week ("on Tuesday next week"; weeks start on Monday)
      5. any of the above
    Level 1 has about 1,000 distinct prompts, the others several thousand.
    """

    # Calibrated on SmolLM2-135M-Instruct (T=1, 48 new tokens, 8 prompts x 8 samples): level 2
    # got 9% of samples right (oracle@8 62%); level 1 got none of 64, so it is not the default.
    difficulty: int = 2

    name = "weekday"
    description = "Days between today's weekday and an event's weekday; answer is one number."

    def sample(self, rng: random.Random) -> Problem:
        low, high, wrap, past_allowed, next_week_allowed = LEVELS[self.difficulty]
        today = rng.randrange(7) if wrap else rng.randrange(7 - low)
        gap = rng.randint(low, high if wrap else min(high, 6 - today))
        person, event = rng.choice(NAMES), rng.choice(EVENTS)
        kinds = ["future"] + ["past"] * past_allowed + ["next_week"] * next_week_allowed
        kind = rng.choice(kinds)
        if kind == "past":
            day = DAYS[(today - gap) % 7]
            story = f"Today is {DAYS[today]}. {person}'s {event} was last {day}. How many days ago was it?"
        elif kind == "next_week":
            gap = 7 - today + rng.randrange(7)  # Monday of next week is 7 - today days away
            day = DAYS[(today + gap) % 7]
            story = f"Today is {DAYS[today]}. {person}'s {event} is on {day} next week. In how many days is it?"
        else:
            day = DAYS[(today + gap) % 7]
            story = f"Today is {DAYS[today]}. {person}'s {event} is on {day}. In how many days is it?"
        return Problem(prompt=f"{story} {FORMAT_INSTRUCTION}", answer=str(gap), checker="numeric",
                       meta={"today": DAYS[today], "day": day, "kind": kind})
