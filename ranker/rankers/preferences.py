"""User judgements over shown candidates, and the rule that turns them into ranker training data.

A judgement (`Preference`) is a pick (or "tie"/"all_bad"), and optionally a full ranking and
per-candidate grades: stars (1..5) or thumbs (-1 down / +1 up). All indices are positions in
the `responses` the judgement holds (display order for the label store's preferences).

Groups for training (`preference_to_queries`), each a `RankingQuery` over some of the candidates:
- Pick w: one listwise group of every candidate, label 1 for w and 0 for the others. (Bradley-Terry
  on that group is exactly Bradley-Terry on the pairs (w > l) for every other l.)
- "tie": no group. A tie says nothing about which is better, and nothing about whether any
  candidate is correct, so no label can be written.
- "all_bad": a group with every label 0. KL cannot use it (no target distribution; the listwise
  sampler drops it), but pointwise BCE can: each candidate is a negative example.
- Ranking r_0 > r_1 > ... > r_{K-1} (it replaces the pick group, whose winner is r_0):
  - targets "binary" (the KL / BCE / BT losses): the Plackett-Luce decomposition, K - 1 groups,
    group i = the candidates r_i..r_{K-1} with label 1 on r_i. KL on a one-hot group is
    -log softmax(s)_{r_i}, so the KL summed over the groups is the ranking's Plackett-Luce
    negative log-likelihood; BT over the groups is BT over every pair the ranking implies.
  - targets "real" (MSE): one group of all K, label (K - 1 - i) / (K - 1) for r_i (1 best, 0 worst).
- Stars: one group of the starred candidates, label (stars - 1) / 4, so 1 star is 0 (as an
  incorrect answer) and 5 stars are 1 (as a correct one). Under MSE (label_type "real", the paper's
  real-valued setting) that is the regression target; under KL/BCE it is a soft target.
- Thumbs: one group of the thumbed candidates, label 1 for up and 0 for down (binary, like picks).

Pairs for preference datasets (`judgement_pairs`), (chosen, rejected, source):
- "ranking": every pair (r_i, r_j), i < j (K(K-1)/2), or with ranking_pairs="adjacent" only
  (r_i, r_{i+1}); a ranked label gives no separate "pick" pairs (they are ranking pairs).
- "pick": (w, l) for every other candidate l. "tie" and "all_bad" give none.
- "grade": (a, b) for stars a > stars b. "thumbs": (up, down) for every up and every down.
A pair already given by an earlier source (in that order) of the same judgement is not repeated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from ranker.rankers.training_groups import RankingQuery

TIE = "tie"
ALL_BAD = "all_bad"
TARGETS = ("binary", "real")  # how a ranking becomes labels: Plackett-Luce groups, or one graded group
RANKING_PAIRS = ("all", "adjacent")
STAR_VALUES = (1, 2, 3, 4, 5)
THUMB_VALUES = (-1, 1)


@dataclass
class Preference:
    """One user judgement over the candidates shown for one instruction."""

    instruction: Tensor  # (H,)
    responses: Tensor  # (K, H), the candidates shown, in display order
    choice: int | str  # index of the picked candidate, or "tie", or "all_bad"
    query_id: str = ""
    mean_logprob: Tensor | None = None  # (K,) mean token log-prob of each shown candidate, if known
    vote_keys: list | None = None  # K answer keys of the shown candidates (None = no answer), if known
    ranking: list[int] | None = None  # all K indices, best first (then choice == ranking[0]), if ranked
    stars: dict[int, int] | None = None  # {index: 1..5}, if graded with stars
    thumbs: dict[int, int] | None = None  # {index: -1 or +1}, if graded with thumbs

    def __post_init__(self) -> None:
        K = self.responses.shape[0]
        if isinstance(self.choice, str):
            if self.choice not in (TIE, ALL_BAD):
                raise ValueError(f"choice must be a candidate index, {TIE!r} or {ALL_BAD!r}; got {self.choice!r}")
        elif not 0 <= int(self.choice) < K:
            raise ValueError(f"choice {self.choice} is not a shown candidate (0..{K - 1})")
        if self.vote_keys is not None and len(self.vote_keys) != K:
            raise ValueError(f"got {len(self.vote_keys)} vote_keys for {K} shown candidates")
        if self.ranking is not None:
            if sorted(self.ranking) != list(range(K)):
                raise ValueError(f"ranking must list each of the {K} shown candidates once, got {self.ranking}")
            if self.choice != self.ranking[0]:
                raise ValueError(f"choice {self.choice!r} must be the ranking's first candidate {self.ranking[0]}")
        for name, allowed in (("stars", STAR_VALUES), ("thumbs", THUMB_VALUES)):
            for index, value in (getattr(self, name) or {}).items():
                if not 0 <= index < K or value not in allowed:
                    raise ValueError(f"{name} must map shown candidates (0..{K - 1}) to {list(allowed)}, "
                                     f"got {index}: {value!r}")


def _group(preference: Preference, rows: Sequence[int], labels: Sequence[float], suffix: str) -> RankingQuery:
    """The query of the candidates `rows` (in that order) with `labels`; features sliced to them."""
    index = torch.tensor(list(rows), dtype=torch.long)
    mean_logprob = None if preference.mean_logprob is None else preference.mean_logprob[index]
    vote_keys = None if preference.vote_keys is None else [preference.vote_keys[i] for i in rows]
    return RankingQuery(preference.instruction, preference.responses[index], torch.tensor(list(labels), dtype=torch.float32),
                        preference.query_id + suffix, mean_logprob, vote_keys)


def preference_to_query(preference: Preference) -> RankingQuery | None:
    """The pick's group: every candidate, one-hot on the pick, all 0 for "all_bad", None for "tie"."""
    if preference.choice == TIE:
        return None
    labels = torch.zeros(preference.responses.shape[0])
    if preference.choice != ALL_BAD:
        labels[int(preference.choice)] = 1.0
    return RankingQuery(preference.instruction, preference.responses, labels, preference.query_id, preference.mean_logprob,
                        preference.vote_keys)


