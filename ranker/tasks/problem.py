"""The unit of work of the task suite: one prompt, its reference answer and how to check it.

`Problem` is what every family generator, JSONL file and benchmark loader returns, and
`check(problem, response_text)` turns a sampled response into the binary label the
rankers train on.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence

from ranker.tasks import checkers

# Checkers that can label a response as correct or incorrect.
VERIFIABLE_CHECKERS: tuple[str, ...] = ("numeric", "exact", "json_call", "python_tests", "math")
# "none" marks problems without an automatic checker (Dolly): their labels are
# real-valued scores or preferences that come from elsewhere, never from `check`.
CHECKERS: tuple[str, ...] = VERIFIABLE_CHECKERS + ("none",)


@dataclass(frozen=True)
class Problem:
    """One prompt with a reference answer and the rule that checks responses to it.

    Equality and hashing use every field except `meta`, so two problems with the same
    prompt, answer, checker, tests and family are the same problem.
    """

    prompt: str  # the user message given to the model (chat template is applied elsewhere)
    answer: str  # reference answer; its format depends on `checker` (see `validate_answer`)
    checker: str  # one of CHECKERS
    tests: tuple[str, ...] = ()  # python_tests only: assert lines run after the extracted code
    family: str = ""  # generator family or benchmark name, e.g. "arithmetic", "gsm8k"
    meta: dict[str, Any] = field(default_factory=dict, compare=False)  # free-form provenance

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ValueError(f"prompt must be a non-empty string, got {self.prompt!r}")
        if not isinstance(self.answer, str):
            raise ValueError(f"answer must be a string, got {type(self.answer).__name__} {self.answer!r}")
        if self.checker not in CHECKERS:
            raise ValueError(f"checker must be one of {list(CHECKERS)}, got {self.checker!r}")
        # Accept any sequence of strings but store a tuple, so the problem stays hashable.
        if isinstance(self.tests, str) or not all(isinstance(t, str) for t in self.tests):
            raise ValueError(f"tests must be a sequence of strings, got {self.tests!r}")
        object.__setattr__(self, "tests", tuple(self.tests))
        validate_answer(self.checker, self.answer, self.tests)

    def check(self, response_text: str) -> bool:
        """Shortcut for `check(self, response_text)`."""
        return check(self, response_text)


def validate_answer(checker: str, answer: str, tests: tuple[str, ...] = ()) -> None:
    """Raise ValueError unless `answer` (and `tests`) can be checked by `checker`.

    - numeric: `answer` is one number (``-12``, ``1,234``, ``0.5``, ``3/4``).
    - json_call: `answer` is JSON: {"name": str, "arguments": dict} or a list of those.
    - python_tests: `tests` is non-empty (the answer is only a reference solution).
    - exact, math: `answer` is non-empty.
    - none: anything.
    """
    if checker == "numeric":
        if checkers.parse_number(answer) is None:
            raise ValueError(f"numeric answer must be a single number, got {answer!r}")
    elif checker == "json_call":
        checkers.parse_call_answer(answer)  # raises ValueError naming what is wrong
    elif checker == "python_tests":
        if not tests:
            raise ValueError("checker 'python_tests' needs at least one test (assert line), got none")
    elif checker in ("exact", "math"):
        if not answer.strip():
            raise ValueError(f"checker {checker!r} needs a non-empty answer, got {answer!r}")


def check(problem: Problem, response_text: str) -> bool:
    """Label `response_text` as a correct (True) or incorrect (False) answer to `problem`.

    Dispatches on `problem.checker`; see `ranker.tasks.checkers` for each rule.
    Raises ValueError for checker "none", which has no binary label.
    """
    if not isinstance(response_text, str):
        raise ValueError(f"response_text must be a string, got {type(response_text).__name__}")
    name = problem.checker
    if name == "numeric":
        return checkers.numeric(response_text, problem.answer)
    if name == "exact":
        return checkers.exact(response_text, problem.answer)
    if name == "json_call":
        return checkers.json_call(response_text, problem.answer)
    if name == "python_tests":
        return checkers.python_tests(response_text, problem.tests)
    if name == "math":
        return checkers.math_answer(response_text, problem.answer)
    if name == "none":
        raise ValueError(
            f"problem from family {problem.family!r} has checker 'none': it has no automatic "
            "correct/incorrect label; score it with real-valued or preference labels instead"
        )
    raise ValueError(f"unknown checker {name!r}; expected one of {list(CHECKERS)}")


def check_many(problem: Problem, responses: Sequence[str], max_workers: int = 8) -> list[bool]:
    """`check(problem, r)` for every response, in order.

    python_tests problems run their sandboxes in parallel threads (each thread only waits
    on a subprocess); other checkers are cheap and run in this thread.
    """
    if max_workers < 1:
        raise ValueError(f"max_workers must be >= 1, got {max_workers}")
    if problem.checker != "python_tests" or max_workers == 1 or len(responses) < 2:
        return [check(problem, response) for response in responses]
    with ThreadPoolExecutor(max_workers=min(max_workers, len(responses))) as pool:
        return list(pool.map(lambda response: check(problem, response), responses))
