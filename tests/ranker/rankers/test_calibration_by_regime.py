"""Calibration by regime: a ranker with a fallback gets a second Platt pair for the fallback's scores, and an
instruction's P(correct) blends the two pairs by its share of the fallback (ranker.rankers.calibration)."""

import math

import pytest
import torch

from ranker.evaluation.metrics import expected_calibration_error
from ranker.rankers.calibration import MIN_REGIME_WEIGHT, PlattCalibration, fit_platt, fit_platt_by_regime
from ranker.rankers.estimator import LanguageRanker
from ranker.rankers.fallback import ramp, support_distances
from tests.ranker.rankers.test_fallback import _vote_wins_queries
from tests.ranker.rankers.fallback_points import beyond_support, on_support


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_the_two_pairs_blend_by_share_by_hand():
    calibration = PlattCalibration(1.0, 0.0, "out_of_fold", far_a=2.0, far_b=-1.0)
    assert calibration.by_regime and not PlattCalibration(1.0, 0.0).by_regime
    scores = torch.tensor([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0]])
    shares = torch.tensor([[0.0], [1.0], [0.5]])
    # share 0: sigmoid(s); share 1: sigmoid(2 s - 1); share 0.5: sigmoid(1.5 s - 0.5)
    expected = [[sigmoid(1), sigmoid(2)], [sigmoid(1), sigmoid(3)], [sigmoid(1), sigmoid(2.5)]]
    torch.testing.assert_close(calibration(scores, shares), torch.tensor(expected))
    with pytest.raises(ValueError, match="needs the fallback's share"):
        calibration(scores)
    assert torch.equal(PlattCalibration(1.0, 0.0)(scores, shares), torch.sigmoid(scores))  # one regime: shares ignored
    with pytest.raises(ValueError, match="far_a and far_b are set together"):
        PlattCalibration(1.0, 0.0, "out_of_fold", far_a=2.0)
    with pytest.raises(ValueError, match="far_b must be a finite number, got nan"):
        PlattCalibration(1.0, 0.0, "out_of_fold", far_a=2.0, far_b=float("nan"))
    # A card written before the far pair existed reads as one regime.
    assert PlattCalibration.from_dict({"a": 1.5, "b": -0.5, "source": "out_of_fold"}) == PlattCalibration(1.5, -0.5, "out_of_fold")


def test_the_fit_recovers_known_pairs_and_separates_pure_regimes():
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(20000, generator=gen) * 2
    shares = torch.rand(20000, generator=gen)
    truth = (1.5, -0.5, 0.4, 1.0)
    logits = ((1 - shares) * truth[0] + shares * truth[2]) * scores + (1 - shares) * truth[1] + shares * truth[3]
    labels = (torch.rand(20000, generator=gen) < torch.sigmoid(logits)).double()
    assert fit_platt_by_regime(scores, shares, labels) == pytest.approx(truth, abs=0.12)
    # Shares 0 or 1 only: the fit splits into the two one-regime Platt fits.
    pure = (shares > 0.5).double()
    a, b, far_a, far_b = fit_platt_by_regime(scores, pure, labels)
    near, far = pure == 0, pure == 1
    assert (a, b) == pytest.approx(fit_platt(scores[near], labels[near]), abs=1e-4)
    assert (far_a, far_b) == pytest.approx(fit_platt(scores[far], labels[far]), abs=1e-4)


def test_the_fit_refuses_what_it_cannot_fit():
    scores, labels = torch.randn(100), (torch.rand(100) > 0.5).double()
    with pytest.raises(ValueError, match="each regime needs a weight of at least 32 examples, got 100.0 near and 0.0 far"):
        fit_platt_by_regime(scores, torch.zeros(100), labels)
    with pytest.raises(ValueError, match=r"shares must lie in \[0, 1\]"):
        fit_platt_by_regime(scores, torch.full((100,), 1.5), labels)
    with pytest.raises(ValueError, match="one share and one label per score"):
        fit_platt_by_regime(scores, torch.zeros(99), labels)
    assert MIN_REGIME_WEIGHT == 32.0


@pytest.fixture(scope="module")
def fitted():
    """A ranker that falls back to the weighted vote far from its training instructions, calibrated."""
    queries = _vote_wins_queries()
    # Without cluster rules, which would give the near regime the weighted vote too (tests/.../test_fallback.py).
    ranker = LanguageRanker(kind="point", seed=0, projection_dim=16, epochs=1, batch_size=32,
                            fusion_cluster_rules=False).fit(queries, calibrate=True)
    return queries, ranker


