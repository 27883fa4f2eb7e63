"""The float16 rule of the feature and label stores."""

import pytest
import torch

from ranker.core.tensors import FLOAT16_MAX, storage_dtype


def test_float16_unless_a_value_would_overflow():
    assert storage_dtype(torch.ones(3), torch.full((2, 2), -60000.0)) == torch.float16
    assert storage_dtype(torch.ones(3), torch.tensor([0.0, -FLOAT16_MAX])) == torch.float32  # inf in float16
    assert torch.isinf(torch.tensor(FLOAT16_MAX * 1.001).half())  # why: float16 cannot hold it
    assert storage_dtype(torch.zeros(0), torch.ones(2)) == torch.float16  # an empty tensor has no value to overflow


def test_needs_a_tensor():
    with pytest.raises(ValueError, match="at least one tensor"):
        storage_dtype()
