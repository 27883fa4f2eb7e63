"""rank_prompt and score_with_rm on the tiny random model: the RM can run after the ranked list."""

import pytest
import torch

from ranker.capture.sampling import SamplingConfig
from ranker.serving.best_of_n import rank_prompt, score_with_rm


class LengthRM:
    """A stand-in reward model: the score of a candidate is its length in characters."""

    def __init__(self, extra: int = 0):
        self.extra, self.calls = extra, 0

    def score(self, prompt, candidates):
        self.calls += 1
        return torch.tensor([float(len(c)) for c in candidates] + [0.0] * self.extra)


def test_rm_scores_can_come_after_the_ranked_list(tiny_base):
    config = SamplingConfig(num_candidates=4, max_new_tokens=8, seed=5)
    now = rank_prompt(tiny_base, "hello", config, rm=LengthRM())
    later = rank_prompt(tiny_base, "hello", config)
    assert later.rm_scores is None and "rm_s" not in later.timings
    rm = LengthRM()
    assert score_with_rm(later, rm) is later and rm.calls == 1
    assert later.texts == now.texts
    assert torch.equal(later.rm_scores, now.rm_scores)
    assert later.rm_scores.tolist() == [float(len(t)) for t in later.texts]
    assert later.timings["rm_s"] >= 0.0


def test_a_reward_model_returning_the_wrong_count_is_refused(tiny_base):
    result = rank_prompt(tiny_base, "hello", SamplingConfig(num_candidates=3, max_new_tokens=4, seed=1))
    with pytest.raises(ValueError, match="returned 4 scores for 3 candidates"):
        score_with_rm(result, LengthRM(extra=1))
    assert result.rm_scores is None
