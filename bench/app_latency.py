"""How long a user of the launched app waits for the ranked list, and for the reward model's column.

    .venv/bin/python bench/app_latency.py [--requests 8] [--n 16] [--max-new-tokens 48] [--out assets/results/app_latency.json]

It starts the app (`python app.py`, embedded model, shipped ranker and RM (base)) as a child
process on 127.0.0.1 with a fresh data folder, sends one warm-up request, then `--requests`
generate calls one after another through gradio_client (`/generate`, as any API caller). The
event yields twice: the ranked list as soon as the ranker has scored the candidates, then the
same list with the RM's scores. For each request it measures, on the client, the time from
`submit` to each of the two outputs, and divides each by the request's own raw generation time:
the sampling time the app reports in its timing line (`generation 2.41 s`, from
`ranker.serving.best_of_n.rank_prompt`'s `generate_s`, the `model.generate` call with the
in-pass capture). It prints every request and the medians; the target for the ranked list is
<= 1.05. Every request goes to 127.0.0.1 and the loop is bounded by `--requests`. Run it alone:
a second torch process on 2 cores distorts the times.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from gradio_client import Client  # noqa: E402
from reliability import AppProcess  # noqa: E402  (bench/reliability.py: the app as a child process)

PROMPTS = (
    "What is 47 + 38? Answer with just the number.",
    "Name the capital of France in one word.",
    "Write a Python function that returns the square of x.",
    "Which is larger, 0.7 or 0.65? Answer with the number.",
    "List three primary colours, separated by commas.",
    "What day comes two days after Monday?",
    "How many letters are in the word 'banana'?",
    "Give a one-sentence definition of gravity.",
)
TARGET = 1.05
GENERATION_TIME = re.compile(r"generation (\d+(?:\.\d+)?) s")


def timed_request(client: Client, prompt: str, n: int, max_new_tokens: int, seed: int) -> dict:
    """One /generate call: seconds to each yielded output, the reported generation time, and what each output held."""
    start = time.perf_counter()
    job = client.submit(prompt, n, 1.0, 1.0, max_new_tokens, seed, "latest retrained", "default", api_name="/generate")
    arrivals = []
    for output in job:
        arrivals.append((time.perf_counter() - start, output))
    if len(arrivals) != 2:
        raise RuntimeError(f"expected two outputs (ranked list, then with the RM), got {len(arrivals)}: "
                           f"{[a[1][3] for a in arrivals]}")
    (ranked_s, ranked), (rm_s, final) = arrivals
    match = GENERATION_TIME.search(ranked[3])
    if match is None:
        raise RuntimeError(f"no generation time in the timing line {ranked[3]!r}")
    generate_s = float(match.group(1))
    return {
        "prompt": prompt, "generate_s": generate_s, "to_ranked_s": ranked_s, "to_rm_s": rm_s,
        "ranked_ratio": ranked_s / generate_s, "rm_ratio": rm_s / generate_s,
        "first_output_ranked": all(r["rank"] is not None for r in ranked[1]),
        "first_output_without_rm": all(r["rm_score"] is None for r in ranked[1]),
        "last_output_with_rm": all(r["rm_score"] is not None for r in final[1]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--out", type=Path, default=ROOT / "assets" / "results" / "app_latency.json")
    args = parser.parse_args(argv)
    if not 1 <= args.requests <= 64:
        parser.error(f"--requests must be 1..64, got {args.requests}")

    with tempfile.TemporaryDirectory(prefix="app-latency-") as tmp:
        app = AppProcess(Path(tmp) / "data", Path(tmp) / "app.log").start()
        try:
            client = Client(app.url, verbose=False)
            timed_request(client, PROMPTS[0], args.n, args.max_new_tokens, seed=999)  # warm-up: first-call costs
            rows = [timed_request(client, PROMPTS[k % len(PROMPTS)], args.n, args.max_new_tokens, seed=k)
                    for k in range(args.requests)]
        finally:
            app.kill()

    print(f"{'generation s':>12} {'to ranked s':>11} {'ratio':>6} {'to RM s':>8} {'ratio':>6}  prompt")
    for r in rows:
        print(f"{r['generate_s']:12.2f} {r['to_ranked_s']:11.2f} {r['ranked_ratio']:6.3f} {r['to_rm_s']:8.2f} "
              f"{r['rm_ratio']:6.3f}  {r['prompt'][:50]}")
    summary = {
        "median_ranked_ratio": statistics.median(r["ranked_ratio"] for r in rows),
        "max_ranked_ratio": max(r["ranked_ratio"] for r in rows),
        "median_rm_ratio": statistics.median(r["rm_ratio"] for r in rows),
        "every_first_output_ranked_without_rm": all(r["first_output_ranked"] and r["first_output_without_rm"] for r in rows),
        "every_last_output_with_rm": all(r["last_output_with_rm"] for r in rows),
    }
    print(f"time to the ranked list / generation: median {summary['median_ranked_ratio']:.3f}, "
          f"max {summary['max_ranked_ratio']:.3f} (target <= {TARGET})")
    print(f"time to the RM column / generation:   median {summary['median_rm_ratio']:.3f}")
    print(f"first output ranked, RM column empty: {summary['every_first_output_ranked_without_rm']}; "
          f"last output has the RM scores: {summary['every_last_output_with_rm']}")
    machine = f"{platform.machine()}, {__import__('os').cpu_count()} CPUs, {platform.python_version()}"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"script": "bench/app_latency.py", "machine": machine, "n": args.n,
                                    "max_new_tokens": args.max_new_tokens, "requests": rows, **summary}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if summary["median_ranked_ratio"] <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
