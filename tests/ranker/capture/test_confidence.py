"""DeepConf's reductions and the per-step signals, against numbers worked out by hand."""

import math

import numpy as np
import pytest
import torch

from ranker.capture.confidence import ConfidenceConfig, StepSignals, group_confidences, top_k_values, trace_confidences


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


def test_rows_after_their_eos_are_skipped_and_the_rest_unchanged():
    """Row 0 emits EOS (id 3) at position 1: its later positions are not computed; every value
    up to and including its EOS equals what the processor records without skipping."""
    torch.manual_seed(0)
    steps = [torch.randn(2, 6) * 2 for _ in range(4)]
    tokens = torch.tensor([[1, 3, 0, 0], [2, 4, 5, 1]])  # sampled at positions 0..3; row 0 pads after its EOS
    prompt = torch.tensor([[7, 8], [7, 8]])

    def run(eos):
        recorder = StepSignals(prompt_length=2, rows=2, capacity=4, device=torch.device("cpu"), top_k=2, eos_token_ids=eos)
        for position, scores in enumerate(steps):
            recorder(torch.cat([prompt, tokens[:, :position]], dim=1), scores)
        return recorder.finish(torch.cat([prompt, tokens], dim=1))

    skipped, full = run([3]), run([])
    for name in ("log_probs", "certainty", "confidence"):
        assert torch.equal(skipped[name][0, :2], full[name][0, :2]), name  # row 0 up to its EOS
        assert skipped[name][0, 2:].tolist() == [0.0, 0.0], name  # never computed after it
        assert torch.allclose(skipped[name][1], full[name][1]), name  # row 1 generates throughout
    expected = torch.log_softmax(steps[1][0], -1)[3]  # the EOS's own log-prob is still settled
    assert skipped["log_probs"][0, 1].item() == pytest.approx(expected.item(), abs=1e-6)


@pytest.mark.parametrize("masked", [False, True])
def test_log_normaliser_matches_logsumexp(masked):
    """The normaliser read off top-k and log_softmax equals torch.logsumexp, masked logits included."""
    torch.manual_seed(1)
    logits = torch.randn(5, 300) * 4
    if masked:
        logits[:, 100:] = -math.inf
    recorder = StepSignals(prompt_length=1, rows=5, capacity=1, device=torch.device("cpu"), top_k=20)
    recorder(torch.zeros(5, 1, dtype=torch.long), logits)
    sampled = torch.tensor([[0], [1], [2], [3], [4]])
    out = recorder.finish(torch.cat([torch.zeros(5, 1, dtype=torch.long), sampled], dim=1))
    expected = logits.gather(1, sampled).squeeze(1) - torch.logsumexp(logits.double(), dim=-1).float()
    assert torch.allclose(out["log_probs"][:, 0], expected, atol=1e-5)


@pytest.mark.parametrize("case", ["random", "peaked", "ties", "masked", "odd_width", "few_blocks"])
def test_top_k_values_equal_torch_topk(case):
    """The block shortcut returns exactly torch.topk's values, whatever the logits look like."""
    torch.manual_seed(2)
    width = {"odd_width": 1000, "few_blocks": 128 * 10}.get(case, 128 * 64)
    logits = torch.randn(6, width) * 3
    if case == "peaked":
        logits[:, 3 * 128 : 3 * 128 + 40] += 12  # the top 20 all in one block
    if case == "ties":
        logits = torch.zeros(6, width)
        logits[:, 7] = 1.0
    if case == "masked":
        logits[:, width // 2 :] = -math.inf
    got = top_k_values(logits, 20)
    expected = torch.topk(logits, 20, dim=-1).values
    assert torch.equal(got.sort(dim=-1).values, expected.sort(dim=-1).values)
    assert top_k_values(logits[:, :5], 20).shape == (6, 5)  # k larger than V: all of them
