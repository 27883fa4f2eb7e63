"""User judgements over shown candidates, and the rule that turns them into ranker training data.

The rule:
- The user picked candidate w among the shown candidates: pairs (w > l) for every other shown l,
  and one listwise group with label 1 for w and 0 for every other candidate. (Bradley-Terry on that
  group is exactly Bradley-Terry on those pairs.)
- "tie": no pairs and no group. A tie says nothing about which is better, and nothing about whether
  any candidate is correct, so no label can be written.
- "all_bad": no pairs; a group with every label 0. KL cannot use it (no target distribution; the
  listwise sampler drops it), but pointwise BCE can: each candidate is a negative example.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from ranker.rankers.training_groups import RankingQuery

TIE = "tie"
ALL_BAD = "all_bad"


@dataclass
class Preference:
    """One user judgement over the candidates shown for one instruction."""

    instruction: Tensor  # (H,)
    responses: Tensor  # (K, H), the candidates shown, in display order
    choice: int | str  # index of the picked candidate, or "tie", or "all_bad"
    query_id: str = ""
    mean_logprob: Tensor | None = None  # (K,) mean token log-prob of each shown candidate, if known
    vote_keys: list | None = None  # K answer keys of the shown candidates (None = no answer), if known

    def __post_init__(self) -> None:
        K = self.responses.shape[0]
        if isinstance(self.choice, str):
            if self.choice not in (TIE, ALL_BAD):
                raise ValueError(f"choice must be a candidate index, {TIE!r} or {ALL_BAD!r}; got {self.choice!r}")
        elif not 0 <= int(self.choice) < K:
            raise ValueError(f"choice {self.choice} is not a shown candidate (0..{K - 1})")
        if self.vote_keys is not None and len(self.vote_keys) != K:
            raise ValueError(f"got {len(self.vote_keys)} vote_keys for {K} shown candidates")


def preference_to_query(preference: Preference) -> RankingQuery | None:
    """The labelled group the preference implies: one-hot on the pick, all 0 for "all_bad", None for "tie"."""
    if preference.choice == TIE:
        return None
    labels = torch.zeros(preference.responses.shape[0])
    if preference.choice != ALL_BAD:
        labels[int(preference.choice)] = 1.0
    return RankingQuery(preference.instruction, preference.responses, labels, preference.query_id, preference.mean_logprob,
                        preference.vote_keys)


def preferences_to_queries(preferences: Sequence[Preference]) -> list[RankingQuery]:
    """`preference_to_query` over many, dropping ties."""
    return [q for q in map(preference_to_query, preferences) if q is not None]
