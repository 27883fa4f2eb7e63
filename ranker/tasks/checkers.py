"""Checkers: pure functions that decide whether a response text answers a problem.

Each checker takes the raw response text and the problem's reference answer and returns
a bool. Every extraction rule is documented on its function so labels are reproducible:

- `numeric`: the last number in the response equals the answer.
- `exact`: the final answer (one extraction rule) equals the answer, ignoring case,
  whitespace and surrounding punctuation.
- `json_call`: the first function-call JSON in the response equals the answer's call(s).
- `python_tests`: the extracted code passes every assert line in a sandbox.
- `math_answer`: the last \\boxed{...} (or the `exact` extraction) equals the answer after
  simple LaTeX normalisation, or numerically.

Checkers never raise on a response, however malformed; they raise ValueError only when
the *reference answer* is unusable, which is a bug in the problem, not the response.
"""

from __future__ import annotations

import json
import math
import re
import string
from fractions import Fraction
from typing import Any

from ranker.tasks import python_parsing
from ranker.tasks.sandbox import SandboxConfig, run_python_tests

# ---------------------------------------------------------------------------- numbers

# One number: optional sign, digits with optional thousands separators (1,234,567),
# optional decimals and exponent, or a fraction of integers (3/4). The look-behind stops
# matches inside words ("H2O") and inside other numbers ("1.2.3").
_NUMBER_RE = re.compile(
    r"""
    (?<![\w.])
    (?P<sign>[-+\u2212]?)
    (?:
        (?P<num>\d+)/(?P<den>\d+)(?!\d|\.\d)
      | (?P<int>\d{1,3}(?:,\d{3})+|\d+)(?P<dec>\.\d+)?(?P<exp>[eE][-+]?\d+)?
      | (?P<bare>\.\d+)
    )
    """,
    re.VERBOSE,
)
# LaTeX fractions (\frac{3}{4}, \dfrac34) are rewritten to 3/4 before numbers are read.
_LATEX_FRAC_RE = re.compile(r"\\[dt]?frac\s*\{\s*(-?\d+)\s*\}\s*\{\s*(\d+)\s*\}")


def _match_value(match: re.Match) -> float | None:
    """Numeric value of one `_NUMBER_RE` match; None for a zero denominator."""
    negative = match.group("sign") in ("-", "\u2212")
    if match.group("den") is not None:
        denominator = int(match.group("den"))
        if denominator == 0:
            return None
        value = float(Fraction(int(match.group("num")), denominator))
    elif match.group("bare") is not None:
        value = float(match.group("bare"))
    else:
        text = match.group("int").replace(",", "") + (match.group("dec") or "") + (match.group("exp") or "")
        value = float(text)  # huge exponents give inf, which only equals inf
    return -value if negative else value


def _prepare_numbers(text: str) -> str:
    """Rewrite LaTeX fractions as a/b so `_NUMBER_RE` reads them as one number."""
    return _LATEX_FRAC_RE.sub(lambda m: f"{m.group(1)}/{m.group(2)}", text)


def parse_number(text: str) -> float | None:
    """Parse `text` that is exactly one number (surrounding whitespace allowed), else None.

    >>> parse_number("1,234"), parse_number("-3/4"), parse_number("12 apples")
    (1234.0, -0.75, None)
    """
    stripped = _prepare_numbers(text.strip())
    match = _NUMBER_RE.fullmatch(stripped)
    return None if match is None else _match_value(match)


def last_number(text: str) -> float | None:
    """The value of the last number in `text`, or None if it has none.

    Rule: scan left to right for numbers as `_NUMBER_RE` defines them (ints, decimals,
    negatives, thousands separators "1,234", exponents, fractions "3/4" and LaTeX
    \\frac{3}{4}); return the last one. A "-" counts as a sign only when it is not glued
    to a preceding word or digit, so "10-4" ends in 4, not -4. Fractions with a zero
    denominator are skipped.
    """
    values = [_match_value(m) for m in _NUMBER_RE.finditer(_prepare_numbers(text))]
    values = [v for v in values if v is not None]
    return values[-1] if values else None


def numbers_equal(a: float, b: float) -> bool:
    """Equal within 1e-6 relative tolerance (1e-9 absolute, so 0 can match 0.0000000001)."""
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def numeric(response_text: str, answer: str) -> bool:
    """True if the last number in the response equals the numeric `answer`.

    See `last_number` for what counts as a number. Raises ValueError if `answer` is not a
    single number.
    """
    expected = parse_number(answer)
    if expected is None:
        raise ValueError(f"numeric answer must be a single number, got {answer!r}")
    got = last_number(response_text)
    return got is not None and numbers_equal(got, expected)


# ------------------------------------------------------------------------------ exact

_ANSWER_IS_RE = re.compile(r"answer\s+is", re.IGNORECASE)
# Characters stripped from both ends before comparing: ASCII punctuation, typographic
# quotes and dashes, plus whitespace. Markdown emphasis (*, _ and `) is ASCII punctuation.
_EDGE_CHARS = string.punctuation + string.whitespace + "\u2018\u2019\u201c\u201d\u2013\u2014\u2026"


