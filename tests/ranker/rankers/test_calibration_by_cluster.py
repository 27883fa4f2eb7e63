"""Calibration by cluster: the near regime's Platt pair gets per-fusion-cluster offsets, because each cluster
scores with its own weights and has its own base rate (ranker.rankers.calibration, "By cluster")."""

import json
import math

import pytest
import torch

from ranker.evaluation.metrics import expected_calibration_error
from ranker.rankers.calibration import MIN_REGIME_WEIGHT, PlattCalibration, fit_platt_by_regime
from ranker.rankers.estimator import LanguageRanker
from tests.ranker.rankers.test_fallback import _vote_wins_queries


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_the_offsets_shift_the_near_pair_of_each_cluster_by_hand():
    calibration = PlattCalibration(1.0, 0.0, "out_of_fold", far_a=2.0, far_b=-1.0, cluster_a=(0.5, 0.0), cluster_b=(0.0, -1.0))
    assert calibration.num_clusters == 2 and PlattCalibration(1.0, 0.0, "out_of_fold", 2.0, -1.0).num_clusters == 0
    scores = torch.tensor([[1.0, 2.0], [1.0, 2.0]])
    shares, clusters = torch.tensor([[0.0], [0.5]]), torch.tensor([[0], [1]])
    # Row 0, cluster 0, share 0: sigmoid(1.5 s). Row 1, cluster 1, share 0.5: slope 0.5 x 1 + 0.5 x 2 = 1.5,
    # intercept 0.5 x (0 - 1) + 0.5 x (-1) = -1.
    expected = [[sigmoid(1.5), sigmoid(3.0)], [sigmoid(0.5), sigmoid(2.0)]]
    torch.testing.assert_close(calibration(scores, shares, clusters), torch.tensor(expected))
    # Share 1 ignores the cluster: both clusters get the far pair.
    torch.testing.assert_close(calibration(scores, torch.ones(2, 1), clusters), torch.sigmoid(2 * scores - 1))
    with pytest.raises(ValueError, match="needs each instruction's cluster"):
        calibration(scores, shares)
    with pytest.raises(ValueError, match=r"clusters must be integers in \[0, 2\), got \[\[0\], \[2\]\]"):
        calibration(scores, shares, torch.tensor([[0], [2]]))
    with pytest.raises(ValueError, match="clusters must be integers"):
        calibration(scores, shares, torch.tensor([[0.0], [1.0]]))


def test_bad_offsets_are_refused_and_a_card_round_trips():
    far = dict(source="out_of_fold", far_a=2.0, far_b=-1.0)
    with pytest.raises(ValueError, match="set together"):
        PlattCalibration(1.0, 0.0, **far, cluster_a=(0.5, 0.0))
    with pytest.raises(ValueError, match="need a calibration by regime"):
        PlattCalibration(1.0, 0.0, "out_of_fold", cluster_a=(0.5,), cluster_b=(0.0,))
    with pytest.raises(ValueError, match="cluster_a has 2 entries, cluster_b 1"):
        PlattCalibration(1.0, 0.0, **far, cluster_a=(0.5, 0.0), cluster_b=(0.0,))
    with pytest.raises(ValueError, match="cluster_b entry must be a finite number, got inf"):
        PlattCalibration(1.0, 0.0, **far, cluster_a=(0.5,), cluster_b=(float("inf"),))
    with pytest.raises(ValueError, match="non-empty list of numbers"):
        PlattCalibration(1.0, 0.0, **far, cluster_a="ab", cluster_b="cd")
    calibration = PlattCalibration(1.0, 0.0, **far, cluster_a=(0.5, 0.0), cluster_b=(0.0, -1.0))
    # Through JSON the offsets become lists; they read back as the same tuples.
    loaded = PlattCalibration.from_dict(json.loads(json.dumps(calibration.to_dict())))
    assert loaded == calibration and loaded.cluster_a == (0.5, 0.0)
    # A card written before the offsets existed has none.
    assert PlattCalibration.from_dict({"a": 1.0, "b": 0.0, **far}).cluster_a is None


def _clustered_examples(count=30000, seed=0):
    """Scores of three clusters that share a slope but not a base rate, plus out-of-domain examples (-1)."""
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(count, generator=gen)
    clusters = torch.randint(-1, 3, (count,), generator=gen)
    shares = torch.where(clusters == -1, torch.rand(count, generator=gen) * 0.5 + 0.5, torch.zeros(count))
    near_b = torch.tensor([-2.0, 0.0, 1.0])[clusters.clamp(min=0)]
    logits = torch.where(clusters == -1, 0.6 * scores + 0.5, 1.2 * scores + near_b)
    labels = (torch.rand(count, generator=gen) < torch.sigmoid(logits)).double()
    return scores, shares, clusters, labels


