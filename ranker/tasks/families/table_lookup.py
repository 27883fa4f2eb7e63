"""`table_lookup`: answer a question from a small table given in the prompt (checker: exact).

The rows come from `ranker/tasks/data/countries.csv` (country, capital, continent,
currency), shipped with the package. The table in the prompt is the answer key, so a
question is answerable without world knowledge.
"""

from __future__ import annotations

import csv
import io
import random
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from ranker.tasks.families.base import Family
from ranker.tasks.problem import Problem

KEY_COLUMN = "country"
# difficulty -> (rows shown, columns shown besides the key, reverse questions allowed)
LEVELS: dict[int, tuple[int, tuple[str, ...], bool]] = {
    1: (2, ("capital",), False),
    2: (3, ("capital", "continent", "currency"), False),
    3: (5, ("capital", "continent", "currency"), True),
    4: (8, ("capital", "continent", "currency"), True),
    5: (12, ("capital", "continent", "currency"), True),
}


@lru_cache(maxsize=1)
def load_countries() -> tuple[dict[str, str], ...]:
    """Rows of the shipped countries table, as dicts keyed by column name."""
    text = (resources.files("ranker.tasks") / "data" / "countries.csv").read_text(encoding="utf-8")
    return tuple(csv.DictReader(io.StringIO(text)))


def render_table(rows: list[dict[str, str]], columns: list[str]) -> str:
    """A pipe-separated table with a header line."""
    lines = [" | ".join(columns)] + [" | ".join(row[column] for column in columns) for row in rows]
    return "\n".join(lines)


@dataclass(frozen=True)
class TableLookup(Family):
    """Look up one cell of a table shown in the prompt.

    Forward questions ask a row's value ("What is the capital of Peru?"); reverse
    questions ask which country has a value ("Which country has the capital Lima?") and
    are only asked when that value is unique in the table shown.

    Difficulty levels:
      1. 2 rows, country and capital only
      2. 3 rows, all four columns (default)
      3. 5 rows, forward and reverse questions
      4. 8 rows, forward and reverse questions
      5. 12 rows, forward and reverse questions
    """

    difficulty: int = 1  # calibrated on SmolLM2-135M-Instruct: it rarely solves level 2 (see the README's results)

    name = "table_lookup"
    description = "Answer from a small country table in the prompt; answer is a name (exact match)."

    def sample(self, rng: random.Random) -> Problem:
        n_rows, value_columns, reverse_allowed = LEVELS[self.difficulty]
        rows = rng.sample(list(load_countries()), n_rows)
        row = rng.choice(rows)
        column = rng.choice(value_columns)
        value_is_unique = sum(r[column] == row[column] for r in rows) == 1
        if reverse_allowed and value_is_unique and rng.random() < 0.5:
            question = f"Which country in the table has the {column} {row[column]}?"
            answer, asked = row[KEY_COLUMN], KEY_COLUMN
        else:
            question = f"What is the {column} of {row[KEY_COLUMN]} in the table?"
            answer, asked = row[column], column
        table = render_table(rows, [KEY_COLUMN, *value_columns])
        # "The answer is ..." is what the exact checker extracts; asked for "just the {asked}", the
        # model mostly answered in a sentence ("The continent of Poland is Europe.") and failed.
        prompt = f"Use this table:\n{table}\n\n{question} Reply with just: The answer is <{asked}>."
        return Problem(prompt=prompt, answer=answer, checker="exact", meta={"column": asked})
