"""The fallback to free-signal weights for unfamiliar instructions: distances, the ramp, the blend, the rule, its weights."""

import copy
import json
import math

import pytest
import torch

from ranker.rankers.estimator import LanguageRanker
from ranker.rankers.fallback import (
    WEIGHTED_VOTE_RULE,
    DistanceFallback,
    FallbackExamples,
    choose_fallback,
    choose_fallback_weights,
    fit_support,
    paired_z,
    ramp,
    support_distances,
)
from ranker.rankers.clustering import support_centroids
from ranker.rankers.fusion import Fusion, fuse, vote_shares, weighted_vote_log_shares
from ranker.rankers.synthetic import make_synthetic_queries
from ranker.rankers.training_groups import RankingQuery
from tests.ranker.rankers.fallback_points import beyond_support, on_support
from tests.ranker.rankers.test_fusion import _with_signals


def test_distance_is_one_minus_the_best_cosine():
    support = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    fallback = DistanceFallback({"ranker": 0.0, "mean_logprob": 1.0}, support, near=0.1, far=0.3)
    assert fallback.distance(torch.tensor([2.0, 0.0])) == pytest.approx(0.0)
    assert fallback.distance(torch.tensor([1.0, 1.0])) == pytest.approx(1 - 1 / math.sqrt(2))  # 0.293
    assert support_distances(torch.tensor([[3.0, 0.0], [-1.0, 0.0]]), support).tolist() == pytest.approx([0.0, 1.0])


def test_distances_are_measured_from_the_center():
    support = torch.tensor([[1.0, 0.0]])
    fallback = DistanceFallback({"ranker": 0.0}, support, near=0.1, far=0.3, center=torch.tensor([5.0, 5.0]))
    assert fallback.distance(torch.tensor([7.0, 5.0])) == pytest.approx(0.0)
    assert fallback.distance(torch.tensor([5.0, 6.0])) == pytest.approx(1.0)  # raw, its cosine to (1, 0) is 0.64
    assert fallback.distances(torch.tensor([[7.0, 5.0], [3.0, 5.0]])).tolist() == pytest.approx([0.0, 2.0])
    with pytest.raises(ValueError, match=r"center must be \(2,\)"):
        DistanceFallback({}, support, near=0.1, far=0.3, center=torch.zeros(3))


def test_centring_separates_families_that_share_a_large_common_component():
    """Hidden states share a large mean: raw cosines squeeze every distance near 0, centred ones keep
    a left-out family far away. Three families: a shared offset of norm 100 plus a family direction of norm 3
    and noise of norm ~0.3."""
    gen = torch.Generator().manual_seed(0)
    dims = 32
    offset = 100 * torch.nn.functional.normalize(torch.ones(dims), dim=0)
    directions = 3 * torch.eye(dims)[:3]
    points = torch.cat([offset + directions[f] + 0.05 * torch.randn(40, dims, generator=gen) for f in range(3)])
    family = torch.arange(3).repeat_interleave(40)
    train, held_in, left_out = (family != 2) & (torch.arange(120) % 2 == 0), (family != 2) & (torch.arange(120) % 2 == 1), family == 2
    raw_support = support_centroids(points[train], seed=0)
    raw_in, raw_out = support_distances(points[held_in], raw_support), support_distances(points[left_out], raw_support)
    support, center = fit_support(points[train], seed=0)
    assert torch.allclose(center, points[train].mean(0))
    centred_in = support_distances(points[held_in], support, center)
    centred_out = support_distances(points[left_out], support, center)
    assert float(raw_out.max()) < 0.002 and float(raw_in.max()) < 0.002  # all squeezed together
    assert float(centred_in.max()) < 0.05 and float(centred_out.min()) > 0.5  # a gap a ramp can sit in


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
    assert ranker.fusion.fallback is None or ranker.fusion.fallback.center is not None  # fit always centres
    support = torch.nn.functional.normalize(torch.randn(3, 16), dim=1)
    center = torch.randn(16)
    ranker.fusion_.fallback = DistanceFallback({"ranker": 0.0, "mean_logprob": 1.5}, support, 0.2, 0.4, center)
    ranker.save(tmp_path / "r")
    loaded = LanguageRanker.load(tmp_path / "r")
    assert torch.equal(loaded.fusion.fallback.support, support) and torch.equal(loaded.fusion.fallback.center, center)
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


