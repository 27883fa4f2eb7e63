"""The shipped rankers: they load in the current card format, and only for the base model they were trained on."""

import json
from dataclasses import replace

import pytest
import torch

from ranker.capture.fingerprint import ModelFingerprint
from ranker.core.cards import CARD_NAME
from ranker.rankers.calibration import PlattCalibration
from ranker.rankers.fallback import ramp
from ranker.rankers.shipped import SHIPPED_RANKERS, existing_shipped, load_compatible, load_for_model
from tests.ranker.rankers.fallback_points import beyond_support, on_support

EMBEDDED = ModelFingerprint("gguf:SmolLM2-135M-Instruct.Q4_1.gguf",
                            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", 30, 576)


@pytest.mark.parametrize("name", list(SHIPPED_RANKERS))
def test_shipped_cards_load_with_their_fusion_weights_and_calibration_exactly(name):
    path = SHIPPED_RANKERS[name]
    card = json.loads((path / CARD_NAME).read_text())
    ranker = load_for_model(path, EMBEDDED)
    assert ranker.fingerprint_.model == EMBEDDED and ranker.fingerprint_.layer == card["fingerprint"]["layer"]
    assert ranker.fusion.weights == card["fusion"]["weights"] and ranker.fusion.global_weights == card["fusion"]["global_weights"]
    centroids = 1 if ranker.fusion.centroids is None else ranker.fusion.centroids.shape[0]
    assert ranker.fusion.num_clusters == len(card["fusion"]["weights"]) == centroids
    assert ranker.fusion.fallback.to_dict() == card["fusion"]["fallback"]  # its support centroids loaded beside it
    assert ranker.calibration_ == PlattCalibration(**card["calibration"]) and ranker.calibration_.source == "out_of_fold"
    assert ranker.fusion_config_.enabled and ranker.get_params()["fusion_clusters"] == (1, 2, 4, 8)
    assert ranker.kind == {"list_ranker": "list", "point_ranker": "point"}[name]
    cal = ranker.calibration_
    assert cal.by_regime  # the shipped cards have a fallback, so their scores are calibrated by regime
    # Several fusion clusters: the near pair is offset per cluster (ranker.rankers.calibration, "By cluster").
    assert ranker.fusion.num_clusters > 1 and cal.num_clusters == ranker.fusion.num_clusters
    # By regime: an instruction on a training centroid gets its cluster's near pair; one far away blends in the far pair
    fallback = ranker.fusion.fallback
    near_q, far_q = on_support(fallback), beyond_support(fallback)
    far_share = float(ramp(fallback.distances(far_q[None]), fallback.near, fallback.far))
    assert far_share > 0.5  # the opposite of every centroid is far from the training data
    for q, share in ((near_q, 0.0), (far_q, far_share)):
        scores = ranker.score(q, torch.eye(4, ranker.n_features_in_), torch.full((4,), -0.5), ["1", "1", "2", None])
        cluster = ranker.fusion.cluster_of(q)
        near_a, near_b = cal.a + cal.cluster_a[cluster], cal.b + cal.cluster_b[cluster]
        slope, bias = (1 - share) * near_a + share * cal.far_a, (1 - share) * near_b + share * cal.far_b
        assert torch.allclose(ranker.probability_correct(scores, q), torch.sigmoid(slope * scores + bias), atol=1e-6)
    with pytest.raises(ValueError, match="pass the scores' instructions"):
        ranker.probability_correct(scores)


def test_load_compatible_keeps_the_rankers_of_this_model_and_says_why_it_skips_the_others(tmp_path):
    assert existing_shipped() == SHIPPED_RANKERS  # this checkout ships both
    rankers, skipped = load_compatible(SHIPPED_RANKERS, EMBEDDED)
    assert sorted(rankers) == sorted(SHIPPED_RANKERS) and skipped == {}
    other = replace(EMBEDDED, model_id="tiny-llm", revision="f" * 64)
    rankers, skipped = load_compatible({**SHIPPED_RANKERS, "missing": tmp_path / "none"}, other)
    assert rankers == {}
    assert "trained on gguf:SmolLM2-135M-Instruct.Q4_1.gguf" in skipped["list_ranker"] and "tiny-llm" in skipped["list_ranker"]
    assert "card.json not found" in skipped["missing"]
    with pytest.raises(ValueError, match="tiny-llm"):
        load_for_model(SHIPPED_RANKERS["point_ranker"], other)
