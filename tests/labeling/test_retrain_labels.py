"""Grades, thumbs and full rankings as training data (ranker.rankers.preferences), and retrains on them alone.

`levelled_queries` give every candidate a quality level 0..1 (a permutation of 6 levels per
query), carried along a "good answer" direction. A store whose labels grade or rank the
candidates by that level must train a ranker whose order agrees with it; the same labels
inverted must train one whose order is reversed, so the order follows the labels, not the features.
"""

import pytest
import torch

from labeling.label_store import LabelStore
from labeling.registry import RankerRegistry
from labeling.retrain import RetrainConfig, retrain_once
from ranker.rankers.preferences import Preference, judgement_pairs, preference_to_queries, preferences_to_queries
from ranker.rankers.training_groups import RankingQuery
from tests.labeling.synthetic import CANDIDATES, FAST, HIDDEN, queries_along_g, record

# Quick fits: two cross-fitting folds for the out-of-fold calibration of binary rankers.
HYPERPARAMS = {**FAST, "fusion_folds": 2}
BINARY = RetrainConfig(every_k_labels=0, hyperparams=HYPERPARAMS, min_steps=160, min_labels=20, seed=0)
REAL = RetrainConfig(every_k_labels=0, hyperparams={**HYPERPARAMS, "label_type": "real"}, min_steps=160, min_labels=20, seed=0)


def levelled_queries(num_queries: int, seed: int = 0, marker: float = 6.0, noise: float = 1.0) -> list[RankingQuery]:
    """Queries whose labels are the candidates' levels, a permutation of 0, 0.2, .., 1.

    As `tests.labeling.synthetic.synthetic_queries`, but r_k carries marker * level_k * g, so every
    candidate's level (not only the best one's) is readable from the features.
    """
    def levels(gen: torch.Generator) -> torch.Tensor:
        return torch.randperm(CANDIDATES, generator=gen).float() / (CANDIDATES - 1)

    return queries_along_g(num_queries, levels, "levelled", seed, marker, noise)


@pytest.fixture(scope="module")
def data():
    queries = levelled_queries(140, seed=0)
    return {"to_label": queries[:60], "val": queries[60:]}


def stars_of(query, inverted: bool) -> dict[int, int]:
    """1..5 stars by level (inverted: by 1 - level), for every candidate."""
    level = 1 - query.labels if inverted else query.labels
    return {k: 1 + round(4 * float(level[k])) for k in range(CANDIDATES)}


def ranking_of(query, inverted: bool) -> list[int]:
    """Candidates by level, best first (inverted: worst first)."""
    return torch.argsort(query.labels, descending=not inverted).tolist()


def grade_store(folder, queries, inverted: bool, seed: int = 1) -> LabelStore:
    """Only graded skips (no pick), shown in a random order."""
    store, gen = LabelStore(folder), torch.Generator().manual_seed(seed)
    for query in queries:
        order = torch.randperm(CANDIDATES, generator=gen).tolist()
        store.add_label(record(store, query), "skip", "ann", order, grades=stars_of(query, inverted))
    return store


def ranking_store(folder, queries, inverted: bool, seed: int = 1) -> LabelStore:
    """Only full rankings, shown in a random order."""
    store, gen = LabelStore(folder), torch.Generator().manual_seed(seed)
    for query in queries:
        order = torch.randperm(CANDIDATES, generator=gen).tolist()
        ranking = ranking_of(query, inverted)
        store.add_label(record(store, query), ranking[0], "ann", order, ranking=ranking)
    return store


def kendall_tau(ranker, queries) -> float:
    """Mean Kendall tau between the ranker's scores and the levels: 1 same order, -1 reversed, 0 unrelated."""
    total = 0.0
    for q in queries:
        scores = ranker.score(q.instruction, q.responses)
        agree = torch.sign(scores[:, None] - scores[None]) * torch.sign(q.labels[:, None] - q.labels[None])  # (K, K)
        total += agree.sum().item() / (CANDIDATES * (CANDIDATES - 1))
    return total / len(queries)


