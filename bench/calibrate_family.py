"""How often does the base model solve a task family, per difficulty level? (Choosing a family's default level.)

Samples `--n` candidates for `--prompts` problems of each level (T=1, 48 new tokens, as the
suite's build) and prints per-sample accuracy, oracle@n and how often max mean log-prob picks
a right answer. The suite wants 5-70% per sample at the default level.

    python bench/calibrate_family.py phrased_arithmetic --levels 1,2,3,4,5
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ranker.capture.base_model import load_base_model  # noqa: E402
from ranker.capture.sampling import SamplingConfig, sample_candidates_batch  # noqa: E402
from ranker.tasks import check, get_family  # noqa: E402


def solve_rates(problems, results) -> dict[str, float]:
    """Per-sample accuracy, oracle@n and max-mean-log-prob accuracy of `results` (SampleResults) on `problems`."""
    samples = right = oracle = by_logprob = 0
    for problem, result in zip(problems, results, strict=True):
        correct = [check(problem, c.text) for c in result.candidates]
        samples, right, oracle = samples + len(correct), right + sum(correct), oracle + any(correct)
        best = max(range(len(correct)), key=lambda k: result.candidates[k].mean_logprob)
        by_logprob += correct[best]
    return {"per_sample": right / samples, "oracle": oracle / len(problems), "max_logprob": by_logprob / len(problems)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("family")
    parser.add_argument("--levels", default="1,2,3,4,5")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--seed", type=int, default=99, help="seed of the problems (sampling uses seed 0)")
    args = parser.parse_args()

    base = load_base_model("embedded")
    config = SamplingConfig(num_candidates=args.n, temperature=1.0, max_new_tokens=48, seed=0)
    print(f"{args.family}: {args.prompts} prompts x N={args.n} per level, {base.fingerprint.model_id}, "
          f"{platform.machine()} CPU")
    for level in (int(x) for x in args.levels.split(",")):
        problems = get_family(args.family, level).generate(args.prompts, seed=args.seed)
        results = sample_candidates_batch(base, [p.prompt for p in problems], config, layers=0.6)
        rates = solve_rates(problems, results)
        print(f"level {level}: per-sample {rates['per_sample']:.1%}, oracle@{args.n} {rates['oracle']:.0%}, "
              f"max log-prob {rates['max_logprob']:.0%}", flush=True)


if __name__ == "__main__":
    main()
