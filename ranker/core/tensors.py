"""How features are stored: float16, unless a value would overflow it, then float32.

Hidden states are stored by the feature store and the label store. float16 halves the disk and
memory they take and keeps about three decimal digits, plenty for a ranker; but a value beyond
float16's range would become inf, so one such value makes the whole tensor float32.
"""

from __future__ import annotations

import torch

FLOAT16_MAX = 65504.0  # torch.finfo(torch.float16).max: larger magnitudes overflow to inf


def storage_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """torch.float16, or torch.float32 when any value of any of `tensors` (any shapes) would overflow float16."""
    if not tensors:
        raise ValueError("storage_dtype needs at least one tensor, got none")
    largest = max((t.abs().max().item() for t in tensors if t.numel() > 0), default=0.0)
    return torch.float32 if largest >= FLOAT16_MAX else torch.float16
