"""The paper's analyses, reproduced on feature stores. Each returns tidy rows (one dict per measurement).

All experiments read a train store and a held-out test store built with `ranker.capture.store_builder`
(several layers recorded in the same pass, so the layer ablation needs no re-sampling), train
rankers with several seeds, and score them with `ranker.evaluation.selection` on the same candidates as
the baselines: a ranker scores each drawn N-subset on its own (`ranker.evaluation.store_scores.subset_scorer`),
because the ListRanker and the fused vote share depend on which candidates are in the list.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping, Sequence

import torch

from ranker.capture.feature_store import FeatureStore
from ranker.evaluation.metrics import ece_of_bins, reliability_bins
from ranker.evaluation.selection import evaluate_selection
from ranker.evaluation.store_scores import subset_probability, subset_scorer
from ranker.rankers.estimator import LanguageRanker
from ranker.rankers.store_training import train_on_store

Log = Callable[[str], None]
BASELINES = ("first", "random", "majority", "max_logprob", "oracle", "per_sample")
MAIN_N = 16  # best-of-N reported everywhere but the scaling law; larger held-out stores are subsampled
DRAWS = 5  # random N-subsets averaged when the held-out store has more than MAIN_N candidates


def _accuracy(test: FeatureStore, rankers: dict, seed: int, votes: bool = False) -> dict[str, float]:
    """evaluate_selection of fitted `rankers` (name -> LanguageRanker) and the baselines at N = MAIN_N
    (or the store's N, if smaller). votes: also each ranker's confidence-weighted majority vote, as
    `<name>_vote` (weights: its calibrated P(correct))."""
    scorers = {name: subset_scorer(ranker, test) for name, ranker in rankers.items()}
    weights = {f"{name}_vote": subset_probability(ranker, test) for name, ranker in rankers.items()} if votes else None
    return evaluate_selection(test, scorers, n=min(MAIN_N, test.num_candidates), draws=DRAWS, seed=seed, vote_weights=weights)


def _fused_rankers(train: FeatureStore, layer: int, seed: int, kinds: Sequence[str] = ("list", "point"),
                   hyperparams: Mapping | None = None) -> dict[str, LanguageRanker]:
    """The shipped configuration, List and/or Point, trained on `train` (`hyperparams` change it, e.g. for a bench)."""
    return {f"{kind}_ranker": train_on_store(train, layer, kind=kind, seed=seed, **(hyperparams or {})) for kind in kinds}


def _quiet(message: str) -> None:
    pass


def family_table(train: FeatureStore, test: FeatureStore) -> list[dict]:
    """Per family and split: prompts, per-sample accuracy and oracle@N of the embedded model."""
    rows = []
    for split, store in (("train", train), ("test", test)):
        for family, row in store.family_summary().iterrows():
            rows.append({"split": split, "family": family, "prompts": int(row.prompts), "per_sample": float(row.per_sample),
                         "oracle": float(row[f"oracle@{store.num_candidates}"]), "n": store.num_candidates})
    return rows


def main_table(train: FeatureStore, test: FeatureStore, layer: int, seeds: Sequence[int], log: Log = _quiet,
               shipped: Mapping[str, LanguageRanker] | None = None) -> list[dict]:
    """Best-of-16 accuracy, per family and overall, for rankers and baselines.

    `list_ranker` / `point_ranker` are the shipped configuration (hidden states fused with the mean
    log-prob and the vote share, ranker.rankers.fusion); `*_hidden` are the paper's hidden-state-only rankers.
    `shipped`: already fitted rankers (name -> ranker, which must read features `test` holds), scored
    as `shipped_<name>` on the same draws; they do not change the other rows.
    """
    rows = []
    families = sorted(set(test.families))
    for seed in seeds:
        rankers = {}
        for kind in ("list", "point"):
            rankers[f"{kind}_ranker"] = train_on_store(train, layer, kind=kind, seed=seed)
            rankers[f"{kind}_ranker_hidden"] = train_on_store(train, layer, kind=kind, seed=seed, fusion=False)
        rankers.update({f"shipped_{name}": ranker for name, ranker in (shipped or {}).items()})
        fused = {name: ranker for name, ranker in rankers.items() if not name.endswith("_hidden")}
        for family in families + ["all"]:
            index = [i for i, f in enumerate(test.families) if family in ("all", f)]
            accuracy = _accuracy(test.subset(index), rankers, seed=seed)
            votes = _accuracy(test.subset(index), fused, seed=seed, votes=True)
            accuracy.update({name: value for name, value in votes.items() if name.endswith("_vote")})
            rows += [{"family": family, "method": m, "seed": seed, "accuracy": a} for m, a in accuracy.items()]
        log(f"main table: seed {seed} done")
    return rows


def leave_one_family_out(train: FeatureStore, test: FeatureStore, layer: int, seeds: Sequence[int],
                         log: Log = _quiet, kinds: Sequence[str] = ("list", "point"),
                         hyperparams: Mapping | None = None) -> dict[str, list[dict]]:
    """Generalisation to task families never trained on, and the reliability of P(correct) there.

    For every family F, the shipped configuration is trained on the other families' training
    prompts and evaluated on all of F's prompts: its training prompts (N = the train store's) and
    its held-out ones (best of MAIN_N drawn from the test store's N), pooled by prompt count;
    nothing of F was trained on, so both are unseen. Every baseline is scored on the same draws.

    kinds: which of the shipped rankers to train ("list", "point"); each costs one fit per family and seed.
    hyperparams: LanguageRanker hyperparameters that replace the shipped configuration's (None: as shipped).
    Returns two tables:
    - "lofo": family, method, seed, accuracy, prompts;
    - "calibration": the reliability bins of P(correct) (setting, kind, seed, ece, lower, upper,
      count, mean_probability, observed) in two settings: "held_out" (trained on the train store,
      every candidate of the test store) and "left_out" (every candidate of each family, by the
      rankers trained without it, pooled over the families).
    """
    accuracy_rows, predictions = [], {}
    for seed in seeds:
        for name, ranker in _fused_rankers(train, layer, seed, kinds, hyperparams).items():
            predictions.setdefault(("held_out", name, seed), []).append(_probabilities(ranker, test))
        for family in sorted(set(train.families)):
            rest = train.subset([i for i, f in enumerate(train.families) if f != family])
            rankers = _fused_rankers(rest, layer, seed, kinds, hyperparams)
            totals, prompts = {}, 0
            for store in (train, test):
                held = store.subset([i for i, f in enumerate(store.families) if f == family])
                if not held.problems:
                    continue
                for name, value in _accuracy(held, rankers, seed=seed, votes=True).items():
                    totals[name] = totals.get(name, 0.0) + value * len(held.problems)
                prompts += len(held.problems)
                for name, ranker in rankers.items():
                    predictions.setdefault(("left_out", name, seed), []).append(_probabilities(ranker, held))
            accuracy_rows += [{"family": family, "method": m, "seed": seed, "accuracy": t / prompts, "prompts": prompts}
                              for m, t in totals.items()]
            log(f"leave one family out: {family}, seed {seed}: " + ", ".join(
                f"{name} {totals[name] / prompts:.3f}" for name in (*rankers, "max_logprob")))
    calibration_rows = []
    for (setting, name, seed), parts in predictions.items():
        bins = reliability_bins(torch.cat([p for p, _ in parts]), torch.cat([y for _, y in parts]))
        ece = ece_of_bins(bins)
        calibration_rows += [{"setting": setting, "kind": name, "seed": seed, "ece": ece, **row} for row in bins]
        log(f"calibration: {setting} {name} seed {seed}: ECE {ece:.3f}")
    return {"lofo": accuracy_rows, "calibration": calibration_rows}


def _probabilities(ranker: LanguageRanker, store: FeatureStore) -> tuple:
    """(P(correct), label) of every candidate of the store, flat."""
    return ranker.probability_store(store).flatten(), store.labels().flatten().float()


def scaling_law(train: FeatureStore, test: FeatureStore, layer: int, seeds: Sequence[int],
                ns: Sequence[int] = (1, 2, 4, 8, 16, 32), log: Log = _quiet) -> list[dict]:
    """Accuracy vs N for every method; N above the store's candidate count is skipped."""
    rows = []
    for seed in seeds:
        scorers = {f"{kind}_ranker": subset_scorer(train_on_store(train, layer, kind=kind, seed=seed), test)
                   for kind in ("list", "point")}
        for n in [n for n in ns if n <= test.num_candidates]:
            accuracy = evaluate_selection(test, scorers, n=n, draws=5, seed=seed)
            rows += [{"n": n, "method": m, "seed": seed, "accuracy": a} for m, a in accuracy.items()]
        log(f"scaling: seed {seed} done")
    return rows


def layer_ablation(train: FeatureStore, test: FeatureStore, seeds: Sequence[int], kinds=("list",), log: Log = _quiet) -> list[dict]:
    """Hidden-state-only ranker accuracy at every recorded layer (one sampling pass records them all).

    Fusion is off here: the question is what each layer's features carry on their own.
    """
    rows = []
    num_layers = train.model.num_layers
    for layer, kind, seed in itertools.product(train.layers, kinds, seeds):
        ranker = train_on_store(train, layer, kind=kind, seed=seed, fusion=False)
        accuracy = _accuracy(test, {"ranker": ranker}, seed=seed)["ranker"]
        rows.append({"layer": layer, "fraction": round(layer / num_layers, 3), "kind": kind, "seed": seed, "accuracy": accuracy})
        log(f"layers: layer {layer} {kind} seed {seed}: {accuracy:.3f}")
    return rows


def block_ablation(train: FeatureStore, test: FeatureStore, layer: int, seeds: Sequence[int],
                   blocks: Sequence[int] = (1, 2, 3, 4), log: Log = _quiet) -> list[dict]:
    """Hidden-state-only ListRanker accuracy and parameter count with 1-4 transformer blocks."""
    rows = []
    for num_blocks, seed in itertools.product(blocks, seeds):
        ranker = train_on_store(train, layer, kind="list", seed=seed, num_blocks=num_blocks, fusion=False)
        accuracy = _accuracy(test, {"ranker": ranker}, seed=seed)["ranker"]
        params = sum(p.numel() for p in ranker.model_.parameters())
        rows.append({"blocks": num_blocks, "seed": seed, "accuracy": accuracy, "parameters": params})
        log(f"blocks: {num_blocks} seed {seed}: {accuracy:.3f}")
    return rows


def transfer(train: FeatureStore, test: FeatureStore, layer: int, seeds: Sequence[int], log: Log = _quiet) -> list[dict]:
    """Train on each family alone, evaluate on each family: the cross-task matrix."""
    rows = []
    families = sorted(set(train.families))
    for source, seed in itertools.product(families, seeds):
        train_index = [i for i, f in enumerate(train.families) if f == source]
        ranker = train_on_store(train.subset(train_index), layer, kind="list", seed=seed)
        for target in families:
            index = [i for i, f in enumerate(test.families) if f == target]
            accuracy = _accuracy(test.subset(index), {"ranker": ranker}, seed=seed)["ranker"]
            rows.append({"train_family": source, "test_family": target, "seed": seed, "accuracy": accuracy})
        log(f"transfer: trained on {source}, seed {seed}")
    return rows


def robustness(train: FeatureStore, test: FeatureStore, layer: int, seed: int = 0, log: Log = _quiet) -> list[dict]:
    """A grid of optimiser x learning rate x batch size (the paper's Table 4 analogue)."""
    grid = [("adamw", lr, batch) for lr in (1e-3, 3e-3, 1e-2) for batch in (32, 128)]
    grid += [("sgd", lr, batch) for lr in (0.1, 0.5) for batch in (32, 128)]
    rows = []
    for optimizer, lr, batch in grid:
        ranker = train_on_store(train, layer, kind="list", seed=seed, optimizer=optimizer, lr=lr, batch_size=batch)
        accuracy = _accuracy(test, {"ranker": ranker}, seed=seed)["ranker"]
        rows.append({"optimizer": optimizer, "lr": lr, "batch_size": batch, "accuracy": accuracy})
        log(f"robustness: {optimizer} lr {lr} batch {batch}: {accuracy:.3f}")
    return rows


def training_time(train: FeatureStore, layer: int, repeats: int = 3, log: Log = _quiet) -> list[dict]:
    """Wall time to train the default List and Point rankers on CPU (the paper's Table 3)."""
    rows = []
    for kind, repeat in itertools.product(("list", "point"), range(repeats)):
        start = time.perf_counter()
        ranker = train_on_store(train, layer, kind=kind, seed=repeat)
        rows.append({"kind": kind, "repeat": repeat, "seconds": time.perf_counter() - start,
                     "train_loop_seconds": ranker.train_result_.wall_time_s, **{f"weight_{name}": value for name, value in ranker.fusion_weights.items()},
                     "parameters": sum(p.numel() for p in ranker.model_.parameters()),
                     "prompts": len(train.problems), "candidates": len(train.problems) * train.num_candidates})
        log(f"timing: {kind} {rows[-1]['seconds']:.1f} s")
    return rows


def ship_default_rankers(train: FeatureStore, test: FeatureStore, layer: int, out_dir, log: Log = _quiet) -> list[dict]:
    """Train the default List and Point rankers (seed 0) and save them with their held-out numbers."""
    from pathlib import Path

    from ranker.evaluation.store_scores import correctness_metrics

    rows = []
    for kind in ("list", "point"):
        ranker = train_on_store(train, layer, kind=kind, seed=0)
        scores = ranker.score_store(test)  # all N candidates at once, for AUROC and ECE
        accuracy = _accuracy(test, {"ranker": ranker}, seed=0)
        quality = correctness_metrics(ranker.probability_store(test, scores=scores), scores, test.labels())
        n = min(MAIN_N, test.num_candidates)
        ranker.record_metrics(held_out={"prompts": len(test.problems), "n": n, "accuracy": accuracy, **quality})
        path = Path(out_dir) / f"default-{kind}"
        ranker.save(path)
        rows.append({"kind": kind, "path": str(path), "accuracy": accuracy["ranker"], "first": accuracy["first"],
                     "oracle": accuracy["oracle"], **quality})
        log(f"shipped {kind} ranker to {path}: held-out {accuracy['ranker']:.3f}")
    export_task_data(train, test, layer, Path(out_dir).parent / "task_data")
    return rows


def export_task_data(train: FeatureStore, test: FeatureStore, layer: int, out_dir, train_per_family: int = 40,
                     val_per_family: int = 20) -> None:
    """Ship a slice of the task suite's features (one layer) for the app's retrain job.

    The retrain job mixes these verifiable examples into every retrain and validates on the
    held-out slice, so the app can retrain without sampling the suite again.
    """
    from pathlib import Path

    out_dir = Path(out_dir)
    train.first_per_family(train_per_family).select_layers([layer]).save(out_dir / "train")
    test.first_per_family(val_per_family).select_layers([layer]).save(out_dir / "val")
