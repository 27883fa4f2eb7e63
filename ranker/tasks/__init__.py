"""The verifiable task suite: problems, checkers, generated families, JSONL files and benchmarks.

Typical use:

    from ranker.tasks import check, load_benchmark, split
    data = split("arithmetic", n_train=500, n_test=200, seed=0)
    label = check(data.train[0], response_text)  # bool

    problems = load_benchmark("gsm8k", split="test", limit=200)  # MATH, GSM8K, MBPP, xLAM, Dolly

`load_benchmark` reads through `datasets`, which it imports only when called.
"""

from ranker.tasks.benchmarks import BENCHMARKS, load_benchmark
from ranker.tasks.families import FAMILIES, Family, get_family
from ranker.tasks.jsonl import load_tasks_file
from ranker.tasks.problem import CHECKERS, VERIFIABLE_CHECKERS, Problem, check, check_many, validate_answer
from ranker.tasks.split import Split, split, split_problems, stratified_sample

__all__ = [
    "BENCHMARKS", "CHECKERS", "FAMILIES", "VERIFIABLE_CHECKERS", "Family", "Problem", "Split",
    "check", "check_many", "get_family", "load_benchmark", "load_tasks_file", "split", "split_problems",
    "stratified_sample", "validate_answer",
]
