"""The fallback to free-signal weights for unfamiliar instructions: distances, the ramp, the blend, the rule."""

import math

import pytest
import torch

from ranker.rankers.estimator import LanguageRanker
from ranker.rankers.fallback import DistanceFallback, FallbackExamples, choose_fallback, ramp, support_distances
from ranker.rankers.fusion import Fusion
from ranker.rankers.synthetic import make_synthetic_queries
from tests.ranker.rankers.test_fusion import _with_signals


def test_distance_is_one_minus_the_best_cosine():
    support = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    fallback = DistanceFallback({"ranker": 0.0, "mean_logprob": 1.0}, support, near=0.1, far=0.3)
    assert fallback.distance(torch.tensor([2.0, 0.0])) == pytest.approx(0.0)
    assert fallback.distance(torch.tensor([1.0, 1.0])) == pytest.approx(1 - 1 / math.sqrt(2))  # 0.293
    assert support_distances(torch.tensor([[3.0, 0.0], [-1.0, 0.0]]), support).tolist() == pytest.approx([0.0, 1.0])


def test_ramp_and_blend():
    assert [ramp(d, 0.1, 0.3) for d in (0.05, 0.1, 0.2, 0.3, 0.9)] == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.0])
    assert [ramp(d, 0.2, 0.2) for d in (0.1, 0.2, 0.3)] == [0.0, 0.0, 1.0]  # a step
    support = torch.tensor([[1.0, 0.0]])
    fallback = DistanceFallback({"ranker": 0.0, "mean_logprob": 2.0}, support, near=0.0, far=1.0)
    # at 60 degrees the distance is 0.5: halfway between {"ranker": 1, "vote_share": 4} and the fallback
    instruction = torch.tensor([0.5, math.sqrt(3) / 2])
    blended = fallback.blend({"ranker": 1.0, "vote_share": 4.0}, instruction)
    assert blended == pytest.approx({"ranker": 0.5, "vote_share": 2.0, "mean_logprob": 1.0})
    assert fallback.blend({"ranker": 1.0}, torch.tensor([1.0, 0.0])) == {"ranker": 1.0}  # at the support: unchanged
    fusion = Fusion([{"ranker": 1.0, "vote_share": 4.0}], fallback=fallback)
    assert fusion.weights_for(instruction) == pytest.approx(blended)
    with pytest.raises(ValueError, match="far"):
        DistanceFallback({}, support, near=0.5, far=0.1)


def examples(distances, fused_right, free_right):
    """Queries of 2 candidates, candidate 0 correct: each scoring picks it (True) or the other (False)."""
    pick = lambda right: torch.tensor([1.0, 0.0]) if right else torch.tensor([0.0, 1.0])  # noqa: E731
    return FallbackExamples([pick(r) for r in fused_right], [pick(r) for r in free_right], torch.tensor(distances),
                            [torch.tensor([1.0, 0.0])] * len(distances))


def test_the_rule_falls_back_where_the_free_signals_win():
    # Near the training data the fused scores are right and the free ones wrong; far away, the opposite.
    in_domain = examples([0.1, 0.1, 0.12, 0.15], [True] * 4, [False] * 4)
    out_of_domain = examples([0.5, 0.6, 0.55, 0.7], [False] * 4, [True] * 4)
    near, far, report = choose_fallback(in_domain, out_of_domain)
    # The fused scores keep the majority of the weight near the data, the free ones far from it.
    assert all(ramp(d, near, far) < 0.5 for d in in_domain.distances.tolist())
    assert all(ramp(d, near, far) > 0.5 for d in out_of_domain.distances.tolist())
    assert report["chosen"]["pooled"] == 1.0 and report["never"]["pooled"] == 0.5


def test_the_rule_never_falls_back_when_the_fused_scores_win_everywhere():
    in_domain = examples([0.1, 0.2], [True, True], [False, False])
    out_of_domain = examples([0.5, 0.6], [True, True], [False, True])
    near, far, report = choose_fallback(in_domain, out_of_domain)
    assert near == far == float("inf") and report["chosen"] is not None


def test_fit_chooses_saves_and_loads_a_fallback(tmp_path):
    """On synthetic queries with log-probs and answers, fit records the rule's report; a saved fallback loads back."""
    queries = _with_signals(make_synthetic_queries(96, 8, 16, seed=0, topic_dim=4))
    ranker = LanguageRanker(kind="point", seed=0, projection_dim=16, epochs=1, batch_size=32).fit(queries, calibrate=True)
    report = ranker.fusion_report_["fallback"]
    assert set(report) >= {"near", "far", "never", "chosen", "kept", "weights"}
    assert report["weights"]["ranker"] == 0.0
    assert report["chosen"]["pooled"] >= report["never"]["pooled"]
    # Whatever the rule chose, a fusion with a fallback survives the checkpoint.
    support = torch.nn.functional.normalize(torch.randn(3, 16), dim=1)
    ranker.fusion_.fallback = DistanceFallback({"ranker": 0.0, "mean_logprob": 1.5}, support, 0.2, 0.4)
    ranker.save(tmp_path / "r")
    loaded = LanguageRanker.load(tmp_path / "r")
    assert torch.equal(loaded.fusion.fallback.support, support)
    assert loaded.fusion.fallback.to_dict() == ranker.fusion.fallback.to_dict()
    loaded.fusion_.weights = [{"ranker": 1.0}]  # no fused signal in any cluster: the fallback still fuses far away
    assert loaded.fused
    probe = queries[5]
    assert torch.equal(loaded.score(probe.instruction, probe.responses, probe.mean_logprob, probe.vote_keys),
                       ranker.score(probe.instruction, probe.responses, probe.mean_logprob, probe.vote_keys))


def test_identical_instructions_fit_without_a_fallback():
    """One instruction for every query (k-means finds one cluster): no held-out domain, so no fallback, and no crash."""
    queries = _with_signals(make_synthetic_queries(96, 8, 16, seed=1, topic_dim=4))
    same = queries[0].instruction
    queries = [type(q)(same, q.responses, q.labels, q.query_id, q.mean_logprob, q.vote_keys) for q in queries]
    ranker = LanguageRanker(kind="point", seed=0, projection_dim=16, epochs=1, batch_size=32).fit(queries, calibrate=True)
    assert ranker.fusion_report_["fallback"] == {"kept": False, "why": "the training instructions form a single cluster"}
    assert ranker.fusion.fallback is None and ranker.calibration_.source == "out_of_fold"
