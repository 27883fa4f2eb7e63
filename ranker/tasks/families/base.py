"""What every task family shares: a difficulty knob and deterministic, duplicate-free generation."""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import ClassVar

from ranker.tasks.problem import Problem

MIN_DIFFICULTY, MAX_DIFFICULTY = 1, 5


@dataclass(frozen=True)
class Family(ABC):
    """A generator of verifiable problems of one kind.

    Subclasses set `name` and `description`, redeclare `difficulty` with their default, and
    implement `sample`, which draws one problem from a `random.Random`. `generate(n, seed)` turns that into a
    reproducible list of `n` problems with distinct prompts.
    """

    difficulty: int = 2  # 1 = easiest ... 5 = hardest; each family documents its levels

    name: ClassVar[str]
    description: ClassVar[str]

    def __post_init__(self) -> None:
        valid_int = isinstance(self.difficulty, int) and not isinstance(self.difficulty, bool)
        if not valid_int or not MIN_DIFFICULTY <= self.difficulty <= MAX_DIFFICULTY:
            raise ValueError(
                f"difficulty of family {self.name!r} must be an int in [{MIN_DIFFICULTY}, {MAX_DIFFICULTY}], "
                f"got {self.difficulty!r}"
            )

    def with_difficulty(self, difficulty: int) -> "Family":
        """A copy of this family at another difficulty."""
        return replace(self, difficulty=difficulty)

    @abstractmethod
    def sample(self, rng: random.Random) -> Problem:
        """Draw one problem using only `rng` for randomness."""

    def generate(self, n: int, seed: int = 0) -> list[Problem]:
        """`n` problems with distinct prompts, the same for the same (`n`, `seed`, difficulty).

        The list for a smaller `n` is a prefix of the list for a larger one. Raises
        ValueError when the family cannot produce `n` distinct prompts at this difficulty.
        """
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        # A string seed is hashed with SHA-512 by `random`, so it is stable across runs
        # and Python processes, and each family/difficulty gets its own stream.
        rng = random.Random(f"{self.name}/{self.difficulty}/{seed}")
        problems: list[Problem] = []
        seen: set[str] = set()
        attempts, max_attempts = 0, 50 * n + 1000
        while len(problems) < n and attempts < max_attempts:
            attempts += 1
            problem = self.sample(rng)
            if problem.prompt in seen:
                continue
            seen.add(problem.prompt)
            meta = {**problem.meta, "difficulty": self.difficulty, "seed": seed, "index": len(problems)}
            problems.append(replace(problem, family=self.name, meta=meta))
        if len(problems) < n:
            raise ValueError(
                f"family {self.name!r} at difficulty {self.difficulty} produced only {len(problems)} distinct "
                f"prompts after {attempts} draws, fewer than n={n}; ask for fewer or raise the difficulty"
            )
        return problems


def format_number(value: Fraction | int) -> str:
    """Exact decimal text of a number: 12, -3, 2.5 (no float rounding noise like 0.30000000000000004)."""
    value = Fraction(value)
    if value.denominator == 1:
        return str(value.numerator)
    # Terminating decimals only (denominator 2^a 5^b): scale until the value is whole.
    digits = 0
    scaled = value
    while scaled.denominator != 1:
        scaled *= 10
        digits += 1
        if digits > 12:
            raise ValueError(f"{value} has no short decimal form")
    sign = "-" if scaled < 0 else ""
    text = str(abs(scaled.numerator)).rjust(digits + 1, "0")
    return f"{sign}{text[:-digits]}.{text[-digits:]}".rstrip("0").rstrip(".")