def test_the_candidate_whose_rule_pools_best_wins_ties_going_to_the_preferred():
    # Same queries and fused scores; out of domain "fitted" is wrong everywhere and "vote" right everywhere.
    in_domain = [0.1, 0.1, 0.12, 0.15]
    fitted = (examples(in_domain, [True] * 4, [False] * 4), examples([0.5, 0.6, 0.55, 0.7], [False] * 4, [False] * 4))
    vote = (examples(in_domain, [True] * 4, [False] * 4), examples([0.5, 0.6, 0.55, 0.7], [False] * 4, [True] * 4))
    choice, reports = choose_fallback_weights({"fitted": fitted, "vote": vote})
    assert choice == "vote" and reports["vote"]["chosen"]["pooled"] == 1.0 and reports["fitted"]["chosen"]["pooled"] == 0.5
    # Equal pooled accuracy: the preferred candidate, else the first listed.
    assert choose_fallback_weights({"fitted": fitted, "same": fitted}, prefer="same")[0] == "same"
    assert choose_fallback_weights({"fitted": fitted, "same": fitted})[0] == "fitted"
    with pytest.raises(ValueError, match="at least one"):
        choose_fallback_weights({})


def test_paired_z_by_hand():
    # Differences 1, 0, 0, 1: mean 0.5, sample std sqrt(1/3), so z = 0.5 / (sqrt(1/3) / sqrt(4)) = sqrt(3).
    assert paired_z(torch.tensor([1.0, 1.0, 0.0, 1.0]), torch.tensor([0.0, 1.0, 0.0, 0.0])) == pytest.approx(math.sqrt(3))
    assert paired_z(torch.tensor([0.0, 1.0, 0.0, 0.0]), torch.tensor([1.0, 1.0, 0.0, 1.0])) == pytest.approx(-math.sqrt(3))
    same = torch.tensor([1.0, 0.0, 1.0])
    assert paired_z(same, same) == 0.0
    assert paired_z(torch.ones(3), torch.zeros(3)) == float("inf")  # every query differs alike: no spread


def _fallback_candidates(extra_fitted_hits: int):
    """40 queries in domain (fused right, free wrong) and 40 out (fused wrong): "vote" is right on 20 of
    the out-of-domain ones, "fitted" on the same 20 and `extra_fitted_hits` more."""
    in_domain = examples([0.1] * 40, [True] * 40, [False] * 40)
    out = [0.5] * 40
    vote = (in_domain, examples(out, [False] * 40, [True] * 20 + [False] * 20))
    fitted = (in_domain, examples(out, [False] * 40, [True] * (20 + extra_fitted_hits) + [False] * (20 - extra_fitted_hits)))
    return {"fitted": fitted, "weighted_vote": vote}


def test_the_fitted_candidate_must_beat_the_preferred_one_significantly():
    # One more query of 80 pooled: the better pooled best-of-N (0.7625 against 0.75), but z = 1.0 only.
    candidates = _fallback_candidates(1)
    assert choose_fallback_weights(candidates)[0] == "fitted"  # no preference: the best pooled wins
    choice, reports = choose_fallback_weights(candidates, prefer="weighted_vote")
    assert choice == "weighted_vote"
    assert reports["fitted"]["chosen"]["pooled"] == pytest.approx(61 / 80)
    assert reports["weighted_vote"]["chosen"]["pooled"] == pytest.approx(60 / 80)
    # Differences: one 1 and 79 zeros, mean 1/80. The squared deviations sum to (79/80)^2 + 79 / 80^2 = 79/80,
    # so the sample variance is 1/80 and z = (1/80) / (sqrt(1/80) / sqrt(80)) = 1.
    assert reports["fitted"]["z_vs_preferred"] == pytest.approx(1.0, abs=1e-9)
    assert reports["weighted_vote"]["z_vs_preferred"] == 0.0
    # Six more queries: z about 2.5, above the one-sided 5% bar (1.645), so the fitted weights win.
    choice, reports = choose_fallback_weights(_fallback_candidates(6), prefer="weighted_vote")
    assert choice == "fitted" and reports["fitted"]["z_vs_preferred"] > 2.4
    # The bar is a parameter: with z 3 the six are not enough.
    assert choose_fallback_weights(_fallback_candidates(6), prefer="weighted_vote", z=3.0)[0] == "weighted_vote"
    with pytest.raises(ValueError, match="'vote'"):
        choose_fallback_weights(candidates, prefer="vote")
    with pytest.raises(ValueError, match="-1"):
        choose_fallback_weights(candidates, prefer="weighted_vote", z=-1.0)


