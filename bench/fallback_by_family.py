"""Does the fallback reach the families it never saw? Distances, shares and picks, per left-out family.

For every family F of a store: the instruction distances the fallback measures (raw cosine and
centred, `ranker.rankers.fallback`) of F's held-out half to support fitted on everything else, and of
all of F to support fitted without F; then the shipped ListRanker configuration trained without F
(`train_on_store`, one seed), its fallback's rule, each fallback candidate's pooled best-of-N on the
training side and its paired z against the weighted vote (`choose_fallback_weights`), the mean share
it gives F's prompts (training and held-out, as leave-one-family-out scores them), and best-of-N on
those prompts three ways: as fitted,
with the fallback switched off (share 0) and with every prompt fully on the fallback (share 1).

    PYTHONPATH=. .venv/bin/python bench/fallback_by_family.py --store data/suite --out assets/results/fallback_by_family.md
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.free_rules_by_family import markdown  # noqa: E402
from ranker.capture.feature_store import FeatureStore  # noqa: E402
from ranker.experiments.runners import _accuracy  # noqa: E402
from ranker.rankers.clustering import support_centroids  # noqa: E402
from ranker.rankers.estimator import LanguageRanker  # noqa: E402
from ranker.rankers.fallback import DistanceFallback, fit_support, ramp, support_distances  # noqa: E402
from ranker.rankers.store_training import train_on_store  # noqa: E402


def distance_rows(store: FeatureStore, layer: int, seed: int) -> list[dict]:
    """Per family: median distance of its odd-numbered prompts to support fitted on all other prompts
    (in domain), and of all its prompts to support fitted without the family (left out); raw and centred."""
    instructions = store.features(layer)[0].float()
    families = pd.Series(store.families)
    rows = []
    for family in families.unique():
        own = torch.tensor((families == family).to_numpy())
        held_in = own & (torch.arange(len(families)) % 2 == 1)
        for name, (held, train) in {"in domain": (held_in, ~held_in), "left out": (own, ~own)}.items():
            raw = support_distances(instructions[held], support_centroids(instructions[train], seed))
            centred = support_distances(instructions[held], *fit_support(instructions[train], seed))
            rows.append({"family": family, "prompts": name, "raw median": f"{raw.median():.4f}",
                         "centred median": f"{centred.median():.3f}",
                         "centred 10-90%": f"{centred.quantile(0.1):.3f}-{centred.quantile(0.9):.3f}"})
    return rows


def with_share(ranker: LanguageRanker, share: float) -> LanguageRanker:
    """A shallow copy of a fitted ranker whose fallback gives every instruction `share` (0 or 1)."""
    fallback = ranker.fusion_.fallback
    copied = copy.copy(ranker)
    copied.fusion_ = copy.copy(ranker.fusion_)
    copied.fusion_.fallback = None if share == 0 else DistanceFallback(fallback.weights, fallback.support, -1.0, -1.0, fallback.center)
    return copied


def share_rows(train: FeatureStore, test: FeatureStore, layer: int, seed: int) -> list[dict]:
    """Per left-out family: the fallback of the ListRanker trained without it, its share and best-of-N (%)."""
    rows = []
    for family in dict.fromkeys(train.families):
        rest = train.subset([i for i, f in enumerate(train.families) if f != family])
        ranker = train_on_store(rest, layer, kind="list", seed=seed)
        fallback = ranker.fusion_.fallback
        variants = {"as fitted": ranker}
        if fallback is not None:
            variants.update({"share 0": with_share(ranker, 0), "share 1": with_share(ranker, 1)})
        totals, prompts, shares = {}, 0, []
        for store in (train, test):
            held = store.subset([i for i, f in enumerate(store.families) if f == family])
            for name, value in _accuracy(held, variants, seed=seed).items():
                totals[name] = totals.get(name, 0.0) + value * len(held.problems)
            prompts += len(held.problems)
            if fallback is not None:
                shares += ramp(fallback.distances(held.features(layer)[0]), fallback.near, fallback.far).tolist()
        candidates = ranker.fusion_report_.get("fallback", {}).get("fallback_candidates", {})
        rows.append({"left-out family": family, "rule": "none" if fallback is None else
                     f"{ranker.fusion_report_['fallback']['fallback_choice']}, near {fallback.near:.3f}, far {fallback.far:.3f}",
                     "candidates: pooled (z vs the vote)": "; ".join(
                         f"{name} {c['pooled']:.4f}" + (f" ({c['z_vs_preferred']:.2f})" if name != "weighted_vote" and
                                                       "z_vs_preferred" in c else "")
                         for name, c in candidates.items()),
                     "mean share": f"{sum(shares) / len(shares):.2f}" if shares else "0",
                     **{name: 100 * totals[name] / prompts for name in (*variants, "logprob_vote", "max_logprob")}})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", default="data/suite", help="folder holding train/ and test/ (default data/suite)")
    parser.add_argument("--layer", type=int, default=18, help="hidden_states index (default 18, the shipped one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="also write the two tables to this markdown file")
    args = parser.parse_args(argv)
    train, test = (FeatureStore.load(Path(args.store) / split) for split in ("train", "test"))
    start = time.perf_counter()
    distances = pd.DataFrame(distance_rows(train, args.layer, args.seed))
    shares = pd.DataFrame(share_rows(train, test, args.layer, args.seed))
    header = (f"# {args.store}, layer {args.layer}, seed {args.seed}; {platform.machine()}, {platform.system()}, "
              f"{time.perf_counter() - start:.0f} s")
    text = "\n\n".join([header, markdown(distances), markdown(shares)])
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
