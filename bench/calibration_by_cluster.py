"""Is P(correct) calibrated per task family? The near Platt pair with and without per-cluster offsets.

For each seed: the shipped ListRanker configuration trained on STORE/train (`train_on_store`), its
calibration as fitted (by regime, with per-cluster offsets when the fusion has several clusters;
ranker.rankers.calibration, "By cluster"), and the same calibration refitted on the same examples
without the offsets (one near pair: what `fit` did before the offsets). Both are scored on every
candidate of STORE/test: ECE (10 equal-width bins), and per family the mean P(correct) against
the share of candidates that are right.

    PYTHONPATH=. .venv/bin/python bench/calibration_by_cluster.py --store data/suite --seeds 0,1,2 \\
        --out assets/results/calibration_by_cluster.md
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.free_rules_by_family import markdown  # noqa: E402
from ranker.capture.feature_store import FeatureStore  # noqa: E402
from ranker.evaluation.metrics import ece_of_bins, reliability_bins  # noqa: E402
from ranker.rankers.calibration import fit_calibration_by_regime  # noqa: E402
from ranker.rankers.estimator import LanguageRanker  # noqa: E402
from ranker.rankers.store_training import train_on_store  # noqa: E402


def fit_with_examples(train: FeatureStore, layer: int, seed: int) -> tuple[LanguageRanker, tuple]:
    """The shipped ListRanker and the calibration examples its fit saw (the fallback's regimes, or None)."""
    seen = {}
    original = LanguageRanker._fit_calibration

    def spy(self, queries, out_of_fold, regimes=None):
        seen["regimes"] = regimes
        return original(self, queries, out_of_fold, regimes)

    LanguageRanker._fit_calibration = spy
    try:
        ranker = train_on_store(train, layer, kind="list", seed=seed)
    finally:
        LanguageRanker._fit_calibration = original
    return ranker, seen.get("regimes")


def one_near_pair(regimes: tuple):
    """The calibration by regime refitted on the same examples without per-cluster offsets."""
    scores, shares, labels, _ = regimes
    sizes = torch.tensor([len(s) for s in scores])
    return fit_calibration_by_regime(torch.cat(scores), shares.double().repeat_interleave(sizes), torch.cat(labels))


def rows_for_seed(train: FeatureStore, test: FeatureStore, layer: int, seed: int) -> tuple[list[dict], list[dict]]:
    ranker, regimes = fit_with_examples(train, layer, seed)
    labels = test.labels().float()  # (P, n)
    variants = {"with offsets": ranker.probability_store(test)}
    if regimes is not None:
        scores = ranker.score_store(test)
        shares = ranker._fallback_shares(test.features(layer)[0].float(), scores)
        variants["one near pair"] = one_near_pair(regimes)(scores, shares)
    summary = [{"seed": seed, "clusters": ranker.fusion.num_clusters, "calibration": name,
                "held-out ECE": f"{ece_of_bins(reliability_bins(p.flatten(), labels.flatten())):.3f}"}
               for name, p in variants.items()]
    families = pd.Series(test.families)
    per_family = []
    for family in families.unique():
        rows = torch.tensor((families == family).to_numpy())
        per_family.append({"seed": seed, "family": family, "observed": f"{float(labels[rows].mean()):.3f}",
                           **{f"mean P, {name}": f"{float(p[rows].mean()):.3f}" for name, p in variants.items()}})
    return summary, per_family


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", default="data/suite", help="folder holding train/ and test/ (default data/suite)")
    parser.add_argument("--layer", type=int, default=18, help="hidden_states index (default 18, the shipped one)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds (default 0,1,2)")
    parser.add_argument("--out", help="also write the tables to this markdown file")
    args = parser.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    train, test = (FeatureStore.load(Path(args.store) / split) for split in ("train", "test"))
    start = time.perf_counter()
    summary, per_family = [], []
    for seed in seeds:
        s, f = rows_for_seed(train, test, args.layer, seed)
        summary += s
        per_family += f
    header = (f"# {args.store}, layer {args.layer}, ListRanker, seeds {seeds}; {platform.machine()}, "
              f"{platform.system()}, {time.perf_counter() - start:.0f} s")
    text = "\n\n".join([header, markdown(pd.DataFrame(summary)), markdown(pd.DataFrame(per_family))])
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