def extract_final_answer(response_text: str) -> str:
    """Extract the final answer from free text, with one fixed rule.

    1. If "answer is" occurs (any case): the text after its last occurrence.
    2. Else, if "=" occurs: the text after the last "=".
    3. Else: the whole text.
    Then keep the first non-empty line of that text (so "The answer is:\\nParis" gives
    "Paris") or, in case 3, the last non-empty line. Returns "" for empty text.
    """
    matches = list(_ANSWER_IS_RE.finditer(response_text))
    if matches:
        tail = response_text[matches[-1].end():]
    elif "=" in response_text:
        tail = response_text[response_text.rindex("=") + 1:]
    else:
        lines = [line for line in response_text.splitlines() if line.strip(_EDGE_CHARS)]
        return lines[-1].strip() if lines else ""
    for line in tail.splitlines():
        if line.strip(_EDGE_CHARS):
            return line.strip()
    return ""


def normalize_text(text: str) -> str:
    """Lowercase, collapse inner whitespace, strip punctuation and spaces at both ends."""
    return " ".join(text.lower().split()).strip(_EDGE_CHARS)


def exact(response_text: str, answer: str) -> bool:
    """True if `extract_final_answer(response)` equals `answer` after `normalize_text`.

    Case, runs of whitespace and punctuation at either end are ignored; punctuation inside
    the answer ("St. Louis", "New Delhi") must match.
    """
    expected = normalize_text(answer)
    if not expected:
        raise ValueError(f"exact answer is empty after normalisation: {answer!r}")
    return normalize_text(extract_final_answer(response_text)) == expected


# -------------------------------------------------------------------------- json_call

_OPENERS = {"{": "}", "[": "]"}


def _balanced_end(text: str, start: int) -> int | None:
    """Index just past the bracket that closes the one at `start`, or None if unclosed.

    Brackets inside "..." or '...' strings (with backslash escapes) are ignored.
    """
    stack: list[str] = []
    quote: str | None = None
    index = start
    while index < len(text):
        char = text[index]
        if quote is not None:
            if char == "\\":
                index += 1  # skip the escaped character
            elif char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char in _OPENERS:
            stack.append(_OPENERS[char])
        elif char in "}]":
            if not stack or stack.pop() != char:
                return None
            if not stack:
                return index + 1
        index += 1
    return None


def _parse_literal(snippet: str) -> Any:
    """Parse JSON, falling back to a Python literal (single quotes, True/None); else raise."""
    try:
        return json.loads(snippet)
    except ValueError:
        pass
    try:
        return python_parsing.literal_eval(snippet)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise ValueError("not a JSON or Python literal") from None


