"""Registry of the built-in task families.

`FAMILIES` maps a family name to an instance at its default difficulty; use
`get_family(name, difficulty)` or `FAMILIES[name].with_difficulty(d)` for another level.
"""

from __future__ import annotations

from ranker.tasks.families.arithmetic import Arithmetic
from ranker.tasks.families.base import MAX_DIFFICULTY, MIN_DIFFICULTY, Family
from ranker.tasks.families.code import Code
from ranker.tasks.families.comparison import Comparison
from ranker.tasks.families.counting import Counting
from ranker.tasks.families.function_call import FunctionCall
from ranker.tasks.families.list_position import ListPosition
from ranker.tasks.families.phrased_arithmetic import PhrasedArithmetic
from ranker.tasks.families.table_lookup import TableLookup
from ranker.tasks.families.unit_conversion import UnitConversion
from ranker.tasks.families.weekday import Weekday
from ranker.tasks.families.word_problem import WordProblem

FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (Arithmetic(), WordProblem(), FunctionCall(), Code(), Comparison(), UnitConversion(), TableLookup(),
                   Counting(), ListPosition(), Weekday(), PhrasedArithmetic())
}


def get_family(name: str, difficulty: int | None = None) -> Family:
    """The family called `name`, at `difficulty` (None: its default)."""
    if name not in FAMILIES:
        raise ValueError(f"unknown task family {name!r}; expected one of {sorted(FAMILIES)}")
    family = FAMILIES[name]
    return family if difficulty is None else family.with_difficulty(difficulty)


__all__ = [
    "FAMILIES", "MAX_DIFFICULTY", "MIN_DIFFICULTY", "Family", "get_family",
    "Arithmetic", "WordProblem", "FunctionCall", "Code", "Comparison", "UnitConversion", "TableLookup",
    "Counting", "ListPosition", "Weekday", "PhrasedArithmetic",
]
