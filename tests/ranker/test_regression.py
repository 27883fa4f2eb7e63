"""Regression guard on frozen real features: SmolLM2-135M-Instruct candidates, labels and layer-18 states.

The fixture (tests/assets/frozen_suite, cut from the experiment build by scripts/make_fixture.py)
holds 30 train and 20 test problems per family. Rankers trained on its train split must stay
at the level measured when it was cut (see the constants below).
"""

from pathlib import Path

import pytest

from ranker.evaluation import evaluate_selection
from ranker.pipeline import score_store, train_on_store
from ranker.store import FeatureStore

FIXTURE = Path(__file__).resolve().parents[1] / "assets" / "frozen_suite"

# Measured when the fixture was cut (150 train / 100 test problems, 3 seeds, 2026-11-28):
#   first 0.170, majority 0.400, max_logprob 0.430; ListRanker 0.357, PointRanker 0.373.
# So the rankers beat first sample by ~0.19 but trail majority vote and max log-prob at this
# data size; the target (+8 points over both) is NOT met, and these bounds only guard
# the level reached so far against regressions.
FIRST_MARGIN = 0.12  # ranker - first sample: measured +0.187 (list), +0.203 (point)
MAJORITY_FLOOR = -0.10  # ranker - majority vote: measured -0.043, -0.027
LOGPROB_FLOOR = -0.12  # ranker - max mean log-prob: measured -0.073, -0.057


@pytest.fixture(scope="module")
def frozen():
    return FeatureStore.load(FIXTURE / "train"), FeatureStore.load(FIXTURE / "test")


def test_fixture_is_real_embedded_model_data(frozen):
    train, test = frozen
    assert train.model.model_id == "gguf:SmolLM2-135M-Instruct.Q4_1.gguf"
    assert train.layers == test.layers == (18,)
    assert train.responses.shape[1:] == (16, 1, 576)
    assert not {p.prompt for p in train.problems} & {p.prompt for p in test.problems}


@pytest.mark.parametrize("kind", ["list", "point"])
def test_rankers_beat_the_baselines_on_frozen_features(frozen, kind):
    train, test = frozen
    accuracies = []
    for seed in (0, 1, 2):
        ranker = train_on_store(train, kind=kind, seed=seed)
        accuracies.append(evaluate_selection(test, {"ranker": score_store(ranker, test)}, seed=seed))
    mean = {method: sum(a[method] for a in accuracies) / len(accuracies) for method in accuracies[0]}
    assert mean["ranker"] >= mean["first"] + FIRST_MARGIN, mean
    assert mean["ranker"] >= mean["majority"] + MAJORITY_FLOOR, mean
    assert mean["ranker"] >= mean["max_logprob"] + LOGPROB_FLOOR, mean
