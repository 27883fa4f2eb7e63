"""The verifiable task suite: problems, checkers, generated families, JSONL files and benchmarks.

Typical use:

    from ranker.tasks import FAMILIES, split, check
    data = split("arithmetic", n_train=500, n_test=200, seed=0)
    label = check(data.train[0], response_text)  # bool

Benchmark loaders live in `ranker.tasks.benchmarks` (they import `datasets` lazily).
"""

from ranker.tasks.families import FAMILIES, Family, get_family
from ranker.tasks.jsonl import load_tasks_file
from ranker.tasks.problem import CHECKERS, VERIFIABLE_CHECKERS, Problem, check, check_many, validate_answer
from ranker.tasks.split import Split, split, split_problems, stratified_sample

__all__ = [
    "CHECKERS", "FAMILIES", "VERIFIABLE_CHECKERS", "Family", "Problem", "Split",
    "check", "check_many", "get_family", "load_tasks_file", "split", "split_problems", "stratified_sample", "validate_answer",
]
