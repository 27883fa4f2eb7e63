"""Calibration owned by the estimator: fit(calibrate=True) fits Platt on out-of-fold scores (or, asked, on its
training scores), and the card keeps it."""

import pytest
import torch

from ranker.rankers.calibration import PlattCalibration, fit_calibration, fit_platt
from ranker.rankers.estimator import LanguageRanker, NotFittedError
from ranker.rankers.fusion import fold_indices
from ranker.rankers.networks import RankerConfig, build_ranker
from ranker.rankers.synthetic import make_synthetic_queries
from ranker.rankers.train_config import TrainConfig
from ranker.rankers.training import score_queries, train_ranker
from ranker.rankers.training_groups import RankingQuery

H = 16
FAST = dict(projection_dim=16, num_heads=2, epochs=2, batch_size=32)


@pytest.fixture(scope="module")
def queries():
    return make_synthetic_queries(60, 8, H, seed=0, topic_dim=4)


def test_fit_calibrate_equals_the_direct_platt_fit_on_the_same_scores(queries):
    ranker = LanguageRanker(kind="list", seed=1, **FAST).fit(queries, calibrate=True, calibration_source="training")
    scores = torch.cat(ranker.score_queries(queries))
    labels = torch.cat([q.labels for q in queries])
    a, b = fit_platt(scores, labels)
    assert ranker.calibration_ == PlattCalibration(a, b, "training")
    assert ranker.calibrated and a > 0  # higher scores, more likely correct
    torch.testing.assert_close(ranker.probability_correct(scores), torch.sigmoid(a * scores + b), rtol=0, atol=0)


def test_calibration_is_saved_and_loaded_exactly(queries, tmp_path):
    ranker = LanguageRanker(kind="point", seed=0, **FAST).fit(queries, calibrate=True)
    ranker.save(tmp_path / "r")
    loaded = LanguageRanker.load(tmp_path / "r")
    assert loaded.calibration_ == ranker.calibration_
    probe = torch.linspace(-3, 3, 7)
    assert torch.equal(loaded.probability_correct(probe), ranker.probability_correct(probe))


def test_without_calibration_probabilities_are_refused(queries):
    ranker = LanguageRanker(kind="list", seed=0, steps=2, **{k: v for k, v in FAST.items() if k != "epochs"}).fit(queries)
    assert ranker.calibration_ is None and not ranker.calibrated
    with pytest.raises(ValueError, match="no calibration: fit it with calibrate=True"):
        ranker.probability_correct(torch.zeros(3))
    with pytest.raises(NotFittedError):
        LanguageRanker().probability_correct(torch.zeros(3))


def test_bad_calibration_requests_fail_before_training(queries):
    with pytest.raises(ValueError, match="calibration_source must be one of \\('training', 'out_of_fold'\\), got 'held_out'"):
        LanguageRanker(kind="list", **FAST).fit(queries, calibrate=True, calibration_source="held_out")
    graded = [RankingQuery(q.instruction, q.responses, q.labels * 0.5, q.query_id) for q in queries]
    with pytest.raises(ValueError, match="needs binary labels.*'real'"):
        LanguageRanker(kind="list", label_type="real", **FAST).fit(graded, calibrate=True)
    with pytest.raises(ValueError, match="calibration source must be one of"):
        PlattCalibration(1.0, 0.0, "oof")
    with pytest.raises(ValueError, match="Platt a must be a finite number, got nan"):
        PlattCalibration(float("nan"), 0.0)
    with pytest.raises(ValueError, match="one label per score"):
        fit_calibration(torch.zeros(3), torch.zeros(2))


def test_training_data_and_metrics_reach_the_card_through_the_estimator(queries, tmp_path):
    ranker = LanguageRanker(kind="list", seed=0, **FAST).fit(queries, training_data={"store": "demo", "layer": 3})
    assert ranker.training_data_["store"] == "demo" and ranker.training_data_["num_queries"] == 60
    ranker.record_metrics(held_out={"accuracy": 0.75})
    ranker.save(tmp_path / "r")
    loaded = LanguageRanker.load(tmp_path / "r")
    assert loaded.training_data_ == ranker.training_data_
    assert loaded.metrics_["held_out"] == {"accuracy": 0.75} and loaded.metrics_["loss"] == "kl"
    with pytest.raises(ValueError, match="training_data must be a dict, got list"):
        LanguageRanker(kind="list", **FAST).fit(queries, training_data=[1])
    with pytest.raises(NotFittedError):
        LanguageRanker().record_metrics(x=1)


def test_default_calibration_is_fitted_on_out_of_fold_scores(queries):
    """The default: Platt on the scores of rankers that did not train on the candidates, rebuilt here by hand."""
    ranker = LanguageRanker(kind="list", seed=1, **FAST).fit(queries, calibrate=True)
    assert ranker.calibration_.source == "out_of_fold" and not ranker.fused  # synthetic queries carry no signal
    oof = [None] * len(queries)
    for held in fold_indices(len(queries), 4, seed=1):
        rest = [q for i, q in enumerate(queries) if i not in set(held)]
        torch.manual_seed(1)
        model = build_ranker(RankerConfig(kind="list", hidden_size=H, projection_dim=16, num_heads=2))
        train_ranker(model, rest, TrainConfig(seed=1, epochs=2, batch_size=32))
        for i, scores in zip(held, score_queries(model, [queries[i] for i in held])):
            oof[i] = scores
    a, b = fit_platt(torch.cat(oof), torch.cat([q.labels for q in queries]))
    assert ranker.calibration_.a == pytest.approx(a, rel=1e-6) and ranker.calibration_.b == pytest.approx(b, rel=1e-6)
    in_sample = LanguageRanker(kind="list", seed=1, **FAST).fit(queries, calibrate=True, calibration_source="training")
    assert in_sample.calibration_.a != pytest.approx(a, rel=1e-3)  # a different fit: the in-sample scores differ


def test_too_few_queries_to_cross_fit_calibrate_on_training_and_say_so(queries):
    ranker = LanguageRanker(kind="list", seed=1, **FAST).fit(queries[:7], calibrate=True)
    assert ranker.calibration_.source == "training"
