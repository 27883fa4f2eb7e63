"""Spherical k-means over instruction features: the fusion's clusters and the fallback's support.

Instructions are compared by cosine (the direction of a hidden state carries its content more
than its norm does), so points are normalised and centroids are unit mean directions.
"""

from __future__ import annotations

import torch
from torch import Tensor


def kmeans(points: Tensor, k: int, seed: int, iterations: int = 50) -> tuple[Tensor, Tensor]:
    """Spherical k-means: points (M, H) -> (unit centroids (k, H), assignment (M,)). Seeded k-means++ start."""
    unit = torch.nn.functional.normalize(points.float(), dim=1)
    gen = torch.Generator().manual_seed(seed)
    centroids = unit[torch.randint(len(unit), (1,), generator=gen)]
    while len(centroids) < k:
        distance = (1 - unit @ centroids.T).min(dim=1).values.clamp(min=0)
        if float(distance.sum()) == 0.0:
            break
        centroids = torch.cat([centroids, unit[torch.multinomial(distance, 1, generator=gen)]])
    for _ in range(iterations):
        assignment = torch.argmax(unit @ centroids.T, dim=1)
        updated = torch.stack([unit[assignment == c].sum(0) if bool((assignment == c).any()) else centroids[c]
                               for c in range(len(centroids))])
        updated = torch.nn.functional.normalize(updated, dim=1)
        if torch.allclose(updated, centroids):
            break
        centroids = updated
    return centroids, torch.argmax(unit @ centroids.T, dim=1)


def support_centroids(instructions: Tensor, seed: int, per_centroid: int = 20, most: int = 16) -> Tensor:
    """(S, H) unit k-means centroids that cover the instructions (M, H): one per `per_centroid` points, 1..`most`."""
    if len(instructions) == 0:
        raise ValueError("support centroids need at least one instruction")
    count = max(1, min(most, len(instructions) // per_centroid))
    return kmeans(instructions, count, seed)[0]
