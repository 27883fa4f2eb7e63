"""Synthetic ranking queries for tests and design checks: correctness readable only against the instruction."""

from __future__ import annotations

import torch
from torch import Tensor

from ranker.rankers.training_groups import RankingQuery


def make_synthetic_queries(
    num_queries: int,
    num_candidates: int,
    hidden_size: int,
    *,
    seed: int = 0,
    topic_dim: int = 16,
    signal: float = 1.5,
    generic_signal: float = 0.0,
    noise: float = 1.0,
    label_type: str = "binary",
) -> list[RankingQuery]:
    """Queries whose correctness can only be read by comparing a response with its instruction.

    Meant to look like hidden states: a large shared offset, a few outlier dims with 20x the
    variance, isotropic noise, and the useful signal in a `topic_dim`-dimensional subspace.
    Each query has a topic t and a distractor topic u (unit vectors in the subspace):
        i   = offset + signal * t + noise
        r_k = offset + signal * (y_k * t + (1 - y_k) * u) + generic_signal * y_k * g + noise
    t and u have the same distribution, so without the instruction the two clusters of responses
    cannot be told apart (only `generic_signal`, a direction g shared by all correct responses,
    helps then). Per-query positive rate is uniform in [0.1, 0.9]; real labels are uniform in [0, 1].
    """
    if label_type not in ("binary", "real"):
        raise ValueError(f"label_type must be 'binary' or 'real', got {label_type!r}")
    if not 1 <= topic_dim < hidden_size:
        raise ValueError(f"topic_dim must be in [1, hidden_size - 1] = [1, {hidden_size - 1}], got {topic_dim}")
    gen = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(hidden_size, topic_dim + 1, generator=gen))[0]  # (H, topic_dim + 1)
    subspace, generic = basis[:, :topic_dim], basis[:, topic_dim]
    offset = 3.0 * torch.randn(hidden_size, generator=gen)
    scale = torch.ones(hidden_size)
    scale[torch.randperm(hidden_size, generator=gen)[:4]] = 20.0  # outlier dims

    def unit_topic() -> Tensor:
        v = torch.randn(topic_dim, generator=gen)
        return subspace @ (v / v.norm())

    queries = []
    for n in range(num_queries):
        t, u = unit_topic(), unit_topic()
        if label_type == "binary":
            rate = 0.1 + 0.8 * torch.rand((), generator=gen)
            y = (torch.rand(num_candidates, generator=gen) < rate).float()
        else:
            y = torch.rand(num_candidates, generator=gen)
        instruction = offset + signal * t + noise * scale * torch.randn(hidden_size, generator=gen)
        responses = (
            offset
            + signal * (y[:, None] * t + (1 - y[:, None]) * u)
            + generic_signal * y[:, None] * generic
            + noise * scale * torch.randn(num_candidates, hidden_size, generator=gen)
        )
        queries.append(RankingQuery(instruction, responses, y, f"synthetic-{n}"))
    return queries
