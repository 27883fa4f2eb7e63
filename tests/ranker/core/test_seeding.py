"""`seeded`: the same seed gives the same draws, and the caller's RNG continues as if nothing happened."""

import pytest
import torch

from ranker.core.seeding import forked_devices, seeded


def test_same_seed_same_draws_and_the_callers_stream_is_restored():
    torch.manual_seed(123)
    expected_next = torch.rand(4)  # what the caller draws next without any seeded block
    torch.manual_seed(123)
    with seeded(7):
        first = torch.rand(5)
    after = torch.rand(4)
    assert torch.equal(after, expected_next)
    with seeded(7):
        second = torch.rand(5)
    assert torch.equal(first, second)
    with seeded(8):
        other = torch.rand(5)
    assert not torch.equal(first, other)


def test_seeded_draws_equal_manual_seed_draws():
    """The block draws exactly what `torch.manual_seed(seed)` followed by the same calls draws (old code paths)."""
    with seeded(3):
        inside = (torch.randn(3), torch.randint(0, 100, (4,)))
    torch.manual_seed(3)
    plain = (torch.randn(3), torch.randint(0, 100, (4,)))
    assert all(torch.equal(a, b) for a, b in zip(inside, plain))


def test_no_seed_forks_without_seeding():
    torch.manual_seed(5)
    state = torch.random.get_rng_state()
    continued = torch.rand(3)
    torch.random.set_rng_state(state)
    with seeded(None):
        inside = torch.rand(3)  # continues the caller's stream, on a copy
    assert torch.equal(inside, continued)
    assert torch.equal(torch.random.get_rng_state(), state)  # the copy's draws did not advance the caller


def test_the_state_is_restored_when_the_block_raises():
    torch.manual_seed(11)
    state = torch.random.get_rng_state()
    with pytest.raises(RuntimeError, match="boom"):
        with seeded(1):
            torch.rand(10)
            raise RuntimeError("boom")
    assert torch.equal(torch.random.get_rng_state(), state)


def test_devices_and_bad_values():
    assert forked_devices(None) == [] and forked_devices("cpu") == [] and forked_devices(torch.device("cpu")) == []
    assert forked_devices("cuda:3") == [3]
    with pytest.raises(ValueError, match="'not-a-device'"):
        forked_devices("not-a-device")
    for seed in (1.5, "0", True):
        with pytest.raises(ValueError, match="seed must be an int or None"):
            with seeded(seed):
                pass