def _vote_wins_queries(num_queries=96, seed=0):
    """Queries of 8 candidates on which only the log-prob-weighted vote is right, and no linear mix of the
    mean log-prob and the vote share is (hidden states carry nothing: the labels are unrelated to them).

    Two kinds, alternating, each with the right answer "r" (label 1) the heaviest in sum of exp(mean log-prob):
    - A: "r" x 2 at lp -1.3 (total 2 e^-1.3 = 0.545), "x" x 1 at -0.85 (0.427), "w" x 3 at -2.5 (0.246), two singletons
      at -3.5. Max log-prob picks "x"; majority "w". A linear b lp + c share prefers "r" to "x" only if c > 3.6 b.
    - B: "r" x 1 at lp -0.2 (0.819), "w" x 5 at -1.9 (0.748), two singletons at -3.5. Majority picks "w";
      b lp + c share prefers "r" to "w" only if c < 3.4 b. So no (b, c) > 0 is right on both kinds.
    """
    gen = torch.Generator().manual_seed(seed)
    kinds = {"A": [("r", -1.3)] * 2 + [("x", -0.85)] + [("w", -2.5)] * 3 + [("s1", -3.5), ("s2", -3.5)],
             "B": [("r", -0.2)] + [("w", -1.9)] * 5 + [("s1", -3.5), ("s2", -3.5)]}
    out = []
    for i, q in enumerate(make_synthetic_queries(num_queries, 8, 16, seed=seed, topic_dim=4)):
        order = torch.randperm(8, generator=gen).tolist()
        candidates = [kinds["AB"[i % 2]][k] for k in order]
        keys = [key if not key.startswith("s") else None for key, _ in candidates]
        lp = torch.tensor([value for _, value in candidates]) + 0.01 * torch.randn(8, generator=gen)
        labels = torch.tensor([float(key == "r") for key, _ in candidates])
        out.append(RankingQuery(q.instruction, q.responses, labels, q.query_id, lp, keys))
    return out


@pytest.fixture(scope="module")
def vote_ranker():
    queries = _vote_wins_queries()
    # Without cluster rules: with them the clusters themselves take the weighted vote (the test after these).
    return queries, LanguageRanker(kind="point", seed=0, projection_dim=16, epochs=1, batch_size=32,
                                   fusion_cluster_rules=False).fit(queries)


def test_fit_chooses_the_weighted_vote_where_only_it_is_right(vote_ranker):
    queries, ranker = vote_ranker
    report = ranker.fusion_report_["fallback"]
    candidates = report["fallback_candidates"]
    assert set(candidates) == {"fitted", "weighted_vote"}
    assert all(set(c) >= {"weights", "near", "far", "pooled", "in_domain", "out_of_domain"} for c in candidates.values())
    assert report["fallback_choice"] == max(candidates, key=lambda name: candidates[name]["pooled"]) == "weighted_vote"
    # Falling back to the weighted vote is right on every query it reaches; the fitted mix cannot be right on both kinds.
    assert candidates["weighted_vote"]["pooled"] > candidates["fitted"]["pooled"] + 0.1
    assert candidates["weighted_vote"]["weights"] == WEIGHTED_VOTE_RULE and candidates["fitted"]["weights"]["ranker"] == 0.0
    assert report["kept"] and report["weights"] == WEIGHTED_VOTE_RULE and ranker.fusion.fallback.weights == WEIGHTED_VOTE_RULE
    # The fused weights themselves did not take the weighted vote (not among the default signals).
    assert all("weighted_vote" not in weights for weights in ranker.fusion.weights)
    # Far from the training instructions a score is the weighted vote's: the best log-prob of the heaviest answer.
    q = queries[1]
    far = beyond_support(ranker.fusion.fallback)
    assert ranker.fusion.fallback.share(ranker.fusion.fallback.distance(far)) == 1.0
    picked = ranker.select(far, q.responses, q.mean_logprob, q.vote_keys)
    assert q.labels[picked] == 1.0
    with pytest.raises(ValueError, match="vote_keys"):
        ranker.score(far, q.responses, q.mean_logprob)


