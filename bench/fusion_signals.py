"""Which free signals should a ranker's score be fused with? (The ablation behind `ranker.rankers.fusion`.)

Four configurations of each ranker kind, trained with `ranker.rankers.store_training.train_on_store`:
- `hidden`: hidden states only (the paper's ranker, `fusion=False`);
- `logprob`: fused with the mean log-prob, one set of weights
  (`fusion_signals=("mean_logprob",), fusion_clusters=(1,)`);
- `logprob+vote`: fused with the mean log-prob and the vote share, one set of weights
  (`fusion_clusters=(1,)`);
- `logprob+vote, clustered`: the same, with weights per instruction cluster, the number of
  clusters cross-validated (the library default).

Two evaluations, printed as tables and written as one tidy CSV:
1. `cv`: 5-fold cross-validation on the TRAINING store alone (best-of-N of the training store's
   N on each held-out fold). This is the evidence the default was chosen on: it never reads the
   held-out store.
2. `held_out`: trained on the training store, evaluated on the held-out store at N in --ns,
   overall and on arithmetic, averaged over --seeds seeds x 5 draws of N candidates (each draw
   scored on its own). Max mean log-prob and majority vote on the same draws are in the rows too.

    .venv/bin/python bench/fusion_signals.py --store data/suite            # about 10 min on 2 cores
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ranker.capture.feature_store import FeatureStore  # noqa: E402
from ranker.capture.hidden_states import resolve_layer  # noqa: E402
from ranker.evaluation.selection import evaluate_selection  # noqa: E402
from ranker.evaluation.store_scores import subset_scorer
from ranker.rankers.fusion import fold_indices  # noqa: E402
from ranker.rankers.store_training import train_on_store  # noqa: E402

CONFIGS = {
    "hidden": {"fusion": False},
    "logprob": {"fusion_signals": ("mean_logprob",), "fusion_clusters": (1,)},
    "logprob+vote": {"fusion_clusters": (1,)},
    "logprob+vote, clustered": {},
}
FOCUS = "arithmetic"  # the family reported on its own beside "all"


def cross_validate(train: FeatureStore, layer: int, folds: int = 5) -> list[dict]:
    """Best-of-N on each held-out fold of the training store, per kind and configuration."""
    rows = []
    for kind, (name, extra) in ((k, c) for k in ("list", "point") for c in CONFIGS.items()):
        for fold, held in enumerate(fold_indices(len(train.problems), folds, seed=0)):
            rest = sorted(set(range(len(train.problems))) - set(held))
            ranker = train_on_store(train.subset(rest), layer, kind=kind, seed=0, **extra)
            test = train.subset(held)
            for part in ("all", FOCUS):
                index = [i for i, f in enumerate(test.families) if part in ("all", f)]
                subset = test.subset(index)
                accuracy = evaluate_selection(subset, {"ranker": subset_scorer(ranker, subset)})
                rows += [{"evaluation": "cv", "kind": kind, "config": name, "n": train.num_candidates, "part": part,
                          "seed": 0, "fold": fold, "prompts": len(index), "method": method, "accuracy": value}
                         for method, value in accuracy.items() if method in ("ranker", "max_logprob", "majority")]
        print(f"cv: {kind} {name} done", file=sys.stderr, flush=True)
    return rows


def held_out(train: FeatureStore, test: FeatureStore, layer: int, seeds: list[int], ns: list[int]) -> list[dict]:
    """Best-of-n on the held-out store, per kind, configuration, n and seed."""
    rows = []
    parts = {part: [i for i, f in enumerate(test.families) if part in ("all", f)] for part in ("all", FOCUS)}
    for kind, (name, extra), seed in ((k, c, s) for k in ("list", "point") for c in CONFIGS.items() for s in seeds):
        ranker = train_on_store(train, layer, kind=kind, seed=seed, **extra)
        for part, index in parts.items():
            subset = test.subset(index)
            for n in [n for n in ns if n <= test.num_candidates]:
                accuracy = evaluate_selection(subset, {"ranker": subset_scorer(ranker, subset)}, n=n, draws=5, seed=seed)
                rows += [{"evaluation": "held_out", "kind": kind, "config": name, "n": n, "part": part, "seed": seed,
                          "fold": -1, "prompts": len(index), "method": method, "accuracy": value}
                         for method, value in accuracy.items() if method in ("ranker", "max_logprob", "majority")]
        print(f"held-out: {kind} {name} seed {seed} done", file=sys.stderr, flush=True)
    return rows


def table(frame: pd.DataFrame) -> str:
    """Mean accuracy (%) per kind x configuration (rows) and n x part (columns), baselines last."""
    rankers = frame[frame.method == "ranker"].assign(row=lambda f: f.kind + " " + f.config)
    baselines = frame[(frame.method != "ranker") & (frame.kind == "list") & (frame.config == "hidden")].assign(row=lambda f: f.method)
    both = pd.concat([rankers, baselines])
    pivot = both.groupby(["row", "n", "part"]).accuracy.mean().unstack(["n", "part"]) * 100
    order = [f"{k} {c}" for k in ("list", "point") for c in CONFIGS] + ["max_logprob", "majority"]
    pivot = pivot.reindex(order)
    header = "| method | " + " | ".join(f"N={n} {part}" for n, part in pivot.columns) + " |"
    lines = [header, "|" + "---|" * (len(pivot.columns) + 1)]
    lines += ["| " + row + " | " + " | ".join(f"{v:.1f}" for v in values) + " |" for row, values in pivot.iterrows()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default="data/suite", help="folder holding train/ and test/ feature stores")
    parser.add_argument("--layer", type=float, default=0.6, help="ranker layer as a depth fraction (default 0.6)")
    parser.add_argument("--train-prompts-per-family", type=int, help="use only the first K training prompts of every family")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ns", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--skip-cv", action="store_true", help="only the held-out evaluation")
    parser.add_argument("--out", default="assets/results/fusion_signals.csv")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    train, test = FeatureStore.load(Path(args.store) / "train"), FeatureStore.load(Path(args.store) / "test")
    train = train.first_per_family(args.train_prompts_per_family)
    layer = resolve_layer(args.layer, train.model.num_layers)
    rows = [] if args.skip_cv else cross_validate(train, layer)
    rows += held_out(train, test, layer, args.seeds, args.ns)
    frame = pd.DataFrame(rows).assign(train_prompts=len(train.problems), layer=layer)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out, index=False)
    for evaluation in ("cv", "held_out"):
        part = frame[frame.evaluation == evaluation]
        if len(part):
            print(f"\n{evaluation}: best-of-N accuracy (%), {len(train.problems)} training prompts, layer {layer}")
            print(table(part))
    print(f"\nwrote {args.out} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
