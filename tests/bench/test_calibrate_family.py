"""bench/calibrate_family.py: the solve rates, on hand-built candidates."""

from types import SimpleNamespace

from bench import calibrate_family as bench
from ranker.tasks import get_family


def result(*candidates: tuple[str, float]) -> SimpleNamespace:
    return SimpleNamespace(candidates=[SimpleNamespace(text=text, mean_logprob=lp) for text, lp in candidates])


def test_solve_rates_by_hand():
    first, second = get_family("phrased_arithmetic").generate(2, seed=0)
    right1, right2 = f"The answer is {first.answer}.", f"{second.answer}"
    results = [
        result((right1, -0.5), ("no idea", -0.1), (right1, -2.0)),  # 2 of 3 right; the best log-prob is wrong
        result(("7 or so", -3.0), (right2, -0.2), ("nothing", -1.0)),  # 1 of 3 right, and it has the best log-prob
    ]
    assert bench.solve_rates([first, second], results) == {"per_sample": 3 / 6, "oracle": 1.0, "max_logprob": 0.5}
