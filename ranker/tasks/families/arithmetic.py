"""`arithmetic`: one-line integer sums, differences and products (checker: numeric)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from ranker.tasks.families.base import Family
from ranker.tasks.problem import Problem

FORMAT_INSTRUCTION = "Answer with just the number."


@dataclass(frozen=True)
class Arithmetic(Family):
    """Integer arithmetic, e.g. "What is 47 + 38? Answer with just the number."

    Difficulty levels:
      1. one-digit operands, + - * (differences never negative) (default)
      2. two-digit + and -, two-digit times one-digit
      3. two-digit operands for all three operations; differences may be negative
      4. three-digit + and -, two-digit times two-digit
      5. three two-digit operands with mixed operations ("12 + 34 * 5", usual precedence)
    Level 1 has only about 200 distinct prompts.

    `operand_range=(low, high)` replaces the levels' operand sizes: every problem is `a op b`
    with both operands in [low, high] and differences never negative, at any difficulty (the
    difficulty then only names the random stream of `generate`). E.g. operands 2-20 give the
    harder arithmetic of the README's "where the signal runs out" check. Its committed task
    file (`bench/data/arithmetic_small20.jsonl`) is what `sample` draws from
    `random.Random(20261128)`, duplicates skipped; `generate` seeds its own stream per family
    and difficulty, so `generate(n, seed)` gives other problems of the same kind.
    """

    difficulty: int = 1  # calibrated on SmolLM2-135M-Instruct: it rarely solves level 2 (see the README's results)
    operand_range: tuple[int, int] | None = None  # (low, high), both included; None: sizes set by difficulty

    name = "arithmetic"
    description = "Integer + - * with operand size set by difficulty; answer is one number."

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.operand_range is None:
            return
        bounds = tuple(self.operand_range) if isinstance(self.operand_range, (tuple, list)) else ()
        valid = len(bounds) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in bounds)
        if not valid or not 0 <= bounds[0] <= bounds[1]:
            raise ValueError(f"operand_range must be two ints (low, high) with 0 <= low <= high, got {self.operand_range!r}")
        object.__setattr__(self, "operand_range", bounds)  # frozen: normalise a list to a tuple

    def sample(self, rng: random.Random) -> Problem:
        if self.difficulty == 5 and self.operand_range is None:
            operands = [rng.randint(10, 99) for _ in range(3)]
            operators = [rng.choice("+-*") for _ in range(2)]
            expression = f"{operands[0]} {operators[0]} {operands[1]} {operators[1]} {operands[2]}"
        else:
            operator = rng.choice("+-*")
            a, b = self._operands(rng, operator)
            expression = f"{a} {operator} {b}"
        # eval is safe here: the expression is built above from ints and + - * only.
        value = eval(expression)  # noqa: S307
        meta = {"expression": expression}
        if self.operand_range is not None:
            meta["operand_range"] = list(self.operand_range)  # the difficulty in meta does not say the size
        return Problem(
            prompt=f"What is {expression}? {FORMAT_INSTRUCTION}",
            answer=str(value),
            checker="numeric",
            meta=meta,
        )

    def _operands(self, rng: random.Random, operator: str) -> tuple[int, int]:
        """Two operands for levels 1-4, or from `operand_range` (see the class docstring)."""
        level = self.difficulty
        if self.operand_range is not None:
            a, b = rng.randint(*self.operand_range), rng.randint(*self.operand_range)
        elif level == 1:
            a, b = rng.randint(1, 9), rng.randint(1, 9)
        elif level == 2:
            a = rng.randint(10, 99)
            b = rng.randint(2, 9) if operator == "*" else rng.randint(10, 99)
        elif level == 3:
            return rng.randint(10, 99), rng.randint(10, 99)
        else:
            digits = (10, 99) if operator == "*" else (100, 999)
            return rng.randint(*digits), rng.randint(*digits)
        if operator == "-" and b > a:
            a, b = b, a  # keep early levels free of negative results
        return a, b
