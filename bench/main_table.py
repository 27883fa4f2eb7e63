"""The experiment's main table on any built store pair, plus the shipped default rankers.

`python -m ranker experiment` reports the main table for the task suite. This runs the same
analysis (`ranker.experiments.runners.main_table`: ListRanker and PointRanker, fused and hidden-state
only, trained on STORE/train, best-of-16 on STORE/test, --seeds seeds x 5 draws) on another
store, for example one built from a task file, and scores the shipped rankers in
assets/rankers/ on the same draws when their features match the store's. Prints the table
and writes a tidy CSV.

Example, harder arithmetic than the suite's (operands 2-20; 26 min to build, 2 min here, on the
2-core dev machine):

    .venv/bin/python bench/make_arithmetic_tasks.py --out bench/data/arithmetic_small20.jsonl
    .venv/bin/python -m ranker build --tasks-file bench/data/arithmetic_small20.jsonl \\
        --n-train 240 --n-test 60 --n 16 --test-n 32 --layers 18 --out data/arithmetic_small20
    .venv/bin/python bench/main_table.py --store data/arithmetic_small20 \\
        --out assets/results/arithmetic_small20.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ranker.capture.feature_store import FeatureStore  # noqa: E402
from ranker.cli import DEFAULT_RANKERS  # noqa: E402
from ranker.evaluation.selection import evaluate_selection  # noqa: E402
from ranker.experiments.runners import DRAWS, MAIN_N, main_table  # noqa: E402
from ranker.rankers.estimator import LanguageRanker  # noqa: E402
from ranker.evaluation.store_scores import subset_scorer  # noqa: E402


def shipped_rows(test: FeatureStore, seeds: range) -> list[dict]:
    """Best-of-MAIN_N of each shipped ranker whose features (model, layer) the store has."""
    rows = []
    for name, folder in DEFAULT_RANKERS.items():
        ranker = LanguageRanker.load(folder)
        layer = ranker.fingerprint_.layer
        if layer not in test.layers:
            print(f"skipping shipped {name}: it reads layer {layer}, which this store did not record")
            continue
        try:
            ranker.fingerprint_.check_compatible(test.feature_fingerprint(layer), what=f"shipped {name}")
        except ValueError as error:
            print(f"skipping shipped {name}: {error}")
            continue
        for seed in seeds:
            accuracy = evaluate_selection(test, {f"shipped_{name}": subset_scorer(ranker, test)},
                                          n=min(MAIN_N, test.num_candidates), draws=DRAWS, seed=seed)
            rows.append({"family": "all", "method": f"shipped_{name}", "seed": seed, "accuracy": accuracy[f"shipped_{name}"]})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True, help="folder with train/ and test/ feature stores")
    parser.add_argument("--layer", type=int, default=None, help="hidden_states index (default: the store's first)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", required=True, help="CSV to write")
    args = parser.parse_args(argv)
    train, test = FeatureStore.load(Path(args.store) / "train"), FeatureStore.load(Path(args.store) / "test")
    layer = train.layers[0] if args.layer is None else args.layer
    seeds = range(args.seeds)
    rows = main_table(train, test, layer, seeds, log=print) + shipped_rows(test, seeds)
    table = pd.DataFrame(rows)
    table["layer"], table["train_prompts"], table["test_prompts"] = layer, len(train.problems), len(test.problems)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    summary = table.groupby(["family", "method"])["accuracy"].agg(["mean", "std"]).mul(100).round(1)
    print(f"\nbest-of-{min(MAIN_N, test.num_candidates)} on {len(test.problems)} held-out prompts, "
          f"trained on {len(train.problems)}, layer {layer}, {args.seeds} seeds x {DRAWS} draws")
    print(summary.to_string())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
