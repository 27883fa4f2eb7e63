"""Train a ranker on a feature store: the store's problems as ranking queries, then fit and calibrate."""

from __future__ import annotations

from ranker.capture.feature_store import FeatureStore
from ranker.rankers.estimator import LanguageRanker
from ranker.rankers.training_groups import store_queries


def train_on_store(store: FeatureStore, layer: int | None = None, kind: str = "list", val_store: FeatureStore | None = None,
                   progress=None, training_data: dict | None = None, **hyperparams) -> LanguageRanker:
    """Fit a calibrated ranker on a store's features at `layer` (default: the store's first layer).

    Platt scaling is fitted on the same training candidates (`fit(..., calibrate=True)`). The card
    records the store's size, families and layer, plus `training_data` (e.g. how the store was made).
    """
    layer = store.layers[0] if layer is None else layer
    queries = store_queries(store, layer)
    val_queries = store_queries(val_store, layer) if val_store is not None else None
    about = {"store_problems": len(store.problems), "candidates_per_problem": store.num_candidates,
             "families": sorted(set(store.families)), "layer": layer, **(training_data or {})}
    return LanguageRanker(kind=kind, **hyperparams).fit(
        queries, val_queries=val_queries, fingerprint=store.feature_fingerprint(layer), progress=progress,
        calibrate=True, training_data=about,
    )
