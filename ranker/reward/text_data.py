"""Text training data for the reward models: the same labelled (prompt, candidate) data as the rankers, as text.

A reward model reads text, not hidden states, so its data is `RewardData`: one `TextGroup` per prompt
(the prompt, its K candidate texts and their labels). It comes from
- a feature store (`RewardData.from_store`): every problem's N candidates and the checker's labels,
  exactly what the ranker trained on from the same store;
- user preferences (`RewardData.from_preferences`): labels by the rule of `ranker.rankers.training_groups`
  (the pick 1, the others 0; "all_bad" all 0; "tie" dropped).

Losses see it two ways:
- pointwise (bce, mse): every (prompt, candidate, label) once (`RewardData.examples`);
- pairwise (bt): (prompt, winner, loser) for pairs with y_w > y_l in a group (`RewardData.pairs`).
  For a preference group this is exactly the pairs of `ranker.rankers.preferences`: the pick beats every other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from ranker.capture.feature_store import FeatureStore
from ranker.rankers.preferences import Preference, preference_to_query


@dataclass
class TextGroup:
    """One prompt with K candidate texts and their labels."""

    prompt: str
    candidates: list[str]  # K texts (an empty string is a valid, if poor, candidate)
    labels: Tensor  # (K,) float32: 1/0 correct/incorrect, or a real-valued grade
    family: str = ""  # task family, for the data summary

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ValueError(f"prompt must be a non-empty string, got {self.prompt!r}")
        check_candidates(self.candidates)
        self.candidates = list(self.candidates)
        self.labels = torch.as_tensor(self.labels, dtype=torch.float32).flatten()
        if self.labels.shape[0] != len(self.candidates):
            raise ValueError(f"{self.labels.shape[0]} labels for {len(self.candidates)} candidates of prompt {self.prompt[:40]!r}")
        if not torch.isfinite(self.labels).all():
            raise ValueError(f"labels must be finite, got {self.labels.tolist()} for prompt {self.prompt[:40]!r}")


@dataclass
class TextPreference:
    """One user judgement over the candidate texts shown for a prompt (the text twin of `ranker.rankers.preferences.Preference`)."""

    prompt: str
    candidates: list[str]  # the candidates shown, in display order
    choice: int | str  # index of the picked candidate, "tie" or "all_bad"

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ValueError(f"prompt must be a non-empty string, got {self.prompt!r}")
        check_candidates(self.candidates)
        self.labels()  # validates the choice (ValueError naming it)

    def labels(self) -> Tensor | None:
        """(K,) labels the judgement implies (one-hot on the pick, all 0 for "all_bad"), or None for a tie."""
        # The rule and its validation live in ranker.rankers.training_groups; the feature tensors there play no part in
        # it, so zero-width stand-ins carry only the candidate count.
        stand_in = Preference(torch.zeros(0), torch.zeros(len(self.candidates), 0), self.choice)
        query = preference_to_query(stand_in)
        return None if query is None else query.labels


@dataclass
class TextBatch:
    """One training step's texts. Pointwise: B examples with labels. Pairwise: B pairs, labels None."""

    prompts: list[str]  # B (pointwise) or 2B (pairwise: each pair's prompt twice)
    candidates: list[str]  # B texts, or 2B: the B winners first, then the B losers in the same order
    labels: Tensor | None  # (B,) for pointwise losses, None for pairs

    @property
    def num_pairs(self) -> int:
        return len(self.prompts) // 2 if self.labels is None else 0


