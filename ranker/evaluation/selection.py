"""Best-of-N selection rules and their accuracy on a feature store.

Every method picks one candidate per problem from the same N; accuracy is the fraction of
problems whose pick the checker accepted. To evaluate at a smaller N (the scaling law),
`draws` random N-subsets of each problem's candidates are scored and averaged.

Methods:
- `first`: the first sample (what plain sampling returns);
- `random`: a uniformly random candidate (equals per-sample accuracy in expectation);
- `majority`: self-consistency, the most frequent vote key (ties: the key seen first), then
  the first candidate with that key; problems where nothing votes fall back to the first;
- `max_logprob`: the highest mean token log-probability;
- `oracle`: any correct candidate (the ceiling for any selector);
- any scorer: the highest score (rankers, reward models).

A scorer is either a (P, N) tensor of scores over all candidates, for scores that do not depend
on which other candidates are present (reward models, pointwise rankers without vote share), or
a function from (P, n) candidate indices to (P, n) scores, for scores that do (the ListRanker
attends over the candidate set; a fused vote share counts it). The function is called once per
drawn subset, so that a method sees exactly the n candidates the baselines see.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping

import numpy as np
import torch

from ranker.capture.feature_store import FeatureStore
from ranker.evaluation.metrics import best_candidates


def select_majority(vote_keys: list) -> int:
    """Index of the pick by majority vote among one problem's candidates."""
    counts = Counter(key for key in vote_keys if key is not None)
    if not counts:
        return 0
    top = max(counts.values())
    winner = next(key for key in vote_keys if key is not None and counts[key] == top)
    return vote_keys.index(winner)


def subsets(num_problems: int, n_total: int, n: int, draws: int, seed: int) -> np.ndarray:
    """(draws, P, n) candidate indices: n distinct candidates per problem per draw.

    With n == n_total there is a single draw of all candidates in sampling order, so that
    `first` is really the first sample.
    """
    if not 1 <= n <= n_total:
        raise ValueError(f"n must be in [1, {n_total}] for this store, got {n}")
    if n == n_total:
        return np.broadcast_to(np.arange(n_total), (1, num_problems, n_total)).copy()
    rng = np.random.default_rng(seed)
    return np.stack([np.stack([rng.permutation(n_total)[:n] for _ in range(num_problems)]) for _ in range(draws)])


def evaluate_selection(
    store: FeatureStore,
    scores: Mapping[str, torch.Tensor | Callable[[np.ndarray], torch.Tensor]] | None = None,
    n: int | None = None,
    draws: int = 5,
    seed: int = 0,
) -> dict[str, float]:
    """Accuracy of every method at N = n (default: all candidates).

    scores: method name -> (P, N_total) scores over the store's candidates, or a function from
    (P, n) candidate indices to (P, n) scores (see the module docstring); higher is better.
    Returns method name -> accuracy in [0, 1].
    """
    labels = store.labels().numpy()  # (P, N_total)
    num_problems, n_total = labels.shape
    n = n or n_total
    mean_logprob = np.array(store.column("mean_logprob"), dtype=np.float64)
    vote_keys = store.column("vote_key")
    scored = {name: value if callable(value) else np.asarray(torch.as_tensor(value).float())
              for name, value in (scores or {}).items()}
    for name, value in scored.items():
        if not callable(value) and value.shape != labels.shape:
            raise ValueError(f"scores for {name!r} have shape {value.shape}, expected {labels.shape}")
    rng = np.random.default_rng(seed + 1)
    totals: dict[str, float] = {}
    index_sets = subsets(num_problems, n_total, n, draws, seed)
    for index in index_sets:
        rows = np.arange(num_problems)[:, None]
        picked_labels = labels[rows, index]  # (P, n)
        picks = {
            "first": np.zeros(num_problems, dtype=int),
            "random": rng.integers(0, n, size=num_problems),
            "majority": np.array([select_majority([vote_keys[p][k] for k in index[p]]) for p in range(num_problems)]),
            "max_logprob": mean_logprob[rows, index].argmax(axis=1),
        }
        for name, value in scored.items():
            subset_scores = np.asarray(torch.as_tensor(value(index)).float()) if callable(value) else value[rows, index]
            if subset_scores.shape != index.shape:
                raise ValueError(f"scorer {name!r} returned shape {subset_scores.shape} for {index.shape} candidates")
            picks[name] = best_candidates(torch.as_tensor(subset_scores)).numpy()
        for name, pick in picks.items():
            totals[name] = totals.get(name, 0.0) + float(picked_labels[np.arange(num_problems), pick].mean())
        totals["oracle"] = totals.get("oracle", 0.0) + float(picked_labels.max(axis=1).mean())
        totals["per_sample"] = totals.get("per_sample", 0.0) + float(picked_labels.mean())
    return {name: total / len(index_sets) for name, total in totals.items()}
