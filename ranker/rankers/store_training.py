"""Train a ranker on a feature store: the store's problems as ranking queries, then fit and calibrate.

Two ways to feed the store, with the same result (ranker.rankers.training, "Streaming"):
- in memory: `store_queries` materialises every feature, once;
- streaming: a `StorePool` keeps only the labels, signals and (P, H) instructions in memory and
  reads each batch's prompts from the store's memory-mapped shards, for training, the fusion's
  fold rankers and the calibration's scores alike. Memory is then that of a batch, plus O(P N)
  metadata, however large the store.

`train_on_store` streams a memory-mapped store whose features at the layer would take more than
STREAM_BYTES as float32, and keeps the small stores of tests and experiments in memory.
"""

from __future__ import annotations

from ranker.capture.feature_store import FeatureStore
from ranker.rankers.estimator import LanguageRanker
from ranker.rankers.training_groups import StorePool, store_queries

STREAM_BYTES = 1 << 30  # a memory-mapped store with more float32 feature bytes at one layer than this streams


def feature_bytes(store: FeatureStore) -> int:
    """Bytes of the store's features at one layer as float32 (what the in-memory path would hold)."""
    return len(store.problems) * (store.num_candidates + 1) * store.model.hidden_size * 4


def should_stream(store: FeatureStore) -> bool:
    """True for a memory-mapped store larger than STREAM_BYTES at one layer (`train_on_store`'s default)."""
    return store.is_memory_mapped and feature_bytes(store) > STREAM_BYTES


def train_on_store(store: FeatureStore, layer: int | None = None, kind: str = "list", val_store: FeatureStore | None = None,
                   progress=None, training_data: dict | None = None, streaming: bool | None = None,
                   **hyperparams) -> LanguageRanker:
    """Fit a calibrated ranker on a store's features at `layer` (default: the store's first layer).

    Platt scaling is fitted on the same training candidates (`fit(..., calibrate=True)`). The card
    records the store's size, families and layer, plus `training_data` (e.g. how the store was made).
    streaming: read the store batch by batch (module docstring) instead of loading its features;
    None: `should_stream(store)`. A streamed fit records `"streamed": True` in the card.
    """
    layer = store.layers[0] if layer is None else layer
    streaming = should_stream(store) if streaming is None else bool(streaming)
    about = {"store_problems": len(store.problems), "candidates_per_problem": store.num_candidates,
             "families": sorted(set(store.families)), "layer": layer, **(training_data or {})}
    if streaming:
        queries = StorePool.from_store(store, layer)
        val_queries = StorePool.from_store(val_store, layer) if val_store is not None else None
        about["streamed"] = True
    else:
        queries = store_queries(store, layer)
        val_queries = store_queries(val_store, layer) if val_store is not None else None
    return LanguageRanker(kind=kind, **hyperparams).fit(
        queries, val_queries=val_queries, fingerprint=store.feature_fingerprint(layer), progress=progress,
        calibrate=True, training_data=about,
    )
