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
- with a store that has the confidence signals (`FeatureStore.has_signals`, see
  `ranker.capture.confidence` and `ranker.evaluation.voting_rules`):
  - `max_self_certainty`: the highest self-certainty (Kang et al., 2025);
  - `self_certainty_borda`: Borda voting over the answers, ranked by self-certainty;
  - `max_group_confidence`: the highest lowest-group confidence (Fu et al., 2025, DeepConf);
  - `deepconf_vote`: majority vote weighted by lowest-group confidence;
  - `deepconf_low` / `deepconf_high`: the same vote over the 10% / 90% most confident;
  a vote where nothing votes falls back to the highest signal;
  - `logprob_vote`: the log-prob-weighted majority vote (beta 1), the pick being the best mean
    log-prob of the heaviest answer (`ranker.evaluation.voting_rules.logprob_vote`; no answer at
    all: max mean log-prob). It reads only the mean log-probs and the vote keys, but is reported
    with these confidence baselines, so that the tables of older stores keep their rows;
- `oracle`: any correct candidate (the ceiling for any selector);
- any scorer: the highest score (rankers, reward models).

A scorer is either a (P, N) tensor of scores over all candidates, for scores that do not depend
on which other candidates are present (reward models, pointwise rankers without vote share), or
a function from (P, n) candidate indices to (P, n) scores, for scores that do (the ListRanker
attends over the candidate set; a fused vote share counts it). The function is called once per
drawn subset, so that a method sees exactly the n candidates the baselines see.

`vote_weights` adds weighted majority votes: name -> non-negative per-candidate weights, as a
tensor or a function of the same two kinds (e.g. a ranker's P(correct): confidence-weighted
majority), falling back to the highest weight where nothing votes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch

from ranker.capture.feature_store import FeatureStore
from ranker.evaluation.metrics import best_candidates
from ranker.evaluation.voting_rules import borda_vote, filtered_vote, logprob_vote, weighted_vote

DEEPCONF_SIGNAL = "lowest_group_confidence"  # the trace confidence DeepConf's votes and filters read
Scores = torch.Tensor | Callable[[np.ndarray], torch.Tensor]


def select_majority(vote_keys: list) -> int:
    """Index of the pick by majority vote among one problem's candidates (the first when nothing votes)."""
    pick = weighted_vote(vote_keys)
    return 0 if pick is None else pick


def _vote_or_best(pick: int | None, signal: np.ndarray) -> int:
    """A vote's pick, or the candidate with the highest signal where nothing voted."""
    return int(np.argmax(signal)) if pick is None else pick


def free_signal_picks(keys: list[list], signals: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """(P,) picks of the training-free confidence selectors, from one drawn subset.

    keys: P lists of n vote keys; signals: "self_certainty" and DEEPCONF_SIGNAL, each (P, n), and
    optionally "mean_logprob" (P, n), which adds "logprob_vote".
    """
    certainty, confidence = signals["self_certainty"], signals[DEEPCONF_SIGNAL]
    rows = range(len(keys))
    picks = {} if "mean_logprob" not in signals else {
        "logprob_vote": np.array([logprob_vote(keys[p], signals["mean_logprob"][p]) for p in rows], dtype=int)}
    return {
        **picks,
        "max_self_certainty": certainty.argmax(axis=1),
        "self_certainty_borda": np.array([_vote_or_best(borda_vote(keys[p], certainty[p]), certainty[p]) for p in rows]),
        "max_group_confidence": confidence.argmax(axis=1),
        "deepconf_vote": np.array([_vote_or_best(weighted_vote(keys[p], confidence[p]), confidence[p]) for p in rows]),
        "deepconf_low": np.array([_vote_or_best(filtered_vote(keys[p], confidence[p], 0.1), confidence[p]) for p in rows]),
        "deepconf_high": np.array([_vote_or_best(filtered_vote(keys[p], confidence[p], 0.9), confidence[p]) for p in rows]),
    }


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
    scores: Mapping[str, Scores] | None = None,
    n: int | None = None,
    draws: int = 5,
    seed: int = 0,
    vote_weights: Mapping[str, Scores] | None = None,
) -> dict[str, float]:
    """Accuracy of every method at N = n (default: all candidates).

    scores: method name -> (P, N_total) scores over the store's candidates, or a function from
    (P, n) candidate indices to (P, n) scores (see the module docstring); higher is better.
    vote_weights: method name -> weights of the same two kinds, for weighted majority votes.
    Returns method name -> accuracy in [0, 1].
    """
    labels = store.labels().numpy()  # (P, N_total)
    num_problems, n_total = labels.shape
    n = n or n_total
    mean_logprob = np.array(store.column("mean_logprob"), dtype=np.float64)
    vote_keys = store.column("vote_key")
    signals = {name: np.array(store.column(name), dtype=np.float64) for name in ("self_certainty", DEEPCONF_SIGNAL)} \
        if store.has_signals else {}
    scored, weighted = _as_arrays(scores, labels.shape), _as_arrays(vote_weights, labels.shape)
    rng = np.random.default_rng(seed + 1)
    totals: dict[str, float] = {}
    index_sets = subsets(num_problems, n_total, n, draws, seed)
    for index in index_sets:
        rows = np.arange(num_problems)[:, None]
        picked_labels = labels[rows, index]  # (P, n)
        keys = [[vote_keys[p][k] for k in index[p]] for p in range(num_problems)]
        picks = {
            "first": np.zeros(num_problems, dtype=int),
            "random": rng.integers(0, n, size=num_problems),
            "majority": np.array([select_majority(problem_keys) for problem_keys in keys]),
            "max_logprob": mean_logprob[rows, index].argmax(axis=1),
        }
        if signals:
            subset = {name: value[rows, index] for name, value in {**signals, "mean_logprob": mean_logprob}.items()}
            picks.update(free_signal_picks(keys, subset))
        for name, value in scored.items():
            picks[name] = best_candidates(torch.as_tensor(_on_subset(name, value, index, rows))).numpy()
        for name, value in weighted.items():
            weights = _on_subset(name, value, index, rows)
            picks[name] = np.array([_vote_or_best(weighted_vote(keys[p], weights[p]), weights[p]) for p in range(num_problems)])
        for name, pick in picks.items():
            totals[name] = totals.get(name, 0.0) + float(picked_labels[np.arange(num_problems), pick].mean())
        totals["oracle"] = totals.get("oracle", 0.0) + float(picked_labels.max(axis=1).mean())
        totals["per_sample"] = totals.get("per_sample", 0.0) + float(picked_labels.mean())
    return {name: total / len(index_sets) for name, total in totals.items()}


def _as_arrays(values: Mapping[str, Scores] | None, shape: tuple[int, int]) -> dict:
    """Tensors as float arrays checked against the store's (P, N); functions as they are."""
    out = {}
    for name, value in (values or {}).items():
        out[name] = value if callable(value) else np.asarray(torch.as_tensor(value).float())
        if not callable(value) and out[name].shape != shape:
            raise ValueError(f"scores for {name!r} have shape {out[name].shape}, expected {shape}")
    return out


def _on_subset(name: str, value, index: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(P, n) values of one scorer or weighting on the drawn candidates `index`."""
    subset = np.asarray(torch.as_tensor(value(index)).float()) if callable(value) else value[rows, index]
    if subset.shape != index.shape:
        raise ValueError(f"scorer {name!r} returned shape {subset.shape} for {index.shape} candidates")
    return subset
