"""Score fusion with the mean log-prob, the vote share and the weighted vote: weights, cross-fitting in fit, save/load, errors."""

import math

import pytest
import torch

from ranker.rankers.clustering import kmeans
from ranker.rankers.estimator import LanguageRanker
from ranker.rankers.fallback import WEIGHTED_VOTE_RULE
from ranker.rankers.fusion import (
    CLUSTER_RULES,
    DEFAULT_SIGNALS,
    SIGNALS,
    WEIGHTED_VOTE_BETA,
    Fusion,
    FusionConfig,
    fit_fusion,
    fit_weights,
    fold_indices,
    _choose_rule,
    fuse,
    query_signals,
    vote_shares,
    weighted_vote_log_shares,
)
from ranker.rankers.synthetic import make_synthetic_queries
from ranker.rankers.training_groups import RankingQuery


def _labels(num_queries=60, k=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    labels = (torch.rand(num_queries, k, generator=gen) < 0.3).float()
    labels[:, 0] = 1.0  # every query has a positive
    labels[:, 1] = 0.0  # ... and a negative
    return list(labels), gen


def test_vote_shares_count_each_candidates_answer_among_the_k():
    torch.testing.assert_close(vote_shares(["7", "8", "7", None]), torch.tensor([0.5, 0.25, 0.5, 0.0]))
    torch.testing.assert_close(vote_shares([None, None]), torch.zeros(2))


def test_weighted_vote_log_shares_by_hand():
    # weights exp(lp) = e^-1, e^-2, e^-1, e^-3; Z = 2e^-1 + e^-2 + e^-3 = 0.735759 + 0.135335 + 0.049787 = 0.920881,
    # log Z = -0.082422. "7" holds 2e^-1: log 2 - 1 - log Z = -0.224429; "8": -2 - log Z = -1.917578;
    # the keyless candidate is its own group: -3 - log Z = -2.917578.
    lp, keys = torch.tensor([-1.0, -2.0, -1.0, -3.0]), ["7", "8", "7", None]
    torch.testing.assert_close(weighted_vote_log_shares(lp, keys), torch.tensor([-0.224429, -1.917578, -0.224429, -2.917578]))
    assert WEIGHTED_VOTE_BETA == 1.0
    # beta 0: every candidate weighs 1, so the share is the vote count / K, the keyless one counting 1 alone
    torch.testing.assert_close(weighted_vote_log_shares(lp, keys, beta=0.0), torch.tensor([0.5, 0.25, 0.5, 0.25]).log())
    # far-apart log-probs neither underflow nor overflow: [0, -1000, -500] up to float rounding
    far = weighted_vote_log_shares(torch.tensor([-1000.0, -2000.0, -1500.0]), [None, None, "a"])
    torch.testing.assert_close(far, torch.tensor([0.0, -1000.0, -500.0]))
    with pytest.raises(ValueError, match="2 vote_keys for 3"):
        weighted_vote_log_shares(torch.zeros(3), ["a", "b"])


def test_query_signals_include_the_weighted_vote_only_with_both_inputs():
    instruction, responses, labels = torch.zeros(4), torch.zeros(3, 4), torch.tensor([1.0, 0.0, 0.0])
    lp, keys = torch.tensor([-1.0, -2.0, -1.0]), ["a", "b", "a"]
    both = query_signals(RankingQuery(instruction, responses, labels, "q", lp, keys))
    assert set(both) == {"mean_logprob", "vote_share", "weighted_vote"}
    torch.testing.assert_close(both["weighted_vote"], weighted_vote_log_shares(lp, keys))
    assert set(query_signals(RankingQuery(instruction, responses, labels, "q", lp, None))) == {"mean_logprob"}
    assert set(query_signals(RankingQuery(instruction, responses, labels, "q", None, keys))) == {"vote_share"}


def test_fusion_config_defaults_to_the_two_signals_and_accepts_any_subset():
    assert FusionConfig().signals == DEFAULT_SIGNALS == ("mean_logprob", "vote_share") and "weighted_vote" in SIGNALS
    assert FusionConfig(signals=["weighted_vote"]).signals == ("weighted_vote",)
    assert FusionConfig(signals=SIGNALS).signals == SIGNALS
    with pytest.raises(ValueError, match="fusion_signals"):
        FusionConfig(signals=("mean_logprob", "weighted_votes"))
    with pytest.raises(ValueError, match="fusion_signals"):
        FusionConfig(signals=())


# Five candidates: "a" = {0: lp -1.0, 2: lp -0.6}, "b" = {1: -0.2, 3: -3.0}, "c" = {4: -0.1}.
# Weights exp(lp): "a" 0.3679 + 0.5488 = 0.9167, "b" 0.8187 + 0.0498 = 0.8685, "c" 0.9048: "a" is the heaviest
# answer and its best log-prob is candidate 2. Majority vote ties "a" and "b" 2-2 and takes "a", first given by
# candidate 0; max log-prob takes candidate 4.
VOTE_LP, VOTE_KEYS = torch.tensor([-1.0, -0.2, -0.6, -3.0, -0.1]), ["a", "b", "a", "b", "c"]


def test_fuse_with_the_weighted_vote_picks_the_best_logprob_of_the_heaviest_answer():
    zeros = torch.zeros(5)
    fused = fuse(zeros, {"weighted_vote": 1.0, "mean_logprob": 1e-3}, VOTE_LP, VOTE_KEYS)
    assert int(fused.argmax()) == 2
    log_z = math.log(sum(math.exp(v) for v in VOTE_LP.tolist()))
    expected = [math.log(math.exp(-1.0) + math.exp(-0.6)) - log_z + 1e-3 * lp if key == "a" else None
                for key, lp in zip(VOTE_KEYS, VOTE_LP.tolist())]
    assert fused[0].item() == pytest.approx(expected[0], abs=1e-6) and fused[2].item() == pytest.approx(expected[2], abs=1e-6)
    # The fixed fallback rule gives the ranker weight 0: loud ranker scores change nothing.
    loud = torch.tensor([5.0, 9.0, -3.0, 0.0, 7.0])
    assert int(fuse(loud, WEIGHTED_VOTE_RULE, VOTE_LP, VOTE_KEYS).argmax()) == 2
    with pytest.raises(ValueError, match="log-prob-weighted vote .*pass mean_logprob"):
        fuse(zeros, {"weighted_vote": 1.0}, vote_keys=VOTE_KEYS)
    with pytest.raises(ValueError, match="log-prob-weighted vote .*pass vote_keys"):
        fuse(zeros, {"weighted_vote": 1.0}, VOTE_LP)
    with pytest.raises(ValueError, match="3 vote_keys for 5"):
        fuse(zeros, {"weighted_vote": 1.0}, VOTE_LP, ["a", "b", "c"])


def test_card_weights_must_name_known_signals():
    weights = {"weights": [{"ranker": 1.0, "mean_logprob": 0.5, "weighted_vote": 2.0}], "global_weights": None, "fallback": None}
    assert Fusion.from_dict(weights).weights == [{"ranker": 1.0, "mean_logprob": 0.5, "weighted_vote": 2.0}]
    with pytest.raises(ValueError, match="votes"):
        Fusion.from_dict({"weights": [{"ranker": 1.0, "votes": 1.0}]})


def test_fit_weights_uses_an_informative_logprob():
    labels, gen = _labels()
    noise_scores = [torch.randn(8, generator=gen) for _ in labels]
    signals = [{"mean_logprob": -2.0 + 0.5 * y + 0.05 * torch.randn(8, generator=gen)} for y in labels]  # lp separates
    weights, report = fit_weights(noise_scores, signals, labels)
    assert weights["mean_logprob"] > 0 and report["signals"] == ["mean_logprob"] and report["kept"]
    assert report["oof_best_of_n_fused"] > report["oof_best_of_n_ranker"] + 0.3


def test_fit_weights_uses_an_informative_vote_share():
    labels, gen = _labels()
    noise_scores = [torch.randn(8, generator=gen) for _ in labels]
    # correct candidates agree on one answer, wrong ones scatter
    keys = [["right" if label else f"wrong{k}" for k, label in enumerate(y.tolist())] for y in labels]
    signals = [{"mean_logprob": torch.randn(8, generator=gen), "vote_share": vote_shares(k)} for k in keys]
    weights, report = fit_weights(noise_scores, signals, labels)
    assert weights["vote_share"] > 0 and report["standardised"]["vote_share"] > 3 * abs(report["standardised"]["mean_logprob"])
    assert report["oof_best_of_n_fused"] > report["oof_best_of_n_ranker"] + 0.3


def test_fit_weights_leaves_a_good_ranker_in_charge_of_useless_signals():
    labels, gen = _labels()
    good_scores = [3.0 * y + 0.1 * torch.randn(8, generator=gen) for y in labels]  # scores already perfect
    signals = [{"mean_logprob": torch.randn(8, generator=gen)} for _ in labels]
    weights, report = fit_weights(good_scores, signals, labels)
    assert report["oof_best_of_n_ranker"] == report["oof_best_of_n_fused"] == 1.0
    assert abs(report["standardised"]["mean_logprob"]) < report["standardised"]["ranker"] / 5


def test_fit_weights_skips_signals_that_some_query_lacks_or_that_never_vary():
    labels, gen = _labels(num_queries=10)
    scores = [torch.randn(8, generator=gen) for _ in labels]
    signals = [{"mean_logprob": torch.full((8,), -1.0)} for _ in labels]  # constant within every query
    signals[0]["vote_share"] = torch.rand(8)  # only one query has votes
    weights, report = fit_weights(scores, signals, labels)
    assert weights == {"ranker": 1.0} and report["signals"] == [] and report["kept"] is False


def test_fuse_adds_the_weighted_signals_and_needs_them():
    scores, lp = torch.tensor([1.0, 2.0]), torch.tensor([-1.0, -3.0])
    torch.testing.assert_close(fuse(scores, {"ranker": 1.0, "mean_logprob": 0.5}, lp), torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(fuse(scores, {"ranker": 2.0, "vote_share": 1.0}, vote_keys=["a", "a"]), torch.tensor([3.0, 5.0]))
    assert fuse(scores, {"ranker": 1.0}) is scores
    with pytest.raises(ValueError, match="mean_logprob"):
        fuse(scores, {"ranker": 1.0, "mean_logprob": 0.5})
    with pytest.raises(ValueError, match="shape"):
        fuse(scores, {"ranker": 1.0, "mean_logprob": 0.5}, torch.zeros(3))
    with pytest.raises(ValueError, match="vote_keys"):
        fuse(scores, {"ranker": 1.0, "vote_share": 0.5})
    with pytest.raises(ValueError, match="3 vote_keys for 2"):
        fuse(scores, {"ranker": 1.0, "vote_share": 0.5}, vote_keys=["a", "b", "c"])


def test_fold_indices_partition_and_are_seeded():
    folds = fold_indices(10, 4, seed=3)
    assert sorted(i for f in folds for i in f) == list(range(10))
    assert fold_indices(10, 4, seed=3) == folds and fold_indices(10, 4, seed=4) != folds
    with pytest.raises(ValueError, match="folds"):
        fold_indices(10, 1, seed=0)


def _with_signals(queries, seed=0):
    """Attach informative mean log-probs (higher for correct candidates) and answer keys
    (correct candidates share one answer, wrong ones all differ)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for q in queries:
        lp = -2.0 + 0.3 * torch.randn(q.labels.shape, generator=gen) + 0.6 * q.labels
        keys = ["right" if y else f"wrong{k}" for k, y in enumerate(q.labels.tolist())]
        out.append(RankingQuery(q.instruction, q.responses, q.labels, q.query_id, lp, keys))
    return out


@pytest.fixture(scope="module")
def weak_features():
    # Hidden states carry little signal, so informative signals must get weight.
    return make_synthetic_queries(80, 8, 32, seed=1, signal=0.2)


def test_fit_learns_fusion_weights_and_they_survive_save_load(weak_features, tmp_path):
    queries = _with_signals(weak_features)
    ranker = LanguageRanker(kind="list", epochs=3).fit(queries)
    assert ranker.fused and ranker.fusion_weights["mean_logprob"] > 0 and ranker.fusion_weights["vote_share"] > 0
    plain = LanguageRanker(kind="list", epochs=3, fusion=False).fit(queries)
    assert plain.fusion_weights == {"ranker": 1.0} and not plain.fused
    assert ranker.evaluate(queries).best_of_n > plain.evaluate(queries).best_of_n + 0.05
    q = queries[0]
    with pytest.raises(ValueError, match="mean_logprob"):
        ranker.score(q.instruction, q.responses, vote_keys=q.vote_keys)
    with pytest.raises(ValueError, match="vote_keys"):
        ranker.score(q.instruction, q.responses, q.mean_logprob)
    ranker.save(tmp_path / "r")
    loaded = LanguageRanker.load(tmp_path / "r")
    assert loaded.fusion_weights == pytest.approx(ranker.fusion_weights)
    assert torch.equal(loaded.score(q.instruction, q.responses, q.mean_logprob, q.vote_keys),
                       ranker.score(q.instruction, q.responses, q.mean_logprob, q.vote_keys))


def test_fit_without_signals_is_the_hidden_state_ranker(weak_features):
    ranker = LanguageRanker(kind="point", epochs=2).fit(weak_features)
    assert ranker.fusion_weights == {"ranker": 1.0}
    q = weak_features[0]
    assert ranker.score(q.instruction, q.responses).shape == (8,)


def test_fusion_signals_limit_what_is_fused(weak_features):
    queries = _with_signals(weak_features)
    ranker = LanguageRanker(kind="list", epochs=3, fusion_signals=["mean_logprob"]).fit(queries)
    assert set(ranker.fusion_weights) == {"ranker", "mean_logprob"} and ranker.fusion_config_.signals == ("mean_logprob",)
    # The weighted-vote fallback reads answer keys, which these signals never ask for: it is not a candidate.
    assert "weighted_vote" not in ranker.fusion_report_["fallback"].get("fallback_candidates", {})
    q = queries[0]
    assert ranker.score(q.instruction, q.responses, q.mean_logprob).shape == (8,)  # no answer keys needed
    with pytest.raises(ValueError, match="fusion_signals"):
        LanguageRanker(kind="list", fusion_signals=("votes",)).fit(queries)


def test_kmeans_finds_two_obvious_groups():
    gen = torch.Generator().manual_seed(0)
    a = torch.tensor([1.0, 0.0, 0.0]) + 0.05 * torch.randn(30, 3, generator=gen)
    b = torch.tensor([0.0, 1.0, 0.0]) + 0.05 * torch.randn(20, 3, generator=gen)
    centroids, assignment = kmeans(torch.cat([a, b]), 2, seed=0)
    assert centroids.shape == (2, 3) and torch.allclose(centroids.norm(dim=1), torch.ones(2))
    assert len(set(assignment[:30].tolist())) == 1 and len(set(assignment[30:].tolist())) == 1
    assert assignment[0] != assignment[30]


def _two_task_data(num_queries=160, k=8, seed=0):
    """Two kinds of instruction: on one the vote share finds the answer and the log-prob misleads,
    on the other the reverse. No single set of weights serves both."""
    gen = torch.Generator().manual_seed(seed)
    scores, signals, labels, instructions = [], [], [], []
    for q in range(num_queries):
        task = q % 2
        y = torch.zeros(k)
        y[int(torch.randint(k, (1,), generator=gen))] = 1.0
        good, bad = 1.0 * y + 0.3 * torch.rand(k, generator=gen), torch.rand(k, generator=gen) - 1.0 * y
        vote, logprob = (good, bad) if task == 0 else (bad, good)
        scores.append(0.1 * torch.randn(k, generator=gen))
        signals.append({"mean_logprob": logprob, "vote_share": vote})
        labels.append(y)
        direction = torch.zeros(16)
        direction[task] = 1.0
        instructions.append(direction + 0.1 * torch.randn(16, generator=gen))
    return scores, signals, labels, torch.stack(instructions)


def test_fit_fusion_gives_each_kind_of_instruction_its_own_weights():
    scores, signals, labels, instructions = _two_task_data()
    fusion, report = fit_fusion(scores, signals, labels, instructions, clusters=(1, 2, 4))
    assert report["clusters"] >= 2 and fusion.num_clusters == report["clusters"] and report["kept"]
    by_k = report["cv_best_of_n_by_clusters"]
    assert by_k[str(report["clusters"])] > by_k["1"] + 0.3  # global weights cannot serve both tasks
    vote_task, logprob_task = fusion.weights_for(instructions[0]), fusion.weights_for(instructions[1])
    assert vote_task["vote_share"] > vote_task["mean_logprob"] and logprob_task["mean_logprob"] > logprob_task["vote_share"]
    with pytest.raises(ValueError, match="features"):
        fusion.cluster_of(torch.zeros(5))


def test_fit_fusion_keeps_one_set_of_weights_when_clusters_do_not_help():
    labels, gen = _labels(num_queries=120)
    scores = [torch.randn(8, generator=gen) for _ in labels]
    signals = [{"mean_logprob": -2.0 + 0.5 * y + 0.05 * torch.randn(8, generator=gen)} for y in labels]  # same everywhere
    instructions = torch.randn(120, 16, generator=gen)  # no structure
    fusion, report = fit_fusion(scores, signals, labels, instructions, clusters=(1, 2, 4))
    assert report["clusters"] == 1 and fusion.centroids is None and fusion.weights[0]["mean_logprob"] > 0


def test_clustered_fusion_survives_save_load(tmp_path):
    scores, signals, labels, instructions = _two_task_data(num_queries=120)
    queries = [RankingQuery(instructions[q], torch.randn(8, 16), labels[q], str(q), signals[q]["mean_logprob"],
                            ["right" if y else f"w{k}" for k, y in enumerate(labels[q].tolist())]) for q in range(120)]
    ranker = LanguageRanker(kind="point", epochs=2, fusion_clusters=(2,)).fit(queries)
    assert ranker.fusion.num_clusters == 2 and ranker.fusion.centroids.shape == (2, 16)
    ranker.save(tmp_path / "r")
    assert (tmp_path / "r" / "extra.safetensors").is_file()
    loaded = LanguageRanker.load(tmp_path / "r")
    assert torch.equal(loaded.fusion.centroids, ranker.fusion.centroids) and loaded.fusion.weights == ranker.fusion.weights
    for q in queries[:4]:
        assert loaded.fusion.cluster_of(q.instruction) == ranker.fusion.cluster_of(q.instruction)
        assert torch.equal(loaded.score(q.instruction, q.responses, q.mean_logprob, q.vote_keys),
                           ranker.score(q.instruction, q.responses, q.mean_logprob, q.vote_keys))


# --- rules a cluster may take instead of its fitted weights -------------------------------------


def test_choose_rule_takes_a_rule_only_when_it_picks_better_on_the_cluster():
    # Two queries of 3 candidates; the ranker picks candidate 0 (wrong), the log-prob candidate 2 (right).
    scores = [torch.tensor([1.0, 0.0, -1.0])] * 2
    scoring = [{"mean_logprob": torch.tensor([-3.0, -2.0, -1.0])}] * 2
    labels = [torch.tensor([0.0, 0.0, 1.0])] * 2
    rules = {"max_logprob": CLUSTER_RULES["max_logprob"]}
    assert _choose_rule({"ranker": 1.0}, rules, scores, scoring, labels, [0, 1]) == ("max_logprob", rules["max_logprob"])
    # The same pick (both right): the fitted weights stay.
    assert _choose_rule({"ranker": -1.0}, rules, scores, scoring, labels, [0, 1]) == ("fitted", {"ranker": -1.0})
    # Only the cluster's members count: on query 1 the ranker is right.
    labels = [labels[0], torch.tensor([1.0, 0.0, 0.0])]
    assert _choose_rule({"ranker": 1.0}, rules, scores, scoring, labels, [1])[0] == "fitted"


def _weighted_vote_queries(num_queries=160, k=8, seed=0):
    """Queries on which the log-prob-weighted vote is always right and no weights of (ranker, mean log-prob,
    vote share) can be. Half of them: the right answer twice at mean log-prob -1.65, a wrong one once at -1.0
    (2 e^-1.65 > e^-1.0; a linear score picks the pair only if the vote-share weight c exceeds 5.2 times
    the log-prob weight a). The other half: the right answer once at -0.35, a wrong one three times at
    -1.5 (e^-0.35 > 3 e^-1.5; needs c < 4.6 a). The other candidates are singles at -5. The instructions
    are alike (one cluster); the candidates' features are noise, so the ranker learns nothing."""
    gen = torch.Generator().manual_seed(seed)
    queries = []
    for q in range(num_queries):
        if q % 2 == 0:
            lp, keys, y = [-1.0, -1.65, -1.65], ["wrong", "right", "right"], [0.0, 1.0, 1.0]
        else:
            lp, keys, y = [-1.5, -1.5, -1.5, -0.35], ["wrong"] * 3 + ["right"], [0.0, 0.0, 0.0, 1.0]
        others = k - len(lp)
        lp, keys, y = lp + [-5.0] * others, keys + [f"w{j}" for j in range(others)], y + [0.0] * others
        order = torch.randperm(k, generator=gen).tolist()
        queries.append(RankingQuery(torch.ones(16) + 0.1 * torch.randn(16, generator=gen), torch.randn(k, 16, generator=gen),
                                    torch.tensor(y)[order], str(q), torch.tensor(lp)[order], [keys[j] for j in order]))
    return queries


def _signals_of(queries):
    every = [query_signals(q) for q in queries]
    signals = [{n: s[n] for n in DEFAULT_SIGNALS} for s in every]
    rule_signals = [{"mean_logprob": s["mean_logprob"], "weighted_vote": s["weighted_vote"]} for s in every]
    return signals, rule_signals


def test_fit_fusion_takes_the_weighted_vote_rule_where_no_fitted_weights_can_pick():
    queries = _weighted_vote_queries()
    signals, rule_signals = _signals_of(queries)
    gen = torch.Generator().manual_seed(1)
    scores = [0.01 * torch.randn(8, generator=gen) for _ in queries]
    labels, instructions = [q.labels for q in queries], torch.stack([q.instruction for q in queries])
    plain, plain_report = fit_fusion(scores, signals, labels, instructions, clusters=(1, 2))
    fusion, report = fit_fusion(scores, signals, labels, instructions, clusters=(1, 2), rules=CLUSTER_RULES,
                                rule_signals=rule_signals)
    assert not plain_report["cluster_rules"] and set(plain_report["cluster_sources"]) == {"fitted"}
    assert max(plain_report["cv_best_of_n_by_clusters"].values()) <= 0.6  # one half or the other
    assert report["cluster_rules"] and report["kept"] and set(report["cluster_sources"]) == {"weighted_vote"}
    assert report["cv_best_of_n_by_clusters_with_rules"][str(report["clusters"])] == 1.0
    assert fusion.weights_for(instructions[0]) == CLUSTER_RULES["weighted_vote"]
    # The rule reads the weighted vote: without those signals it is not offered, and nothing changes.
    alone, alone_report = fit_fusion(scores, signals, labels, instructions, clusters=(1, 2), rules=CLUSTER_RULES)
    assert alone.weights == plain.weights and not alone_report["cluster_rules"]


def test_fit_fusion_keeps_fitted_weights_that_are_as_good_as_the_rules():
    scores, signals, labels, instructions = _two_task_data()
    fusion, report = fit_fusion(scores, signals, labels, instructions, clusters=(1, 2, 4), rules=CLUSTER_RULES)
    # No weighted vote among the signals: only max log-prob is offered; the fitted weights pick as well or better.
    assert "cv_best_of_n_by_clusters_with_rules" in report and not report["cluster_rules"]
    assert set(report["cluster_sources"]) == {"fitted"}
    plain, _ = fit_fusion(scores, signals, labels, instructions, clusters=(1, 2, 4))
    assert fusion.weights == plain.weights


def test_ranker_with_cluster_rules_scores_with_them_and_they_survive_save_load(tmp_path):
    queries = _weighted_vote_queries(num_queries=120)
    ranker = LanguageRanker(kind="point", epochs=1, fusion_fallback=False).fit(queries)
    report = ranker.fusion_report_
    assert ranker.fusion_config_.cluster_rules and report["cluster_rules"]
    assert set(report["cluster_sources"]) == {"weighted_vote"}
    for q in queries[:4]:  # both halves' right candidate comes first
        assert bool(q.labels[int(ranker.score(q.instruction, q.responses, q.mean_logprob, q.vote_keys).argmax())])
    with pytest.raises(ValueError, match="vote_keys"):  # the weighted vote needs the answers
        ranker.score(queries[0].instruction, queries[0].responses, queries[0].mean_logprob)
    ranker.save(tmp_path / "r")
    loaded = LanguageRanker.load(tmp_path / "r")
    assert loaded.fusion.weights == ranker.fusion.weights and loaded.fusion_config_.cluster_rules
    q = queries[1]
    assert torch.equal(loaded.score(q.instruction, q.responses, q.mean_logprob, q.vote_keys),
                       ranker.score(q.instruction, q.responses, q.mean_logprob, q.vote_keys))
    # Without rules the same fit keeps its own weights, which get one half of the queries or the other.
    plain = LanguageRanker(kind="point", epochs=1, fusion_fallback=False, fusion_cluster_rules=False).fit(queries)
    assert not plain.fusion_report_["cluster_rules"] and set(plain.fusion_report_["cluster_sources"]) <= {"fitted", "global"}


def test_fusion_config_of_an_older_card_has_no_cluster_rules():
    card = FusionConfig().to_dict()
    assert card["cluster_rules"] is True and FusionConfig.from_dict(card) == FusionConfig()
    del card["cluster_rules"]
    assert FusionConfig.from_dict(card).cluster_rules is False
    with pytest.raises(ValueError, match="fusion_cluster_rules"):
        FusionConfig(cluster_rules="yes")
    with pytest.raises(ValueError, match="JSON object"):
        FusionConfig.from_dict(["not", "a", "dict"])
