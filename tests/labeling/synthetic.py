"""Tiny synthetic data for the labeling tests: a feature store and a label store filled from the same queries.

See `synthetic_queries`: one correct candidate per query, marked by a direction rankers can learn
from about a hundred labels, invisible to an untrained ranker.
"""

from __future__ import annotations

import pandas as pd
import torch

from labeling.label_store import LabelStore
from ranker.capture.feature_store import FeatureStore
from ranker.capture.fingerprint import ModelFingerprint
from ranker.capture.sampling import SamplingConfig
from ranker.rankers.training_groups import RankingQuery
from ranker.tasks import Problem

HIDDEN = 32
CANDIDATES = 6
LAYER = 2
MODEL = ModelFingerprint("synthetic-model", "rev0", num_layers=4, hidden_size=HIDDEN)
# LanguageRanker hyperparameters for quick fits; score fusion (5 fits) only where a test asks for it.
FAST = {"projection_dim": 32, "batch_size": 32, "fusion": False}
STEPS = 200  # optimizer steps per fit (RetrainConfig.min_steps); 120 labels alone would give a few steps


def synthetic_queries(num_queries: int, seed: int = 0, marker: float = 6.0, noise: float = 1.0) -> list[RankingQuery]:
    """Queries with exactly one correct candidate among CANDIDATES, hidden size HIDDEN.

    Every candidate shares its instruction's topic t; only the correct one also carries a fixed
    "good answer" direction g (the same for all queries):
        i   = offset + 3 t + noise,   r_k = offset + 3 t + marker * [k == c] * g + noise.
    So similarity to the instruction tells nothing (an untrained ranker is at chance, 1/6) and
    a ranker trained on correct picks learns g; one trained on random picks cannot.
    """
    def one_hot(gen: torch.Generator) -> torch.Tensor:
        labels = torch.zeros(CANDIDATES)
        labels[int(torch.randint(CANDIDATES, (1,), generator=gen))] = 1.0
        return labels

    return queries_along_g(num_queries, one_hot, "synthetic", seed, marker, noise)


def queries_along_g(num_queries: int, draw_labels, name: str, seed: int = 0, marker: float = 6.0,
                    noise: float = 1.0) -> list[RankingQuery]:
    """As `synthetic_queries`, with labels (CANDIDATES,) from draw_labels(gen): r_k carries marker * label_k * g."""
    gen = torch.Generator().manual_seed(seed)
    offset = 2.0 * torch.randn(HIDDEN, generator=gen)
    g = torch.randn(HIDDEN, generator=gen)
    g = g / g.norm() * HIDDEN**0.5 * 0.25
    queries = []
    for n in range(num_queries):
        t = torch.randn(HIDDEN, generator=gen)
        labels = draw_labels(gen)
        instruction = offset + 3 * t + noise * torch.randn(HIDDEN, generator=gen)
        responses = offset + 3 * t + marker * labels[:, None] * g + noise * torch.randn(CANDIDATES, HIDDEN, generator=gen)
        queries.append(RankingQuery(instruction, responses, labels, f"{name}-{n}"))
    return queries


def store_from_queries(queries: list[RankingQuery]) -> FeatureStore:
    """A FeatureStore holding `queries` at layer LAYER (labels become the checker's `correct`)."""
    rows = [
        {"problem_index": p, "candidate_index": k, "text": f"answer {p}.{k}", "correct": bool(q.labels[k] > 0.5),
         "vote_key": None, "mean_logprob": 0.0, "finish_reason": "stop", "num_tokens": 3}
        for p, q in enumerate(queries) for k in range(CANDIDATES)
    ]
    return FeatureStore(
        problems=[Problem(f"question {q.query_id}", "1", "numeric", family="synthetic") for q in queries],
        candidates=pd.DataFrame(rows),
        instruction=torch.stack([q.instruction for q in queries])[:, None],  # (P, 1, H)
        responses=torch.stack([q.responses for q in queries])[:, :, None],  # (P, N, 1, H)
        layers=(LAYER,),
        model=MODEL,
        sampling=SamplingConfig(num_candidates=CANDIDATES),
    )


def record(store: LabelStore, query: RankingQuery, profile: str | None = None, layer: int = LAYER,
           mean_logprobs: list[float] | None = None, texts: list[str] | None = None) -> str:
    """Record `query` as a generation the app showed; returns its request_id.

    mean_logprobs default to -1 - k for candidate k: unrelated to which one is correct; texts to
    "answer k" (all different, so no two candidates share a vote)."""
    return store.record_request(
        f"question {query.query_id}",
        texts or [f"answer {k}" for k in range(CANDIDATES)],
        query.instruction,
        query.responses,
        layer=layer,
        fingerprint=MODEL.to_dict(),
        ranker_version="shipped",
        ranker_scores=[0.0] * CANDIDATES,
        mean_logprobs=mean_logprobs or [-1.0 - k for k in range(CANDIDATES)],
        num_tokens=[3] * CANDIDATES,
        finish_reasons=["stop"] * CANDIDATES,
        sampling={"temperature": 1.0, "num_candidates": CANDIDATES},
        profile=profile,
    )


def label_queries(store: LabelStore, queries: list[RankingQuery], *, noise: bool, seed: int = 0,
                  annotator: str = "ann") -> list[str]:
    """Record and label every query. Learnable: the pick is a correct candidate ("all_bad" if none).
    Noise: the pick is uniformly random. Display order is a random permutation. Returns label ids."""
    gen = torch.Generator().manual_seed(seed)
    ids = []
    for query in queries:
        request_id = record(store, query)
        order = torch.randperm(CANDIDATES, generator=gen).tolist()
        if noise:
            choice: int | str = int(torch.randint(CANDIDATES, (1,), generator=gen))
        else:
            correct = [k for k in order if query.labels[k] > 0.5]
            choice = correct[0] if correct else "all_bad"
        ids.append(store.add_label(request_id, choice, annotator, order))
    return ids
