"""Voting rules over one problem's candidates: majority, weighted, Borda and confidence-filtered votes.

Each rule reads the candidates' vote keys (the extracted answers, None where none was found)
and returns the index of the picked candidate, or None when no candidate votes. A rule picks
an answer, then the first candidate, in sampling order, that gave it; ties between answers go
to the answer seen first (as in the reference implementations of both papers below).

- `weighted_vote`: the answer with the largest total weight (weight 1 each: majority vote;
  DeepConf's trace confidences; a ranker's P(correct));
- `borda_vote` (Kang et al., 2025, self-certainty): candidates ranked by a score, best first,
  the one at rank r (1 = best) of n voting `(n - r + 1) ** power`; power 0 is majority vote;
- `filtered_vote` (Fu et al., 2025, DeepConf): keep the candidates whose confidence is at
  least the (1 - keep) quantile, then a vote weighted by that confidence; keep = 0.1 is
  "DeepConf-low", keep = 0.9 "DeepConf-high";
- `logprob_vote`: the log-prob-weighted majority vote. Candidate j weighs
  exp(beta * (mean_logprob_j - max mean_logprob)), its geometric-mean token probability to the
  power beta (relative to the best candidate's); an answer scores its candidates' total weight,
  a candidate without an answer (None) being an answer of its own; the pick is the
  highest-log-prob candidate of the heaviest answer. Unlike the rules above it always picks:
  with no answer at all it is max mean log-prob, with beta = 0 majority vote. It is what a
  fused ranker's fixed fallback rule selects (ranker.rankers.fusion, "weighted_vote").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BORDA_POWER = 0.5  # the self-certainty reference code's default
# logprob_vote's beta: 1, the best free selector out of family in our leave-one-family-out analysis
# (ranker.rankers.fusion's WEIGHTED_VOTE_BETA is this one).
LOGPROB_VOTE_BETA = 1.0


def weighted_vote(vote_keys: Sequence, weights: Sequence[float] | np.ndarray | None = None) -> int | None:
    """Index of the first candidate giving the answer of largest total weight (None: nothing votes).

    weights: one non-negative number per candidate (default 1 each: majority vote).
    """
    weights = np.ones(len(vote_keys)) if weights is None else np.asarray(weights, dtype=np.float64)
    if weights.shape != (len(vote_keys),):
        raise ValueError(f"weights must have one value per candidate ({len(vote_keys)}), got shape {weights.shape}")
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise ValueError(f"vote weights must be finite and non-negative, got {weights.tolist()}")
    totals: dict = {}
    first: dict = {}
    for index, (key, weight) in enumerate(zip(vote_keys, weights)):
        if key is None:
            continue
        totals[key] = totals.get(key, 0.0) + float(weight)
        first.setdefault(key, index)
    if not totals:
        return None
    best = max(totals.values())
    winner = next(key for key in first if totals[key] == best)  # dicts keep insertion order: seen first wins ties
    return first[winner]


def borda_weights(scores: Sequence[float] | np.ndarray, power: float = BORDA_POWER) -> np.ndarray:
    """(n,) Borda votes: the candidate at rank r (1 = highest score; equal scores keep sampling order) gets (n - r + 1) ** power."""
    scores = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(scores).all():
        raise ValueError("Borda scores must be finite")
    if power < 0:
        raise ValueError(f"Borda power must be non-negative, got {power}")
    order = np.argsort(-scores, kind="stable")
    votes = np.empty(len(scores))
    votes[order] = (len(scores) - np.arange(len(scores))) ** float(power)
    return votes


def borda_vote(vote_keys: Sequence, scores: Sequence[float] | np.ndarray, power: float = BORDA_POWER) -> int | None:
    """Borda voting: answers collect their candidates' `borda_weights`."""
    return weighted_vote(vote_keys, borda_weights(scores, power))


def filtered_vote(vote_keys: Sequence, confidences: Sequence[float] | np.ndarray, keep: float) -> int | None:
    """DeepConf's offline vote: keep confidences >= their (1 - keep) quantile, then vote weighted by confidence.

    The quantile is numpy's linear-interpolation percentile over the candidates that vote, as
    in the reference code; confidences must be non-negative (DeepConf's are, being -mean log p).
    """
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    confidences = np.asarray(confidences, dtype=np.float64)
    voting = [i for i, key in enumerate(vote_keys) if key is not None]
    if not voting:
        return None
    threshold = np.percentile(confidences[voting], (1.0 - keep) * 100.0)
    kept = [key if key is not None and confidences[i] >= threshold else None for i, key in enumerate(vote_keys)]
    return weighted_vote(kept, np.where([key is not None for key in kept], confidences, 0.0))


def logprob_vote(vote_keys: Sequence, mean_logprob: Sequence[float] | np.ndarray, beta: float = LOGPROB_VOTE_BETA) -> int:
    """Index of the best-log-prob candidate of the answer with the largest total exp(beta * mean log-prob).

    A None key is an answer of its own. Ties between answers go to the one holding the
    highest-log-prob candidate, ties within an answer to the candidate seen first.
    E.g. keys ["7", "8", "8"], lp [-0.1, -1, -1.2], beta 1: "7" weighs 1, "8" e^-0.9 + e^-1.1 =
    0.74 -> candidate 0 (majority vote would pick 1; max log-prob picks 0 too).
    """
    logprob = np.asarray(mean_logprob, dtype=np.float64)
    if logprob.shape != (len(vote_keys),) or not len(vote_keys):
        raise ValueError(f"need one mean log-prob per candidate ({len(vote_keys)}, at least one), "
                         f"got shape {logprob.shape}")
    if np.isnan(logprob).any() or (logprob == np.inf).any():
        raise ValueError(f"mean log-probs must be finite or -inf, got {logprob.tolist()}")
    top = logprob.max()
    # (n,) in [0, 1], the best candidate's 1 (-inf weighs 0; all -inf: equal weights, majority vote)
    weights = np.exp(beta * (logprob - top)) if np.isfinite(top) else np.ones(len(logprob))
    group = [key if key is not None else ("no answer", index) for index, key in enumerate(vote_keys)]
    totals: dict = {}
    for key, weight in zip(group, weights):
        totals[key] = totals.get(key, 0.0) + float(weight)
    best = max(totals.values())
    eligible = [index for index, key in enumerate(group) if totals[key] == best]
    return max(eligible, key=lambda index: (logprob[index], -index))
