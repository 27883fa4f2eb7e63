"""What two responses must share to count as the same answer in a majority vote.

Self-consistency (majority vote over sampled answers) needs an answer key per response.
The key follows the checker's own extraction rule, so that a vote counts exactly what the
checker would compare:

- numeric: the last number, formatted canonically ("12.0" and "12" vote together);
- exact: the extracted final answer, normalised as the checker normalises it;
- json_call: the first call(s), with sorted argument keys;
- math: the normalised last \\boxed{} answer;
- python_tests: the extracted code with blank lines and trailing spaces removed (votes only
  merge identical programs, which is why self-consistency helps little on code);
- none: no key.

A response with no extractable answer gets None and does not vote.
"""

from __future__ import annotations

import json

from ranker.tasks import checkers
from ranker.tasks.problem import Problem

# Free-form prompts (the app) have no checker; their answers vote by the `exact` rule: the text
# after "answer is", else after the last "=", else the last line. Short answers ("12", "Paris")
# vote together; long free-form replies rarely share a key, so their vote shares stay equal and
# the vote share then changes no ranking.
FREE_FORM_CHECKER = "exact"


def answer_key(problem: Problem, response_text: str) -> str | None:
    """The vote key of one response to `problem` (None: it does not vote)."""
    return key_for(problem.checker, response_text)


def response_keys(texts: list[str], checker: str = FREE_FORM_CHECKER) -> list[str | None]:
    """The vote keys of several responses under one checker's rule (default: the free-form rule)."""
    return [key_for(checker, text) for text in texts]


def key_for(checker: str, response_text: str) -> str | None:
    """The vote key of a response under the extraction rule of `checker` (None: it does not vote)."""
    if checker == "numeric":
        value = checkers.last_number(response_text)
        return None if value is None else format(value, ".9g")
    if checker == "exact":
        text = checkers.normalize_text(checkers.extract_final_answer(response_text))
        return text or None
    if checker == "json_call":
        calls = checkers.extract_calls(response_text)
        return None if calls is None else json.dumps(sorted(calls, key=str), sort_keys=True, default=str)
    if checker == "math":
        boxed = checkers.last_boxed(response_text)
        return None if boxed is None else checkers.normalize_math(boxed)
    if checker == "python_tests":
        lines = [line.rstrip() for line in checkers.extract_code(response_text).splitlines() if line.strip()]
        return "\n".join(lines) or None
    return None
