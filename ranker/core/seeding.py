"""One seeded context for torch's global RNG: `with seeded(seed, device): ...`.

Weight initialisation, dropout and `generate`'s sampling draw from torch's global RNG, which
belongs to the caller. Every seeded block of the library runs inside `torch.random.fork_rng`,
so that the same seed gives the same draws and the caller's random state is the same afterwards
as before. The CUDA case is handled here once: the RNG of the CUDA device the block runs on is
forked too (`torch.manual_seed` seeds every device; only the forked ones are restored).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def forked_devices(device: str | torch.device | None) -> list[int]:
    """CUDA device indices whose RNG `seeded` saves and restores: [] off CUDA, [the index] on it."""
    if device is None:
        return []
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda:0', got {device!r}") from None
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


@contextlib.contextmanager
def seeded(seed: int | None, device: str | torch.device | None = None) -> Iterator[None]:
    """Run the block on torch's global RNG seeded with `seed`; restore the caller's RNG state after it.

    seed: an int, or None to fork without seeding (the block then continues the caller's stream on
    a copy, which is still restored afterwards). device: where the block draws random numbers;
    a CUDA device's RNG is forked as well as the CPU's.
    """
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"seed must be an int or None, got {seed!r}")
    with torch.random.fork_rng(devices=forked_devices(device)):
        if seed is not None:
            torch.manual_seed(seed)
        yield
