"""Write a JSONL task file of integer + - * problems with operands in [--low, --high].

The suite's `arithmetic` family (level 1) has one-digit operands. This file is for checking a
result at another difficulty: with the defaults (operands 2-20, as the "+, -, x of small
numbers" probe in issue 3) the embedded model is right on about 10% of samples, against 20% at
level 1. Differences are never negative. Deterministic: the same arguments write the same file.

    .venv/bin/python bench/make_arithmetic_tasks.py --out bench/data/arithmetic_small20.jsonl
"""

from __future__ import annotations

import argparse
import json
import operator
import random
from pathlib import Path

OPERATORS = {"+": operator.add, "-": operator.sub, "*": operator.mul}


def make_tasks(count: int, low: int, high: int, seed: int, family: str) -> list[dict]:
    """`count` distinct problems, in the JSONL task format (`ranker.tasks.jsonl`)."""
    distinct = 3 * (high - low + 1) ** 2
    if low < 0 or high < low or count > distinct // 2:
        raise ValueError(f"cannot draw {count} distinct problems from operands {low}..{high}")
    rng, seen, tasks = random.Random(seed), set(), []
    while len(tasks) < count:
        symbol, a, b = rng.choice("+-*"), rng.randint(low, high), rng.randint(low, high)
        if symbol == "-" and b > a:
            a, b = b, a
        expression = f"{a} {symbol} {b}"
        if expression in seen:
            continue
        seen.add(expression)
        tasks.append({"prompt": f"What is {expression}? Answer with just the number.",
                      "answer": str(OPERATORS[symbol](a, b)), "checker": "numeric", "family": family})
    return tasks


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--low", type=int, default=2)
    parser.add_argument("--high", type=int, default=20)
    parser.add_argument("--seed", type=int, default=20261128)
    parser.add_argument("--family", default="arithmetic_small20")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    tasks = make_tasks(args.count, args.low, args.high, args.seed, args.family)
    Path(args.out).write_text("".join(json.dumps(task) + "\n" for task in tasks), encoding="utf-8")
    print(f"wrote {len(tasks)} problems to {args.out}")


if __name__ == "__main__":
    main()