@dataclass
class RewardData:
    """Labelled text groups, one per prompt."""

    groups: list[TextGroup]

    def __post_init__(self) -> None:
        if not self.groups:
            raise ValueError("reward data needs at least one prompt, got none")

    @classmethod
    def from_store(cls, store: FeatureStore) -> "RewardData":
        """Every problem of the store with its N candidate texts and checker labels (P groups)."""
        texts = store.column("text")
        labels = store.labels()  # (P, N)
        return cls([
            TextGroup(problem.prompt, ["" if t is None else str(t) for t in texts[p]], labels[p], problem.family)
            for p, problem in enumerate(store.problems)
        ])

    @classmethod
    def from_preferences(cls, preferences: Sequence[TextPreference]) -> "RewardData":
        """One group per preference, labelled by the rule of `ranker.rankers.training_groups`; ties are dropped."""
        groups = [TextGroup(p.prompt, p.candidates, labels) for p in preferences if (labels := p.labels()) is not None]
        if not groups:
            raise ValueError(f"no usable preferences: all {len(preferences)} were ties (or none were given)")
        return cls(groups)

    @property
    def num_candidates(self) -> int:
        return sum(len(g.candidates) for g in self.groups)

    def examples(self) -> tuple[list[str], list[str], Tensor]:
        """Every (prompt, candidate, label) once: M prompts, M candidates, labels (M,)."""
        prompts = [g.prompt for g in self.groups for _ in g.candidates]
        candidates = [c for g in self.groups for c in g.candidates]
        return prompts, candidates, torch.cat([g.labels for g in self.groups])

    def pairs(self, max_per_prompt: int | None = None, generator: torch.Generator | None = None) -> list[tuple[str, str, str]]:
        """(prompt, winner, loser) for every pair with y_w > y_l within a group.

        With `max_per_prompt`, a group with more pairs keeps a random subset of that size (drawn
        from `generator`), so that prompts with many candidates do not dominate training.
        """
        out = []
        for group in self.groups:
            y = group.labels
            index = (y[:, None] > y[None, :]).nonzero()  # (num_pairs, 2): rows (w, l)
            if max_per_prompt is not None and index.shape[0] > max_per_prompt:
                index = index[torch.randperm(index.shape[0], generator=generator)[:max_per_prompt]]
            out += [(group.prompt, group.candidates[w], group.candidates[l]) for w, l in index.tolist()]
        return out

    def check_labels(self, loss: str) -> None:
        """Raise ValueError when the labels cannot train `loss` ("bce": within [0, 1]; "bt": some y_w > y_l)."""
        labels = torch.cat([g.labels for g in self.groups])
        if loss == "bce" and not ((labels >= 0) & (labels <= 1)).all():
            bad = labels[(labels < 0) | (labels > 1)][0].item()
            raise ValueError(f"loss 'bce' needs labels in [0, 1], got {bad!r}; use loss='mse' for real-valued labels")
        if loss == "bt" and not any((g.labels.max() > g.labels.min()).item() for g in self.groups):
            raise ValueError(
                f"loss 'bt' needs pairs, but no prompt of {len(self.groups)} has candidates with different labels"
            )

    def summary(self) -> dict:
        """Counts that the reward model's card records about its training data."""
        labels = torch.cat([g.labels for g in self.groups])
        binary = bool(((labels == 0) | (labels == 1)).all())
        return {
            "prompts": len(self.groups),
            "candidates": self.num_candidates,
            "families": sorted({g.family for g in self.groups if g.family}),
            "label_type": "binary" if binary else "real",
            "mean_label": float(labels.mean()),
        }


def check_candidates(candidates: Sequence[str]) -> None:
    """Raise ValueError unless `candidates` is a non-empty list of strings."""
    if isinstance(candidates, str) or len(candidates) == 0:
        raise ValueError(f"candidates must be a non-empty list of strings, got {candidates!r}")
    for k, text in enumerate(candidates):
        if not isinstance(text, str):
            raise ValueError(f"candidate {k} must be a string, got {type(text).__name__} {text!r}")


def check_texts(prompts: Sequence[str], candidates: Sequence[str]) -> None:
    """Raise ValueError unless prompts and candidates are equally long lists of strings, prompts non-empty."""
    if isinstance(prompts, str):
        raise ValueError(f"prompts must be a list of strings, got the string {prompts[:40]!r}")
    check_candidates(candidates)
    if len(prompts) != len(candidates):
        raise ValueError(f"got {len(prompts)} prompts for {len(candidates)} candidates; pass one prompt per candidate")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"prompt {i} must be a non-empty string, got {prompt!r}")


def plan_batches(data: RewardData, loss: str, batch_size: int, epochs: int, max_pairs_per_prompt: int | None,
                 generator: torch.Generator) -> list[TextBatch]:
    """Every step's texts for the whole run, drawn up front so that the LR schedule knows the step count.

    Pointwise losses shuffle all examples each epoch; "bt" redraws and shuffles the pairs each epoch.
    """
    batches: list[TextBatch] = []
    for _ in range(epochs):
        if loss == "bt":
            pairs = data.pairs(max_pairs_per_prompt, generator)
            order = torch.randperm(len(pairs), generator=generator)
            for index in order.split(batch_size):
                chosen = [pairs[i] for i in index.tolist()]
                prompts = [p for p, _, _ in chosen]
                batches.append(TextBatch(prompts + prompts, [w for _, w, _ in chosen] + [l for _, _, l in chosen], None))
        else:
            prompts, candidates, labels = data.examples()
            order = torch.randperm(len(prompts), generator=generator)
            for index in order.split(batch_size):
                rows = index.tolist()
                batches.append(TextBatch([prompts[i] for i in rows], [candidates[i] for i in rows], labels[index]))
    assert batches, "plan_batches: RewardData is never empty, so there is at least one batch"
    return batches

