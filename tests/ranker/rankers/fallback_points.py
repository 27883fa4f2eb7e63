"""Instructions at known places relative to a fallback's support: on it (share 0) and beyond all of it (share 1)."""

import torch

from ranker.rankers.fallback import DistanceFallback


def _center(fallback: DistanceFallback) -> torch.Tensor:
    return torch.zeros(fallback.support.shape[1]) if fallback.center is None else fallback.center


def on_support(fallback: DistanceFallback) -> torch.Tensor:
    """(H,) an instruction at distance 0: the first support centroid's direction, from the center."""
    return _center(fallback) + 3 * fallback.support[0]


def beyond_support(fallback: DistanceFallback) -> torch.Tensor:
    """(H,) an instruction with the same negative cosine to every support centroid, so its distance exceeds 1:
    v = -S^T (S S^T)^+ 1 has s_c . v = -1 for each centroid s_c (S < H, centroids independent)."""
    support = fallback.support.double()
    v = -support.T @ torch.linalg.pinv(support @ support.T) @ torch.ones(len(support), dtype=torch.float64)
    return _center(fallback) + 10 * torch.nn.functional.normalize(v, dim=0).float()
