"""Thread-safe `ast.parse` and `ast.literal_eval` for the checkers and the sandbox.

CPython 3.11 keeps the AST constructor's recursion depth in per-interpreter state, and
converting a parse tree to Python objects can switch threads (a garbage collection runs
finalisers). Two threads parsing at once can then fail with "SystemError: AST constructor
recursion depth mismatch" (python/cpython gh-106905, fixed in 3.12). The code checker parses
in a thread pool (`ranker.tasks.problem.check_many`) and the app checks answers from several
request threads, so every parse of ours goes through one lock. Parses are short (test lines,
one reply value, one answer snippet), so the lock costs nothing that shows.
"""

from __future__ import annotations

import ast
import threading

_PARSE_LOCK = threading.Lock()


def parse(source: str, mode: str = "exec") -> ast.AST:
    """`ast.parse(source, mode=mode)`, one thread at a time (SyntaxError as ast raises it)."""
    with _PARSE_LOCK:
        return ast.parse(source, mode=mode)


def literal_eval(source: str):
    """`ast.literal_eval(source)` for a string, one thread at a time (ValueError etc. as ast raises them)."""
    tree = parse(source.lstrip(" \t"), mode="eval")  # the stripping ast.literal_eval does on a str
    return ast.literal_eval(tree)
