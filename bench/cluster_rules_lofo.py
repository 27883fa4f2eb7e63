"""Clusters that may use a free rule instead of their fitted fusion weights: with and without, side by side.

`FusionConfig.cluster_rules` (ranker.rankers.fusion) lets an instruction cluster score with max mean
log-prob or the log-prob-weighted vote where that picks better than its fitted weights, if
cross-validation on the training queries says so. This trains the shipped configuration both ways on
the same store and seeds and prints, per family, best-of-16 in family (trained on the train store,
scored on the family's held-out prompts) and leave-one-family-out (`leave_one_family_out`), next to
the references of the generalisation claim, then the claim's verdict for each way.

    PYTHONPATH=. .venv/bin/python bench/cluster_rules_lofo.py --store data/suite --seeds 1 --out assets/results/cluster_rules_lofo.md
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.free_rules_by_family import markdown  # noqa: E402
from ranker.capture.feature_store import FeatureStore  # noqa: E402
from ranker.experiments.report import lofo_verdict_markdown  # noqa: E402
from ranker.experiments.runners import _accuracy, _fused_rankers, leave_one_family_out  # noqa: E402

VARIANTS = {"with cluster rules": {"fusion_cluster_rules": True}, "without": {"fusion_cluster_rules": False}}
REFERENCES = ("max_logprob", "max_self_certainty", "deepconf_high", "logprob_vote")


def in_family_rows(train: FeatureStore, test: FeatureStore, layer: int, seeds, kinds, hyperparams: dict) -> list[dict]:
    """family, method, seed, accuracy: rankers trained on all of `train`, best-of-N on each family's held-out prompts."""
    rows = []
    for seed in seeds:
        rankers = _fused_rankers(train, layer, seed, kinds, hyperparams)
        for family in sorted(set(test.families)):
            held = test.subset([i for i, f in enumerate(test.families) if f == family])
            rows += [{"family": family, "method": m, "seed": seed, "accuracy": a}
                     for m, a in _accuracy(held, rankers, seed=seed).items()]
    return rows


def per_family_table(results: dict[str, pd.DataFrame], methods: list[str]) -> pd.DataFrame:
    """Rows: each variant's rankers, then the references (the same in every variant); columns: families and mean (%)."""
    rows = {}
    for variant, frame in results.items():
        means = frame.groupby(["method", "family"]).accuracy.mean().unstack()
        for method in methods:
            if method in means.index:
                rows[f"{method}, {variant}"] = means.loc[method]
    first = next(iter(results.values())).groupby(["method", "family"]).accuracy.mean().unstack()
    for method in REFERENCES:
        if method in first.index:
            rows[method] = first.loc[method]
    table = pd.DataFrame(rows).T
    table["mean"] = table.mean(axis=1)
    return (100 * table).round(1)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="data/suite")
    parser.add_argument("--layer", type=int, default=18)
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0 .. seeds-1")
    parser.add_argument("--kinds", default="list", help="comma-separated: list, point")
    parser.add_argument("--out", help="also write the markdown here (and the rows beside it as .csv)")
    args = parser.parse_args(argv)
    train, test = FeatureStore.load(Path(args.store) / "train"), FeatureStore.load(Path(args.store) / "test")
    seeds, kinds = list(range(args.seeds)), tuple(args.kinds.split(","))
    methods = [f"{kind}_ranker" for kind in kinds]
    start, rows, parts = time.perf_counter(), [], []
    for setting in ("in family", "left out"):
        results = {}
        for variant, hyperparams in VARIANTS.items():
            if setting == "in family":
                frame = pd.DataFrame(in_family_rows(train, test, args.layer, seeds, kinds, hyperparams))
            else:
                frame = pd.DataFrame(leave_one_family_out(train, test, args.layer, seeds, kinds=kinds,
                                                          hyperparams=hyperparams)["lofo"])
            results[variant] = frame
            rows.append(frame.assign(setting=setting, variant=variant))
        table = per_family_table(results, methods)
        parts.append(f"## {setting}\n\n" + markdown(table.reset_index().rename(columns={"index": "method"})))
        if setting == "left out":
            parts += [f"### verdict, {variant}\n\n" + lofo_verdict_markdown(frame) for variant, frame in results.items()]
    head = (f"# {args.store}, layer {args.layer}, seeds {seeds}, {', '.join(kinds)}; "
            f"{platform.machine()}, {platform.system()}, {time.perf_counter() - start:.0f} s")
    text = "\n\n".join([head, *parts]) + "\n"
    print(text, end="")
    if args.out:
        Path(args.out).write_text(text)
        pd.concat(rows).to_csv(Path(args.out).with_suffix(".csv"), index=False)


if __name__ == "__main__":
    main()
