import json
import math

import pytest
import torch

import ranker
import ranker.rankers.checkpoint as checkpoint
from ranker.capture.fingerprint import FeatureFingerprint, ModelFingerprint
from ranker.core.cards import CARD_NAME
from ranker.rankers.calibration import PlattCalibration
from ranker.rankers.checkpoint import EXTRA_NAME, WEIGHTS_NAME, RankerCard, load_checkpoint, read_card, save_checkpoint
from ranker.rankers.fusion import Fusion, FusionConfig
from ranker.rankers.networks import RankerConfig, build_ranker
from ranker.rankers.synthetic import make_synthetic_queries
from ranker.rankers.train_config import TrainConfig
from ranker.rankers.training import score_queries, train_ranker

H = 32
FINGERPRINT = FeatureFingerprint(ModelFingerprint("tiny-llm", "a" * 64, num_layers=4, hidden_size=H), layer=2)


@pytest.fixture(scope="module")
def queries():
    return make_synthetic_queries(40, 6, H, seed=0, topic_dim=4)


def trained(queries, kind="list", **kw):
    torch.manual_seed(0)
    model = build_ranker(RankerConfig(kind=kind, hidden_size=H, projection_dim=16, num_heads=2, **kw))
    result = train_ranker(model, queries, TrainConfig(steps=5))
    return model, result


@pytest.mark.parametrize("kind", ["list", "point"])
def test_round_trip_gives_identical_scores(tmp_path, queries, kind):
    model, result = trained(queries, kind)
    config, fusion_config = TrainConfig(steps=5), FusionConfig(folds=3, clusters=(1, 2))
    calibration = PlattCalibration(1.25, -0.5)
    save_checkpoint(tmp_path / "r", model, RankerCard(
        model.config, config, fusion_config, FINGERPRINT, calibration=calibration,
        training_data=result.data_summary, metrics={"auroc": math.nan, "best_of_n": 0.5}))
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == [CARD_NAME, WEIGHTS_NAME]
    loaded, card = load_checkpoint(tmp_path / "r", expected_fingerprint=FINGERPRINT)
    assert not loaded.training
    for a, b in zip(score_queries(model, queries), score_queries(loaded, queries)):
        assert torch.equal(a, b)
    assert not loaded.input_norm.needs_fit  # the fitted feature statistics travel with the weights
    assert card.ranker_config == model.config and card.train_config == config
    assert card.fusion_config == fusion_config and card.calibration == calibration
    assert card.fusion.weights == [{"ranker": 1.0}] and card.fusion.centroids is None
    assert card.fingerprint == FINGERPRINT
    assert card.training_data["num_queries"] == 40
    assert card.metrics == {"auroc": None, "best_of_n": 0.5}  # nan is not JSON
    assert card.library_version == ranker.__version__ and card.created.endswith("+00:00")


def test_card_json_is_plain_and_readable(tmp_path, queries):
    model, _ = trained(queries)
    save_checkpoint(tmp_path / "r", model, RankerCard(model.config, fingerprint=FINGERPRINT))
    data = json.loads((tmp_path / "r" / CARD_NAME).read_text())
    assert list(data) == ["format", "format_version", "ranker_config", "train_config", "fusion_config", "fingerprint",
                          "fusion", "calibration", "training_data", "metrics", "created", "library_version"]
    assert data["format"] == "language-ranker" and data["format_version"] == 2
    assert data["fingerprint"] == FINGERPRINT.to_dict()
    assert data["ranker_config"]["kind"] == "list" and data["train_config"] is None and data["calibration"] is None
    assert read_card(tmp_path / "r").fingerprint == FINGERPRINT


def test_fusion_weights_and_centroids_round_trip_exactly(tmp_path, queries):
    model, _ = trained(queries)
    centroids = torch.nn.functional.normalize(torch.randn(2, H, generator=torch.Generator().manual_seed(1)), dim=1)
    fusion = Fusion([{"ranker": 0.3, "mean_logprob": 0.1, "vote_share": 2.0}, {"ranker": 0.125, "vote_share": 7.5}],
                    centroids, {"ranker": 0.25, "mean_logprob": 0.05, "vote_share": 3.0})
    save_checkpoint(tmp_path / "r", model, RankerCard(model.config, fusion=fusion))
    assert (tmp_path / "r" / EXTRA_NAME).is_file()
    card = read_card(tmp_path / "r")
    assert card.fusion.weights == fusion.weights and card.fusion.global_weights == fusion.global_weights
    assert torch.equal(card.fusion.centroids, centroids)


def test_a_card_of_another_format_version_is_refused(tmp_path, queries):
    model, _ = trained(queries)
    save_checkpoint(tmp_path / "r", model)
    card = json.loads((tmp_path / "r" / CARD_NAME).read_text())
    card["format_version"] = 1
    (tmp_path / "r" / CARD_NAME).write_text(json.dumps(card))
    with pytest.raises(ValueError, match="format_version 1 is not supported"):
        read_card(tmp_path / "r")


def test_a_card_that_does_not_describe_the_model_is_refused(tmp_path, queries):
    model, _ = trained(queries)
    with pytest.raises(ValueError, match="the card describes"):
        save_checkpoint(tmp_path / "r", model, RankerCard(RankerConfig(kind="point", hidden_size=H)))
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "other,needle",
    [
        (FeatureFingerprint(FINGERPRINT.model, layer=3), "layer 2"),
        (FeatureFingerprint(ModelFingerprint("other-llm", "b" * 64, 4, H), layer=2), "other-llm"),
    ],
)
def test_mismatching_fingerprint_is_refused(tmp_path, queries, other, needle):
    model, _ = trained(queries)
    save_checkpoint(tmp_path / "r", model, RankerCard(model.config, fingerprint=FINGERPRINT))
    with pytest.raises(ValueError, match=needle):
        load_checkpoint(tmp_path / "r", expected_fingerprint=other)
    load_checkpoint(tmp_path / "r")  # without an expectation it loads


def test_unknown_fingerprint_is_refused_when_one_is_expected(tmp_path, queries):
    model, _ = trained(queries)
    save_checkpoint(tmp_path / "r", model)
    with pytest.raises(ValueError, match="no feature fingerprint"):
        load_checkpoint(tmp_path / "r", expected_fingerprint=FINGERPRINT)


def test_overwrite_is_atomic_and_leaves_no_temporaries(tmp_path, queries, monkeypatch):
    first, _ = trained(queries, "list")
    second, _ = trained(queries, "point")
    save_checkpoint(tmp_path / "r", first)
    save_checkpoint(tmp_path / "r", second)
    assert read_card(tmp_path / "r").ranker_config.kind == "point"
    assert [p.name for p in tmp_path.iterdir()] == ["r"]

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "r", first)
    assert read_card(tmp_path / "r").ranker_config.kind == "point"  # the old checkpoint survived
    assert [p.name for p in tmp_path.iterdir()] == ["r"]


def test_refuses_to_overwrite_a_folder_that_is_not_a_checkpoint(tmp_path, queries):
    model, _ = trained(queries)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a ranker checkpoint"):
        save_checkpoint(tmp_path / "notes", model)
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"


def test_loading_something_else_fails_clearly(tmp_path):
    with pytest.raises(ValueError, match="card.json not found"):
        load_checkpoint(tmp_path)
    (tmp_path / CARD_NAME).write_text(json.dumps({"format": "something"}))
    with pytest.raises(ValueError, match="not a ranker card"):
        load_checkpoint(tmp_path)
