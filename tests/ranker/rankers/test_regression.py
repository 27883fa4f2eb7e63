"""Regression guard on frozen real features: SmolLM2-135M-Instruct candidates, labels and layer-18 states.

The fixture (tests/assets/frozen_suite, cut from the experiment build by scripts/make_fixture.py)
holds 30 train and 20 test problems per family. Rankers trained on its train split must stay
at the level measured on it (see the constants below): the shipped configuration (fused with
the mean log-prob and the vote share) and the paper's hidden-state-only rankers.
"""

from pathlib import Path

import pytest

from ranker.capture.feature_store import FeatureStore
from ranker.evaluation.selection import evaluate_selection
from ranker.evaluation.store_scores import subset_scorer
from ranker.rankers.store_training import train_on_store

FIXTURE = Path(__file__).resolve().parents[2] / "assets" / "frozen_suite"

# Best-of-16 accuracy on the 100 test problems (all 16 candidates, so one draw and no subsampling).
# The baselines use no training and no randomness: they are exact functions of the fixture and of
# ranker.evaluation.selection, so they are pinned exactly.
BASELINES = {"first": 0.17, "majority": 0.40, "max_logprob": 0.43, "oracle": 0.81, "per_sample": 0.195}

# Ranker accuracy, mean over `seeds` (train seed = evaluation seed), measured 2026-12-01 (re-run of the 2026-11-28 numbers) on the
# 2-core dev machine, torch CPU. Per seed, seeds 0-5 (1 test problem = 0.01):
#   list,  fused:  .54 .56 .53 .50 .50 .53   (sd .023)      point, fused:  .54 .53 .52 .54 .53 .53   (sd .008)
#   list,  hidden: .36 .29 .42 .39 .36 .39   (sd .045)      point, hidden: .38 .37 .37 .34 .36 .39   (sd .017)
# The runs are deterministic: the same per-seed numbers, bit for bit, with torch.set_num_threads 1 or 2
# and with the trainer's num_threads 1, 2 or 4. What another CPU, BLAS or torch version may change is
# float rounding, which can send training down another path; the worst case is a fresh draw of seeds.
# So `tolerance` is about 2x the sd of a mean over `seeds` under such a redraw (sd / sqrt(len(seeds))),
# rounded up to whole points, and at least 2 points: list fused 2 x .023 / sqrt(3) = .027 -> .03;
# point fused .009 and point hidden .020 -> .02; list hidden, the noisiest, averages six seeds (they
# train in about a second each): 2 x .045 / sqrt(6) = .036 -> .04.
# Breakages this catches (measured, means over seeds 0-2): 3 epochs instead of 10 (list fused .487,
# list hidden .293, point hidden .290), lr 3e-4 instead of 3e-3 (list fused .507, point hidden .350),
# no vote share in the fusion (point fused .503). The bounds are two-sided: a ranker far above its
# level is as suspicious (labels leaking into features) as one below it; re-measure after a
# deliberate change to training or fusion and update these numbers.
LEVELS = {  # (kind, fused) -> measured mean accuracy, seeds, tolerance
    ("list", True): {"ranker": 0.5433, "seeds": (0, 1, 2), "tolerance": 0.03},  # +.373 first, +.143 majority, +.113 max_logprob
    ("point", True): {"ranker": 0.5300, "seeds": (0, 1, 2), "tolerance": 0.02},  # +.360, +.130, +.100
    ("list", False): {"ranker": 0.3683, "seeds": (0, 1, 2, 3, 4, 5), "tolerance": 0.04},  # +.198, -.032, -.062
    ("point", False): {"ranker": 0.3733, "seeds": (0, 1, 2), "tolerance": 0.02},  # +.203, -.027, -.057
}


@pytest.fixture(scope="module")
def frozen():
    return FeatureStore.load(FIXTURE / "train"), FeatureStore.load(FIXTURE / "test")


def test_fixture_is_real_embedded_model_data(frozen):
    train, test = frozen
    assert train.model.model_id == "gguf:SmolLM2-135M-Instruct.Q4_1.gguf"
    assert train.layers == test.layers == (18,)
    assert (len(train.problems), len(test.problems)) == (150, 100)
    assert train.responses.shape == (150, 16, 1, 576) and test.responses.shape == (100, 16, 1, 576)
    assert sorted(set(train.families)) == sorted(set(test.families)) and len(set(test.families)) == 5
    assert {f: test.families.count(f) for f in set(test.families)} == dict.fromkeys(set(test.families), 20)
    assert not {p.prompt for p in train.problems} & {p.prompt for p in test.problems}


def test_baselines_on_frozen_features_are_pinned(frozen):
    accuracy = evaluate_selection(frozen[1], seed=0)
    assert {m: accuracy[m] for m in BASELINES} == pytest.approx(BASELINES, abs=1e-6)


def _mean_accuracy(train, test, kind, seeds, **hyperparams) -> tuple[dict[str, float], list]:
    """Mean over seeds of evaluate_selection's accuracies (ranker and baselines), and the rankers."""
    accuracies, rankers = [], []
    for seed in seeds:
        rankers.append(train_on_store(train, kind=kind, seed=seed, **hyperparams))
        accuracies.append(evaluate_selection(test, {"ranker": subset_scorer(rankers[-1], test)}, seed=seed))
    return {method: sum(a[method] for a in accuracies) / len(accuracies) for method in accuracies[0]}, rankers


def _assert_level(mean: dict[str, float], level: dict) -> None:
    for baseline in ("first", "majority", "max_logprob"):
        margin, measured = mean["ranker"] - mean[baseline], level["ranker"] - BASELINES[baseline]
        assert margin == pytest.approx(measured, abs=level["tolerance"]), (baseline, mean)


@pytest.mark.parametrize("kind", ["list", "point"])
def test_shipped_rankers_keep_their_margins_on_frozen_features(frozen, kind):
    level = LEVELS[kind, True]
    mean, rankers = _mean_accuracy(*frozen, kind, level["seeds"])
    for ranker in rankers:  # the shipped configuration really fuses both free signals
        assert set(ranker.fusion_weights) == {"ranker", "mean_logprob", "vote_share"}, ranker.fusion_weights
    _assert_level(mean, level)


@pytest.mark.parametrize("kind", ["list", "point"])
def test_hidden_state_rankers_keep_their_margins_on_frozen_features(frozen, kind):
    level = LEVELS[kind, False]
    mean, rankers = _mean_accuracy(*frozen, kind, level["seeds"], fusion=False)
    assert [ranker.fusion_weights for ranker in rankers] == [{"ranker": 1.0}] * len(rankers)
    _assert_level(mean, level)
