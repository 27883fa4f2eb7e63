import pytest
import torch

from ranker.capture.fingerprint import FeatureFingerprint, ModelFingerprint
from ranker.rankers.estimator import LanguageRanker, NotFittedError
from ranker.rankers.networks import ListRanker, PointRanker
from ranker.rankers.synthetic import make_synthetic_queries

H = 32
FINGERPRINT = FeatureFingerprint(ModelFingerprint("tiny-llm", "c" * 64, num_layers=4, hidden_size=H), layer=2)
SMALL = dict(projection_dim=16, num_heads=2, epochs=5)


@pytest.fixture(scope="module")
def data():
    queries = make_synthetic_queries(400, 8, H, seed=1, signal=4.0, topic_dim=4)
    return queries[:300], queries[300:]


@pytest.fixture(scope="module")
def fitted(data):
    train, val = data
    return {kind: LanguageRanker(kind, **SMALL).fit(train, val, fingerprint=FINGERPRINT) for kind in ("list", "point")}


def test_init_only_stores_hyperparameters():
    est = LanguageRanker("point", lr=0.01, dropout=0.5, group_size=3)
    assert est.get_params() == {"kind": "point", "lr": 0.01, "dropout": 0.5, "group_size": 3}
    assert not hasattr(est, "model_")
    LanguageRanker("nonsense-kind")  # values are validated by fit, as in scikit-learn
    with pytest.raises(ValueError, match="learning_rate"):
        LanguageRanker(learning_rate=0.1)
    assert est.set_params(lr=0.1) is est and est.get_params()["lr"] == 0.1
    assert "lr=0.1" in repr(est)


def test_fit_validates_hyperparameters(data):
    with pytest.raises(ValueError, match="kind"):
        LanguageRanker("nonsense-kind").fit(data[0])
    with pytest.raises(ValueError, match="optimizer"):
        LanguageRanker(optimizer="adam").fit(data[0])


def test_unfitted_use_is_refused(data):
    est = LanguageRanker()
    q = data[1][0]
    assert issubclass(NotFittedError, ValueError)
    for call in (lambda: est.score(q.instruction, q.responses), lambda: est.select(q.instruction, q.responses),
                 lambda: est.save("nowhere"), lambda: est.evaluate(data[1])):
        with pytest.raises(NotFittedError, match="not fitted"):
            call()


def test_fit_sets_fitted_attributes(fitted, data):
    est = fitted["list"]
    assert isinstance(est.model_, ListRanker) and isinstance(fitted["point"].model_, PointRanker)
    assert est.n_features_in_ == H and est.fingerprint_ == FINGERPRINT
    assert est.train_result_.val_metrics["best_of_n"] > est.train_result_.val_metrics["random"] + 0.15
    assert est.ranker_config_.projection_dim == 16 and est.train_config_.epochs == 5


@pytest.mark.parametrize("kind", ["list", "point"])
def test_score_select_rank(fitted, data, kind):
    est = fitted[kind]
    q = data[1][0]
    scores = est.score(q.instruction, q.responses)
    assert scores.shape == (8,) and scores.device.type == "cpu"
    assert est.select(q.instruction, q.responses) == int(scores.argmax())
    order = est.rank(q.instruction, q.responses)
    assert sorted(order) == list(range(8)) and order[0] == int(scores.argmax())
    assert (scores[order[:-1]] >= scores[order[1:]]).all()
    torch.testing.assert_close(est.score_queries(data[1][:3])[0], scores, rtol=1e-5, atol=1e-5)
    assert est.evaluate(data[1]).best_of_n > 0.65
    with pytest.raises(ValueError, match="responses"):
        est.score(q.instruction, q.responses[0])


def test_predict_proba(fitted, data):
    q = data[1][0]
    listwise = fitted["list"].predict_proba(q.instruction, q.responses)  # softmax within the list
    assert listwise.sum().item() == pytest.approx(1.0, abs=1e-5)
    pointwise = fitted["point"].predict_proba(q.instruction, q.responses)  # sigmoid per candidate
    torch.testing.assert_close(pointwise, torch.sigmoid(fitted["point"].score(q.instruction, q.responses)))
    assert ((pointwise > 0) & (pointwise < 1)).all()


def test_predict_proba_refused_for_real_labels():
    queries = make_synthetic_queries(30, 4, H, label_type="real", topic_dim=4)
    est = LanguageRanker("point", label_type="real", **{**SMALL, "epochs": 1}).fit(queries)
    with pytest.raises(ValueError, match="mse"):
        est.predict_proba(queries[0].instruction, queries[0].responses)


def test_same_seed_same_ranker(data):
    q = data[1][0]
    a = LanguageRanker(**{**SMALL, "epochs": 1}).fit(data[0][:50])
    b = LanguageRanker(**{**SMALL, "epochs": 1}).fit(data[0][:50])
    c = LanguageRanker(**{**SMALL, "epochs": 1, "seed": 1}).fit(data[0][:50])
    assert torch.equal(a.score(q.instruction, q.responses), b.score(q.instruction, q.responses))
    assert not torch.equal(a.score(q.instruction, q.responses), c.score(q.instruction, q.responses))


def test_save_load_round_trip_and_fingerprint_check(tmp_path, fitted, data):
    est = fitted["point"]
    est.save(tmp_path / "ranker")
    loaded = LanguageRanker.load(tmp_path / "ranker", expected_fingerprint=FINGERPRINT)
    q = data[1][3]
    assert torch.equal(loaded.score(q.instruction, q.responses), est.score(q.instruction, q.responses))
    assert loaded.get_params()["kind"] == "point" and loaded.get_params()["epochs"] == 5
    assert loaded.fingerprint_ == FINGERPRINT and loaded.train_result_ is None
    assert loaded.training_data_["num_queries"] == 300 and loaded.metrics_["loss"] == "bce"
    proba = loaded.predict_proba(q.instruction, q.responses)
    torch.testing.assert_close(proba, est.predict_proba(q.instruction, q.responses))
    wrong = FeatureFingerprint(FINGERPRINT.model, layer=1)
    with pytest.raises(ValueError, match="layer 2"):
        LanguageRanker.load(tmp_path / "ranker", expected_fingerprint=wrong)
    loaded.save(tmp_path / "again")  # a loaded ranker can be saved again
    assert LanguageRanker.load(tmp_path / "again").metrics_["loss"] == "bce"


def test_fingerprint_must_match_the_features(data):
    other = FeatureFingerprint(ModelFingerprint("big", "d" * 64, 32, 4096), layer=20)
    with pytest.raises(ValueError, match="hidden size 32"):
        LanguageRanker().fit(data[0][:10], fingerprint=other)