def _canonical(value: Any) -> Any:
    """Comparable form of a JSON value: numbers as floats (3 == 3.0), bools kept apart
    from numbers (True != 1), lists as tuples, dicts key-order independent."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, (list, tuple)):
        return tuple(_canonical(item) for item in value)
    if isinstance(value, dict):
        return {str(key): _canonical(item) for key, item in value.items()}
    return value


def _as_call(value: Any) -> tuple[str, dict] | None:
    """(name, canonical arguments) if `value` is a call object, else None.

    A call is a dict with a string "name" and an "arguments" dict; "arguments" may also
    be a JSON-encoded string of a dict (OpenAI style).
    """
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or "arguments" not in value:
        return None
    arguments = value["arguments"]
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    if not isinstance(arguments, dict):
        return None
    return value["name"], _canonical(arguments)


def _as_calls(value: Any) -> list[tuple[str, dict]] | None:
    """A list of calls from one call object or a non-empty list of call objects."""
    single = _as_call(value)
    if single is not None:
        return [single]
    if isinstance(value, list) and value:
        calls = [_as_call(item) for item in value]
        if all(call is not None for call in calls):
            return calls  # type: ignore[return-value]
    return None


def parse_call_answer(answer: str) -> list[tuple[str, dict]]:
    """Parse a json_call reference answer (a call object or a list of them).

    Raises ValueError naming what is wrong if it is not valid JSON of that shape.
    """
    try:
        value = json.loads(answer)
    except ValueError as error:
        raise ValueError(f"json_call answer is not valid JSON ({error}): {answer[:200]!r}") from None
    calls = _as_calls(value)
    if calls is None:
        raise ValueError(
            'json_call answer must be {"name": str, "arguments": {...}} or a non-empty list of '
            f"those, got {answer[:200]!r}"
        )
    return calls


def extract_calls(response_text: str) -> list[tuple[str, dict]] | None:
    """The first function call(s) written in the response, or None.

    Rule: scan the text for top-level JSON values (balanced {...} or [...], so code
    fences and prose around them do not matter). Each is parsed as JSON, or failing that
    as a Python literal (single quotes, True/None). The first value that is a call object
    or a list of call objects is returned; other values are skipped whole, so a call
    nested inside some other object is not picked up.
    """
    index = 0
    while index < len(response_text):
        char = response_text[index]
        if char in _OPENERS:
            end = _balanced_end(response_text, index)
            if end is not None:
                try:
                    value = _parse_literal(response_text[index:end])
                except ValueError:
                    index += 1  # prose such as "{name}" or a broken object: keep scanning
                    continue
                calls = _as_calls(value)
                if calls is not None:
                    return calls
                index = end
                continue
        index += 1
    return None


def json_call(response_text: str, answer: str) -> bool:
    """True if the response's first call(s) equal the answer's call(s).

    Names must match exactly and arguments as dicts: key order is irrelevant, numbers
    compare numerically (3 == 3.0), strings exactly. With several expected calls (xLAM
    parallel calls), the response must contain the same calls as a list, in any order.
    A single call and a one-element list are the same.
    """
    expected = parse_call_answer(answer)
    got = extract_calls(response_text)
    if got is None or len(got) != len(expected):
        return False
    remaining = list(got)
    for call in expected:
        if call not in remaining:
            return False
        remaining.remove(call)
    return True


# ----------------------------------------------------------------------- python_tests

_FENCE_RE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_code(response_text: str) -> str:
    """The code in a response.

    Rule: the first ```python (or ```py / ```python3) fenced block; else the first fenced
    block of any language; else the whole text. A fence left unclosed (the response was
    cut off) runs to the end of the text.
    """
    blocks = [(m.group(1).lower(), m.group(2)) for m in _FENCE_RE.finditer(response_text)]
    for language, body in blocks:
        if language in ("python", "py", "python3"):
            return body
    if blocks:
        return blocks[0][1]
    return response_text


def python_tests(response_text: str, tests: tuple[str, ...] | list[str], timeout_s: float = 5.0) -> bool:
    """True if the extracted code plus every test line runs cleanly in the sandbox.

    See `extract_code` for the extraction rule and `ranker.tasks.sandbox` for the limits.
    Garbage code, exceptions, infinite loops and early exits all give False.
    """
    if not tests:
        raise ValueError("python_tests needs at least one test line, got none")
    return run_python_tests(extract_code(response_text), tuple(tests), SandboxConfig(timeout_s=timeout_s)).passed


# ------------------------------------------------------------------------------- math

_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}) in `text`, braces balanced."""
    starts = [m.end() for m in _BOXED_RE.finditer(text)]
    for start in reversed(starts):
        depth = 1
        for index in range(start, len(text)):
            if text[index] == "{":
                depth += 1
            elif text[index] == "}":
                depth -= 1
                if depth == 0:
                    return text[start:index]
    return None


_TEXT_MACRO_RE = re.compile(r"\\(?:text|textbf|mbox|mathrm|mathbf)\s*\{([^{}]*)\}")
_SHORT_FRAC_RE = re.compile(r"\\frac(\d)(\d)")
_SHORT_SQRT_RE = re.compile(r"\\sqrt(\d)")


def normalize_math(answer: str) -> str:
    """Simple normalisation of a LaTeX final answer so equivalent spellings compare equal.

    Drops $, spacing commands (\\, \\! \\; \\quad), \\left/\\right, degree marks, percent
    signs and all whitespace; unwraps \\text{...}-like macros; maps \\dfrac/\\tfrac to
    \\frac and \\frac12 to \\frac{1}{2}; removes a leading "x=" and a trailing period.
    """
    text = answer.strip()
    text = _TEXT_MACRO_RE.sub(r"\1", text)
    for token in ("\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "\\quad", "\\qquad", "$",
                  "^\\circ", "^{\\circ}", "\\%", "%", "\\displaystyle"):
        text = text.replace(token, "")
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    text = "".join(text.split())
    text = _SHORT_FRAC_RE.sub(r"\\frac{\1}{\2}", text)
    text = _SHORT_SQRT_RE.sub(r"\\sqrt{\1}", text)
    text = re.sub(r"^[a-zA-Z]=", "", text)
    text = text.rstrip(".")
    if text.startswith("."):
        text = "0" + text
    return text


def math_answer(response_text: str, answer: str) -> bool:
    """True if the response's final answer equals `answer` (MATH-style).

    The final answer is the last \\boxed{...} in the response, or, if there is none, the
    `extract_final_answer` rule. Both sides go through `normalize_math`; they match if the
    strings are equal or both are single numbers (including \\frac{a}{b}) that are equal.
    """
    expected = normalize_math(answer)
    if not expected:
        raise ValueError(f"math answer is empty after normalisation: {answer!r}")
    boxed = last_boxed(response_text)
    got = normalize_math(boxed if boxed is not None else extract_final_answer(response_text))
    if got == expected:
        return True
    got_value, expected_value = parse_number(got), parse_number(expected)
    return got_value is not None and expected_value is not None and numbers_equal(got_value, expected_value)
