"""Train/test splits with no prompt shared between the two sides."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Hashable, Sequence

from ranker.tasks.families import Family, get_family
from ranker.tasks.problem import Problem


@dataclass(frozen=True)
class Split:
    """Disjoint train and test problems (no prompt appears in both)."""

    train: list[Problem]
    test: list[Problem]


def split(family: Family | str, n_train: int, n_test: int, seed: int = 0, difficulty: int | None = None) -> Split:
    """Draw `n_test` test and `n_train` train problems from a family, with disjoint prompts.

    One duplicate-free stream of `n_test + n_train` problems is generated; the test set
    is its head and the train set the rest. So, for a fixed `n_test` and `seed`, the test
    set does not change when `n_train` grows, and smaller train sets are prefixes of
    larger ones (handy for learning curves).
    """
    _check_sizes(n_train, n_test)
    if isinstance(family, str):
        family = get_family(family, difficulty)
    elif difficulty is not None:
        family = family.with_difficulty(difficulty)
    problems = family.generate(n_test + n_train, seed)
    return Split(train=problems[n_test:], test=problems[:n_test])


def split_problems(problems: Sequence[Problem], n_train: int, n_test: int, seed: int = 0) -> Split:
    """Shuffle a fixed pool (e.g. a benchmark) and cut it into disjoint train and test sets.

    Problems whose prompt was already seen are dropped first, so a prompt cannot land on
    both sides. Raises ValueError if fewer than `n_train + n_test` distinct prompts exist.
    """
    _check_sizes(n_train, n_test)
    unique = list({problem.prompt: problem for problem in reversed(problems)}.values())[::-1]
    if len(unique) < n_train + n_test:
        raise ValueError(
            f"need n_train + n_test = {n_train + n_test} distinct prompts, but the pool has only {len(unique)} "
            f"({len(problems)} problems before removing duplicates)"
        )
    random.Random(seed).shuffle(unique)
    return Split(train=unique[n_test:n_test + n_train], test=unique[:n_test])


def stratified_sample(
    problems: Sequence[Problem], n: int, key: Callable[[Problem], Hashable], seed: int = 0
) -> list[Problem]:
    """Pick `n` problems spread as evenly as possible over the groups given by `key`.

    E.g. the paper's MATH setup, uniform over subjects and levels:
    `stratified_sample(math, 1000, key=lambda p: (p.meta["subject"], p.meta["level"]))`.
    Groups are visited round-robin; a group that runs out is skipped.
    """
    if n < 0 or n > len(problems):
        raise ValueError(f"n must be between 0 and the number of problems ({len(problems)}), got {n}")
    rng = random.Random(seed)
    groups: dict[Hashable, list[Problem]] = defaultdict(list)
    for problem in problems:
        groups[key(problem)].append(problem)
    queues = [groups[group] for group in sorted(groups, key=repr)]
    for queue in queues:
        rng.shuffle(queue)
    chosen: list[Problem] = []
    while len(chosen) < n:
        for queue in queues:
            if queue and len(chosen) < n:
                chosen.append(queue.pop())
    return chosen


def _check_sizes(n_train: int, n_test: int) -> None:
    for label, value in (("n_train", n_train), ("n_test", n_test)):
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{label} must be a non-negative int, got {value!r}")