def test_with_cluster_rules_the_clusters_take_the_weighted_vote_in_domain_too():
    """Where only the weighted vote is right, cluster rules (the default) give it to the training instructions'
    clusters as well, so the ranker picks right near its support, where the fallback's share is 0."""
    queries = _vote_wins_queries()
    ranker = LanguageRanker(kind="point", seed=0, projection_dim=16, epochs=1, batch_size=32).fit(queries)
    report = ranker.fusion_report_
    assert report["cluster_rules"] and set(report["cluster_sources"]) == {"weighted_vote"}
    fresh = _vote_wins_queries(24, seed=7)
    picks = [q.labels[ranker.select(q.instruction, q.responses, q.mean_logprob, q.vote_keys)] for q in fresh]
    assert sum(picks) == len(fresh)
    plain = LanguageRanker(kind="point", seed=0, projection_dim=16, epochs=1, batch_size=32,
                           fusion_cluster_rules=False).fit(queries)
    fallback = plain.fusion.fallback
    shares = [fallback.share(fallback.distance(q.instruction)) for q in fresh]
    plain_picks = [q.labels[plain.select(q.instruction, q.responses, q.mean_logprob, q.vote_keys)] for q in fresh]
    assert min(shares) < 1.0 and sum(plain_picks) < len(fresh)  # near the support the fitted mix is wrong on one kind


def test_an_old_card_without_the_weighted_vote_loads_and_scores_as_before(vote_ranker, tmp_path):
    queries, ranker = vote_ranker[0], copy.deepcopy(vote_ranker[1])
    support = ranker.fusion.fallback.support
    old = {"ranker": 0.0, "mean_logprob": 0.61, "vote_share": 2.97}  # what the fitted fallback looked like
    # A card saved before the centring: no center, raw cosines.
    ranker.fusion_ = Fusion([{"ranker": 1.0, "mean_logprob": 0.5, "vote_share": 2.0}], fallback=DistanceFallback(old, support, 0.2, 0.4))
    q = queries[3]
    near, far = on_support(ranker.fusion_.fallback), beyond_support(ranker.fusion_.fallback)  # share 0 and share 1
    before = [ranker.score(i, q.responses, q.mean_logprob, q.vote_keys) for i in (near, far)]
    ranker.save(tmp_path / "old")
    card = json.loads((tmp_path / "old" / "card.json").read_text())
    assert "weighted_vote" not in json.dumps(card["fusion"]) and card["fusion_config"]["signals"] == ["mean_logprob", "vote_share"]
    loaded = LanguageRanker.load(tmp_path / "old")
    assert loaded.fusion.fallback.weights == old
    raw = loaded.model_(near[None], q.responses[None])[0].detach().float()
    shares = vote_shares(q.vote_keys)
    # By hand: 1 x s + 0.5 x lp + 2 x share near the support, 0.61 x lp + 2.97 x share far away: no weighted-vote term.
    expected = [raw + 0.5 * q.mean_logprob + 2.0 * shares, 0.61 * q.mean_logprob + 2.97 * shares]
    for instruction, previous, by_hand in zip((near, far), before, expected):
        now = loaded.score(instruction, q.responses, q.mean_logprob, q.vote_keys)
        assert torch.equal(now, previous)
        torch.testing.assert_close(now, by_hand)
    # The new rule survives the checkpoint too, and far away scores as fuse() with it.
    loaded.fusion_.fallback = DistanceFallback(dict(WEIGHTED_VOTE_RULE), support, 0.2, 0.4)
    loaded.save(tmp_path / "new")
    again = LanguageRanker.load(tmp_path / "new")
    assert again.fusion.fallback.weights == WEIGHTED_VOTE_RULE
    expected = 1e-3 * q.mean_logprob + weighted_vote_log_shares(q.mean_logprob, q.vote_keys)
    torch.testing.assert_close(again.score(far, q.responses, q.mean_logprob, q.vote_keys), expected)
    assert torch.equal(again.score(far, q.responses, q.mean_logprob, q.vote_keys),
                       fuse(torch.zeros(8), WEIGHTED_VOTE_RULE, q.mean_logprob, q.vote_keys))