# --- the groups each kind of label gives -------------------------------------------------------------


def shown(k: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros(HIDDEN), torch.arange(k, dtype=torch.float32)[:, None].repeat(1, HIDDEN)  # row i is all i


def test_a_ranking_gives_plackett_luce_groups_or_one_graded_group():
    instruction, responses = shown(4)
    preference = Preference(instruction, responses, choice=2, query_id="q", mean_logprob=torch.tensor([0.0, 1, 2, 3]),
                            vote_keys=["a", "b", "c", "d"], ranking=[2, 0, 3, 1])
    groups = preference_to_queries(preference)
    # Group i: the candidates ranked i.. (features, log-probs and answer keys follow), one-hot on the i-th best.
    assert [g.responses[:, 0].tolist() for g in groups] == [[2, 0, 3, 1], [0, 3, 1], [3, 1]]
    assert [g.labels.tolist() for g in groups] == [[1, 0, 0, 0], [1, 0, 0], [1, 0]]
    assert [g.query_id for g in groups] == ["q", "q/rank1", "q/rank2"]
    assert groups[1].mean_logprob.tolist() == [0, 3, 1] and groups[1].vote_keys == ["a", "d", "b"]
    [graded] = preference_to_queries(preference, targets="real")
    assert graded.responses[:, 0].tolist() == [2, 0, 3, 1]
    torch.testing.assert_close(graded.labels, torch.tensor([1.0, 2 / 3, 1 / 3, 0.0]))
    with pytest.raises(ValueError, match="targets must be one of"):
        preference_to_queries(preference, targets="soft")
    with pytest.raises(ValueError, match="choice 0 must be the ranking's first candidate 2"):
        Preference(instruction, responses, choice=0, ranking=[2, 0, 3, 1])
    with pytest.raises(ValueError, match="ranking must list each of the 4 shown candidates once"):
        Preference(instruction, responses, choice=2, ranking=[2, 2, 3, 1])


def test_stars_thumbs_and_picks_give_their_groups():
    instruction, responses = shown(4)
    preference = Preference(instruction, responses, choice=1, query_id="q", stars={3: 5, 0: 2}, thumbs={2: -1, 1: 1})
    pick, stars, thumbs = preference_to_queries(preference)
    assert pick.labels.tolist() == [0, 1, 0, 0] and pick.query_id == "q"  # the pick, as before
    assert stars.responses[:, 0].tolist() == [0, 3] and stars.labels.tolist() == [0.25, 1.0] and stars.query_id == "q/stars"
    assert thumbs.responses[:, 0].tolist() == [1, 2] and thumbs.labels.tolist() == [1.0, 0.0]
    assert preferences_to_queries([Preference(instruction, responses, choice="tie")]) == []
    with pytest.raises(ValueError, match=r"stars must map shown candidates \(0..3\) to \[1, 2, 3, 4, 5\], got 4: 5"):
        Preference(instruction, responses, choice="tie", stars={4: 5})


def test_judgement_pairs_follow_the_documented_rule():
    assert judgement_pairs(1, 3) == [(1, 0, "pick"), (1, 2, "pick")]
    assert judgement_pairs("tie", 3) == judgement_pairs("all_bad", 3) == []
    assert judgement_pairs(2, 3, ranking=[2, 0, 1]) == [(2, 0, "ranking"), (2, 1, "ranking"), (0, 1, "ranking")]
    assert judgement_pairs(2, 3, ranking=[2, 0, 1], ranking_pairs="adjacent") == [(2, 0, "ranking"), (0, 1, "ranking")]
    # Grades: higher over lower, equal gives nothing; a pair an earlier source gave is not repeated.
    assert judgement_pairs("tie", 3, stars={0: 4, 1: 4, 2: 1}) == [(0, 2, "grade"), (1, 2, "grade")]
    assert judgement_pairs(0, 3, stars={0: 5, 2: 1}, thumbs={1: 1, 2: -1}) == [
        (0, 1, "pick"), (0, 2, "pick"), (1, 2, "thumbs")]
    with pytest.raises(ValueError, match="ranking_pairs must be one of"):
        judgement_pairs(0, 3, ranking=[0, 1, 2], ranking_pairs="some")


def test_a_store_of_grades_only_gives_the_grades_as_targets(tmp_path, data):
    store = grade_store(tmp_path / "labels", data["to_label"][:3], inverted=False)
    for preference in store.preferences():
        request = store.get_request(preference.request_id)
        [group] = preference_to_queries(preference, REAL.targets)
        stored = {int(k): v for k, v in store.labels_frame().set_index("label_id").loc[preference.label_id, "grades"].items()}
        rows = sorted(preference.stars)  # display positions; order_shown maps them to candidates
        torch.testing.assert_close(group.responses, request["responses"][[preference.order_shown[p] for p in rows]])
        assert group.labels.tolist() == [(stored[preference.order_shown[p]] - 1) / 4 for p in rows]
    assert REAL.targets == "real" and BINARY.targets == "binary"


def test_a_store_of_rankings_only_gives_its_plackett_luce_groups(tmp_path, data):
    store = ranking_store(tmp_path / "labels", data["to_label"][:3], inverted=False)
    for preference, label in zip(store.preferences(), store.label_records()):
        request = store.get_request(preference.request_id)
        groups = preference_to_queries(preference, BINARY.targets)
        assert len(groups) == CANDIDATES - 1
        for i, group in enumerate(groups):  # the candidates ranked i.., the i-th best labelled 1
            torch.testing.assert_close(group.responses, request["responses"][label["ranking"][i:]])
            assert group.labels.tolist() == [1.0] + [0.0] * (CANDIDATES - 1 - i)


# --- retraining on them alone ----------------------------------------------------------------------


@pytest.mark.parametrize("inverted", [False, True])
def test_a_retrain_on_grades_alone_regresses_them_and_orders_by_them(tmp_path, data, inverted):
    store = grade_store(tmp_path / "labels", data["to_label"], inverted=inverted)
    result = retrain_once(store, RankerRegistry(tmp_path / "rankers"), None, None, None, REAL)
    assert result.promoted and result.train_labels == result.train_groups == result.label_count - result.validation_labels
    assert result.ranker.ranker_config_.label_type == "real" and result.ranker.metrics_["loss"] == "mse"
    assert not result.ranker.calibrated  # a regressed grade is not P(correct)
    assert result.metrics == {}  # graded skips have no pick to agree with, and no task store was given
    tau = kendall_tau(result.ranker, data["val"])  # measured 0.90 and -0.87
    assert (tau <= -0.7) if inverted else (tau >= 0.7)
    # MSE regresses (stars - 1) / 4: on held-out prompts the best candidates score near 1, the worst near 0.
    scores = torch.stack([result.ranker.score(q.instruction, q.responses) for q in data["val"]])
    levels = torch.stack([1 - q.labels if inverted else q.labels for q in data["val"]])
    assert abs(scores[levels == 1].mean().item() - 1.0) < 0.3 and abs(scores[levels == 0].mean().item()) < 0.3


@pytest.mark.parametrize("inverted", [False, True])
def test_a_retrain_on_rankings_alone_orders_by_them(tmp_path, data, inverted):
    store = ranking_store(tmp_path / "labels", data["to_label"], inverted=inverted)
    result = retrain_once(store, RankerRegistry(tmp_path / "rankers"), None, None, None, BINARY)
    assert result.promoted and result.train_groups == (CANDIDATES - 1) * result.train_labels
    assert result.ranker.calibrated and result.ranker.metrics_["loss"] == "kl"
    assert set(result.metrics) == {"label_agreement"}  # a ranked label's pick is its best
    tau = kendall_tau(result.ranker, data["val"])  # measured 0.63 and -0.73
    assert (tau <= -0.45) if inverted else (tau >= 0.45)
