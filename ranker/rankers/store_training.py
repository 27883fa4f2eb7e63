"""Train a ranker on a feature store: the store's problems as ranking queries, then fit and calibrate."""

from __future__ import annotations

import numpy as np
import torch

from ranker.capture.feature_store import FeatureStore
from ranker.rankers.calibration import fit_platt
from ranker.rankers.estimator import LanguageRanker
from ranker.rankers.training_groups import queries_from_tensors


def store_queries(store: FeatureStore, layer: int | None = None, index=None) -> list:
    """The store's problems as ranking queries at one layer (ids "family/index").

    index: optional (P, n) candidate indices per problem (e.g. `ranker.evaluation.selection.subsets`), to
    make queries of those n candidates only; default: all N. Each query carries its candidates'
    mean log-probs and answer keys (ranker.tasks.voting) for score fusion.
    """
    instruction, responses = store.features(layer)
    ids = [f"{p.family}/{i}" for i, p in enumerate(store.problems)]
    mean_logprobs = torch.tensor(store.column("mean_logprob"), dtype=torch.float32)
    labels, vote_keys = store.labels(), store.column("vote_key")
    if index is not None:
        index = torch.as_tensor(np.asarray(index), dtype=torch.long)
        if index.dim() != 2 or index.shape[0] != len(store.problems):
            raise ValueError(f"index must be (P, n) = ({len(store.problems)}, n), got {tuple(index.shape)}")
        rows = torch.arange(len(store.problems))[:, None]
        responses, labels, mean_logprobs = responses[rows, index], labels[rows, index], mean_logprobs[rows, index]
        vote_keys = [[keys[k] for k in picked] for keys, picked in zip(vote_keys, index.tolist())]
    return queries_from_tensors(instruction, responses, labels, ids, mean_logprobs, vote_keys)


def train_on_store(store: FeatureStore, layer: int | None = None, kind: str = "list", val_store: FeatureStore | None = None,
                   progress=None, **hyperparams) -> LanguageRanker:
    """Fit a ranker on a store's features at `layer`, then a Platt calibration on the same data."""
    layer = store.layers[0] if layer is None else layer
    queries = store_queries(store, layer)
    val_queries = store_queries(val_store, layer) if val_store is not None else None
    ranker = LanguageRanker(kind=kind, **hyperparams).fit(
        queries, val_queries=val_queries, fingerprint=store.feature_fingerprint(layer), progress=progress
    )
    scores = torch.cat(ranker.score_queries(queries))
    a, b = fit_platt(scores, store.labels().flatten())
    ranker.metrics_ = {"platt": [a, b]}
    ranker.training_data_ = {"store_problems": len(store.problems), "candidates_per_problem": store.num_candidates,
                             "families": sorted(set(store.families)), "layer": layer}
    return ranker