def preference_to_queries(preference: Preference, targets: str = "binary") -> list[RankingQuery]:
    """Every group the judgement implies (module docstring); targets "binary" or "real" (see TARGETS).

    Query ids: the pick's group keeps `query_id`; the others add "/rank<i>", "/stars", "/thumbs".
    """
    if targets not in TARGETS:
        raise ValueError(f"targets must be one of {TARGETS}, got {targets!r}")
    K = preference.responses.shape[0]
    queries: list[RankingQuery] = []
    ranking = preference.ranking
    if ranking is not None and targets == "binary":
        queries += [_group(preference, ranking[i:], [1.0] + [0.0] * (K - 1 - i), "" if i == 0 else f"/rank{i}")
                    for i in range(K - 1)]
    elif ranking is not None:
        queries.append(_group(preference, ranking, [(K - 1 - i) / (K - 1) for i in range(K)] if K > 1 else [1.0], ""))
    else:
        pick = preference_to_query(preference)
        queries += [] if pick is None else [pick]
    if preference.stars:
        rows = sorted(preference.stars)
        queries.append(_group(preference, rows, [(preference.stars[i] - 1) / 4 for i in rows], "/stars"))
    if preference.thumbs:
        rows = sorted(preference.thumbs)
        queries.append(_group(preference, rows, [float(preference.thumbs[i] > 0) for i in rows], "/thumbs"))
    return queries


def preferences_to_queries(preferences: Sequence[Preference], targets: str = "binary") -> list[RankingQuery]:
    """`preference_to_queries` over many, in order (ties without grades give nothing)."""
    return [query for preference in preferences for query in preference_to_queries(preference, targets)]


def judgement_pairs(
    choice: int | str,
    num_candidates: int,
    ranking: Sequence[int] | None = None,
    stars: dict[int, int] | None = None,
    thumbs: dict[int, int] | None = None,
    ranking_pairs: str = "all",
) -> list[tuple[int, int, str]]:
    """(chosen, rejected, source) pairs a judgement implies, by the rule in the module docstring.

    Works in any one index space (display positions, or candidate indices: the rule is the same
    under a relabelling). source is "ranking", "pick", "grade" or "thumbs".
    """
    if ranking_pairs not in RANKING_PAIRS:
        raise ValueError(f"ranking_pairs must be one of {RANKING_PAIRS}, got {ranking_pairs!r}")
    pairs: list[tuple[int, int, str]] = []
    if ranking is not None:
        K = len(ranking)
        pairs += [(ranking[i], ranking[j], "ranking") for i in range(K) for j in range(i + 1, K)
                  if ranking_pairs == "all" or j == i + 1]
    elif choice not in (TIE, ALL_BAD):
        pairs += [(int(choice), other, "pick") for other in range(num_candidates) if other != int(choice)]
    stars = stars or {}
    pairs += [(a, b, "grade") for a in sorted(stars) for b in sorted(stars) if stars[a] > stars[b]]
    thumbs = thumbs or {}
    pairs += [(a, b, "thumbs") for a in sorted(thumbs) for b in sorted(thumbs) if thumbs[a] > 0 > thumbs[b]]
    seen: set[tuple[int, int]] = set()
    unique = []
    for chosen, rejected, source in pairs:
        if (chosen, rejected) not in seen:
            seen.add((chosen, rejected))
            unique.append((chosen, rejected, source))
    return unique
