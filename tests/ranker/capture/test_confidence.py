"""DeepConf's reductions and the per-step signals, against numbers worked out by hand."""

import math

import numpy as np
import pytest
import torch

from ranker.capture.confidence import ConfidenceConfig, StepSignals, group_confidences, trace_confidences


def test_group_confidences_are_sliding_window_means():
    # windows of 2 over [1, 3, 2, 6]: (1+3)/2, (3+2)/2, (2+6)/2
    assert group_confidences([1.0, 3.0, 2.0, 6.0], 2).tolist() == [2.0, 2.5, 4.0]
    assert group_confidences([1.0, 3.0], 5).tolist() == [2.0]  # shorter than the window: one group, the mean
    with pytest.raises(ValueError, match="non-empty"):
        group_confidences([], 2)


def test_trace_confidences_by_hand():
    values = [4.0, 2.0, 1.0, 5.0, 3.0, 3.0]
    # windows of 2: 3, 1.5, 3, 4, 3 -> lowest 1.5; bottom 40% of 5 groups = the 2 lowest (1.5, 3) -> 2.25
    # tail of 3 tokens: (5 + 3 + 3) / 3
    got = trace_confidences(values, ConfidenceConfig(group_window=2, tail_tokens=3, bottom_fraction=0.4))
    assert got == {"lowest_group_confidence": 1.5, "bottom_group_confidence": 2.25, "tail_confidence": pytest.approx(11 / 3)}
    # bottom 10% of 5 groups rounds down to 0: at least one group is kept, so it equals the lowest.
    got = trace_confidences(values, ConfidenceConfig(group_window=2, bottom_fraction=0.1))
    assert got["bottom_group_confidence"] == 1.5
    assert got["tail_confidence"] == pytest.approx(3.0)  # tail longer than the candidate: all tokens


@pytest.mark.parametrize("kwargs", [{"group_window": 0}, {"tail_tokens": 1.5}, {"bottom_fraction": 0}, {"bottom_fraction": True}])
def test_bad_config_is_refused(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        ConfidenceConfig(**kwargs)


def test_step_signals_on_a_hand_made_distribution():
    """Two steps of one row over V = 4 tokens; each value worked out from p directly."""
    p1 = np.array([0.7, 0.1, 0.1, 0.1])
    p2 = np.array([0.25, 0.25, 0.25, 0.25])
    recorder = StepSignals(prompt_length=3, rows=1, capacity=4, device=torch.device("cpu"), top_k=2)
    prompt = torch.tensor([[5, 6, 7]])
    recorder(prompt, torch.tensor(np.log(p1)[None] + 2.0, dtype=torch.float32))  # shifted logits: same distribution
    recorder(torch.tensor([[5, 6, 7, 0]]), torch.tensor(np.log(p2)[None], dtype=torch.float32))
    out = recorder.finish(torch.tensor([[5, 6, 7, 0, 3]]))
    assert out["log_probs"][0].tolist() == pytest.approx([math.log(0.7), math.log(0.25)], abs=1e-6)
    kl1 = sum(0.25 * math.log(0.25 / q) for q in p1)  # KL(U || p1)
    assert out["certainty"][0].tolist() == pytest.approx([kl1, 0.0], abs=1e-6)
    conf1 = -(math.log(0.7) + math.log(0.1)) / 2  # top-2 of p1
    assert out["confidence"][0].tolist() == pytest.approx([conf1, -math.log(0.25)], abs=1e-6)


def test_masked_logits_leave_the_mask_out():
    """A model that sets some logits to -inf: the certainty averages over the tokens it can emit."""
    recorder = StepSignals(prompt_length=1, rows=1, capacity=1, device=torch.device("cpu"), top_k=1)
    p = [0.5, 0.5]
    recorder(torch.tensor([[9]]), torch.tensor([[math.log(p[0]), math.log(p[1]), -math.inf, -math.inf]]))
    out = recorder.finish(torch.tensor([[9, 0]]))
    assert out["certainty"][0, 0].item() == pytest.approx(0.0, abs=1e-6)  # uniform over the 2 finite tokens
    assert out["log_probs"][0, 0].item() == pytest.approx(math.log(0.5), abs=1e-6)
