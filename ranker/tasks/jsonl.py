"""User task files: one JSON object per line, validated line by line.

Line format:

    {"prompt": str, "answer": str, "checker": "numeric" | "exact" | "json_call" | "python_tests" | "math",
     "tests": [str, ...],   # optional; required and non-empty for python_tests
     "family": str,         # optional label, defaults to the file name
     "meta": {...}}         # optional free-form dict

Blank lines are skipped. Every invalid line is reported (up to `MAX_REPORTED_ERRORS`)
in one ValueError that names the file, the line number and what is wrong.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ranker.tasks.problem import VERIFIABLE_CHECKERS, Problem

MAX_REPORTED_ERRORS = 20
REQUIRED_FIELDS = ("prompt", "answer", "checker")
OPTIONAL_FIELDS = ("tests", "family", "meta")


def load_tasks_file(path: str | Path) -> list[Problem]:
    """Read a JSONL task file into problems, or raise ValueError listing every bad line."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"task file {str(path)!r} does not exist or is not a file")
    problems: list[Problem] = []
    errors: list[str] = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                problems.append(parse_task_line(line, default_family=path.stem))
            except ValueError as error:
                errors.append(f"line {line_number}: {error}")
    if errors:
        shown = "\n  ".join(errors[:MAX_REPORTED_ERRORS])
        more = f"\n  ... and {len(errors) - MAX_REPORTED_ERRORS} more" if len(errors) > MAX_REPORTED_ERRORS else ""
        raise ValueError(f"{path}: {len(errors)} invalid line(s):\n  {shown}{more}")
    if not problems:
        raise ValueError(f"{path}: no tasks found (the file is empty or only has blank lines)")
    return problems


def parse_json(text: str, expected: type[dict] | type[list], what: str) -> Any:
    """`text` parsed as JSON, which must be a `expected` (dict: an object, or list); else a
    ValueError that starts with `what` and says what is wrong."""
    try:
        value = json.loads(text)
    except ValueError as error:
        raise ValueError(f"{what} is not valid JSON ({error})") from None
    if not isinstance(value, expected):
        kind = "an object" if expected is dict else "a list"
        raise ValueError(f"{what} must be {kind}, got {type(value).__name__} {value!r:.200}")
    return value


def parse_task_line(line: str, default_family: str = "") -> Problem:
    """One line of a task file as a Problem; ValueError says what is wrong with it."""
    record = parse_json(line, dict, "the line")
    _check_fields(record)
    tests = record.get("tests", [])
    meta = record.get("meta", {})
    # Problem.__post_init__ checks the answer against the checker (numeric parses,
    # json_call answer is a call, python_tests has tests) and raises ValueError.
    return Problem(
        prompt=record["prompt"], answer=record["answer"], checker=record["checker"], tests=tuple(tests),
        family=record.get("family", default_family), meta=meta,
    )


def _check_fields(record: dict[str, Any]) -> None:
    """Presence and types of the fields, before the checker-specific checks."""
    missing = [name for name in REQUIRED_FIELDS if name not in record]
    if missing:
        raise ValueError(f"missing field(s) {missing}")
    unknown = sorted(set(record) - set(REQUIRED_FIELDS) - set(OPTIONAL_FIELDS))
    if unknown:
        raise ValueError(f"unknown field(s) {unknown}; allowed: {list(REQUIRED_FIELDS + OPTIONAL_FIELDS)}")
    for name in ("prompt", "answer", "checker"):
        if not isinstance(record[name], str):
            raise ValueError(f"field {name!r} must be a string, got {type(record[name]).__name__} {record[name]!r}")
    if not record["prompt"].strip():
        raise ValueError("field 'prompt' is empty")
    if record["checker"] not in VERIFIABLE_CHECKERS:
        raise ValueError(f"unknown checker {record['checker']!r}; expected one of {list(VERIFIABLE_CHECKERS)}")
    tests = record.get("tests", [])
    if not isinstance(tests, list) or not all(isinstance(test, str) for test in tests):
        raise ValueError(f"field 'tests' must be a list of strings, got {tests!r}")
    if "family" in record and not isinstance(record["family"], str):
        raise ValueError(f"field 'family' must be a string, got {record['family']!r}")
    if "meta" in record and not isinstance(record["meta"], dict):
        raise ValueError(f"field 'meta' must be an object, got {record['meta']!r}")