def test_the_fit_recovers_each_clusters_base_rate():
    scores, shares, clusters, labels = _clustered_examples()
    a, b, far_a, far_b, cluster_a, cluster_b = fit_platt_by_regime(scores, shares, labels, clusters=clusters, num_clusters=3)
    # Only the near pair plus each offset is determined (every near example has a cluster): compare those.
    assert [a + da for da in cluster_a] == pytest.approx([1.2] * 3, abs=0.12)
    assert [b + db for db in cluster_b] == pytest.approx([-2.0, 0.0, 1.0], abs=0.15)
    assert (far_a, far_b) == pytest.approx((0.6, 0.5), abs=0.2)
    # Without offsets one near pair fits all three clusters and misses each one's base rate.
    one = PlattCalibration(*fit_platt_by_regime(scores, shares, labels)[:2], "out_of_fold",
                           *fit_platt_by_regime(scores, shares, labels)[2:])
    by_cluster = PlattCalibration(a, b, "out_of_fold", far_a, far_b, tuple(cluster_a), tuple(cluster_b))
    near = clusters == 2
    ece_one = expected_calibration_error(one(scores[near], shares[near]), labels[near])
    ece_cluster = expected_calibration_error(by_cluster(scores[near], shares[near], clusters[near]), labels[near])
    assert ece_cluster < 0.02 < 0.1 < ece_one, (ece_cluster, ece_one)


def test_a_cluster_with_too_little_near_weight_keeps_no_offsets():
    scores, shares, clusters, labels = _clustered_examples(4000)
    sparse = clusters.clone()
    sparse[(clusters == 1).nonzero().flatten()[int(MIN_REGIME_WEIGHT) - 1:]] = 0  # cluster 1 keeps 31 examples
    *_, cluster_a, cluster_b = fit_platt_by_regime(scores, shares, labels, clusters=sparse, num_clusters=3)
    assert cluster_a[1] == cluster_b[1] == 0.0 and cluster_b[2] != 0.0
    with pytest.raises(ValueError, match=r"one cluster in \[-1, 3\) per score"):
        fit_platt_by_regime(scores, shares, labels, clusters=torch.full_like(clusters, 3), num_clusters=3)
    with pytest.raises(ValueError, match="one cluster"):
        fit_platt_by_regime(scores, shares, labels, clusters=clusters[:-1], num_clusters=3)
    # One cluster: no offsets, the four-number fit.
    assert len(fit_platt_by_regime(scores, shares, labels, clusters=clusters.clamp(max=0), num_clusters=1)) == 4


@pytest.fixture(scope="module")
def two_clusters():
    """A ranker with two fusion clusters and a fallback, calibrated by regime and by cluster."""
    queries = _vote_wins_queries()
    ranker = LanguageRanker(kind="point", seed=0, projection_dim=16, epochs=1, batch_size=32, fusion_clusters=(2,),
                            fusion_cluster_rules=False).fit(queries, calibrate=True)
    return queries, ranker


def test_a_ranker_with_clusters_gets_offsets_and_uses_each_instructions_cluster(two_clusters, tmp_path):
    queries, ranker = two_clusters
    calibration = ranker.calibration_
    assert ranker.fusion.num_clusters == 2 and calibration.by_regime and calibration.num_clusters == 2
    assert calibration.cluster_b != (0.0, 0.0)
    instructions = torch.stack([q.instruction for q in queries[:6]])
    rows = torch.stack([ranker.score(q.instruction, q.responses, q.mean_logprob, q.vote_keys) for q in queries[:6]])
    shares = ranker._fallback_shares(instructions, rows)
    clusters = torch.tensor([[ranker.fusion.cluster_of(i)] for i in instructions])
    by_hand = calibration(rows, shares, clusters)
    torch.testing.assert_close(ranker.probability_correct(rows, instructions), by_hand)
    torch.testing.assert_close(ranker.probability_correct(rows[0], instructions[0]), by_hand[0])
    ranker.save(tmp_path / "r")
    loaded = LanguageRanker.load(tmp_path / "r")
    assert loaded.calibration_ == calibration
    assert torch.equal(loaded.probability_correct(rows, instructions), ranker.probability_correct(rows, instructions))
    # A card whose offsets do not match its fusion's clusters is refused at load, naming both counts.
    card_path = next((tmp_path / "r").glob("card.json"))
    card = json.loads(card_path.read_text())
    card["calibration"]["cluster_a"].append(0.0)
    card["calibration"]["cluster_b"].append(0.0)
    card_path.write_text(json.dumps(card))
    with pytest.raises(ValueError, match="offsets for 3 clusters, its fusion 2"):
        LanguageRanker.load(tmp_path / "r")