def test_a_ranker_with_a_fallback_is_calibrated_by_regime(fitted, tmp_path):
    queries, ranker = fitted
    calibration, fallback = ranker.calibration_, ranker.fusion.fallback
    assert fallback is not None and calibration.by_regime and calibration.source == "out_of_fold"
    q = queries[2]
    near, far = on_support(fallback), beyond_support(fallback)
    assert fallback.share(fallback.distance(near)) == 0.0 and fallback.share(fallback.distance(far)) == 1.0
    for instruction, (a, b) in ((near, (calibration.a, calibration.b)), (far, (calibration.far_a, calibration.far_b))):
        scores = ranker.score(instruction, q.responses, q.mean_logprob, q.vote_keys)
        torch.testing.assert_close(ranker.probability_correct(scores, instruction), torch.sigmoid(a * scores + b))
    with pytest.raises(ValueError, match="pass the scores' instructions"):
        ranker.probability_correct(scores)
    with pytest.raises(ValueError, match="need one instruction per row of scores"):
        ranker.probability_correct(torch.zeros(3, 8), torch.stack([near, far]))
    with pytest.raises(ValueError, match=r"instructions must be \(H,\) or \(P, H\) with H = 16, got \(4,\)"):
        ranker.probability_correct(scores, torch.zeros(4))
    # (P, n) scores with (P, H) instructions: each row by its own instruction's share.
    rows = torch.stack([ranker.score(i, q.responses, q.mean_logprob, q.vote_keys) for i in (near, far)])
    by_row = ranker.probability_correct(rows, torch.stack([near, far]))
    torch.testing.assert_close(by_row, torch.stack([ranker.probability_correct(rows[0], near),
                                                    ranker.probability_correct(rows[1], far)]))
    ranker.save(tmp_path / "r")
    loaded = LanguageRanker.load(tmp_path / "r")
    assert loaded.calibration_ == calibration
    assert torch.equal(loaded.probability_correct(rows, torch.stack([near, far])), by_row)


def test_far_prompts_get_probabilities_from_the_far_pair_not_the_near_one(fitted):
    """On fresh queries far from the training instructions (where the score is the weighted vote's log share),
    the far pair's P(correct) is close to the observed rate; the near pair, fitted on fused scores, is not."""
    queries, ranker = fitted
    calibration, fallback = ranker.calibration_, ranker.fusion.fallback
    fresh = _vote_wins_queries(96, seed=5)
    far = beyond_support(fallback)
    scores = torch.cat([ranker.score(far, q.responses, q.mean_logprob, q.vote_keys) for q in fresh])
    labels = torch.cat([q.labels for q in fresh])
    by_regime = torch.cat([ranker.probability_correct(ranker.score(far, q.responses, q.mean_logprob, q.vote_keys), far)
                           for q in fresh])
    torch.testing.assert_close(by_regime, torch.sigmoid(calibration.far_a * scores + calibration.far_b))
    near_pair = PlattCalibration(calibration.a, calibration.b, "out_of_fold")(scores)
    best_a, best_b = fit_platt(scores, labels)
    best = torch.sigmoid(best_a * scores + best_b)
    ece_regime, ece_near = expected_calibration_error(by_regime, labels), expected_calibration_error(near_pair, labels)
    ece_best = expected_calibration_error(best, labels)  # a Platt fit on these very scores: the best any pair does
    # Measured: by regime 0.243, the best pair 0.244, the near pair 0.508 (these scores are not monotone in
    # correctness within a query, so no sigmoid of them is well calibrated).
    assert ece_regime < ece_best + 0.02 and ece_near > ece_regime + 0.15, (ece_regime, ece_best, ece_near)


def test_the_fallback_shares_follow_the_ramp(fitted):
    queries, ranker = fitted
    fallback = ranker.fusion.fallback
    instructions = torch.stack([q.instruction for q in queries[:10]] + [beyond_support(fallback)])
    shares = ranker._fallback_shares(instructions, torch.zeros(11, 8))
    expected = ramp(support_distances(instructions, fallback.support, fallback.center), fallback.near, fallback.far).float()[:, None]
    assert shares.shape == (11, 1) and torch.equal(shares, expected) and shares[-1].item() == 1.0
