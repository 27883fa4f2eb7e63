"""Sampling with capture on the tiny random model: parity with a second pass, determinism, outputs."""

import math

import pytest
import torch

from ranker.capture.hidden_states import reference_hidden_states
from ranker.capture.sampling import SamplingConfig, sample_candidates, sample_candidates_batch

PROMPTS = ["hi", "a much longer prompt, padded less", "mid-size prompt"]


def relative_error(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """||a - b|| / ||b|| over the last dimension."""
    return (a - b).norm(dim=-1) / b.norm(dim=-1)


def assert_parity(base, results, tolerance=1e-4):
    """Every captured feature equals a separate full forward pass over prompt + candidate."""
    for result in results:
        prompt_ids = torch.tensor([result.prompt_token_ids])
        reference = reference_hidden_states(base.model, prompt_ids, result.layers)[0, :, -1]  # (layers, H)
        assert relative_error(result.instruction_features, reference.float()).max() < tolerance
        for k, candidate in enumerate(result.candidates):
            ids = torch.tensor([result.prompt_token_ids + candidate.token_ids])
            reference = reference_hidden_states(base.model, ids, result.layers)[0, :, -1]
            error = relative_error(result.response_features[k], reference.float()).max()
            assert error < tolerance, (result.prompt, k, candidate.finish_reason, float(error))


@pytest.fixture(scope="module")
def batch(tiny_base):
    config = SamplingConfig(num_candidates=8, max_new_tokens=20, seed=1)
    return sample_candidates_batch(tiny_base, PROMPTS, config, layers=[1, 0.5, 1.0])


def test_batch_has_both_finish_reasons_and_padded_prompts(batch):
    reasons = {c.finish_reason for r in batch for c in r.candidates}
    assert reasons == {"eos", "length"}
    assert len({len(r.prompt_token_ids) for r in batch}) == 3  # padding was needed


def test_features_match_a_second_forward_pass(tiny_base, batch):
    assert batch[0].layers == (1, 2, 4)
    assert_parity(tiny_base, batch)


def test_candidate_fields_are_consistent(tiny_base, batch):
    for result in batch:
        assert result.response_features.shape == (8, 3, tiny_base.hidden_size)
        assert result.instruction_features.shape == (3, tiny_base.hidden_size)
        for candidate in result.candidates:
            assert candidate.num_tokens == len(candidate.token_ids)
            if candidate.finish_reason == "eos":
                assert candidate.token_ids[-1] == 1 and 1 not in candidate.token_ids[:-1]
            else:
                assert candidate.num_tokens == 20 and 1 not in candidate.token_ids
            assert candidate.text == tiny_base.tokenizer.decode(candidate.token_ids, skip_special_tokens=True).strip()
            assert math.isclose(candidate.mean_logprob, candidate.sum_logprob / candidate.num_tokens)


def test_log_probs_are_the_raw_model_distribution(tiny_base):
    """Sampled at temperature 2 with top-k, yet the recorded log-probs are those of the untempered model."""
    config = SamplingConfig(num_candidates=4, max_new_tokens=12, seed=3, temperature=2.0, top_k=20)
    result = sample_candidates(tiny_base, "check log probs", config, layers=1)
    for candidate in result.candidates:
        ids = torch.tensor([result.prompt_token_ids + candidate.token_ids])
        logits = tiny_base.model(ids).logits[0].float()
        start = len(result.prompt_token_ids)
        log_probs = torch.log_softmax(logits[start - 1 : -1], dim=-1).gather(1, ids[0, start:, None]).squeeze(1)
        assert math.isclose(candidate.sum_logprob, float(log_probs.sum()), rel_tol=1e-4, abs_tol=1e-4)


def test_same_seed_same_candidates_and_features(tiny_base):
    config = SamplingConfig(num_candidates=6, max_new_tokens=16, seed=7)
    first = sample_candidates_batch(tiny_base, PROMPTS[:2], config, layers=2)
    second = sample_candidates_batch(tiny_base, PROMPTS[:2], config, layers=2)
    other = sample_candidates_batch(tiny_base, PROMPTS[:2], SamplingConfig(num_candidates=6, max_new_tokens=16, seed=8), layers=2)
    for a, b in zip(first, second):
        assert [c.token_ids for c in a.candidates] == [c.token_ids for c in b.candidates]
        assert torch.equal(a.response_features, b.response_features)
        assert torch.equal(a.instruction_features, b.instruction_features)
    assert [c.token_ids for c in first[0].candidates] != [c.token_ids for c in other[0].candidates]


def test_step_callback_sees_every_decode_step_and_changes_nothing(tiny_base):
    config = SamplingConfig(num_candidates=4, max_new_tokens=12, seed=3)
    steps = []
    reported = sample_candidates(tiny_base, PROMPTS[1], config, layers=2, on_step=lambda done, total: steps.append((done, total)))
    plain = sample_candidates(tiny_base, PROMPTS[1], config, layers=2)
    assert [c.token_ids for c in reported.candidates] == [c.token_ids for c in plain.candidates]
    assert torch.equal(reported.response_features, plain.response_features)
    longest = max(c.num_tokens for c in plain.candidates)
    # One call per generated position: 1, 2, ... up to the longest candidate, against max_new_tokens.
    assert steps == [(i, 12) for i in range(1, longest + 1)]


def test_max_rows_splits_calls_without_changing_parity(tiny_base):
    results = sample_candidates_batch(tiny_base, PROMPTS, SamplingConfig(num_candidates=4, max_new_tokens=10, seed=2), layers=3, max_rows=4)
    assert [r.prompt for r in results] == PROMPTS
    assert_parity(tiny_base, results)


def test_greedy_gives_identical_candidates(tiny_base):
    result = sample_candidates(tiny_base, "greedy", SamplingConfig(num_candidates=3, temperature=0, max_new_tokens=8), layers=2)
    assert len({tuple(c.token_ids) for c in result.candidates}) == 1
    assert_parity(tiny_base, [result])


@pytest.mark.parametrize(
    "field, value",
    [("num_candidates", 0), ("temperature", -1.0), ("top_p", 0.0), ("top_k", -1), ("max_new_tokens", 0)],
)
def test_bad_sampling_parameters_are_named(field, value):
    with pytest.raises(ValueError, match=field):
        SamplingConfig(**{field: value}).validate()


def test_empty_prompt_is_refused(tiny_base):
    with pytest.raises(ValueError, match="prompt 0"):
        sample_candidates(tiny_base, "   ")


def test_confidence_signals_are_the_raw_distributions(tiny_base):
    """Self-certainty and DeepConf's token confidence, recomputed by their definitions from a second pass.

    Sampled at temperature 2 with top-p: the signals still describe the untempered distribution
    that chose each token (the logits at the position before it).
    """
    config = SamplingConfig(num_candidates=4, max_new_tokens=12, seed=5, temperature=2.0, top_p=0.9, confidence_top_k=5)
    result = sample_candidates(tiny_base, "check the confidences", config, layers=1)
    vocabulary = tiny_base.model.config.vocab_size
    for candidate in result.candidates:
        ids = torch.tensor([result.prompt_token_ids + candidate.token_ids])
        start = len(result.prompt_token_ids)
        logits = tiny_base.model(ids).logits[0, start - 1 : -1].double()  # (T, V): the distribution of each token
        probs = torch.softmax(logits, dim=-1)
        # KL(U || p) = sum_j (1/V) log((1/V) / p_j), written out term by term.
        kl = ((1.0 / vocabulary) * torch.log((1.0 / vocabulary) / probs)).sum(dim=-1)
        assert math.isclose(candidate.self_certainty, float(kl.mean()), rel_tol=1e-4, abs_tol=1e-5)
        top5 = torch.sort(torch.log(probs), dim=-1, descending=True).values[:, :5]
        expected = (-top5.mean(dim=-1)).tolist()
        assert len(candidate.token_confidences) == candidate.num_tokens
        assert candidate.token_confidences == pytest.approx(expected, rel=1e-4, abs=1e-5)
        # The defaults' 2048-token windows are longer than any candidate: one group, the mean.
        mean = sum(expected) / len(expected)
        for value in (candidate.lowest_group_confidence, candidate.bottom_group_confidence, candidate.tail_confidence):
            assert value == pytest.approx(mean, rel=1e-4)


def test_confidence_reductions_follow_the_windows(tiny_base):
    """With windows shorter than the candidates, the reductions are taken over the recorded token confidences."""
    config = SamplingConfig(num_candidates=4, max_new_tokens=12, seed=5, group_window=3, tail_tokens=4, bottom_fraction=0.5)
    result = sample_candidates(tiny_base, "check the windows", config, layers=1)
    for candidate in result.candidates:
        c = candidate.token_confidences
        if len(c) <= 3:
            groups = [sum(c) / len(c)]
        else:
            groups = [(c[i] + c[i + 1] + c[i + 2]) / 3 for i in range(len(c) - 2)]
        assert candidate.lowest_group_confidence == pytest.approx(min(groups))
        lowest = sorted(groups)[: max(1, len(groups) // 2)]
        assert candidate.bottom_group_confidence == pytest.approx(sum(lowest) / len(lowest))
        assert candidate.tail_confidence == pytest.approx(sum(c[-4:]) / len(c[-4:]))


@pytest.mark.parametrize("field, value", [("confidence_top_k", 0), ("confidence_top_k", 2.5), ("group_window", 0),
                                          ("tail_tokens", -1), ("bottom_fraction", 0.0), ("bottom_fraction", 1.5)])
def test_bad_confidence_settings_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        SamplingConfig(**{field: value}).validate()
