"""`code`: tiny Python functions checked by assert lines (checker: python_tests).

An MBPP analogue. Each template writes a prompt and a reference solution; the expected
values in the asserts come from running that reference solution here, so the prompt, the
solution and the tests cannot drift apart. `Problem.answer` holds the reference solution.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from typing import Any, Callable

from ranker.tasks.families.base import Family
from ranker.tasks.problem import Problem

FORMAT_INSTRUCTION = "Reply with only the code in a ```python block."
NUM_TESTS = 3
WORDS = ["apple", "banana", "level", "python", "river", "noon", "table", "green", "stats", "robot", "kayak", "moon"]
VARIABLES = ["x", "n", "num", "value"]


@dataclass(frozen=True)
class CodeSpec:
    """One function to write: what the prompt asks, a solution, and how to draw inputs."""

    function: str  # function name
    parameters: str  # e.g. "a, b"
    task: str  # completes "... that <task>."
    solution: str  # reference implementation (defines `function`)
    draw_inputs: Callable[[random.Random], tuple]  # one tuple of arguments


def _ints(low: int, high: int, size: int) -> Callable[[random.Random], tuple]:
    return lambda rng: tuple(rng.randint(low, high) for _ in range(size))


def _int_list(low: int = -20, high: int = 50) -> Callable[[random.Random], tuple]:
    return lambda rng: ([rng.randint(low, high) for _ in range(rng.randint(1, 6))],)


def _word(rng: random.Random) -> tuple:
    return (rng.choice(WORDS),)


def _sentence(rng: random.Random) -> tuple:
    return (" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 5))),)


# ---- level 1: one arithmetic operation -------------------------------------------------

def _add_constant(rng: random.Random) -> CodeSpec:
    k, x, name = rng.randint(2, 60), rng.choice(VARIABLES), rng.choice(["add_k", "increase", "plus"])
    return CodeSpec(name, x, f"returns {x} plus {k}", f"def {name}({x}):\n    return {x} + {k}\n", _ints(-50, 100, 1))


def _multiply_constant(rng: random.Random) -> CodeSpec:
    k, x, name = rng.randint(2, 60), rng.choice(VARIABLES), rng.choice(["scale", "multiply", "times_k"])
    return CodeSpec(name, x, f"returns {x} multiplied by {k}", f"def {name}({x}):\n    return {x} * {k}\n",
                    _ints(-50, 100, 1))


def _subtract_constant(rng: random.Random) -> CodeSpec:
    k, x, name = rng.randint(2, 60), rng.choice(VARIABLES), rng.choice(["decrease", "minus", "subtract_k"])
    return CodeSpec(name, x, f"returns {x} minus {k}", f"def {name}({x}):\n    return {x} - {k}\n", _ints(-50, 100, 1))


_TWO_ARGUMENT = [
    ("add", "returns a + b", "a + b"),
    ("add_numbers", "returns the sum of a and b", "a + b"),
    ("multiply", "returns a * b", "a * b"),
    ("product", "returns the product of a and b", "a * b"),
    ("subtract", "returns a - b", "a - b"),
    ("difference", "returns a minus b", "a - b"),
    ("larger", "returns the larger of a and b", "max(a, b)"),
    ("smaller", "returns the smaller of a and b", "min(a, b)"),
]


def _two_argument(rng: random.Random) -> CodeSpec:
    name, task, expression = rng.choice(_TWO_ARGUMENT)
    return CodeSpec(name, "a, b", task, f"def {name}(a, b):\n    return {expression}\n", _ints(-30, 99, 2))


# ---- level 2: one operation on strings, lists or booleans ------------------------------

def _divisible(rng: random.Random) -> CodeSpec:
    k, x = rng.randint(2, 25), rng.choice(VARIABLES)
    return CodeSpec("is_divisible", x, f"returns True if {x} is divisible by {k}, otherwise False",
                    f"def is_divisible({x}):\n    return {x} % {k} == 0\n",
                    lambda r: (r.randint(1, 20) * k if r.random() < 0.5 else r.randint(1, 300),))


def _repeat(rng: random.Random) -> CodeSpec:
    k = rng.randint(2, 9)
    return CodeSpec("repeat", "s", f"returns the string s repeated {k} times",
                    f"def repeat(s):\n    return s * {k}\n", _word)


def _count_letter(rng: random.Random) -> CodeSpec:
    letter = rng.choice("aeiolnrst")
    return CodeSpec("count_letter", "s", f"returns how many times the letter '{letter}' appears in the string s",
                    f"def count_letter(s):\n    return s.count({letter!r})\n", _sentence)


def _count_greater(rng: random.Random) -> CodeSpec:
    k = rng.randint(0, 40)
    return CodeSpec("count_greater", "lst", f"returns how many numbers in the list lst are greater than {k}",
                    f"def count_greater(lst):\n    return sum(1 for x in lst if x > {k})\n", _int_list())


def _add_suffix(rng: random.Random) -> CodeSpec:
    suffix = rng.choice(["!", "?", "ing", "_done", "123", "s", "!!"])
    return CodeSpec("add_suffix", "s", f"returns the string s followed by '{suffix}'",
                    f"def add_suffix(s):\n    return s + {suffix!r}\n", _word)


def _greater_than(rng: random.Random) -> CodeSpec:
    k, x = rng.randint(0, 100), rng.choice(VARIABLES)
    return CodeSpec("is_greater", x, f"returns True if {x} is greater than {k}, otherwise False",
                    f"def is_greater({x}):\n    return {x} > {k}\n",
                    lambda r: (r.choice([k, k + 1, r.randint(-20, 150)]),))


def _remainder(rng: random.Random) -> CodeSpec:
    k, x = rng.randint(2, 30), rng.choice(VARIABLES)
    return CodeSpec("remainder", x, f"returns the remainder when the non-negative integer {x} is divided by {k}",
                    f"def remainder({x}):\n    return {x} % {k}\n", _ints(0, 500, 1))


def _append_value(rng: random.Random) -> CodeSpec:
    k = rng.randint(0, 99)
    return CodeSpec("append_value", "lst", f"returns the list lst with the number {k} added at the end",
                    f"def append_value(lst):\n    return lst + [{k}]\n", _int_list())


def _starts_with(rng: random.Random) -> CodeSpec:
    letter = rng.choice(string.ascii_lowercase)
    return CodeSpec("starts_with", "s", f"returns True if the string s starts with the letter '{letter}', otherwise False",
                    f"def starts_with(s):\n    return s.startswith({letter!r})\n",
                    lambda r: (r.choice([letter + r.choice(WORDS), r.choice(WORDS)]),))


_SIMPLE = [
    ("sum_list", "lst", "returns the sum of the numbers in the list lst", "sum(lst)", _int_list()),
    ("first_element", "lst", "returns the first element of the list lst", "lst[0]", _int_list()),
    ("last_element", "lst", "returns the last element of the list lst", "lst[-1]", _int_list()),
    ("string_length", "s", "returns the length of the string s", "len(s)", _sentence),
    ("to_upper", "s", "returns the string s in upper case", "s.upper()", _word),
    ("reverse_string", "s", "returns the string s reversed", "s[::-1]", _word),
    ("is_even", "n", "returns True if n is even, otherwise False", "n % 2 == 0", _ints(-50, 100, 1)),
    ("absolute", "n", "returns the absolute value of n", "abs(n)", _ints(-99, 99, 1)),
]


def _simple(rng: random.Random) -> CodeSpec:
    name, parameters, task, expression, inputs = rng.choice(_SIMPLE)
    return CodeSpec(name, parameters, task, f"def {name}({parameters}):\n    return {expression}\n", inputs)


# ---- level 3: two steps or a condition -------------------------------------------------

def _affine(rng: random.Random) -> CodeSpec:
    k1, k2, x = rng.randint(2, 12), rng.randint(1, 50), rng.choice(VARIABLES)
    return CodeSpec("affine", x, f"returns {x} multiplied by {k1}, plus {k2}",
                    f"def affine({x}):\n    return {x} * {k1} + {k2}\n", _ints(-30, 60, 1))


def _threshold(rng: random.Random) -> CodeSpec:
    k, x = rng.randint(0, 100), rng.choice(VARIABLES)
    return CodeSpec("size_label", x, f"returns 'big' if {x} is greater than {k}, otherwise 'small'",
                    f"def size_label({x}):\n    return 'big' if {x} > {k} else 'small'\n",
                    lambda r: (r.choice([k, k + 1, r.randint(-20, 150)]),))


def _scale_list(rng: random.Random) -> CodeSpec:
    k = rng.randint(2, 12)
    return CodeSpec("scale_list", "lst", f"returns a new list with every number of the list lst multiplied by {k}",
                    f"def scale_list(lst):\n    return [x * {k} for x in lst]\n", _int_list())


def _remove_value(rng: random.Random) -> CodeSpec:
    k = rng.randint(0, 9)
    return CodeSpec("remove_value", "lst", f"returns the list lst without the numbers equal to {k}, in the same order",
                    f"def remove_value(lst):\n    return [x for x in lst if x != {k}]\n",
                    lambda r: ([r.choice([k, r.randint(0, 9)]) for _ in range(r.randint(1, 7))],))


_CONDITIONAL = [
    ("sum_even", "lst", "returns the sum of the even numbers in the list lst", "sum(x for x in lst if x % 2 == 0)"),
    ("spread", "lst", "returns the largest number in the list lst minus the smallest", "max(lst) - min(lst)"),
    ("count_negative", "lst", "returns how many numbers in the list lst are negative", "sum(1 for x in lst if x < 0)"),
    ("max_abs", "lst", "returns the largest absolute value of the numbers in the list lst", "max(abs(x) for x in lst)"),
]


def _conditional(rng: random.Random) -> CodeSpec:
    name, parameters, task, expression = rng.choice(_CONDITIONAL)
    return CodeSpec(name, parameters, task, f"def {name}({parameters}):\n    return {expression}\n", _int_list())


# ---- level 4: loops ----------------------------------------------------------------------

def _sum_multiples(rng: random.Random) -> CodeSpec:
    k, x = rng.randint(2, 9), rng.choice(VARIABLES)
    return CodeSpec("sum_multiples", x, f"returns the sum of the numbers from 1 to {x} that are divisible by {k}",
                    f"def sum_multiples({x}):\n    return sum(i for i in range(1, {x} + 1) if i % {k} == 0)\n",
                    _ints(1, 60, 1))


def _sum_powers(rng: random.Random) -> CodeSpec:
    p, x = rng.randint(1, 5), rng.choice(VARIABLES)
    return CodeSpec("sum_powers", x, f"returns 1**{p} + 2**{p} + ... + {x}**{p} (0 when {x} is 0)",
                    f"def sum_powers({x}):\n    return sum(i ** {p} for i in range(1, {x} + 1))\n", _ints(0, 12, 1))


def _multiples_list(rng: random.Random) -> CodeSpec:
    k, x = rng.randint(2, 15), rng.choice(VARIABLES)
    return CodeSpec("multiples", x, f"returns a list of the first {x} multiples of {k}, starting with {k}",
                    f"def multiples({x}):\n    return [{k} * i for i in range(1, {x} + 1)]\n", _ints(0, 8, 1))


def _digits_greater(rng: random.Random) -> CodeSpec:
    k, x = rng.randint(0, 8), rng.choice(VARIABLES)
    return CodeSpec("digits_greater", x, f"returns how many digits of the non-negative integer {x} are greater than {k}",
                    f"def digits_greater({x}):\n    return sum(1 for d in str({x}) if int(d) > {k})\n",
                    _ints(0, 999999, 1))


def _sum_range(rng: random.Random) -> CodeSpec:
    a, x = rng.randint(1, 20), rng.choice(VARIABLES)
    return CodeSpec("sum_range", x, f"returns the sum of the integers from {a} to {x}, both included "
                    f"(0 when {x} is smaller than {a})",
                    f"def sum_range({x}):\n    return sum(range({a}, {x} + 1))\n", _ints(0, 60, 1))


def _divisible_list(rng: random.Random) -> CodeSpec:
    k, x = rng.randint(2, 9), rng.choice(VARIABLES)
    return CodeSpec("divisible_list", x, f"returns a list of the numbers from 1 to {x} that are divisible by {k}",
                    f"def divisible_list({x}):\n    return [i for i in range(1, {x} + 1) if i % {k} == 0]\n",
                    _ints(0, 40, 1))


def _last_digit_count(rng: random.Random) -> CodeSpec:
    d, x = rng.randint(0, 9), rng.choice(VARIABLES)
    return CodeSpec("count_ending", x, f"returns how many numbers from 1 to {x} have {d} as their last digit",
                    f"def count_ending({x}):\n    return sum(1 for i in range(1, {x} + 1) if i % 10 == {d})\n",
                    _ints(0, 100, 1))


def _repeat_chars(rng: random.Random) -> CodeSpec:
    k = rng.randint(2, 6)
    return CodeSpec("repeat_chars", "s", f"returns the string s with each of its characters repeated {k} times",
                    f"def repeat_chars(s):\n    return ''.join(c * {k} for c in s)\n", _word)


# (name, task, solution) with `x` standing for the parameter name, drawn from VARIABLES.
_NUMBER_LOOPS: list[tuple[str, Callable[[str], str], Callable[[str], str], Callable[[random.Random], tuple]]] = [
    ("factorial", lambda x: f"returns the factorial of {x} (factorial(0) is 1)",
     lambda x: f"def factorial({x}):\n    result = 1\n    for i in range(2, {x} + 1):\n        result *= i\n"
               "    return result\n", _ints(0, 10, 1)),
    ("fibonacci", lambda x: f"returns the {x}-th Fibonacci number, where fibonacci(0) is 0 and fibonacci(1) is 1",
     lambda x: f"def fibonacci({x}):\n    a, b = 0, 1\n    for _ in range({x}):\n        a, b = b, a + b\n"
               "    return a\n", _ints(0, 20, 1)),
    ("digit_sum", lambda x: f"returns the sum of the digits of the non-negative integer {x}",
     lambda x: f"def digit_sum({x}):\n    return sum(int(d) for d in str({x}))\n", _ints(0, 99999, 1)),
    ("squares", lambda x: f"returns a list of the squares of the numbers from 1 to {x}",
     lambda x: f"def squares({x}):\n    return [i * i for i in range(1, {x} + 1)]\n", _ints(0, 8, 1)),
]


def _number_loop(rng: random.Random) -> CodeSpec:
    name, task, solution, inputs = rng.choice(_NUMBER_LOOPS)
    x = rng.choice(VARIABLES)
    return CodeSpec(name, x, task(x), solution(x), inputs)


_STRING_LOOPS = [
    ("count_vowels", "s", "returns the number of vowels (a, e, i, o, u) in the string s",
     "def count_vowels(s):\n    return sum(1 for c in s if c in 'aeiou')\n", _sentence),
    ("is_palindrome", "s", "returns True if the string s reads the same backwards, otherwise False",
     "def is_palindrome(s):\n    return s == s[::-1]\n", _word),
    ("count_words", "s", "returns the number of words in the string s (words are separated by spaces)",
     "def count_words(s):\n    return len(s.split())\n", _sentence),
]


def _string_loop(rng: random.Random) -> CodeSpec:
    return CodeSpec(*rng.choice(_STRING_LOOPS))


# ---- level 5: small algorithms -----------------------------------------------------------

def _caesar(rng: random.Random) -> CodeSpec:
    k = rng.randint(1, 25)
    return CodeSpec("caesar", "s", f"shifts every lowercase letter of the string s {k} places forward in the "
                    "alphabet (wrapping from z to a), leaves other characters unchanged, and returns the result",
                    f"def caesar(s):\n    return ''.join(chr((ord(c) - 97 + {k}) % 26 + 97) if 'a' <= c <= 'z' "
                    "else c for c in s)\n", _sentence)


def _fizzbuzz(rng: random.Random) -> CodeSpec:
    a, b = rng.sample(range(2, 8), 2)
    return CodeSpec("fizzbuzz", "n", f"returns a list of the numbers from 1 to n as strings, except that multiples "
                    f"of both {a} and {b} become 'FizzBuzz', other multiples of {a} become 'Fizz' and other "
                    f"multiples of {b} become 'Buzz'",
                    f"def fizzbuzz(n):\n    out = []\n    for i in range(1, n + 1):\n"
                    f"        if i % {a} == 0 and i % {b} == 0:\n            out.append('FizzBuzz')\n"
                    f"        elif i % {a} == 0:\n            out.append('Fizz')\n"
                    f"        elif i % {b} == 0:\n            out.append('Buzz')\n"
                    f"        else:\n            out.append(str(i))\n    return out\n", _ints(1, 16, 1))


def _rotate(rng: random.Random) -> CodeSpec:
    k = rng.randint(1, 4)
    return CodeSpec("rotate_left", "lst", f"returns the list lst rotated left by {k} (the first {k} elements move "
                    "to the end, in order); lst has more than {k} elements".replace("{k}", str(k)),
                    f"def rotate_left(lst):\n    return lst[{k}:] + lst[:{k}]\n",
                    lambda r: ([r.randint(0, 30) for _ in range(r.randint(k + 1, k + 5))],))


def _kth_smallest(rng: random.Random) -> CodeSpec:
    k = rng.randint(1, 4)
    return CodeSpec("kth_smallest", "lst", f"returns the number at position {k} when the list lst is sorted in "
                    f"increasing order, counting from 1; lst has at least {k} elements",
                    f"def kth_smallest(lst):\n    return sorted(lst)[{k - 1}]\n",
                    lambda r: ([r.randint(-20, 40) for _ in range(r.randint(k, k + 5))],))


def _digit_occurrences(rng: random.Random) -> CodeSpec:
    d, x = rng.randint(0, 9), rng.choice(VARIABLES)
    return CodeSpec("digit_occurrences", x, f"returns how many times the digit {d} is written in total when all "
                    f"numbers from 1 to {x} are written out",
                    f"def digit_occurrences({x}):\n    return sum(str(i).count('{d}') for i in range(1, {x} + 1))\n",
                    _ints(1, 120, 1))


def _indices_above(rng: random.Random) -> CodeSpec:
    k = rng.randint(0, 30)
    return CodeSpec("indices_above", "lst", f"returns a list of the positions (starting at 0) of the numbers in the "
                    f"list lst that are greater than {k}",
                    f"def indices_above(lst):\n    return [i for i, x in enumerate(lst) if x > {k}]\n", _int_list())


_NUMBER_ALGORITHMS: list[tuple[str, Callable[[str], str], Callable[[str], str], Callable[[random.Random], tuple]]] = [
    ("is_prime", lambda x: f"returns True if {x} is a prime number, otherwise False",
     lambda x: f"def is_prime({x}):\n    if {x} < 2:\n        return False\n"
               f"    return all({x} % d for d in range(2, int({x} ** 0.5) + 1))\n", _ints(0, 100, 1)),
    ("primes_below", lambda x: f"returns a list of the prime numbers smaller than {x}, in increasing order",
     lambda x: f"def primes_below({x}):\n    return [p for p in range(2, {x}) "
               "if all(p % d for d in range(2, int(p ** 0.5) + 1))]\n", _ints(0, 40, 1)),
    ("reverse_digits", lambda x: f"returns the integer whose digits are those of the positive integer {x} "
                                 "in reverse order (reverse_digits(120) is 21)",
     lambda x: f"def reverse_digits({x}):\n    return int(str({x})[::-1])\n", _ints(1, 99999, 1)),
    ("collatz_steps", lambda x: f"returns how many steps the Collatz rule (halve if even, else 3 * {x} + 1) "
                                f"takes to bring the positive integer {x} down to 1",
     lambda x: f"def collatz_steps({x}):\n    steps = 0\n    while {x} != 1:\n"
               f"        {x} = {x} // 2 if {x} % 2 == 0 else 3 * {x} + 1\n        steps += 1\n    return steps\n",
     _ints(1, 50, 1)),
    ("sum_primes", lambda x: f"returns the sum of the prime numbers smaller than {x}",
     lambda x: f"def sum_primes({x}):\n    return sum(p for p in range(2, {x}) "
               "if all(p % d for d in range(2, int(p ** 0.5) + 1)))\n", _ints(0, 60, 1)),
    ("is_square", lambda x: f"returns True if the non-negative integer {x} is a perfect square, otherwise False",
     lambda x: f"def is_square({x}):\n    return int({x} ** 0.5) ** 2 == {x}\n",
     lambda r: (r.choice([r.randint(0, 30) ** 2, r.randint(0, 900)]),)),
    ("divisors", lambda x: f"returns a list of the divisors of the positive integer {x}, in increasing order",
     lambda x: f"def divisors({x}):\n    return [d for d in range(1, {x} + 1) if {x} % d == 0]\n",
     _ints(1, 100, 1)),
    ("to_binary", lambda x: f"returns the binary representation of the positive integer {x} as a string, "
                            "without the '0b' prefix",
     lambda x: f"def to_binary({x}):\n    return bin({x})[2:]\n", _ints(1, 1000, 1)),
]


def _number_algorithm(rng: random.Random) -> CodeSpec:
    name, task, solution, inputs = rng.choice(_NUMBER_ALGORITHMS)
    x = rng.choice(VARIABLES)
    return CodeSpec(name, x, task(x), solution(x), inputs)


_OTHER_ALGORITHMS = [
    ("gcd", "a, b", "returns the greatest common divisor of the positive integers a and b",
     "def gcd(a, b):\n    while b:\n        a, b = b, a % b\n    return a\n", _ints(1, 120, 2)),
    ("second_largest", "lst", "returns the second largest distinct number in the list lst",
     "def second_largest(lst):\n    return sorted(set(lst))[-2]\n",
     lambda r: (r.sample(range(-20, 60), r.randint(2, 6)),)),
    ("reverse_words", "s", "returns the string s with the order of its words reversed, separated by single spaces",
     "def reverse_words(s):\n    return ' '.join(s.split()[::-1])\n", _sentence),
    ("word_counts", "s", "returns a dict that maps each word of the string s to how many times it appears",
     "def word_counts(s):\n    counts = {}\n    for w in s.split():\n        counts[w] = counts.get(w, 0) + 1\n"
     "    return counts\n", _sentence),
    ("remove_vowels", "s", "returns the string s with every vowel (a, e, i, o, u) removed",
     "def remove_vowels(s):\n    return ''.join(c for c in s if c not in 'aeiou')\n", _sentence),
    ("unique", "lst", "returns the list lst without repeated numbers, keeping the first occurrence of each, in order",
     "def unique(lst):\n    seen = []\n    for x in lst:\n        if x not in seen:\n            seen.append(x)\n"
     "    return seen\n", lambda r: ([r.randint(0, 6) for _ in range(r.randint(1, 8))],)),
]


def _other_algorithm(rng: random.Random) -> CodeSpec:
    return CodeSpec(*rng.choice(_OTHER_ALGORITHMS))


# difficulty -> template builders
LEVELS: dict[int, list[Callable[[random.Random], CodeSpec]]] = {
    1: [_add_constant, _multiply_constant, _subtract_constant, _two_argument],
    2: [_divisible, _repeat, _count_letter, _count_greater, _add_suffix, _simple, _greater_than, _remainder,
        _append_value, _starts_with],
    3: [_affine, _threshold, _scale_list, _remove_value, _conditional],
    4: [_sum_multiples, _sum_powers, _multiples_list, _digits_greater, _repeat_chars, _number_loop, _string_loop,
        _sum_range, _divisible_list, _last_digit_count],
    5: [_caesar, _fizzbuzz, _rotate, _kth_smallest, _number_algorithm, _other_algorithm, _digit_occurrences,
        _indices_above],
}


def run_reference(solution: str, function: str, arguments: tuple) -> Any:
    """Call the reference solution (our own trusted code) on `arguments`."""
    namespace: dict[str, Any] = {}
    exec(solution, namespace)  # noqa: S102 - trusted, written in this module
    return namespace[function](*arguments)


@dataclass(frozen=True)
class Code(Family):
    """Write a small Python function; it must pass 3 generated assert lines.

    Difficulty levels:
      1. one arithmetic operation ("returns x plus 7", "returns a + b") (default)
      2. one operation on a string, list or bool ("returns the string s repeated 3 times")
      3. two steps or a condition ("returns the sum of the even numbers in lst")
      4. a loop (factorial, Fibonacci, digit sums)
      5. a small algorithm (primes, gcd, word counts)
    Distinct prompts per level, roughly: 2100, 800, 2600, 320, 170; `generate` raises
    ValueError when asked for more.
    """

    difficulty: int = 1

    name = "code"
    description = "MBPP-like: write a tiny Python function; checked by assert lines in a sandbox."

    def sample(self, rng: random.Random) -> Problem:
        spec = rng.choice(LEVELS[self.difficulty])(rng)
        tests: list[str] = []
        for _ in range(4 * NUM_TESTS):  # a few extra draws in case inputs repeat
            arguments = spec.draw_inputs(rng)
            line = f"assert {spec.function}({', '.join(map(repr, arguments))}) == " \
                   f"{run_reference(spec.solution, spec.function, arguments)!r}"
            if line not in tests:
                tests.append(line)
            if len(tests) == NUM_TESTS:
                break
        prompt = f"Write a Python function {spec.function}({spec.parameters}) that {spec.task}. {FORMAT_INSTRUCTION}"
        return Problem(prompt=prompt, answer=spec.solution, checker="python_tests", tests=tuple(tests),
                       meta={"function": spec.function})
